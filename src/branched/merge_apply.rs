//! Applying a planned merge: Lance commits on the target's own lines,
//! then one log write that publishes every table with the new merge bases
//! and ends the merge (or, on a failure, undoing what was applied).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Result;
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::SchemaRef;
use futures::StreamExt;

use crate::backend::{BranchLines, Error, ScanRequest, WriteMode};
use crate::branched::catalog::{CatalogState, Record, TableRef, line_owner};
use crate::branched::changes::key_filter;
use crate::branched::decide::Action;
use crate::branched::merge_plan::TablePlan;
use crate::branched::merge_rows::{RowMerge, count};
use crate::branched::report::TableMergeStats;
use crate::branched::stream::{Appending, append_chunks, chunked};
use crate::branched::view::BranchedBackend;
use crate::failpoints::FailPoint;

impl BranchedBackend {
    /// Apply planned changes on this branch's own lines and publish them,
    /// with the new merge bases, in one log write. The caller holds the op
    /// locks of every planned table. A failure (not a crash) undoes what
    /// was applied before it returns.
    pub(crate) async fn apply_plans(
        &self,
        source: &BranchedBackend,
        st: &CatalogState,
        plans: Vec<TablePlan>,
        scur: &BTreeMap<String, TableRef>,
    ) -> Result<Vec<(String, Option<u64>)>> {
        let op = self.core.catalog.fresh_id();
        let begin = Record::BeginMerge {
            op,
            target: self.name.clone(),
            source: source.name.clone(),
        };
        self.core.commit(begin).await?;
        self.core.fail.check(FailPoint::MergeAfterBegin)?;
        let names: Vec<String> = plans.iter().map(|p| p.table.clone()).collect();
        // Dropped tables may be left for garbage collection.
        let mut candidates = self.old_base_tables(st, source);
        candidates.extend(plans.iter().filter(|p| p.drop).map(|p| p.table.clone()));
        let datasets = self.lock_created(&plans).await;
        let (refs, published) = match self.apply_each(plans).await {
            Ok(x) => x,
            Err(e) => {
                if !crate::branched::is_crash(&e) {
                    self.undo_merge(op, &names).await;
                }
                return Err(e);
            }
        };
        self.core
            .fail
            .check(FailPoint::MergeAfterApplyBeforePublish)?;
        let end = self.merge_end(source, &refs, scur, Some(op));
        let logged = self
            .core
            .publish_with(&self.name, self.id, refs, end, candidates)
            .await;
        let logged = match logged {
            Ok(l) => l,
            Err(e) => {
                self.undo_merge(op, &names).await;
                return Err(e);
            }
        };
        drop(datasets);
        self.core.run_collects(&logged).await?;
        Ok(published)
    }

    /// A merge that failed part-way: its lines and versions are undone
    /// (best effort; recovery finishes what is left) and it is aborted.
    async fn undo_merge(&self, op: u64, tables: &[String]) {
        for t in tables {
            self.core.abandon_parked(self.id, t).await;
            if let Ok(current) = self.table_ref(t)
                && line_owner(current.line.as_deref()) == Some(self.id)
            {
                let _ = self.core.own_line(&self.name, self.id, t, &current).await;
            }
        }
        let _ = self.core.commit(Record::Abort { op }).await;
    }

