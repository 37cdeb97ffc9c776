//! The shared core behind every branch view: the inner store, the catalog,
//! and the locks.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::backend::{BranchLines, Error};
use crate::branched::catalog::{BranchMeta, Catalog, CatalogState, Record, TableRef, line_owner};
use crate::failpoints::FailPoint;

/// State shared by all views of one store.
pub(crate) struct Core {
    pub(crate) inner: Arc<dyn BranchLines>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) fail: Arc<crate::failpoints::FailPoints>,
    /// Per (branch, table): serializes every change of the table on the branch.
    op_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per (branch, table): the user-visible write lock.
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per (branch id, table): a created line whose `EndLine` is logged
    /// with the next publish of the table (saving one log sync). Keyed by
    /// id: a branch deleted and re-created under its name never adopts it.
    pending_ends: Mutex<HashMap<(u64, String), Vec<Record>>>,
    /// Per table: serializes creating its dataset and purging it.
    dataset_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What recovery did when the store was opened.
    pub(crate) recovery: crate::branched::RecoveryReport,
    /// Multi-step operations run holding it shared; recovering on a live
    /// store holds it exclusively, so it only ever sees operations that
    /// failed or were cut, never one in flight.
    pub(crate) gate: tokio::sync::RwLock<()>,
}

fn key(branch: &str, table: &str) -> String {
    format!("{branch}\u{0}{table}")
}

fn lock_of(
    map: &Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    k: String,
) -> Arc<tokio::sync::Mutex<()>> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(k)
        .or_default()
        .clone()
}

