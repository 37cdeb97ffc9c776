//! `fsck`: cross-check the catalog against the Lance datasets and report
//! what does not agree, optionally repairing what is safe to repair.
//!
//! | problem | meaning | repair |
//! |---|---|---|
//! | `PendingOperation` | an operation began and did not end (only while one runs, or after a crash before recovery) | finish or undo it, as recovery does |
//! | `DanglingParent` | a branch's parent is not in the catalog | none |
//! | `DanglingTagBranch` | a tag names a branch that is gone | none |
//! | `MissingTable` | a branch, fork point or tag reads a table whose dataset is gone | none |
//! | `MissingLine` | a branch or tag reads a Lance branch the catalog does not know | none |
//! | `UnreadableVersion` | a version a branch, fork point, tag, merge base or live snapshot reads cannot be opened (pruned or damaged) | none |
//! | `UnpublishedVersion` | a write committed to Lance and crashed before it was published | restore the published version (as the next write would) |
//! | `OrphanLine` | a Lance branch (or a "zombie" `tree/<name>` directory) the catalog does not know | remove it |
//! | `OrphanTable` | a dataset no branch, tag, fork point or merge base reads (a table dropped everywhere, or a create that crashed) | drop the dataset |
//!
//! Everything the catalog never acknowledged is invisible to every view,
//! so removing it is safe. Run `fsck` on a quiescent store: with `repair`,
//! it must not race writes of the same process (another process cannot
//! open the store while this one holds it).

use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use crate::backend::Error;
use crate::branched::catalog::{CatalogState, Record, TableRef};
use crate::branched::core::Core;
use crate::branched::view::BranchedBackend;

/// One disagreement between the catalog and the datasets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FsckProblem {
    /// Operation `op` began and did not end.
    PendingOperation {
        /// The operation id.
        op: u64,
        /// What it is.
        what: String,
    },
    /// Branch `branch` names a parent the catalog does not have.
    DanglingParent {
        /// The branch.
        branch: String,
        /// Its missing parent.
        parent: String,
    },
    /// Tag `tag` was taken on a branch that is gone.
    DanglingTagBranch {
        /// The tag.
        tag: String,
        /// The missing branch.
        branch: String,
    },
    /// `owner` (a branch, `fork point of B` or `tag T`) reads a table whose
    /// dataset does not exist.
    MissingTable {
        /// Who reads it.
        owner: String,
        /// The table.
        table: String,
    },
    /// `owner` reads Lance branch `line` of `table`, unknown to the catalog.
    MissingLine {
        /// Who reads it.
        owner: String,
        /// The table.
        table: String,
        /// The Lance branch.
        line: String,
    },
    /// A pinned version cannot be opened.
    UnreadableVersion {
        /// Who reads it.
        owner: String,
        /// The table.
        table: String,
        /// The Lance branch (`None`: the main line).
        line: Option<String>,
        /// The version.
        version: u64,
        /// Why it cannot be opened.
        error: String,
    },
    /// A version was committed to the branch's own line but never published.
    UnpublishedVersion {
        /// The branch that owns the line.
        branch: String,
        /// The table.
        table: String,
        /// The Lance branch (`None`: the main line).
        line: Option<String>,
        /// The version the branch reads.
        published: u64,
        /// The newest version on the line.
        latest: u64,
    },
    /// A Lance branch the catalog does not know.
    OrphanLine {
        /// The table.
        table: String,
        /// The Lance branch.
        line: String,
    },
    /// A dataset nothing in the catalog reads.
    OrphanTable {
        /// The table.
        table: String,
    },
}

impl FsckProblem {
    /// Whether `fsck` with `repair` fixes this kind of problem.
    pub fn is_repairable(&self) -> bool {
        matches!(
            self,
            Self::PendingOperation { .. }
                | Self::UnpublishedVersion { .. }
                | Self::OrphanLine { .. }
                | Self::OrphanTable { .. }
        )
    }
}

