//! The catalog: which version of which table every branch and tag sees.
//!
//! The catalog is the source of truth for visibility. It is the state
//! machine of a [`lancebranch_wal`] log of [`Record`]s, plus checkpoints
//! (written to a temporary file, synced, renamed, directory synced; then the
//! log is truncated), stored in `<store>/_lancebranch/`. Replaying the
//! checkpoint and the log after it rebuilds exactly the state every
//! acknowledged operation left.
//!
//! Records are only ever appended as new enum variants at the end; their
//! order is part of the format (`CATALOG.md`). The files beside the log (the
//! format marker and the checkpoint) and the checks made on open are in
//! `format.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::branched::log::{CatalogLog, WalLog, read_consistent};
use crate::branched::names::MAIN;
use crate::failpoints::FailPoint;

/// How many records between checkpoints.
const CHECKPOINT_EVERY: u64 = 1024;

/// Where a branch reads one table: a line and a version on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableRef {
    /// The Lance branch of the table's dataset (`None`: its main line).
    pub line: Option<String>,
    /// The published version on that line.
    pub version: u64,
}

/// What the catalog knows about one branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BranchMeta {
    /// Unique for the life of the store; names the branch's Lance lines.
    pub id: u64,
    /// The branch it was forked from (`None` for main).
    pub parent: Option<String>,
    /// The tag it was forked from, if any.
    pub from_tag: Option<String>,
    /// The tables the branch sees, and where.
    pub tables: BTreeMap<String, TableRef>,
    /// The tables at the fork point (the merge base).
    pub fork_point: BTreeMap<String, TableRef>,
}

impl BranchMeta {
    /// Whether `line` is one of this branch's own lines (main owns the
    /// main line).
    pub fn owns(&self, line: Option<&str>) -> bool {
        line_owner(line) == Some(self.id)
    }
}

/// A multi-table tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagMeta {
    /// The branch tagged.
    pub branch: String,
    /// Every table of the branch at tagging time.
    pub tables: BTreeMap<String, TableRef>,
}

/// One catalog log record: what [`History`](crate::branched::History)
/// lists and the CLI's `log` and `wal dump` print.
///
/// Public on purpose, read-only: the records are the catalog's on-disk
/// format (`CATALOG.md`). New variants are appended at the end, never
/// reordered or reused (postcard numbers them by position), so matches on
/// it need a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Record {
    /// Branch `name` (id `id`) now exists, seeing what `parent` sees.
    Fork {
        /// New branch.
        name: String,
        /// Its parent.
        parent: String,
        /// Its id.
        id: u64,
    },
    /// Branch `name` (id `id`) now exists, seeing what tag `tag` pins.
    ForkAt {
        /// New branch.
        name: String,
        /// The tag.
        tag: String,
        /// Its id.
        id: u64,
    },
    /// On `branch`, each table now reads at the given ref (`None`: the
    /// table is gone from the branch). One record: all at once.
    Publish {
        /// The branch.
        branch: String,
        /// Table → new ref.
        tables: Vec<(String, Option<TableRef>)>,
    },
    /// About to (re)create the Lance line `line` of `table` from `from`.
    BeginLine {
        /// Operation id.
        op: u64,
        /// The table.
        table: String,
        /// The Lance branch name.
        line: String,
        /// Where it starts.
        from: TableRef,
    },
    /// The line of [`Record::BeginLine`] `op` exists.
    EndLine {
        /// Operation id.
        op: u64,
    },
    /// Branches are being deleted; they are gone from view at once.
    BeginDelete {
        /// Operation id.
        op: u64,
        /// The branches, deepest first.
        branches: Vec<String>,
        /// Their Lance lines, `(table, line)`, deepest first.
        lines: Vec<(String, String)>,
    },
    /// The lines of [`Record::BeginDelete`] `op` are removed.
    EndDelete {
        /// Operation id.
        op: u64,
    },
    /// Tag `name` pins what `branch` sees now.
    Tag {
        /// The tag.
        name: String,
        /// The branch.
        branch: String,
    },
    /// Tag `name` is removed.
    DeleteTag {
        /// The tag.
        name: String,
    },
    /// Operation `op` was undone by recovery.
    Abort {
        /// Operation id.
        op: u64,
    },
    /// A merge of `source` into `target` began.
    BeginMerge {
        /// Operation id.
        op: u64,
        /// The branch merged into.
        target: String,
        /// The branch merged from.
        source: String,
    },
    /// The bases of the next merge between `target` and `source`: what
    /// each side saw right after this merge.
    MergeBase {
        /// The branch merged into.
        target: String,
        /// The branch merged from.
        source: String,
        /// The target's tables after the merge.
        target_tables: BTreeMap<String, TableRef>,
        /// The source's tables at the merge.
        source_tables: BTreeMap<String, TableRef>,
    },
    /// The merge `op` is published (in the same log write as its publish).
    EndMerge {
        /// Operation id.
        op: u64,
    },
    /// About to create the dataset of `table`, new to the store.
    BeginCreate {
        /// Operation id.
        op: u64,
        /// The table.
        table: String,
    },
    /// The table of [`Record::BeginCreate`] `op` is published (in the same
    /// log write as the publish).
    EndCreate {
        /// Operation id.
        op: u64,
    },
    /// Garbage collection: Lance lines nothing reads any more (deepest
    /// first) and datasets that may no longer be read are about to be
    /// removed. Logged in the same log write as the change that made them
    /// unreachable; a dataset is purged only if still unreferenced then.
    BeginCollect {
        /// Operation id.
        op: u64,
        /// The lines, `(table, line)`, deepest first.
        lines: Vec<(String, String)>,
        /// The datasets.
        tables: Vec<String>,
    },
    /// The collection [`Record::BeginCollect`] `op` is done.
    EndCollect {
        /// Operation id.
        op: u64,
    },
    /// A writer opened a store on object storage and took its log over:
    /// its epoch is this record's LSN, and every earlier writer is fenced
    /// (catalog format 2; a local store never logs it).
    Writer {
        /// Who took it over (host and process id), for diagnostics.
        owner: String,
    },
}

