//! A side's row changes read from Lance change sets a chunk at a time, by
//! key: what [`diff_stream`](crate::branched::BranchedBackend::diff_stream)
//! sends and what a merge in batches decides.
//!
//! For a table whose current version `c` grew from the base `b` on one
//! line: updated rows come a batch at a time, each paired with its base
//! row (taken by stable row id); inserted rows a batch at a time, each
//! matched by key against the deleted rows (a delete and an insert of one
//! key is an update); then the deleted rows nobody matched. Only the
//! deleted rows' keys and ids, and the rows whose key an update changed,
//! are held across chunks.

use std::collections::{BTreeMap, VecDeque};

use anyhow::Result;
use arrow_array::{RecordBatch, UInt32Array};
use futures::TryStreamExt;

use crate::backend::{BranchLines, RowChangeStreams};
use crate::branched::catalog::TableRef;
use crate::branched::changes::{KeyCodec, RowChange, rowids, same_row, without_rowid};

/// Rows per base-row lookup, and per chunk of deleted rows.
pub(crate) const CHUNK: usize = 8192;

/// One key's change on one side, with the stable row ids of its base row
/// (at the base version) and of its current row (at the current version).
#[derive(Debug, Clone)]
pub(crate) struct KeyChange {
    pub key: Vec<u8>,
    pub change: RowChange,
    pub base_id: Option<u64>,
    pub cur_id: Option<u64>,
}

/// The rows `at` a table's ref, and how they are keyed.
pub(crate) struct Rows<'a> {
    pub inner: &'a dyn BranchLines,
    pub table: &'a str,
    pub at: &'a TableRef,
    pub codec: &'a KeyCodec,
}

