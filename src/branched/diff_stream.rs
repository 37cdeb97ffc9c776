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
use arrow_array::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{BranchLines, ScanRequest};
use crate::branched::catalog::{CatalogState, TableRef};
use crate::branched::changes::{
    KeyCodec, changed_columns, grew_from, schema_of, side_changes, table_codec, without_rowid,
};
use crate::branched::diff::{TableChange, differing, to_table_diff, with_change_columns};
use crate::branched::key_changes::{KeyChange, KeyChanges};
use crate::branched::report::MergeOptions;
use crate::branched::view::BranchedBackend;

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
            let b = all_as(&b, kind)?;
            any |= n > 0;
            if !self.send(change, b).await {
                return Ok(false);
            }
        }
        if !any {
            // An empty table created or dropped: one empty batch says so.
            let schema = schema_of(inner, &self.table, r).await?;
            let empty = all_as(&RecordBatch::new_empty(schema), kind)?;
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

/// Every row of `batch` (without `_rowid`) as one kind of change, with
/// the `_change` and (empty) `_changed_columns` columns.
fn all_as(batch: &RecordBatch, kind: &str) -> Result<RecordBatch> {
    let n = batch.num_rows();
    with_change_columns(
        &without_rowid(batch)?,
        vec![kind; n],
        vec![String::new(); n],
    )
}

/// One chunk of a table's changes as `diff_stream` sends it: the inserted
/// and updated rows, then the deleted ones (each group in the schema of
/// its version).
fn chunk_batches(chunk: &[KeyChange]) -> Result<Vec<RecordBatch>> {
    let (mut now, mut kinds, mut cols, mut gone) = (vec![], vec![], vec![], vec![]);
    for kc in chunk {
        match (&kc.change.base, &kc.change.cur) {
            (Some(was), Some(row)) => {
                now.push(row);
                kinds.push("update");
                cols.push(changed_columns(was, row).join(","));
            }
            (None, Some(row)) => {
                now.push(row);
                kinds.push("insert");
                cols.push(String::new());
            }
            (Some(was), None) => gone.push(was),
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    if let Some(first) = now.first() {
        let rows = arrow_select::concat::concat_batches(&first.schema(), now.iter().copied())?;
        out.push(with_change_columns(&rows, kinds, cols)?);
    }
    if let Some(first) = gone.first() {
        let rows = arrow_select::concat::concat_batches(&first.schema(), gone.iter().copied())?;
        out.push(all_as(&rows, "delete")?);
    }
    Ok(out)
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
    let mut changes = KeyChanges::open(inner, table, codec, b, c).await?;
    while let Some(chunk) = changes.next().await? {
        for rows in chunk_batches(&chunk)? {
            if !out.send(TableChange::Modified, rows).await {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