impl Core {
    pub(crate) fn new(inner: Arc<dyn BranchLines>, catalog: Arc<Catalog>) -> Self {
        Self {
            inner,
            catalog,
            fail: Arc::new(crate::failpoints::FailPoints::default()),
            op_locks: Mutex::new(HashMap::new()),
            user_locks: Mutex::new(HashMap::new()),
            pending_ends: Mutex::new(HashMap::new()),
            dataset_locks: Mutex::new(HashMap::new()),
            recovery: Default::default(),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    pub(crate) fn op_lock(&self, branch: &str, table: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock_of(&self.op_locks, key(branch, table))
    }

    pub(crate) fn user_lock(&self, branch: &str, table: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock_of(&self.user_locks, key(branch, table))
    }

    /// The branch's metadata, checking it is still the branch of id `id`.
    pub(crate) fn branch(&self, name: &str, id: u64) -> Result<BranchMeta> {
        let st = self.catalog.read();
        match st.branches.get(name) {
            Some(b) if b.id == id => Ok(b.clone()),
            _ => Err(Error::BranchNotFound(name.to_string()).into()),
        }
    }

    /// Log a record from async code (the log sync blocks).
    pub(crate) async fn commit(&self, rec: Record) -> Result<u64> {
        let cat = self.catalog.clone();
        tokio::task::spawn_blocking(move || cat.commit(rec)).await?
    }

    /// Log the record `check` returns, checked under the commit lock.
    pub(crate) async fn commit_if(
        &self,
        check: impl FnOnce(&CatalogState) -> Result<Record> + Send + 'static,
    ) -> Result<(u64, Record)> {
        let cat = self.catalog.clone();
        tokio::task::spawn_blocking(move || cat.commit_if(check)).await?
    }

    /// [`Catalog::commit_collecting`] from async code (the log sync blocks).
    pub(crate) async fn commit_collecting(
        &self,
        check: impl FnOnce(
            &CatalogState,
            &[(String, TableRef)],
        ) -> Result<(Vec<Record>, BTreeSet<String>)>
        + Send
        + 'static,
        op: u64,
    ) -> Result<Vec<Record>> {
        let cat = self.catalog.clone();
        tokio::task::spawn_blocking(move || cat.commit_collecting(check, op)).await?
    }

    /// Take the op locks of every `(branch, table)` in `keys`, in one
    /// global order (so two callers never wait on each other in a cycle).
    pub(crate) async fn lock_all(
        &self,
        keys: &BTreeSet<(String, String)>,
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mut guards = Vec::with_capacity(keys.len());
        for (b, t) in keys {
            guards.push(self.op_lock(b, t).lock_owned().await);
        }
        guards
    }

    /// The lock serializing the creation and the purge of `table`'s dataset.
    pub(crate) fn dataset_lock(&self, table: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock_of(&self.dataset_locks, table.to_string())
    }

    /// The lowest version of a line anything still reads (catalog refs and
    /// live pins); retention keeps every version from there on.
    pub(crate) fn lowest_pinned(&self, table: &str, line: Option<&str>) -> Option<u64> {
        let pins = self.catalog.pinned();
        self.catalog.read().lowest_pinned(table, line, &pins)
    }

    /// Publish one table's new ref on a branch.
    pub(crate) async fn publish(
        &self,
        branch: &str,
        id: u64,
        table: &str,
        r: Option<TableRef>,
    ) -> Result<()> {
        self.publish_many(branch, id, vec![(table.to_string(), r)])
            .await
    }

    /// Publish new refs of several tables of a branch in one record, with
    /// the `EndLine` records of lines created for them.
    pub(crate) async fn publish_many(
        &self,
        branch: &str,
        id: u64,
        tables: Vec<(String, Option<TableRef>)>,
    ) -> Result<()> {
        let logged = self
            .publish_with(branch, id, tables, |_| Ok(vec![]), BTreeSet::new())
            .await?;
        self.run_collects(&logged).await
    }

    /// [`Core::publish_many`] plus the records `extra` makes from the state
    /// (checked under the commit lock), in one log write, with a
    /// [`Record::BeginCollect`] of what the publish made unreachable among
    /// `candidates`. Returns the records logged: the caller runs their
    /// collection ([`Core::run_collects`]) once it holds no dataset lock.
    /// Fails with [`Error::BranchNotFound`] (logging nothing) when `branch`
    /// is no longer the branch of id `id`.
    pub(crate) async fn publish_with(
        &self,
        branch: &str,
        id: u64,
        tables: Vec<(String, Option<TableRef>)>,
        extra: impl FnOnce(&CatalogState) -> Result<Vec<Record>> + Send + 'static,
        candidates: BTreeSet<String>,
    ) -> Result<Vec<Record>> {
        let ends: Vec<Record> = {
            let mut pe = self.pending_ends.lock().unwrap_or_else(|p| p.into_inner());
            tables
                .iter()
                .filter_map(|(t, _)| pe.remove(&(id, t.clone())))
                .flatten()
                .collect()
        };
        let name = branch.to_string();
        let collect_op = if candidates.is_empty() {
            0
        } else {
            self.catalog.fresh_id()
        };
        let ends2 = ends.clone();
        let inner = self.inner.clone();
        let check = move |st: &CatalogState, _: &[(String, TableRef)]| {
            match st.branches.get(&name) {
                Some(b) if b.id == id => {}
                _ => return Err(Error::BranchNotFound(name).into()),
            }
            if let Some(table) = foreign_commit(st, &name, id, &tables, inner.as_ref()) {
                return Err(Error::ConcurrentCommit { table }.into());
            }
            let mut recs = ends2;
            recs.push(Record::Publish {
                branch: name,
                tables,
            });
            recs.extend(extra(st)?);
            Ok((recs, candidates))
        };
        let logged = self.commit_collecting(check, collect_op).await;
        match logged {
            Ok(recs) => Ok(recs),
            Err(e) => {
                self.abandon(&ends).await;
                Err(e)
            }
        }
    }

    /// Undo what the parked end records of a publish that failed began: a
    /// line made for it is removed and its creation aborted, a dataset
    /// made for it is purged unless something reads it (the caller holds
    /// that dataset's lock). Best effort: what is left stays pending for
    /// recovery (and fsck) to finish.
    async fn abandon(&self, ends: &[Record]) {
        if ends.is_empty() {
            return;
        }
        // A writer another one took the store over from undoes nothing:
        // the new writer's recovery finishes or undoes what it began (and
        // may already have made a line of the same name its own).
        let cat = self.catalog.clone();
        if !matches!(
            tokio::task::spawn_blocking(move || cat.probe_live()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        // Lines first: a dataset is unreferenced only once they are gone.
        let mut ends: Vec<&Record> = ends.iter().collect();
        ends.sort_by_key(|r| matches!(r, Record::EndCreate { .. }));
        for end in ends {
            let (Record::EndLine { op } | Record::EndCreate { op }) = end else {
                continue;
            };
            let begun = self.catalog.read().pending.get(op).cloned();
            let undone = match begun {
                Some(Record::BeginLine { table, line, .. }) => {
                    self.inner.invalidate_cache(&table);
                    self.inner.drop_line(&table, &line).await.is_ok()
                }
                Some(Record::BeginCreate { table, .. }) => {
                    if self.dataset_read(&table) {
                        true // another branch's table lives in it: keep it
                    } else if self.dataset_referenced(&table, *op, true) {
                        false // another pending operation: left to recovery
                    } else {
                        self.inner.purge_table(&table).await.is_ok()
                    }
                }
                _ => false,
            };
            if undone {
                let _ = self.commit(Record::Abort { op: *op }).await;
            }
        }
    }

    /// Whether a ref, a live pin or a line of the catalog reads `table`'s
    /// dataset.
    fn dataset_read(&self, table: &str) -> bool {
        let pins = self.catalog.pinned();
        let st = self.catalog.read();
        st.refs().any(|(t, _)| t == table)
            || pins.iter().any(|(t, _)| t == table)
            || st.lines.iter().any(|l| l.0 == table)
    }

    /// Whether anything the catalog, a pending operation other than
    /// `except` or (`with_pins`) a live pin mentions reads or uses
    /// `table`'s dataset.
    pub(crate) fn dataset_referenced(&self, table: &str, except: u64, with_pins: bool) -> bool {
        let pins = if with_pins {
            self.catalog.pinned()
        } else {
            Vec::new()
        };
        let st = self.catalog.read();
        let collecting: BTreeSet<&(String, String)> = st
            .pending
            .values()
            .filter_map(|r| match r {
                Record::BeginCollect { lines, .. } => Some(lines),
                _ => None,
            })
            .flatten()
            .collect();
        st.refs().any(|(t, _)| t == table)
            || pins.iter().any(|(t, _)| t == table)
            || st
                .lines
                .iter()
                .any(|l| l.0 == table && !collecting.contains(l))
            || st.pending.iter().any(|(o, r)| {
                *o != except
                    && matches!(r, Record::BeginCreate { table: t, .. }
                        | Record::BeginLine { table: t, .. } if t == table)
            })
    }

    /// Undo the line a first write made for `table` on the branch of id
    /// `id` when that write publishes nothing (it failed, or changed
    /// nothing): the branch goes on reading where it read before.
    pub(crate) async fn abandon_parked(&self, id: u64, table: &str) {
        let ends = self
            .pending_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(id, table.to_string()))
            .unwrap_or_default();
        self.abandon(&ends).await;
    }

    /// Log the end of branch deletion `op`, whose Lance `lines` are gone,
    /// with a collection of what removing them left unreachable, in the
    /// same log write; then run it. A dataset a concurrent change (a tag
    /// deleted, a table dropped) stopped reading while the deletion's
    /// lines still lived on it has its last reader removed here, so this
    /// record is the change that must name it. Nothing if `op` already
    /// ended.
    pub(crate) async fn end_delete(&self, op: u64, lines: &[(String, String)]) -> Result<()> {
        let collect_op = self.catalog.fresh_id();
        let candidates: BTreeSet<String> = lines.iter().map(|(t, _)| t.clone()).collect();
        let check = move |st: &CatalogState, _: &[(String, TableRef)]| {
            if !st.pending.contains_key(&op) {
                return Ok((Vec::new(), BTreeSet::new()));
            }
            Ok((vec![Record::EndDelete { op }], candidates))
        };
        let logged = self.commit_collecting(check, collect_op).await?;
        self.run_collects(&logged).await
    }

    /// Run every [`Record::BeginCollect`] among `recs`; then, if a pin was
    /// dropped meanwhile, every pending collection it may have held back.
    pub(crate) async fn run_collects(&self, recs: &[Record]) -> Result<()> {
        for r in recs {
            if let Record::BeginCollect { op, lines, tables } = r {
                self.collect(*op, lines, tables).await?;
            }
        }
        if self.catalog.take_released() {
            self.run_pending_collects().await?;
        }
        Ok(())
    }

    /// Run every collection the catalog has pending.
    pub(crate) async fn run_pending_collects(&self) -> Result<()> {
        let pending: Vec<Record> = self
            .catalog
            .read()
            .pending
            .values()
            .filter(|r| matches!(r, Record::BeginCollect { .. }))
            .cloned()
            .collect();
        for r in pending {
            if let Record::BeginCollect { op, lines, tables } = r {
                self.collect(op, &lines, &tables).await?;
            }
        }
        Ok(())
    }

    /// Carry out collection `op`: remove the lines, then purge each dataset
    /// it names or its lines lived on that nothing reads any more (checked
    /// under its dataset lock), then log
    /// `EndCollect`. What a live pin (a snapshot) still reads is left, and
    /// the collection stays pending until the pin is dropped. Idempotent,
    /// so recovery runs it again after a crash.
    pub(crate) async fn collect(
        &self,
        op: u64,
        lines: &[(String, String)],
        tables: &[String],
    ) -> Result<()> {
        self.fail.check(FailPoint::CollectAfterBegin)?;
        let pins = self.catalog.pinned();
        let held = self.catalog.read().pinned_lines(&pins);
        let free: Vec<(String, String)> = lines
            .iter()
            .filter(|l| !held.contains(*l))
            .cloned()
            .collect();
        let mut deferred = free.len() < lines.len();
        crate::branched::recovery::drop_lines(self, &free).await?;
        // The datasets it names and those its lines lived on: a dataset can
        // lose its last reader to the lines a collection removes, also when
        // another change dropped the table while this collection waited.
        let mut datasets: BTreeSet<&String> = tables.iter().collect();
        datasets.extend(lines.iter().map(|(t, _)| t));
        for t in datasets {
            let lock = self.dataset_lock(t);
            let _g = lock.lock().await;
            if self.dataset_referenced(t, op, false) {
                continue;
            }
            if self.dataset_referenced(t, op, true) {
                deferred = true;
                continue;
            }
            self.inner.invalidate_cache(t);
            self.inner.purge_table(t).await?;
        }
        self.fail.check(FailPoint::CollectAfterDropBeforeEnd)?;
        if !deferred {
            self.commit(Record::EndCollect { op }).await?;
        }
        Ok(())
    }

    /// Whether `op` is a collection held back by a live pin, as
    /// [`collect`](Self::collect) decides: a line a pin holds, or a
    /// dataset it names *or one of its lines lived on* that a pin reads.
    pub(crate) fn collect_deferred(&self, op: u64) -> bool {
        let pins = self.catalog.pinned();
        let st = self.catalog.read();
        match st.pending.get(&op) {
            Some(Record::BeginCollect { lines, tables, .. }) => {
                let held = st.pinned_lines(&pins);
                let pinned = |t: &String| pins.iter().any(|(p, _)| p == t);
                lines.iter().any(|l| held.contains(l))
                    || tables.iter().any(pinned)
                    || lines.iter().any(|(t, _)| pinned(t))
            }
            _ => false,
        }
    }

    /// Make sure `branch` (of id `id`) has its own line for `table`, whose
    /// newest version is exactly the published one. Returns that line
    /// (`None`: the main line), its published version, and whether the
    /// line was made just now (its `EndLine` waits for the next publish).
    ///
    /// Steps: if the branch still reads another line, create its own line
    /// there (logged `BeginLine` → Lance branch → `EndLine`, then the inner
    /// store is notified); if its line has versions past the published one
    /// (a write that crashed before publishing), restore the published
    /// version first. The caller holds the op lock of (branch, table).
    pub(crate) async fn own_line(
        &self,
        branch: &str,
        id: u64,
        table: &str,
        current: &TableRef,
    ) -> Result<(Option<String>, u64, bool)> {
        if line_owner(current.line.as_deref()) == Some(id) {
            let own = current.line.clone();
            let latest = self.inner.latest_version(table, own.as_deref()).await?;
            if latest != current.version {
                // A write crashed after its Lance commit and before its
                // publish: bring the published contents back on top and
                // publish that (same contents, so nothing visible changes).
                let v = self
                    .inner
                    .restore_line(table, own.as_deref(), current.version)
                    .await?;
                let healed = TableRef {
                    line: own.clone(),
                    version: v,
                };
                self.publish(branch, id, table, Some(healed)).await?;
                return Ok((own, v, false));
            }
            return Ok((own, current.version, false));
        }
        if id == 0 {
            // Main reads another line: not a state this catalog produces.
            anyhow::bail!("main reads table {table:?} from a branch line; run fsck");
        }
        let line = self.make_line(id, table, current.clone()).await?;
        Ok((Some(line), current.version, true))
    }

    /// Create a new Lance line of `table` for the branch of id `id`,
    /// starting at `from`; returns its name (see
    /// [`CatalogState::new_line_name`]: a line others may read is never
    /// replaced). `BeginLine` is logged (synced) first; its `EndLine` goes
    /// out with the table's next publish. An earlier unfinished creation of
    /// the same line is aborted in the same log write and its remains
    /// removed (nothing ever read an unfinished line).
    pub(crate) async fn make_line(&self, id: u64, table: &str, from: TableRef) -> Result<String> {
        let op = self.catalog.fresh_id();
        let (t, f) = (table.to_string(), from.clone());
        let cat = self.catalog.clone();
        let (line, stale) = tokio::task::spawn_blocking(move || {
            let mut chosen = (String::new(), false);
            cat.commit_batch(|st| {
                let l = st.new_line_name(&t, id, op);
                let mut recs: Vec<Record> = st
                    .pending
                    .iter()
                    .filter(|(_, r)| {
                        matches!(r, Record::BeginLine { table, line, .. } if *table == t && *line == l)
                    })
                    .map(|(op, _)| Record::Abort { op: *op })
                    .collect();
                chosen = (l.clone(), !recs.is_empty());
                recs.push(Record::BeginLine {
                    op,
                    table: t,
                    line: l,
                    from: f,
                });
                Ok(recs)
            })
            .map(|_| chosen)
        })
        .await??;
        self.fail.check(FailPoint::LineAfterBegin)?;
        if stale {
            // A line left by an earlier, unpublished attempt is replaced.
            self.inner.drop_line(table, &line).await?;
        }
        self.fail.check(FailPoint::LineAfterDropOldBeforeCreate)?;
        if let Err(e) = self
            .inner
            .create_line(table, &line, from.line.as_deref(), from.version)
            .await
        {
            self.abandon(&[Record::EndLine { op }]).await;
            return Err(e);
        }
        self.fail.check(FailPoint::LineAfterCreateBeforeEnd)?;
        self.end_with_publish(id, table, Record::EndLine { op });
        self.inner.notify_table_created(table).await;
        Ok(line)
    }

    /// Log `end` with the next publish of `table` on the branch of id `id`.
    pub(crate) fn end_with_publish(&self, id: u64, table: &str, end: Record) {
        self.pending_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((id, table.to_string()))
            .or_default()
            .push(end);
    }

    /// Log the start of the creation of `table`'s dataset (synced), to be
    /// ended by the publish of `table` on the branch of id `id`; a crash in
    /// between makes recovery drop the dataset if nothing reads it. The
    /// caller holds the table's dataset lock.
    pub(crate) async fn begin_create(&self, id: u64, table: &str) -> Result<()> {
        let op = self.catalog.fresh_id();
        self.commit(Record::BeginCreate {
            op,
            table: table.to_string(),
        })
        .await?;
        self.end_with_publish(id, table, Record::EndCreate { op });
        Ok(())
    }
}

/// The first of `tables` whose new version on a line of branch `name` (id
/// `id`) was not made by this process alone: some version between what
/// the branch published there (or where its line started) and the new one
/// was committed by another process, such as a writer fenced a moment ago
/// whose Lance commit landed under ours. Publishing it would publish that
/// writer's change.
fn foreign_commit(
    st: &CatalogState,
    name: &str,
    id: u64,
    tables: &[(String, Option<TableRef>)],
    inner: &dyn BranchLines,
) -> Option<String> {
    let b = st.branches.get(name)?;
    tables.iter().find_map(|(t, r)| {
        let r = r.as_ref()?;
        if line_owner(r.line.as_deref()) != Some(id) {
            return None;
        }
        let base = match b.tables.get(t) {
            Some(prev) if prev.line == r.line => prev.version,
            _ => st.line_start(t, r.line.as_deref())?,
        };
        let own = inner.own_commits(t, r.line.as_deref(), base, r.version);
        (r.version > base && own == Some(false)).then(|| t.clone())
    })
}