impl std::fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line_of = |l: &Option<String>| l.clone().unwrap_or_else(|| "main line".to_string());
        match self {
            Self::PendingOperation { op, what } => write!(f, "operation {op} ({what}) never ended"),
            Self::DanglingParent { branch, parent } => {
                write!(f, "branch {branch:?} has a missing parent {parent:?}")
            }
            Self::DanglingTagBranch { tag, branch } => {
                write!(f, "tag {tag:?} names a missing branch {branch:?}")
            }
            Self::MissingTable { owner, table } => {
                write!(f, "{owner} reads table {table:?}, whose dataset is missing")
            }
            Self::MissingLine { owner, table, line } => write!(
                f,
                "{owner} reads Lance branch {line:?} of {table:?}, unknown to the catalog"
            ),
            Self::UnreadableVersion {
                owner,
                table,
                line,
                version,
                error,
            } => write!(
                f,
                "{owner} reads {table:?} v{version} on {}, which cannot be opened: {error}",
                line_of(line)
            ),
            Self::UnpublishedVersion {
                branch,
                table,
                line,
                published,
                latest,
            } => write!(
                f,
                "{table:?} on {} has unpublished versions {}..={latest} (branch {branch:?} reads v{published})",
                line_of(line),
                published + 1
            ),
            Self::OrphanLine { table, line } => {
                write!(
                    f,
                    "Lance branch {line:?} of {table:?} is unknown to the catalog"
                )
            }
            Self::OrphanTable { table } => {
                write!(
                    f,
                    "dataset {table:?} is read by no branch, tag or merge base"
                )
            }
        }
    }
}

/// The result of [`BranchedBackend::fsck`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Problems found and still present.
    pub problems: Vec<FsckProblem>,
    /// Problems found and repaired.
    pub repaired: Vec<FsckProblem>,
    /// How many branches, tags, datasets and pinned versions were checked.
    pub checked: FsckCounts,
}

/// What [`BranchedBackend::fsck`] looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckCounts {
    /// Branches in the catalog.
    pub branches: usize,
    /// Tags in the catalog.
    pub tags: usize,
    /// Datasets in the store.
    pub datasets: usize,
    /// Distinct pinned versions opened.
    pub versions: usize,
    /// Lance branches found on the datasets.
    pub lines: usize,
}

