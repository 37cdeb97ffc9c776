//! The shared core behind every branch view: the inner store, the catalog,
//! and the locks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::backend::{BranchLines, Error};
use crate::branched::catalog::{BranchMeta, Catalog, CatalogState, Record, TableRef, line_name};

/// State shared by all views of one store.
pub(crate) struct Core {
    pub(crate) inner: Arc<dyn BranchLines>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) fail: Arc<crate::failpoints::FailPoints>,
    /// Per (branch, table): serializes every change of the table on the branch.
    op_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per (branch, table): the user-visible write lock.
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per (branch, table): a created line whose `EndLine` is logged with
    /// the next publish of the table (saving one log sync).
    pending_ends: Mutex<HashMap<String, Vec<Record>>>,
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

    /// Publish one table's new ref on a branch.
    pub(crate) async fn publish(
        &self,
        branch: &str,
        table: &str,
        r: Option<TableRef>,
    ) -> Result<()> {
        self.publish_many(branch, vec![(table.to_string(), r)])
            .await
    }

    /// Publish new refs of several tables of a branch in one record, with
    /// the `EndLine` records of lines created for them.
    pub(crate) async fn publish_many(
        &self,
        branch: &str,
        tables: Vec<(String, Option<TableRef>)>,
    ) -> Result<()> {
        self.publish_with(branch, tables, vec![]).await
    }

    /// [`Core::publish_many`] plus `extra` records, in one log write.
    pub(crate) async fn publish_with(
        &self,
        branch: &str,
        tables: Vec<(String, Option<TableRef>)>,
        extra: Vec<Record>,
    ) -> Result<()> {
        let mut recs: Vec<Record> = {
            let mut pe = self.pending_ends.lock().unwrap_or_else(|p| p.into_inner());
            tables
                .iter()
                .filter_map(|(t, _)| pe.remove(&key(branch, t)))
                .flatten()
                .collect()
        };
        recs.push(Record::Publish {
            branch: branch.to_string(),
            tables,
        });
        recs.extend(extra);
        let cat = self.catalog.clone();
        tokio::task::spawn_blocking(move || cat.commit_batch(|_| Ok(recs))).await??;
        Ok(())
    }

    /// Make sure `branch` (of id `id`) has its own line for `table`, whose
    /// newest version is exactly the published one. Returns that line
    /// (`None`: the main line) and its published version.
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
    ) -> Result<(Option<String>, u64)> {
        let own = line_name(id);
        if current.line == own {
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
                self.publish(branch, table, Some(healed)).await?;
                return Ok((own, v));
            }
            return Ok((own, current.version));
        }
        let Some(line) = own else {
            // Main reads another line: not a state this catalog produces.
            anyhow::bail!("main reads table {table:?} from a branch line; run fsck");
        };
        self.make_line(branch, table, &line, current.clone())
            .await?;
        Ok((Some(line), current.version))
    }

    /// (Re)create Lance line `line` of `table` (for `branch`) starting at
    /// `from`. `BeginLine` is logged (synced) first; its `EndLine` goes out
    /// with the table's next publish. An earlier unfinished creation of the
    /// same line is aborted in the same log write.
    pub(crate) async fn make_line(
        &self,
        branch: &str,
        table: &str,
        line: &str,
        from: TableRef,
    ) -> Result<()> {
        let op = self.catalog.fresh_id();
        let (t, l, f) = (table.to_string(), line.to_string(), from.clone());
        let cat = self.catalog.clone();
        let existed = tokio::task::spawn_blocking(move || {
            let mut existed = false;
            cat.commit_batch(|st| {
                existed = st.known_lines().contains(&(t.clone(), l.clone()));
                let mut recs: Vec<Record> = st
                    .pending
                    .iter()
                    .filter(|(_, r)| {
                        matches!(r, Record::BeginLine { table, line, .. } if *table == t && *line == l)
                    })
                    .map(|(op, _)| Record::Abort { op: *op })
                    .collect();
                recs.push(Record::BeginLine {
                    op,
                    table: t,
                    line: l,
                    from: f,
                });
                Ok(recs)
            })
            .map(|_| existed)
        })
        .await??;
        self.fail.check("line::after_begin")?;
        if existed {
            // A line left by an earlier, unpublished attempt is replaced.
            self.inner.drop_line(table, line).await?;
        }
        self.fail.check("line::after_drop_old_before_create")?;
        self.inner
            .create_line(table, line, from.line.as_deref(), from.version)
            .await?;
        self.fail.check("line::after_create_before_end")?;
        self.end_with_publish(branch, table, Record::EndLine { op });
        self.inner.notify_table_created(table).await;
        Ok(())
    }

    /// Log `end` with the next publish of `table` on `branch`.
    pub(crate) fn end_with_publish(&self, branch: &str, table: &str, end: Record) {
        self.pending_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key(branch, table))
            .or_default()
            .push(end);
    }

    /// Log the start of the creation of `table`'s dataset (synced), to be
    /// ended by the publish of `table` on `branch`; a crash in between
    /// makes recovery drop the dataset if nothing reads it.
    pub(crate) async fn begin_create(&self, branch: &str, table: &str) -> Result<()> {
        let op = self.catalog.fresh_id();
        self.commit(Record::BeginCreate {
            op,
            table: table.to_string(),
        })
        .await?;
        self.end_with_publish(branch, table, Record::EndCreate { op });
        Ok(())
    }
}