/// Merge bases of one (target, source) pair: each side's tables as of
/// their last merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MergeBases {
    /// The target's tables right after the last merge.
    pub target: BTreeMap<String, TableRef>,
    /// The source's tables at the last merge.
    pub source: BTreeMap<String, TableRef>,
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogState {
    /// Live branches by name (always contains `main`).
    pub branches: BTreeMap<String, BranchMeta>,
    /// Tags by name.
    pub tags: BTreeMap<String, TagMeta>,
    /// Lance lines known to exist, `(table, line)`.
    pub lines: BTreeSet<(String, String)>,
    /// Operations begun and not yet ended, by id.
    pub pending: BTreeMap<u64, Record>,
    /// The next branch / operation id.
    pub next_id: u64,
    /// Where each known line started, `(table, line)` → ref.
    pub line_origin: BTreeMap<(String, String), TableRef>,
    /// Merge bases by `(target, source)`, for repeated merges.
    pub merge_bases: BTreeMap<(String, String), MergeBases>,
    /// The LSN of the last record applied.
    pub applied: u64,
}

impl Default for CatalogState {
    fn default() -> Self {
        let mut branches = BTreeMap::new();
        branches.insert(
            MAIN.to_string(),
            BranchMeta {
                id: 0,
                parent: None,
                from_tag: None,
                tables: BTreeMap::new(),
                fork_point: BTreeMap::new(),
            },
        );
        Self {
            branches,
            tags: BTreeMap::new(),
            lines: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_id: 1,
            line_origin: BTreeMap::new(),
            merge_bases: BTreeMap::new(),
            applied: 0,
        }
    }
}

impl CatalogState {
    /// Apply one record. Deterministic: replay gives the live state.
    pub(crate) fn apply(&mut self, lsn: u64, rec: &Record) {
        self.applied = lsn;
        match rec {
            Record::Fork { name, parent, id } => {
                let from = self.branches.get(parent).map(|p| p.tables.clone());
                self.add_branch(name, *id, parent, None, from);
            }
            Record::ForkAt { name, tag, id } => {
                let from = self
                    .tags
                    .get(tag)
                    .map(|t| (t.branch.clone(), t.tables.clone()));
                let (parent, tables) = from.unzip();
                let parent = parent.unwrap_or_default();
                self.add_branch(name, *id, &parent, Some(tag), tables);
            }
            Record::Publish { branch, tables } => self.publish(branch, tables),
            Record::Tag { name, branch } => {
                if let Some(b) = self.branches.get(branch) {
                    let tables = b.tables.clone();
                    let branch = branch.clone();
                    self.tags.insert(name.clone(), TagMeta { branch, tables });
                }
            }
            Record::DeleteTag { name } => {
                self.tags.remove(name);
            }
            Record::BeginDelete { op, branches, .. } => {
                for b in branches {
                    self.branches.remove(b);
                }
                self.merge_bases
                    .retain(|(t, s), _| !branches.contains(t) && !branches.contains(s));
                self.begin(*op, rec);
            }
            Record::BeginLine { op, .. }
            | Record::BeginMerge { op, .. }
            | Record::BeginCreate { op, .. }
            | Record::BeginCollect { op, .. } => self.begin(*op, rec),
            Record::MergeBase {
                target,
                source,
                target_tables,
                source_tables,
            } => self.merge_base(target, source, target_tables, source_tables),
            Record::EndLine { op }
            | Record::EndDelete { op }
            | Record::EndMerge { op }
            | Record::EndCreate { op }
            | Record::EndCollect { op }
            | Record::Abort { op } => self.end(*op, rec),
            Record::Writer { .. } => {}
        }
    }

    /// A new branch `name` reading `tables` (nothing if its source is gone).
    fn add_branch(
        &mut self,
        name: &str,
        id: u64,
        parent: &str,
        from_tag: Option<&String>,
        tables: Option<BTreeMap<String, TableRef>>,
    ) {
        if let Some(tables) = tables {
            let meta = BranchMeta {
                id,
                parent: Some(parent.to_string()),
                from_tag: from_tag.cloned(),
                fork_point: tables.clone(),
                tables,
            };
            self.branches.insert(name.to_string(), meta);
        }
        self.next_id = self.next_id.max(id + 1);
    }

