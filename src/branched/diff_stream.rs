//! [`BranchedBackend::diff_stream`]: a diff as a stream of Arrow batches,
//! in memory bounded by the batch size and the keys of deleted rows.
//!
//! For a table whose current version grew from the base on one line (the
//! common case: a branch's changes since its fork or last merge), the
//! change sets are read as streams: updated rows a batch at a time, each
//! paired with its base row (taken by stable row id); inserted rows a batch
//! at a time, each matched by key against the deleted rows (a delete and an
//! insert of one key is an update); then the deleted rows nobody matched.
//! Only the deleted rows' keys and ids, and the rows whose key an update
//! changed, are held across batches. Other tables (created, dropped, or
//! compared in full) are read as [`diff`](BranchedBackend::diff) reads them.

use std::collections::BTreeMap;

use anyhow::Result;
use arrow_array::{RecordBatch, UInt32Array};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{BranchLines, ScanRequest};
use crate::branched::catalog::{CatalogState, TableRef};
use crate::branched::changes::{
    KeyCodec, changed_columns, grew_from, rowids, same_row, schema_of, side_changes, table_codec,
    without_rowid,
};
use crate::branched::diff::{TableChange, differing, to_table_diff, with_change_columns};
use crate::branched::report::MergeOptions;
use crate::branched::view::BranchedBackend;

/// Rows per base-row lookup.
const CHUNK: usize = 8192;

/// One batch of a table's changes from
/// [`diff_stream`](BranchedBackend::diff_stream): the changed rows with the
/// `_change` and `_changed_columns` columns of [`TableDiff`](crate::branched::TableDiff).
#[derive(Debug, Clone)]
pub struct DiffBatch {
    /// The table.
    pub table: String,
    /// How the table differs.
    pub change: TableChange,
    /// Changed rows.
    pub rows: RecordBatch,
}

type Sender = tokio::sync::mpsc::Sender<Result<DiffBatch>>;

impl BranchedBackend {
    /// [`diff`](Self::diff) as a stream of batches, for changes too big to
    /// hold: what `other` changed since the merge base, table by table.
    /// The versions compared stay readable until the stream is dropped.
    /// Rows come in no particular order within a table.
    ///
    /// # Errors
    /// As [`diff`](Self::diff), at once or as an item of the stream.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(main: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
    /// use futures::TryStreamExt;
    /// let feature = main.branch("feature")?;
    /// let mut changes = main.diff_stream(&feature, &Default::default()).await?;
    /// while let Some(b) = changes.try_next().await? {
    ///     println!("{}: {} changed rows", b.table, b.rows.num_rows());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn diff_stream(
        &self,
        other: &BranchedBackend,
        opts: &MergeOptions,
    ) -> Result<BoxStream<'static, Result<DiffBatch>>> {
        let (st, (base, cur), pin) = self.pinned_state(|st| {
            let (_, base) = self.merge_bases(st, other)?;
            Ok((base, other.tables_in(st)?))
        })?;
        let inner = self.core.inner.clone();
        let opts = opts.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let _pin = pin;
            if let Err(e) = produce(inner.as_ref(), &st, &base, &cur, &opts, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
                .boxed(),
        )
    }
}

/// Send every changed table's batches; stops early (`Ok`) once the
/// receiver is gone.
async fn produce(
    inner: &dyn BranchLines,
    st: &CatalogState,
    base: &BTreeMap<String, TableRef>,
    cur: &BTreeMap<String, TableRef>,
    opts: &MergeOptions,
    tx: &Sender,
) -> Result<()> {
    for (t, b, c, either) in differing(base, cur) {
        let codec = table_codec(inner, t, either, opts.keys.get(t)).await?;
        let out = Out {
            table: t.clone(),
            tx,
        };
        let go_on = match (b, c) {
            (None, Some(c)) => out.whole(inner, TableChange::Created, c, "insert").await?,
            (Some(b), None) => out.whole(inner, TableChange::Dropped, b, "delete").await?,
            (Some(b), Some(c)) if grew_from(st, t, b, c) => {
                changed_rows(inner, &codec, &out, t, b, c).await?
            }
            (Some(b), Some(c)) => {
                let side = side_changes(inner, st, t, &codec, Some(b), Some(c)).await?;
                let diff = to_table_diff(t, TableChange::Modified, &side)?;
                let mut go_on = true;
                for rows in diff.rows {
                    go_on = go_on && out.send(TableChange::Modified, rows).await;
                }
                go_on
            }
            (None, None) => true,
        };
        if !go_on {
            return Ok(());
        }
    }
    Ok(())
}