impl Rows<'_> {
    /// The rows with these stable row ids (with `_rowid`), a chunk at a
    /// time.
    pub(crate) async fn take(&self, ids: &[u64]) -> Result<Vec<RecordBatch>> {
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

    /// The rows with these ids (without `_rowid`), each with its key, by
    /// id.
    pub(crate) async fn by_id(&self, ids: &[u64]) -> Result<BTreeMap<u64, (Vec<u8>, RecordBatch)>> {
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

/// Where a [`KeyChanges`] reader is.
enum Stage {
    Updated,
    Inserted,
    Deleted { left: Vec<u64>, at: usize },
    Done,
}

/// A side's changes from `b` to `c` (on one line, or a line grown from
/// `b`), a chunk at a time.
pub(crate) struct KeyChanges<'a> {
    base: Rows<'a>,
    ch: RowChangeStreams,
    /// Keys of deleted base rows, with their ids: an insert of one of them
    /// is an update.
    gone: BTreeMap<Vec<u8>, u64>,
    /// Rows an update gave another key: their new rows count as inserts.
    rekeyed: VecDeque<RecordBatch>,
    stage: Stage,
}

impl<'a> KeyChanges<'a> {
    /// Start reading the changes of `table` from `b` to `c`.
    pub(crate) async fn open(
        inner: &'a dyn BranchLines,
        table: &'a str,
        codec: &'a KeyCodec,
        b: &'a TableRef,
        c: &TableRef,
    ) -> Result<Self> {
        let base = Rows {
            inner,
            table,
            at: b,
            codec,
        };
        let mut ch = inner
            .row_change_streams(table, c.line.as_deref(), b.version, c.version)
            .await?;
        let mut gone = BTreeMap::new();
        while let Some(ids) = ch.deleted.try_next().await? {
            for (id, (k, _)) in base.by_id(&ids).await? {
                gone.insert(k, id);
            }
        }
        Ok(Self {
            base,
            ch,
            gone,
            rekeyed: VecDeque::new(),
            stage: Stage::Updated,
        })
    }

    /// The next chunk of changes (possibly empty), or `None` at the end.
    /// Every changed key comes exactly once.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<KeyChange>>> {
        loop {
            match &mut self.stage {
                Stage::Updated => match self.ch.updated.try_next().await? {
                    Some(b) => return self.updates(&b).await.map(Some),
                    None => self.stage = Stage::Inserted,
                },
                Stage::Inserted => {
                    let next = match self.rekeyed.pop_front() {
                        Some(b) => Some(b),
                        None => self.ch.inserted.try_next().await?,
                    };
                    match next {
                        Some(b) => return self.inserts(&b).await.map(Some),
                        None => {
                            let left = std::mem::take(&mut self.gone).into_values().collect();
                            self.stage = Stage::Deleted { left, at: 0 };
                        }
                    }
                }
                Stage::Deleted { left, at } => {
                    if *at >= left.len() {
                        self.stage = Stage::Done;
                        continue;
                    }
                    let end = (*at + CHUNK).min(left.len());
                    let ids = left[*at..end].to_vec();
                    *at = end;
                    return deletes(&self.base, &ids).await.map(Some);
                }
                Stage::Done => return Ok(None),
            }
        }
    }

    /// One batch of updated rows, each paired with its base row by id; a
    /// row whose key changed leaves its base key to the deletes and its new
    /// row to the inserts.
    async fn updates(&mut self, batch: &RecordBatch) -> Result<Vec<KeyChange>> {
        let ids = rowids(batch);
        let mut old = self.base.by_id(&ids).await?;
        let cur = without_rowid(batch)?;
        let keys = self.base.codec.keys(&cur)?;
        let (mut out, mut moved) = (Vec::new(), Vec::new());
        for (i, (k, id)) in keys.into_iter().zip(&ids).enumerate() {
            match old.remove(id) {
                Some((bk, was)) if bk == k => {
                    let row = cur.slice(i, 1);
                    if same_row(&was, &row) {
                        continue;
                    }
                    out.push(KeyChange {
                        key: k,
                        change: RowChange {
                            base: Some(was),
                            cur: Some(row),
                        },
                        base_id: Some(*id),
                        cur_id: Some(*id),
                    });
                }
                other => {
                    if let Some((bk, _)) = other {
                        self.gone.insert(bk, *id);
                    }
                    moved.push(i as u32);
                }
            }
        }
        if !moved.is_empty() {
            let idx = UInt32Array::from(moved);
            let rows = arrow_select::take::take_record_batch(batch, &idx)?;
            self.rekeyed.push_back(rows);
        }
        Ok(out)
    }

    /// One batch of inserted rows: an insert of a deleted key is an update
    /// (or nothing, when the row is the same again).
    async fn inserts(&mut self, batch: &RecordBatch) -> Result<Vec<KeyChange>> {
        let cur = without_rowid(batch)?;
        let keys = self.base.codec.keys(&cur)?;
        let ids = rowids(batch);
        let back: Vec<u64> = keys
            .iter()
            .filter_map(|k| self.gone.get(k).copied())
            .collect();
        let mut old = self.base.by_id(&back).await?;
        let mut out = Vec::new();
        for (i, k) in keys.into_iter().enumerate() {
            let row = cur.slice(i, 1);
            let was = self
                .gone
                .remove(&k)
                .and_then(|id| old.remove(&id).map(|(_, r)| (id, r)));
            if was.as_ref().is_some_and(|(_, w)| same_row(w, &row)) {
                continue;
            }
            let (base_id, base) = was.unzip();
            out.push(KeyChange {
                key: k,
                change: RowChange {
                    base,
                    cur: Some(row),
                },
                base_id,
                cur_id: ids.get(i).copied(),
            });
        }
        Ok(out)
    }
}

/// Deleted base rows no insert took up.
async fn deletes(base: &Rows<'_>, ids: &[u64]) -> Result<Vec<KeyChange>> {
    Ok(base
        .by_id(ids)
        .await?
        .into_iter()
        .map(|(id, (key, row))| KeyChange {
            key,
            change: RowChange {
                base: Some(row),
                cur: None,
            },
            base_id: Some(id),
            cur_id: None,
        })
        .collect())
}