impl FsckReport {
    /// No problem is left (repaired ones do not count).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every `(owner, table, ref)` the catalog pins a version for.
fn pins(st: &CatalogState) -> Vec<(String, String, TableRef)> {
    let mut out = Vec::new();
    for (name, b) in &st.branches {
        for (t, r) in &b.tables {
            out.push((format!("branch {name:?}"), t.clone(), r.clone()));
        }
        for (t, r) in &b.fork_point {
            out.push((format!("the fork point of {name:?}"), t.clone(), r.clone()));
        }
    }
    for (name, tag) in &st.tags {
        for (t, r) in &tag.tables {
            out.push((format!("tag {name:?}"), t.clone(), r.clone()));
        }
    }
    for ((target, source), m) in &st.merge_bases {
        let owner = format!("the merge base of {source:?} into {target:?}");
        for (t, r) in m.target.iter().chain(m.source.iter()) {
            out.push((owner.clone(), t.clone(), r.clone()));
        }
    }
    out
}

fn describe(rec: &Record) -> String {
    match rec {
        Record::BeginLine { table, line, .. } => {
            format!("creating Lance branch {line:?} of {table:?}")
        }
        Record::BeginDelete { branches, .. } => format!("deleting branches {branches:?}"),
        Record::BeginMerge { target, source, .. } => format!("merging {source:?} into {target:?}"),
        Record::BeginCreate { table, .. } => format!("creating the dataset of {table:?}"),
        Record::BeginCollect { lines, tables, .. } => format!(
            "removing {} unreachable Lance branches and {} datasets",
            lines.len(),
            tables.len()
        ),
        other => format!("{other:?}"),
    }
}

impl BranchedBackend {
    /// Cross-check the catalog, the Lance datasets, their branches and
    /// every pinned version; with `repair`, fix what is safe to fix (see
    /// [`FsckProblem::is_repairable`]): finish or undo interrupted
    /// operations, restore unpublished versions, remove Lance branches and
    /// datasets that nothing in the catalog can reach.
    ///
    /// Run it on a quiescent store: an operation running in this process
    /// at the same time shows up as pending, and `repair` would undo it.
    /// With `repair`, interrupted operations are finished or undone first;
    /// the other repairs run once every check has read what it needs, so a
    /// check that fails (an I/O error) leaves them all undone.
    /// Before checking, it finishes the garbage collections that dropped
    /// snapshots no longer hold back (a collection a live snapshot holds
    /// back is not a problem).
    ///
    /// # Errors
    /// The store cannot be listed or a repair step fails.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(main: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
    /// let report = main.fsck(false).await?;
    /// for p in &report.problems {
    ///     eprintln!("{p}");
    /// }
    /// assert!(report.is_clean());
    /// # Ok(()) }
    /// ```
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        if repair {
            self.store_writable()?;
        }
        let core = &self.core;
        let _gate = if repair {
            Some(core.gate.write().await)
        } else {
            None
        };
        // Collections that dropped snapshots no longer hold back go on
        // first; one a live snapshot still holds back is no problem.
        core.run_pending_collects().await?;
        let mut found = pending_operations(core);
        if repair && !found.is_empty() {
            crate::branched::recovery::recover_pending(core).await?;
        }
        let st = core.catalog.read().clone();
        let datasets: BTreeSet<String> = core.inner.table_names().await?.into_iter().collect();
        let mut checked = FsckCounts {
            branches: st.branches.len(),
            tags: st.tags.len(),
            datasets: datasets.len(),
            ..FsckCounts::default()
        };
        found.extend(dangling_names(&st));
        found.extend(unreadable_pins(core, &st, &datasets, &mut checked).await?);
        found.extend(unpublished_versions(core, &st, &datasets).await?);
        found.extend(unreachable(core, &st, &datasets, &mut checked).await?);
        let mut report = FsckReport {
            checked,
            ..FsckReport::default()
        };
        for p in found {
            if repair && p.is_repairable() {
                repair_one(core, &st, &p).await?;
                report.repaired.push(p);
            } else {
                report.problems.push(p);
            }
        }
        Ok(report)
    }
}

/// The operations begun and not ended (collections a live snapshot holds
/// back excepted).
fn pending_operations(core: &Core) -> Vec<FsckProblem> {
    let st = core.catalog.read();
    let pending: Vec<(u64, String)> = st
        .pending
        .iter()
        .map(|(op, rec)| (*op, describe(rec)))
        .collect();
    drop(st);
    pending
        .into_iter()
        .filter(|(op, _)| !core.collect_deferred(*op))
        .map(|(op, what)| FsckProblem::PendingOperation { op, what })
        .collect()
}

/// Parents and tagged branches the catalog does not have.
fn dangling_names(st: &CatalogState) -> Vec<FsckProblem> {
    let mut found = Vec::new();
    for (name, b) in &st.branches {
        if let Some(parent) = &b.parent
            && !st.branches.contains_key(parent)
        {
            found.push(FsckProblem::DanglingParent {
                branch: name.clone(),
                parent: parent.clone(),
            });
        }
    }
    for (name, t) in &st.tags {
        if !st.branches.contains_key(&t.branch) {
            found.push(FsckProblem::DanglingTagBranch {
                tag: name.clone(),
                branch: t.branch.clone(),
            });
        }
    }
    found
}