    /// `branch` now reads each table at the given ref (`None`: gone).
    fn publish(&mut self, branch: &str, tables: &[(String, Option<TableRef>)]) {
        let Some(b) = self.branches.get_mut(branch) else {
            return;
        };
        for (t, r) in tables {
            match r {
                Some(r) => b.tables.insert(t.clone(), r.clone()),
                None => b.tables.remove(t),
            };
        }
    }

    /// Operation `op` began with `rec`.
    fn begin(&mut self, op: u64, rec: &Record) {
        self.pending.insert(op, rec.clone());
        self.next_id = self.next_id.max(op + 1);
    }

    /// Operation `op` ended with `end` (an end record or an abort): what
    /// its beginning left pending is finished or undone.
    fn end(&mut self, op: u64, end: &Record) {
        let begun = self.pending.remove(&op);
        match (end, begun) {
            (
                Record::EndLine { .. },
                Some(Record::BeginLine {
                    table, line, from, ..
                }),
            ) => {
                self.line_origin.insert((table.clone(), line.clone()), from);
                self.lines.insert((table, line));
            }
            (Record::Abort { .. }, Some(Record::BeginLine { table, line, .. })) => {
                self.line_origin.remove(&(table.clone(), line.clone()));
                self.lines.remove(&(table, line));
            }
            (Record::EndDelete { .. }, Some(Record::BeginDelete { lines, .. }))
            | (Record::EndCollect { .. }, Some(Record::BeginCollect { lines, .. })) => {
                for l in lines {
                    self.line_origin.remove(&l);
                    self.lines.remove(&l);
                }
            }
            _ => {}
        }
    }

    /// The bases of the next merges between `target` and `source`, both
    /// ways.
    fn merge_base(
        &mut self,
        target: &str,
        source: &str,
        target_tables: &BTreeMap<String, TableRef>,
        source_tables: &BTreeMap<String, TableRef>,
    ) {
        self.merge_bases.insert(
            (target.to_string(), source.to_string()),
            MergeBases {
                target: target_tables.clone(),
                source: source_tables.clone(),
            },
        );
        // Merging the other way next: the common ancestor is what the
        // source was at this merge, for both sides.
        self.merge_bases.insert(
            (source.to_string(), target.to_string()),
            MergeBases {
                target: source_tables.clone(),
                source: source_tables.clone(),
            },
        );
    }

    /// The version a Lance line of `table` started at (its first version
    /// is numbered so), for a created line or one being created; `None`
    /// for a main line or an unknown one.
    pub(crate) fn line_start(&self, table: &str, line: Option<&str>) -> Option<u64> {
        let line = line?;
        let key = (table.to_string(), line.to_string());
        if let Some(o) = self.line_origin.get(&key) {
            return Some(o.version);
        }
        self.pending.values().find_map(|r| match r {
            Record::BeginLine {
                table: t,
                line: l,
                from,
                ..
            } if t == table && l == line => Some(from.version),
            _ => None,
        })
    }

    /// Every table a ref or a line of this state names.
    pub(crate) fn known_tables(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.refs().map(|(t, _)| t.clone()).collect();
        all.extend(self.lines.iter().map(|(t, _)| t.clone()));
        all
    }

    /// Lance lines that exist or may exist: created ones and those whose
    /// creation began and has not ended.
    pub fn known_lines(&self) -> BTreeSet<(String, String)> {
        let mut all = self.lines.clone();
        for rec in self.pending.values() {
            if let Record::BeginLine { table, line, .. } = rec {
                all.insert((table.clone(), line.clone()));
            }
        }
        all
    }

    /// Every `(table, ref)` the catalog keeps readable: what each branch
    /// reads, its fork point, every tag and every merge base.
    pub(crate) fn refs(&self) -> impl Iterator<Item = (&String, &TableRef)> {
        let branches = self
            .branches
            .values()
            .flat_map(|b| b.tables.iter().chain(b.fork_point.iter()));
        let tags = self.tags.values().flat_map(|t| t.tables.iter());
        let bases = self
            .merge_bases
            .values()
            .flat_map(|m| m.target.iter().chain(m.source.iter()));
        branches.chain(tags).chain(bases)
    }

    /// Every table that a branch, fork point, tag, merge base or Lance
    /// line of the catalog mentions: the datasets that must be kept.
    /// Tables that only pending operations mention are not included.
    pub fn referenced_tables(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.refs().map(|(t, _)| t.clone()).collect();
        all.extend(self.lines.iter().map(|(t, _)| t.clone()));
        all.extend(self.line_origin.keys().map(|(t, _)| t.clone()));
        all
    }