/// Where one table's batches go.
struct Out<'a> {
    table: String,
    tx: &'a Sender,
}

impl Out<'_> {
    /// Send a batch; `false` once nobody listens.
    async fn send(&self, change: TableChange, rows: RecordBatch) -> bool {
        if rows.num_rows() == 0 {
            return true;
        }
        let b = DiffBatch {
            table: self.table.clone(),
            change,
            rows,
        };
        self.tx.send(Ok(b)).await.is_ok()
    }

    /// Every row of `r` as one kind of change (a created or dropped table).
    async fn whole(
        &self,
        inner: &dyn BranchLines,
        change: TableChange,
        r: &TableRef,
        kind: &'static str,
    ) -> Result<bool> {
        let mut any = false;
        let mut rows = inner
            .scan_stream(ScanRequest {
                table: self.table.clone(),
                line: r.line.clone(),
                version: Some(r.version),
                ..Default::default()
            })
            .await?;
        while let Some(b) = rows.try_next().await? {
            let n = b.num_rows();
            let b = annotated(&b, vec![kind; n], vec![String::new(); n])?;
            any |= n > 0;
            if !self.send(change, b).await {
                return Ok(false);
            }
        }
        if !any {
            // An empty table created or dropped: one empty batch says so.
            let schema = schema_of(inner, &self.table, r).await?;
            let empty = annotated(&RecordBatch::new_empty(schema), vec![], vec![])?;
            let b = DiffBatch {
                table: self.table.clone(),
                change,
                rows: empty,
            };
            return Ok(self.tx.send(Ok(b)).await.is_ok());
        }
        Ok(true)
    }
}

/// `batch` (without `_rowid`) with the `_change` and `_changed_columns`
/// columns.
fn annotated(batch: &RecordBatch, kinds: Vec<&str>, cols: Vec<String>) -> Result<RecordBatch> {
    with_change_columns(&without_rowid(batch)?, kinds, cols)
}

/// The rows at `indices` of `batch`.
fn rows_at(batch: &RecordBatch, indices: &[u32]) -> Result<RecordBatch> {
    let idx = UInt32Array::from(indices.to_vec());
    Ok(arrow_select::take::take_record_batch(batch, &idx)?)
}

/// The base side of a table's changes: where its rows are read, and how
/// they are keyed.
struct Base<'a> {
    inner: &'a dyn BranchLines,
    table: &'a str,
    at: &'a TableRef,
    codec: &'a KeyCodec,
}

impl Base<'_> {
    /// The base rows with these stable row ids (with `_rowid`), a chunk at
    /// a time.
    async fn take(&self, ids: &[u64]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let line = self.at.line.as_deref();
            let rows = self
                .inner
                .take_rows_at(self.table, line, self.at.version, chunk)
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The base rows with these ids, each with its key, by id.
    async fn by_id(&self, ids: &[u64]) -> Result<BTreeMap<u64, (Vec<u8>, RecordBatch)>> {
        let mut out = BTreeMap::new();
        for r in self.take(ids).await? {
            let rows = without_rowid(&r)?;
            let keys = self.codec.keys(&rows)?;
            for (i, (k, id)) in keys.into_iter().zip(rowids(&r)).enumerate() {
                out.insert(id, (k, rows.slice(i, 1)));
            }
        }
        Ok(out)
    }
}