    /// The dataset locks of the tables `plans` create, in plan order, held
    /// to the publish: no collection purges a dataset a merge is about to
    /// publish.
    async fn lock_created(&self, plans: &[TablePlan]) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mut held = Vec::new();
        for p in plans.iter().filter(|p| p.create.is_some()) {
            held.push(self.core.dataset_lock(&p.table).lock_owned().await);
        }
        held
    }

    /// Apply each plan as Lance commits on this branch's lines: the refs to
    /// publish and the new version per table.
    #[allow(clippy::type_complexity)]
    async fn apply_each(
        &self,
        plans: Vec<TablePlan>,
    ) -> Result<(Vec<(String, Option<TableRef>)>, Vec<(String, Option<u64>)>)> {
        let mut refs: Vec<(String, Option<TableRef>)> = Vec::new();
        for mut plan in plans {
            let t = plan.table.clone();
            let r = if plan.drop {
                None
            } else if let Some((from, schema)) = plan.create.take() {
                Some(self.create_from(&t, &from, schema).await?)
            } else if plan.actions.is_empty() && plan.rows.is_none() && plan.add_columns.is_none() {
                continue;
            } else {
                Some(self.apply_rows(plan).await?)
            };
            let applied = r.is_some();
            refs.push((t, r));
            if applied {
                self.core.fail.check(FailPoint::MergeAfterTableApplied)?;
            }
        }
        let published = refs
            .iter()
            .map(|(t, r)| (t.clone(), r.as_ref().map(|r| r.version)))
            .collect();
        Ok((refs, published))
    }

    /// Apply a plan's row changes (and new columns) on this branch's own
    /// line of its table; where the table now reads.
    async fn apply_rows(&self, mut plan: TablePlan) -> Result<TableRef> {
        let (inner, t) = (self.core.inner.as_ref(), plan.table.as_str());
        let current = self.table_ref(t)?;
        let (line, mut version, _) = self.core.own_line(&self.name, self.id, t, &current).await?;
        let l = line.as_deref();
        if let Some(fields) = plan.add_columns.take() {
            version = inner.add_null_columns_line(t, l, fields).await?;
        }
        let schema = inner.schema_at(t, l, None).await?;
        let batches = RowBatches::sort(std::mem::take(&mut plan.actions), &plan.key, &schema)?;
        if let Some(v) = batches.write(inner, t, l, &plan.key).await? {
            version = v;
        }
        if let Some(rows) = &plan.rows
            && let Some(v) = self.apply_batches(rows, &plan.stats, l, &schema).await?
        {
            version = v;
        }
        Ok(TableRef { line, version })
    }

    /// Decide a table's row changes again, a batch at a time, and apply
    /// each batch before reading the next; the version of the last commit.
    /// The batches must count what the plan counted.
    async fn apply_batches(
        &self,
        rows: &RowMerge,
        planned: &TableMergeStats,
        l: Option<&str>,
        schema: &SchemaRef,
    ) -> Result<Option<u64>> {
        let (inner, t) = (self.core.inner.as_ref(), rows.of.table.as_str());
        let (mut version, mut seen) = (None, TableMergeStats::default());
        let mut read = rows.batches(inner).await?;
        while let Some(batch) = read.next().await? {
            let d = rows.decide(inner, batch).await?;
            d.actions.iter().for_each(|a| count(&mut seen, a));
            if d.actions.is_empty() {
                continue;
            }
            let batches = RowBatches::sort(d.actions, &rows.of.key, schema)?;
            version = batches.write(inner, t, l, &rows.of.key).await?.or(version);
            self.core.fail.check(FailPoint::MergeAfterBatchApplied)?;
        }
        let counts = |s: &TableMergeStats| (s.inserted, s.updated, s.deleted);
        anyhow::ensure!(
            counts(&seen) == counts(planned),
            "the merge of {t:?} decided {:?} rows (inserted, updated, deleted) when applied, {:?} when planned",
            counts(&seen),
            counts(planned)
        );
        Ok(version)
    }

    /// Create `table`, unpublished, with the rows of the source's table at
    /// `from`, a chunk of [`ROWS_PER_COMMIT`](crate::branched::ROWS_PER_COMMIT)
    /// rows (one Lance commit) at a time.
    async fn create_from(
        &self,
        table: &str,
        from: &TableRef,
        schema: SchemaRef,
    ) -> Result<TableRef> {
        let inner = &self.core.inner;
        let req = ScanRequest {
            table: table.to_string(),
            line: from.line.clone(),
            version: Some(from.version),
            ..Default::default()
        };
        let rows = inner.scan_stream(req).await?;
        let read = Arc::new(AtomicU64::new(0));
        let mut chunks = chunked(rows, table, schema.clone(), read);
        let first = chunks.next().await.transpose()?.unwrap_or_default();
        let made = self.create_unpublished(table, first, schema).await?;
        let more = Appending { chunks, on: None };
        append_chunks(inner, table, made, more).await
    }

    /// Create `table` on a new line of this branch (or main's line) with
    /// `rows`, without publishing it. The caller holds the op lock and the
    /// dataset lock of `table`.
    pub(crate) async fn create_unpublished(
        &self,
        table: &str,
        rows: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<TableRef> {
        let inner = &self.core.inner;
        inner.invalidate_cache(table);
        if !inner.table_exists(table).await? {
            self.core.begin_create(self.id, table).await?;
            match inner.create_empty_table(table, schema.clone()).await {
                Ok(()) => {}
                Err(e) if matches!(Error::of(&e), Some(Error::TableExists(_))) => {}
                Err(e) => return Err(e),
            }
            inner.notify_table_created(table).await;
        }
        let line = if self.id == 0 {
            None
        } else {
            let from = TableRef {
                line: None,
                version: inner.latest_version(table, None).await?,
            };
            Some(self.core.make_line(self.id, table, from).await?)
        };
        let version = inner
            .overwrite_line(table, line.as_deref(), rows, schema)
            .await?;
        Ok(TableRef { line, version })
    }
}