    /// The tables pending creations (of a dataset or a line) are working
    /// on. Pending collections are not among them: a collection decides
    /// under the dataset's lock, and one that ran before the last reader
    /// went away has kept the dataset, so the change removing that reader
    /// must name it again (collections are idempotent).
    fn pending_tables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for rec in self.pending.values() {
            if let Record::BeginCreate { table, .. } | Record::BeginLine { table, .. } = rec {
                out.insert(table.clone());
            }
        }
        out
    }

    /// The lines pending collections and branch deletions remove.
    fn lines_being_removed(&self) -> BTreeSet<&(String, String)> {
        self.pending
            .values()
            .filter_map(|r| match r {
                Record::BeginDelete { lines, .. } | Record::BeginCollect { lines, .. } => {
                    Some(lines)
                }
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The Lance lines something can still read: those the catalog's refs
    /// and the live `pins` read, and every line one of them grew from.
    pub(crate) fn needed_lines(&self, pins: &[(String, TableRef)]) -> BTreeSet<(String, String)> {
        let start = self
            .refs()
            .chain(pins.iter().map(|(t, r)| (t, r)))
            .filter_map(|(t, r)| r.line.clone().map(|l| (t.clone(), l)))
            .collect();
        self.with_origins(start)
    }

    /// The lines the live `pins` read, and every line one of them grew from.
    pub(crate) fn pinned_lines(&self, pins: &[(String, TableRef)]) -> BTreeSet<(String, String)> {
        let start = pins
            .iter()
            .filter_map(|(t, r)| r.line.clone().map(|l| (t.clone(), l)))
            .collect();
        self.with_origins(start)
    }

    /// `lines` and the lines they grew from, through known origins.
    fn with_origins(&self, mut todo: Vec<(String, String)>) -> BTreeSet<(String, String)> {
        let mut needed = BTreeSet::new();
        while let Some(l) = todo.pop() {
            if needed.contains(&l) {
                continue;
            }
            if let Some(origin) = self.line_origin.get(&l)
                && let Some(parent) = &origin.line
            {
                todo.push((l.0.clone(), parent.clone()));
            }
            needed.insert(l);
        }
        needed
    }

    /// How many lines `(table, line)` grew from, through known origins.
    pub(crate) fn line_depth(&self, table: &str, line: &str) -> usize {
        let mut depth = 0;
        let mut at = (table.to_string(), line.to_string());
        while let Some(TableRef { line: Some(p), .. }) = self.line_origin.get(&at) {
            depth += 1;
            if depth > self.line_origin.len() {
                break;
            }
            at = (table.to_string(), p.clone());
        }
        depth
    }

    /// What nothing in the catalog reads any more, among the lines and
    /// datasets of `candidates`: lines deepest first, and datasets no ref,
    /// remaining line or pending operation mentions. Live pins are not
    /// asked: the collection's executor leaves what they read.
    pub(crate) fn garbage(
        &self,
        candidates: &BTreeSet<String>,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let wanted = |t: &String| candidates.contains(t);
        let needed = self.needed_lines(&[]);
        let busy = self.pending_tables();
        // Lines a pending deletion or collection removes itself.
        let deleting = self.lines_being_removed();
        let mut lines: Vec<(String, String)> = self
            .lines
            .iter()
            .filter(|l| {
                wanted(&l.0)
                    && !needed.contains(*l)
                    && !busy.contains(&l.0)
                    && !deleting.contains(l)
            })
            .cloned()
            .collect();
        lines.sort_by_key(|(t, l)| std::cmp::Reverse(self.line_depth(t, l)));
        let mut kept: BTreeSet<String> = self.refs().map(|(t, _)| t.clone()).collect();
        kept.extend(needed.iter().map(|(t, _)| t.clone()));
        kept.extend(busy);
        let tables = candidates
            .iter()
            .filter(|t| !kept.contains(*t))
            .cloned()
            .collect();
        (lines, tables)
    }

    /// The name for a new line of `table` owned by branch `id`, made by
    /// operation `op`: `lb{id}`, unless a line of that name exists (a
    /// table dropped and re-created on the branch, whose old line others
    /// may still read): then `lb{id}_{op}`, never reused.
    pub(crate) fn new_line_name(&self, table: &str, id: u64, op: u64) -> String {
        let base = format!("lb{id}");
        if self.lines.contains(&(table.to_string(), base.clone())) {
            format!("lb{id}_{op}")
        } else {
            base
        }
    }

    /// The lowest version of `line` of `table` that any branch, fork point,
    /// tag, merge base or live pin still reads, or the line's first version;
    /// `None` if nothing pins the line.
    pub fn lowest_pinned(
        &self,
        table: &str,
        line: Option<&str>,
        pins: &[(String, TableRef)],
    ) -> Option<u64> {
        // A line's first version (numbered as the version it grew from)
        // is kept too: a diff from the fork point reads the line's changes
        // from there.
        let first = line
            .and_then(|l| self.line_origin.get(&(table.to_string(), l.to_string())))
            .map(|o| o.version);
        self.refs()
            .chain(pins.iter().map(|(t, r)| (t, r)))
            .filter(|(t, r)| t.as_str() == table && r.line.as_deref() == line)
            .map(|(_, r)| r.version)
            .chain(first)
            .min()
    }
}

/// The id of the branch that owns `line`: 0 for the main line, `id` for
/// `lb{id}` and `lb{id}_{n}`; `None` for any other name.
pub fn line_owner(line: Option<&str>) -> Option<u64> {
    let Some(l) = line else { return Some(0) };
    let rest = l.strip_prefix("lb")?;
    let id = rest.split_once('_').map_or(rest, |(a, _)| a);
    id.parse().ok().filter(|i| *i != 0)
}

/// The durable catalog: state + log + checkpoints.
pub struct Catalog {
    /// The published state: every durable record applied, and nothing
    /// else (readers never see a record a crash could still take back).
    state: RwLock<CatalogState>,
    log: Box<dyn CatalogLog>,
    /// The commit lock, guarding the state *ahead*: the published state
    /// plus every group written to the log and not yet durable. Checks run
    /// on it and groups are written under it, so the log order is the
    /// apply order; the sync happens outside it, shared by concurrent
    /// committers (group commit).
    commit: Mutex<CatalogState>,
    /// Groups written to the log, in LSN order, not yet applied to
    /// `state` (each is once the log says it is durable).
    unapplied: Mutex<std::collections::VecDeque<(u64, Record)>>,
    /// The LSN covered by the last checkpoint.
    last_checkpoint: std::sync::atomic::AtomicU64,
    /// A follower: never appends, follows the log with
    /// [`refresh`](Catalog::refresh).
    read_only: bool,
    /// Live pins (snapshots, diffs and merges in flight): what they read,
    /// kept by retention and garbage collection. Registered under the
    /// commit lock, so a pin never sees a state a collection already gave
    /// up.
    pins: Mutex<BTreeMap<u64, Vec<(String, TableRef)>>>,
    next_pin: std::sync::atomic::AtomicU64,
    /// Set when a pin is dropped: a collection it held back may go on.
    released: std::sync::atomic::AtomicBool,
}

/// What the writer did to a table after a follower's state
/// ([`Catalog::touched_since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touched {
    /// Nothing.
    Untouched,
    /// Published it anew on some branch: retention may remove the versions
    /// the follower reads (a read of one fails; none returns wrong rows).
    Republished,
    /// Removed a line or the dataset of it (which may have been created
    /// anew), or it cannot be told: what the follower read may not be what
    /// its state published.
    Removed,
}

/// Keeps what a [`Catalog::pin`] registered readable until dropped.
#[derive(Debug)]
pub(crate) struct PinGuard {
    catalog: std::sync::Weak<Catalog>,
    id: u64,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(cat) = self.catalog.upgrade() {
            cat.pins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
            cat.released
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("log", &self.log.describe())
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Catalog {
    /// Open (creating) the catalog in `dir`, or in memory for `None`.
    ///
    /// # Errors
    /// The directory or the log cannot be read;
    /// [`Error::StoreLocked`](crate::Error::StoreLocked) when another
    /// process has it open for writing;
    /// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) for a
    /// store of a newer format (nothing is changed);
    /// [`Error::CorruptCatalog`](crate::Error::CorruptCatalog) for a
    /// checkpoint that does not decode or a log that does not continue it.
    pub fn open(dir: Option<&Path>) -> Result<Arc<Self>> {
        let (log, state, records) = match dir {
            Some(dir) => WalLog::open(dir)?,
            None => WalLog::memory()?,
        };
        Ok(Self::from_log(Box::new(log), state, records, false))
    }

    /// A catalog over `log`, opened with the checkpoint's `state` and the
    /// `records` after it; `read_only` for a follower.
    pub(crate) fn from_log(
        log: Box<dyn CatalogLog>,
        mut state: CatalogState,
        records: Vec<(u64, Record)>,
        read_only: bool,
    ) -> Arc<Self> {
        // What the checkpoint covers: records replayed now count towards
        // the next automatic checkpoint.
        let covered = state.applied;
        for (lsn, r) in &records {
            if *lsn > state.applied {
                state.apply(*lsn, r);
            }
        }
        Arc::new(Self {
            commit: Mutex::new(state.clone()),
            unapplied: Mutex::new(std::collections::VecDeque::new()),
            state: RwLock::new(state),
            log,
            last_checkpoint: std::sync::atomic::AtomicU64::new(covered),
            read_only,
            pins: Mutex::new(BTreeMap::new()),
            next_pin: std::sync::atomic::AtomicU64::new(1),
            released: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A follower: what the writer logged after LSN `at` did to `table`
    /// (read from the log, not applied). Blocking.
    ///
    /// # Errors
    /// The log cannot be read.
    pub(crate) fn touched_since(&self, at: u64, table: &str) -> Result<Touched> {
        let records = match self.log.read_after(at) {
            Ok(records) => records,
            // Checkpointed and dropped: nothing tells what happened.
            Err(_) => return Ok(Touched::Removed),
        };
        let mut seen = Touched::Untouched;
        for (_, r) in &records {
            let names = |lines: &[(String, String)]| lines.iter().any(|(t, _)| t == table);
            match r {
                Record::BeginCollect { lines, tables, .. }
                    if names(lines) || tables.iter().any(|t| t == table) =>
                {
                    return Ok(Touched::Removed);
                }
                Record::BeginDelete { lines, .. } if names(lines) => return Ok(Touched::Removed),
                Record::Publish { tables, .. } if tables.iter().any(|(t, _)| t == table) => {
                    seen = Touched::Republished;
                }
                _ => {}
            }
        }
        Ok(seen)
    }

    /// Whether this writer may still write (not fenced by a newer one).
    ///
    /// # Errors
    /// [`Error::Fenced`](crate::Error::Fenced).
    pub(crate) fn check_live(&self) -> Result<()> {
        self.log.check_live()
    }

    /// [`check_live`](Self::check_live), asking the log itself whether
    /// another writer has taken it over (one request on object storage).
    /// Blocking.
    ///
    /// # Errors
    /// [`Error::Fenced`](crate::Error::Fenced), or the log cannot be read.
    pub(crate) fn probe_live(&self) -> Result<()> {
        self.log.probe_live()
    }

    /// How many times the catalog's log was synced since it was opened.
    pub(crate) fn log_syncs(&self) -> u64 {
        self.log.sync_count()
    }

    /// Whether this catalog is a read-only follower.
    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Where the log is, for messages.
    pub(crate) fn describe(&self) -> String {
        self.log.describe()
    }

    /// A follower: apply what the writer logged since this state (from a
    /// newer checkpoint when the records were dropped meanwhile). Returns
    /// how many records were applied. Blocking.
    ///
    /// # Errors
    /// The log cannot be read.
    pub(crate) fn refresh(&self) -> Result<u64> {
        let mut ahead = self.lock_ahead();
        let covered = self.read().applied;
        let (base, records) = match self.log.read_after(covered) {
            Ok(records) => (None, records),
            // The records after `covered` were checkpointed and dropped.
            Err(_) => {
                let (state, records) = read_consistent(self.log.as_ref())?;
                (Some(state).filter(|s| s.applied > covered), records)
            }
        };
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(base) = base {
            *st = base;
        }
        for (lsn, r) in &records {
            if *lsn > st.applied {
                st.apply(*lsn, r);
            }
        }
        // A follower writes nothing: the state ahead is the published one.
        *ahead = st.clone();
        Ok(st.applied.saturating_sub(covered))
    }

    /// Take the commit lock: the state ahead of the published one.
    fn lock_ahead(&self) -> std::sync::MutexGuard<'_, CatalogState> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply every written group below LSN `end` (the log said it is
    /// durable) to the published state, in LSN order. Returns the LSN of
    /// the last record applied.
    fn apply_durable(&self, end: u64) -> u64 {
        let mut queue = self.unapplied.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        while queue.front().is_some_and(|(lsn, _)| *lsn < end) {
            if let Some((lsn, rec)) = queue.pop_front() {
                st.apply(lsn, &rec);
            }
        }
        st.applied
    }

    /// Whether groups were written and not yet published.
    fn in_flight(&self) -> bool {
        !self
            .unapplied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Wait until every group below LSN `end` is durable, then publish
    /// them. Returns the LSN of the last record published.
    fn publish_through(&self, end: u64) -> Result<u64> {
        self.log.wait_durable(end)?;
        Ok(self.apply_durable(end))
    }

    /// Under the commit lock (`ahead`): wait until every written group is
    /// durable and published, so the published state is the state ahead.
    fn settle(&self, ahead: &CatalogState) -> Result<()> {
        self.publish_through(ahead.applied + 1).map(|_| ())
    }

    /// A read of the current state.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, CatalogState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a pin of what `f` picks from the published state (checked
    /// under the commit lock): retention and garbage collection keep it
    /// readable until the guard is dropped.
    pub(crate) fn pin(
        self: &Arc<Self>,
        f: impl FnOnce(&CatalogState) -> Result<Vec<(String, TableRef)>>,
    ) -> Result<(Vec<(String, TableRef)>, PinGuard)> {
        let ahead = self.lock_ahead();
        // A group in flight (a branch deletion, say) decided what to remove
        // on the state ahead, before this pin existed: wait until it is
        // published, so the pin reads the state it was decided on (a short
        // wait, for one sync, and only while groups are in flight).
        if self.in_flight() {
            self.settle(&ahead)?;
        }
        // The published state stays read-locked until the pin is
        // registered: a collection runs only once its record is published,
        // and then finds this pin (or the pin read the state after it).
        let st = self.read();
        let refs = f(&st)?;
        let id = self
            .next_pin
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, refs.clone());
        drop(st);
        let guard = PinGuard {
            catalog: Arc::downgrade(self),
            id,
        };
        Ok((refs, guard))
    }

    /// Whether a pin was dropped since the last call.
    pub(crate) fn take_released(&self) -> bool {
        self.released
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Every live pin's refs.
    pub(crate) fn pinned(&self) -> Vec<(String, TableRef)> {
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        pins.values().flatten().cloned().collect()
    }

    /// [`commit_batch`](Self::commit_batch) of the records `check` returns
    /// (given the state and the live pins), plus, when they make lines or datasets of the candidate
    /// tables `check` names unreachable, a [`Record::BeginCollect`]
    /// (operation `op`) in the same log write. Returns the records logged.
    pub(crate) fn commit_collecting(
        &self,
        check: impl FnOnce(
            &CatalogState,
            &[(String, TableRef)],
        ) -> Result<(Vec<Record>, BTreeSet<String>)>,
        op: u64,
    ) -> Result<Vec<Record>> {
        self.commit_batch(|st| {
            // Read under the commit lock, where pins are registered.
            let (mut recs, candidates) = check(st, &self.pinned())?;
            if recs.is_empty() || candidates.is_empty() {
                return Ok(recs);
            }
            let mut after = st.clone();
            for r in &recs {
                after.apply(st.applied, r);
            }
            // Live pins do not keep things out of the collection: its
            // executor leaves what a pin reads until the pin is dropped.
            let (lines, tables) = after.garbage(&candidates);
            if !lines.is_empty() || !tables.is_empty() {
                recs.push(Record::BeginCollect { op, lines, tables });
            }
            Ok(recs)
        })
    }

    /// Durably log the records `check` returns (after it passes on the
    /// state ahead, under the commit lock) as one atomic batch, then
    /// publish them. Blocking: call it from a blocking context.
    ///
    /// The check and the log write happen under the commit lock; the sync
    /// does not: concurrent committers (of any branch or table) share
    /// one sync, and each returns once its records are durable and
    /// published. A later check sees earlier groups written and not yet
    /// durable, which is safe: the log makes groups durable in LSN order,
    /// so a crash that takes an earlier group also takes every later one,
    /// and no caller was answered for either.
    pub fn commit_batch(
        &self,
        check: impl FnOnce(&CatalogState) -> Result<Vec<Record>>,
    ) -> Result<Vec<Record>> {
        self.commit_group(check).map(|(_, recs)| recs)
    }

    /// [`commit_batch`](Self::commit_batch), returning the LSNs logged.
    fn commit_group(
        &self,
        check: impl FnOnce(&CatalogState) -> Result<Vec<Record>>,
    ) -> Result<(std::ops::Range<u64>, Vec<Record>)> {
        let (lsns, recs) = {
            let mut ahead = self.lock_ahead();
            let checked = check(&ahead);
            let nothing = checked.as_ref().map_or(true, Vec::is_empty);
            if nothing {
                // The answer (nothing to log, or an error such as "exists")
                // may rest on groups in flight: give it only once they are
                // published, as a commit's would be.
                let end = ahead.applied + 1;
                drop(ahead);
                if self.in_flight() {
                    self.publish_through(end)?;
                }
                return checked.map(|recs| (end..end, recs));
            }
            let recs = checked?;
            let lsns = self.log.write(&recs)?;
            let mut queue = self.unapplied.lock().unwrap_or_else(|p| p.into_inner());
            for (lsn, rec) in lsns.clone().zip(&recs) {
                ahead.apply(lsn, rec);
                queue.push_back((lsn, rec.clone()));
            }
            (lsns, recs)
        };
        let applied = self.publish_through(lsns.end)?;
        let last = self
            .last_checkpoint
            .load(std::sync::atomic::Ordering::Relaxed);
        if applied.saturating_sub(last) >= CHECKPOINT_EVERY {
            // The records are durable and applied: a checkpoint that fails
            // must not turn them into an error (the caller would retry and
            // apply them twice). The log still holds them; the next commit
            // tries the checkpoint again.
            let ahead = self.lock_ahead();
            let last = self
                .last_checkpoint
                .load(std::sync::atomic::Ordering::Relaxed);
            if ahead.applied.saturating_sub(last) >= CHECKPOINT_EVERY {
                let _ = self.checkpoint_locked(&ahead, &crate::failpoints::FailPoints::default());
            }
        }
        Ok((lsns, recs))
    }

    /// Durably log the record `check` returns and apply it.
    pub fn commit_if(
        &self,
        check: impl FnOnce(&CatalogState) -> Result<Record>,
    ) -> Result<(u64, Record)> {
        let (lsns, mut recs) = self.commit_group(|st| check(st).map(|r| vec![r]))?;
        let rec = recs.pop().context("no record logged")?;
        Ok((lsns.end - 1, rec))
    }

    /// Durably log `rec` and apply it.
    pub fn commit(&self, rec: Record) -> Result<u64> {
        self.commit_if(|_| Ok(rec)).map(|(lsn, _)| lsn)
    }

    /// A fresh id for a branch or an operation (logged with the record
    /// that uses it).
    pub fn fresh_id(&self) -> u64 {
        let mut ahead = self.lock_ahead();
        let id = ahead.next_id;
        ahead.next_id += 1;
        // Published too: a checkpoint keeps it from being handed out again.
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.next_id = st.next_id.max(ahead.next_id);
        id
    }

    /// The LSN the checkpoint on disk covers (0: none) and every record
    /// logged after it, read back from the log under the commit lock.
    ///
    /// # Errors
    /// The checkpoint or the log cannot be read.
    pub(crate) fn log_after_checkpoint(&self) -> Result<(u64, Vec<(u64, Record)>)> {
        let ahead = self.lock_ahead();
        // Only durable records: wait for the groups in flight.
        self.settle(&ahead)?;
        let (state, records) = read_consistent(self.log.as_ref())?;
        Ok((state.applied, records))
    }

    /// Write a checkpoint now and truncate the log below it.
    ///
    /// # Errors
    /// The checkpoint cannot be written.
    pub(crate) fn checkpoint_with(&self, fail: &crate::failpoints::FailPoints) -> Result<()> {
        let ahead = self.lock_ahead();
        self.checkpoint_locked(&ahead, fail)
    }

    /// Under the commit lock (`ahead`): checkpoint the state ahead once
    /// every group written is durable and published.
    fn checkpoint_locked(
        &self,
        ahead: &CatalogState,
        fail: &crate::failpoints::FailPoints,
    ) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.settle(ahead)?;
        let state = self.read().clone();
        self.log.checkpoint(&state, &|| {
            fail.check(FailPoint::CheckpointAfterWriteBeforeTruncate)
        })?;
        self.last_checkpoint
            .store(state.applied, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_THREAD: u64 = CHECKPOINT_EVERY / 8 + 16;

    /// A catalog whose log syncs take 400 ms, and a fork of `x` committed
    /// on another thread, in flight (written, not yet durable) on return.
    fn fork_in_flight() -> (Arc<Catalog>, std::thread::JoinHandle<()>) {
        let (log, st, recs) =
            WalLog::memory_slow_sync(std::time::Duration::from_millis(400)).expect("log");
        let cat = Catalog::from_log(Box::new(log), st, recs, false);
        let c = cat.clone();
        let fork = std::thread::spawn(move || {
            let id = c.fresh_id();
            c.commit(Record::Fork {
                name: "x".into(),
                parent: MAIN.into(),
                id,
            })
            .expect("fork");
        });
        while !cat.in_flight() {
            std::thread::yield_now();
        }
        (cat, fork)
    }

    /// Readers see only durable records; a pin taken while a group is in
    /// flight waits for it (the group's decisions were made on it).
    #[test]
    fn a_pin_waits_for_the_groups_in_flight() {
        let (cat, fork) = fork_in_flight();
        assert!(!cat.read().branches.contains_key("x"), "not durable yet");
        let (_, _guard) = cat
            .pin(|st| {
                assert!(st.branches.contains_key("x"), "pinned before the fork");
                Ok(Vec::new())
            })
            .expect("pin");
        fork.join().expect("fork thread");
    }

    /// A check that logs nothing (or fails) because of a group in flight
    /// answers only once that group is published.
    #[test]
    fn an_answer_resting_on_a_group_in_flight_waits_for_it() {
        let (cat, fork) = fork_in_flight();
        let err = cat
            .commit_if(|st| {
                anyhow::ensure!(!st.branches.contains_key("x"), "x exists");
                Ok(Record::DeleteTag { name: "t".into() })
            })
            .expect_err("x exists ahead");
        assert!(err.to_string().contains("x exists"));
        assert!(cat.read().branches.contains_key("x"), "answered early");
        fork.join().expect("fork thread");
    }

    /// Many threads commit at once (the sync outside the commit lock):
    /// each check sees every earlier group, each caller finds its record
    /// published when `commit_if` returns, LSNs are unique, and a reopen
    /// replays exactly what was acknowledged. More records than
    /// `CHECKPOINT_EVERY`: an automatic checkpoint runs among them.
    #[test]
    fn concurrent_commits_are_serialized_checked_and_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::open(Some(dir.path())).expect("open");
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let cat = cat.clone();
                std::thread::spawn(move || {
                    let mut lsns = Vec::new();
                    for i in 0..PER_THREAD {
                        let name = format!("b{t}_{i}");
                        let parent = if i == 0 {
                            MAIN.to_string()
                        } else {
                            format!("b{t}_{}", i - 1)
                        };
                        let id = cat.fresh_id();
                        let (lsn, _) = cat
                            .commit_if(|st| {
                                // The parent was committed by this thread:
                                // the state ahead must have it.
                                assert!(st.branches.contains_key(&parent), "{parent}");
                                assert!(!st.branches.contains_key(&name));
                                Ok(Record::Fork {
                                    name: name.clone(),
                                    parent: parent.clone(),
                                    id,
                                })
                            })
                            .expect("commit");
                        let st = cat.read();
                        assert!(st.applied >= lsn);
                        assert_eq!(st.branches.get(&name).map(|b| b.id), Some(id));
                        lsns.push(lsn);
                    }
                    lsns
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len() as u64, 8 * PER_THREAD);
        let live: BTreeMap<String, u64> = cat
            .read()
            .branches
            .iter()
            .map(|(n, b)| (n.clone(), b.id))
            .collect();
        assert_eq!(live.len() as u64, 8 * PER_THREAD + 1);
        assert!(
            cat.last_checkpoint
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        drop(cat);
        let again = Catalog::open(Some(dir.path())).expect("reopen");
        let replayed: BTreeMap<String, u64> = again
            .read()
            .branches
            .iter()
            .map(|(n, b)| (n.clone(), b.id))
            .collect();
        assert_eq!(replayed, live);
    }
}