/// A table's changes from `b` to `c` (on one line, or a line grown from
/// `b`), streamed from the change sets.
async fn changed_rows(
    inner: &dyn BranchLines,
    codec: &KeyCodec,
    out: &Out<'_>,
    table: &str,
    b: &TableRef,
    c: &TableRef,
) -> Result<bool> {
    let base = Base {
        inner,
        table,
        at: b,
        codec,
    };
    let mut ch = inner
        .row_change_streams(table, c.line.as_deref(), b.version, c.version)
        .await?;
    // Keys of the deleted base rows, with their ids: an insert of one of
    // them is an update.
    let mut gone: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    while let Some(ids) = ch.deleted.try_next().await? {
        for (id, (k, _)) in base.by_id(&ids).await? {
            gone.insert(k, id);
        }
    }
    // Rows an update gave another key: their new rows count as inserts.
    let mut rekeyed: Vec<RecordBatch> = Vec::new();
    while let Some(batch) = ch.updated.try_next().await? {
        if !updates(&base, out, &batch, &mut gone, &mut rekeyed).await? {
            return Ok(false);
        }
    }
    let mut inserted = futures::stream::iter(rekeyed.into_iter().map(Ok)).chain(ch.inserted);
    while let Some(batch) = inserted.try_next().await? {
        if !inserts(&base, out, &batch, &mut gone).await? {
            return Ok(false);
        }
    }
    // The deleted rows no insert took up, a chunk at a time.
    let left: Vec<u64> = gone.into_values().collect();
    for chunk in left.chunks(CHUNK) {
        for r in base.take(chunk).await? {
            let n = r.num_rows();
            let r = annotated(&r, vec!["delete"; n], vec![String::new(); n])?;
            if !out.send(TableChange::Modified, r).await {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// One batch of updated rows: each paired with its base row by id; a row
/// whose key changed leaves its base key to the deletes (`gone`) and its
/// new row to the inserts (`rekeyed`).
async fn updates(
    base: &Base<'_>,
    out: &Out<'_>,
    batch: &RecordBatch,
    gone: &mut BTreeMap<Vec<u8>, u64>,
    rekeyed: &mut Vec<RecordBatch>,
) -> Result<bool> {
    let ids = rowids(batch);
    let old = base.by_id(&ids).await?;
    let cur = without_rowid(batch)?;
    let keys = base.codec.keys(&cur)?;
    let (mut pick, mut kinds, mut cols, mut moved) = (vec![], vec![], vec![], vec![]);
    for (i, (k, id)) in keys.iter().zip(&ids).enumerate() {
        let row = cur.slice(i, 1);
        match old.get(id) {
            Some((bk, was)) if bk == k => {
                if same_row(was, &row) {
                    continue;
                }
                pick.push(i as u32);
                kinds.push("update");
                cols.push(changed_columns(was, &row).join(","));
            }
            other => {
                if let Some((bk, _)) = other {
                    gone.insert(bk.clone(), *id);
                }
                moved.push(i as u32);
            }
        }
    }
    if !moved.is_empty() {
        rekeyed.push(rows_at(batch, &moved)?);
    }
    let rows = annotated(&rows_at(&cur, &pick)?, kinds, cols)?;
    Ok(out.send(TableChange::Modified, rows).await)
}

/// One batch of inserted rows: an insert of a deleted key is an update
/// (or nothing, when the row is the same again).
async fn inserts(
    base: &Base<'_>,
    out: &Out<'_>,
    batch: &RecordBatch,
    gone: &mut BTreeMap<Vec<u8>, u64>,
) -> Result<bool> {
    let cur = without_rowid(batch)?;
    let keys = base.codec.keys(&cur)?;
    let back: Vec<u64> = keys.iter().filter_map(|k| gone.get(k).copied()).collect();
    let old = base.by_id(&back).await?;
    let (mut pick, mut kinds, mut cols) = (vec![], vec![], vec![]);
    for (i, k) in keys.iter().enumerate() {
        let row = cur.slice(i, 1);
        let was = gone.remove(k).and_then(|id| old.get(&id)).map(|(_, r)| r);
        match was {
            Some(was) if same_row(was, &row) => continue,
            Some(was) => {
                kinds.push("update");
                cols.push(changed_columns(was, &row).join(","));
            }
            None => {
                kinds.push("insert");
                cols.push(String::new());
            }
        }
        pick.push(i as u32);
    }
    let rows = annotated(&rows_at(&cur, &pick)?, kinds, cols)?;
    Ok(out.send(TableChange::Modified, rows).await)
}