/// A table's planned actions sorted into the Lance operations that apply
/// them: deletes by stable row id and by key, `merge_insert`s per set of
/// updated columns, one append.
#[derive(Default)]
struct RowBatches {
    inserts: Vec<RecordBatch>,
    deletes: Vec<RecordBatch>,
    by_id: Vec<(u64, RecordBatch)>,
    updates: BTreeMap<Vec<String>, Vec<RecordBatch>>,
}

impl RowBatches {
    /// Sort `actions` on a table keyed by `key` whose schema is now
    /// `schema`.
    fn sort(actions: Vec<Action>, key: &[String], schema: &SchemaRef) -> Result<Self> {
        let mut out = RowBatches::default();
        for a in actions {
            match a {
                Action::Insert(r) => out.inserts.push(fit_row(&r, schema)?),
                Action::Delete(r, Some(id)) => out.by_id.push((id, r)),
                Action::Delete(r, None) => out.deletes.push(r),
                Action::Replace(r, id) => {
                    out.inserts.push(fit_row(&r, schema)?);
                    match id {
                        Some(id) => out.by_id.push((id, r)),
                        None => out.deletes.push(r),
                    }
                }
                Action::Update(r, cols) => {
                    let projected = key_and(&r, key, cols)?;
                    let schema = projected.schema();
                    let names = schema.fields().iter().map(|f| f.name().clone()).collect();
                    out.updates.entry(names).or_default().push(projected);
                }
            }
        }
        Ok(out)
    }

    /// Apply the batches as Lance commits on line `l` of `t`; the version
    /// of the last commit, if any.
    async fn write(
        mut self,
        inner: &dyn BranchLines,
        t: &str,
        l: Option<&str>,
        key: &[String],
    ) -> Result<Option<u64>> {
        let mut version = None;
        if !self.by_id.is_empty() {
            // Found by id and checked by key; the rows whose id does not
            // lead to a row with the same key go by key below.
            let (v, left) = inner.delete_by_row_ids_line(t, l, key, &self.by_id).await?;
            version = v.or(version);
            let by_id = &self.by_id;
            self.deletes
                .extend(left.into_iter().map(|i| by_id[i].1.clone()));
        }
        if !self.deletes.is_empty()
            && let Some(sql) = key_filter(key, &self.deletes)?.to_sql()
        {
            version = Some(inner.delete_rows_line(t, l, &sql).await?);
        }
        let on: Vec<&str> = key.iter().map(String::as_str).collect();
        for (_, batches) in self.updates {
            let merged = arrow_select::concat::concat_batches(&batches[0].schema(), &batches)?;
            version = inner
                .merge_insert_line(t, l, &on, vec![merged])
                .await?
                .or(version);
        }
        if let Some(first) = self.inserts.first() {
            // One batch: Lance handles a thousand one-row batches several
            // times slower than the same rows at once.
            let all = arrow_select::concat::concat_batches(&first.schema(), &self.inserts)?;
            version = inner
                .write_line(t, l, vec![all], WriteMode::Append)
                .await?
                .or(version);
        }
        Ok(version)
    }
}

/// The key columns and `cols` of a single-row batch (an update of those
/// columns).
fn key_and(row: &RecordBatch, key: &[String], cols: Vec<String>) -> Result<RecordBatch> {
    let mut keep = key.to_vec();
    keep.extend(cols.into_iter().filter(|c| !key.contains(c)));
    let idx: Vec<usize> = keep
        .iter()
        .filter_map(|c| row.schema().index_of(c).ok())
        .collect();
    Ok(row.project(&idx)?)
}

/// Give a single-row batch exactly `schema`'s columns (missing nullable
/// ones as nulls).
fn fit_row(row: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match row.column_by_name(f.name()) {
            Some(a) => Ok(a.clone()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), row.num_rows())),
            None => Err(anyhow::anyhow!(
                "column {:?} missing from a merged row",
                f.name()
            )),
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