/// Every version the catalog or a live snapshot pins, opened once: missing
/// datasets, unknown lines, unreadable versions.
async fn unreadable_pins(
    core: &Core,
    st: &CatalogState,
    datasets: &BTreeSet<String>,
    checked: &mut FsckCounts,
) -> Result<Vec<FsckProblem>> {
    let mut found = Vec::new();
    let mut opened = BTreeSet::new();
    let mut all = pins(st);
    let live = core.catalog.pinned().into_iter();
    all.extend(live.map(|(t, r)| ("a live snapshot".to_string(), t, r)));
    for (owner, table, r) in all {
        if !datasets.contains(&table) {
            found.push(FsckProblem::MissingTable { owner, table });
            continue;
        }
        if let Some(line) = &r.line
            && !st.lines.contains(&(table.clone(), line.clone()))
        {
            let line = line.clone();
            found.push(FsckProblem::MissingLine { owner, table, line });
            continue;
        }
        if !opened.insert((table.clone(), r.line.clone(), r.version)) {
            continue;
        }
        let at = core
            .inner
            .schema_at(&table, r.line.as_deref(), Some(r.version));
        if let Err(e) = at.await {
            found.push(FsckProblem::UnreadableVersion {
                owner,
                table,
                line: r.line.clone(),
                version: r.version,
                error: format!("{e:#}"),
            });
        }
    }
    checked.versions = opened.len();
    Ok(found)
}

/// Versions committed on a branch's own line and never published.
async fn unpublished_versions(
    core: &Core,
    st: &CatalogState,
    datasets: &BTreeSet<String>,
) -> Result<Vec<FsckProblem>> {
    let mut found = Vec::new();
    for (name, b) in &st.branches {
        for (table, r) in &b.tables {
            if !b.owns(r.line.as_deref()) || !datasets.contains(table) {
                continue;
            }
            let latest = match core.inner.latest_version(table, r.line.as_deref()).await {
                Ok(v) => v,
                Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => continue,
                Err(e) => return Err(e),
            };
            if latest > r.version {
                found.push(FsckProblem::UnpublishedVersion {
                    branch: name.clone(),
                    table: table.clone(),
                    line: r.line.clone(),
                    published: r.version,
                    latest,
                });
            }
        }
    }
    Ok(found)
}

/// Lance branches and datasets nothing can reach.
async fn unreachable(
    core: &Core,
    st: &CatalogState,
    datasets: &BTreeSet<String>,
    checked: &mut FsckCounts,
) -> Result<Vec<FsckProblem>> {
    let known = st.known_lines();
    let mut referenced = st.referenced_tables();
    referenced.extend(core.catalog.pinned().into_iter().map(|(t, _)| t));
    for rec in st.pending.values() {
        match rec {
            Record::BeginCreate { table, .. } | Record::BeginLine { table, .. } => {
                referenced.insert(table.clone());
            }
            Record::BeginCollect { tables, .. } => referenced.extend(tables.iter().cloned()),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for table in datasets {
        if !referenced.contains(table) {
            let table = table.clone();
            found.push(FsckProblem::OrphanTable { table });
            continue;
        }
        let lines = core.inner.list_lines(table).await?;
        checked.lines += lines.len();
        for line in lines {
            if !known.contains(&(table.clone(), line.clone())) {
                let table = table.clone();
                found.push(FsckProblem::OrphanLine { table, line });
            }
        }
    }
    Ok(found)
}

/// Repair one repairable problem found in state `st` (pending operations
/// were already finished or undone by recovery).
async fn repair_one(core: &Core, st: &CatalogState, p: &FsckProblem) -> Result<()> {
    match p {
        FsckProblem::UnpublishedVersion { branch, table, .. } => {
            if let Some(b) = st.branches.get(branch) {
                crate::branched::recovery::heal_table(core, branch, b.id, table).await?;
            }
        }
        FsckProblem::OrphanTable { table } => core.inner.purge_table(table).await?,
        FsckProblem::OrphanLine { table, line } => {
            core.inner.invalidate_cache(table);
            core.inner.drop_line(table, line).await?;
        }
        _ => {}
    }
    Ok(())
}
