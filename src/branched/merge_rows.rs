//! The row merge of a table both sides hold, a batch of keys at a time.
//!
//! The source's changes are read in batches (from Lance change sets where
//! its current version grew from its base, else compared in full and held).
//! For each batch, the target's changes of the same keys are looked up
//! (the target's changed keys are held with the stable row ids of their
//! rows, and the rows are taken by id), the target's rows are read by key
//! where the sides' bases differ, and [`decide_key`] decides every key.
//! A merge reads the batches twice when they are more than one: once to
//! find the conflicts, once to apply. Both reads are of pinned versions,
//! so they decide alike.

use std::collections::BTreeMap;

use anyhow::Result;
use arrow_array::RecordBatch;

use crate::backend::{BranchLines, ScanRequest};
use crate::branched::catalog::{CatalogState, TableRef};
use crate::branched::changes::{
    KeyCodec, RowChange, SideChanges, grew_from, index_rows, key_filter, side_changes,
};
use crate::branched::decide::{Action, Counted, Target, decide_key};
use crate::branched::key_changes::{KeyChange, KeyChanges, Rows};
use crate::branched::report::{Conflict, ConflictKind, ConflictPolicy, TableMergeStats, render};

/// Count `a` in `stats`.
pub(crate) fn count(stats: &mut TableMergeStats, a: &Action) {
    match a.counted() {
        Counted::Inserted => stats.inserted += 1,
        Counted::Updated => stats.updated += 1,
        Counted::Deleted => stats.deleted += 1,
    }
}

/// The target's changes of a table, for lookups by key.
enum Ours {
    /// Held whole: compared in full, or the table is new since the base.
    Held(SideChanges),
    /// The keys the target changed from `b` to `c`, with the stable row ids
    /// of each key's row at `b` and at `c`.
    Ids {
        b: TableRef,
        c: TableRef,
        ids: BTreeMap<Vec<u8>, RowIds>,
    },
}

/// The stable row ids of a key's row at a side's base and now.
type RowIds = (Option<u64>, Option<u64>);

/// How the source's changes of a table are read.
enum Theirs {
    /// Held whole (compared in full, or new since the base).
    Held(SideChanges),
    /// Read from the change sets from `b` to `c`.
    Sets { b: TableRef, c: TableRef },
}

/// One batch's decisions: actions on the target, and conflicts with the
/// encoded key they are about.
#[derive(Default)]
pub(crate) struct Decided {
    pub actions: Vec<Action>,
    pub conflicts: Vec<(Vec<u8>, Conflict)>,
}

/// The sides of one table's row merge.
pub(crate) struct Sides<'a> {
    pub st: &'a CatalogState,
    /// The target's base and current ref.
    pub target: (Option<&'a TableRef>, &'a TableRef),
    /// The source's base and current ref.
    pub source: (Option<&'a TableRef>, &'a TableRef),
}

/// Everything a table's row merge decides from, batch by batch.
pub(crate) struct RowMerge {
    /// The table, its key and how rows are matched and decided.
    pub of: RowMergeOf,
    /// The sides' bases differ: the target's row of a key it did not
    /// change is read by key at `tc`.
    tc: Option<TableRef>,
    theirs: Theirs,
    ours: Ours,
    /// A side was compared in full.
    pub full_compare: bool,
}

/// The inputs of [`RowMerge::open`] other than the sides.
pub(crate) struct RowMergeOf {
    pub table: String,
    pub key: Vec<String>,
    /// Keys of the target's schema.
    pub codec: KeyCodec,
    /// Keys of the source's schema.
    pub scodec: KeyCodec,
    pub policy: ConflictPolicy,
    /// The target row is the source's base row and may be replaced whole.
    pub whole: bool,
    /// Changed keys decided and applied at a time.
    pub batch: usize,
}

impl RowMerge {
    /// Read what a row merge needs up front: the target's changed keys
    /// (with their row ids, or whole where compared in full) and, where
    /// the source's changes are no change set, the source's changes.
    pub(crate) async fn open(
        inner: &dyn BranchLines,
        of: RowMergeOf,
        sides: Sides<'_>,
    ) -> Result<Self> {
        let (t, st) = (of.table.as_str(), sides.st);
        let ((tb, tc), (sb, sc)) = (sides.target, sides.source);
        let theirs = match sb {
            Some(b) if b != sc && grew_from(st, t, b, sc) => Theirs::Sets {
                b: b.clone(),
                c: sc.clone(),
            },
            _ => Theirs::Held(side_changes(inner, st, t, &of.scodec, sb, Some(sc)).await?),
        };
        let ours = match tb {
            Some(b) if b != tc && grew_from(st, t, b, tc) => {
                let mut ids = BTreeMap::new();
                let mut changes = KeyChanges::open(inner, t, &of.codec, b, tc).await?;
                while let Some(chunk) = changes.next().await? {
                    ids.extend(chunk.into_iter().map(|k| (k.key, (k.base_id, k.cur_id))));
                }
                Ours::Ids {
                    b: b.clone(),
                    c: tc.clone(),
                    ids,
                }
            }
            _ => Ours::Held(side_changes(inner, st, t, &of.codec, tb, Some(tc)).await?),
        };
        let full_compare = matches!(&theirs, Theirs::Held(h) if h.full_compare)
            || matches!(&ours, Ours::Held(h) if h.full_compare);
        Ok(Self {
            of,
            tc: (tb != sb).then(|| tc.clone()),
            theirs,
            ours,
            full_compare,
        })
    }

    /// The source's changes, a batch at a time.
    pub(crate) async fn batches<'a>(&'a self, inner: &'a dyn BranchLines) -> Result<Batches<'a>> {
        let from = match &self.theirs {
            Theirs::Held(h) => Source::Held(h.rows.iter()),
            Theirs::Sets { b, c } => {
                Source::Sets(KeyChanges::open(inner, &self.of.table, &self.of.scodec, b, c).await?)
            }
        };
        Ok(Batches {
            from,
            pending: Vec::new(),
            batch: self.of.batch,
        })
    }

    /// Decide every key of one batch of the source's changes.
    pub(crate) async fn decide(
        &self,
        inner: &dyn BranchLines,
        batch: Vec<KeyChange>,
    ) -> Result<Decided> {
        let ours = self.ours_of(inner, &batch).await?;
        let target_rows = match &self.tc {
            Some(tc) => {
                let wanted: Vec<RecordBatch> = batch
                    .iter()
                    .filter(|kc| !ours.contains_key(&kc.key))
                    .filter_map(|kc| kc.change.cur.as_ref().or(kc.change.base.as_ref()))
                    .cloned()
                    .collect();
                Some(self.rows_by_key(inner, tc, &wanted).await?)
            }
            None => None,
        };
        let mut out = Decided::default();
        for kc in &batch {
            let target = match &target_rows {
                Some(rows) => Target::Read(rows.get(&kc.key)),
                None => Target::SourceBase {
                    whole: self.of.whole,
                    base_id: kc.base_id,
                },
            };
            let ou = ours.get(&kc.key);
            let d = decide_key(&kc.change, ou, target, self.of.policy);
            if let Some((kind, column)) = d.conflict {
                let c = row_conflict(&self.of.table, &self.of.key, kind, column, &kc.change, ou);
                out.conflicts.push((kc.key.clone(), c));
            }
            out.actions.extend(d.action);
        }
        Ok(out)
    }

    /// The target's changes of the keys of `batch`.
    async fn ours_of(
        &self,
        inner: &dyn BranchLines,
        batch: &[KeyChange],
    ) -> Result<BTreeMap<Vec<u8>, RowChange>> {
        let (b, c, ids) = match &self.ours {
            Ours::Held(h) => {
                return Ok(batch
                    .iter()
                    .filter_map(|kc| Some((kc.key.clone(), h.rows.get(&kc.key)?.clone())))
                    .collect());
            }
            Ours::Ids { b, c, ids } => (b, c, ids),
        };
        let mine: Vec<(&Vec<u8>, &RowIds)> = batch
            .iter()
            .filter_map(|kc| ids.get_key_value(&kc.key))
            .collect();
        if mine.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = |at| Rows {
            inner,
            table: &self.of.table,
            at,
            codec: &self.of.codec,
        };
        let base_ids: Vec<u64> = mine.iter().filter_map(|(_, (b, _))| *b).collect();
        let cur_ids: Vec<u64> = mine.iter().filter_map(|(_, (_, c))| *c).collect();
        let mut base = rows(b).by_id(&base_ids).await?;
        let mut cur = rows(c).by_id(&cur_ids).await?;
        let row = |m: &mut BTreeMap<u64, (Vec<u8>, RecordBatch)>, id: Option<u64>| {
            id.and_then(|id| m.remove(&id)).map(|(_, r)| r)
        };
        Ok(mine
            .into_iter()
            .map(|(k, (bid, cid))| {
                let change = RowChange {
                    base: row(&mut base, *bid),
                    cur: row(&mut cur, *cid),
                };
                (k.clone(), change)
            })
            .collect())
    }

    /// The target's rows at `tc` with the keys of `wanted`, by encoded key.
    async fn rows_by_key(
        &self,
        inner: &dyn BranchLines,
        tc: &TableRef,
        wanted: &[RecordBatch],
    ) -> Result<BTreeMap<Vec<u8>, RecordBatch>> {
        let mut out = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let req = ScanRequest {
            table: self.of.table.clone(),
            line: tc.line.clone(),
            version: Some(tc.version),
            filter: key_filter(&self.of.key, wanted)?.to_sql(),
            ..Default::default()
        };
        index_rows(&self.of.codec, &inner.scan(req).await?, &mut out)?;
        Ok(out)
    }
}

/// Where a [`Batches`] reads the source's changes from.
enum Source<'a> {
    /// Compared in full (or new since the base): no row ids known.
    Held(std::collections::btree_map::Iter<'a, Vec<u8>, RowChange>),
    Sets(KeyChanges<'a>),
}

/// The source's changes of a table, in batches of at most `batch` keys.
pub(crate) struct Batches<'a> {
    from: Source<'a>,
    pending: Vec<KeyChange>,
    batch: usize,
}

impl Batches<'_> {
    /// The next batch, or `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<KeyChange>>> {
        while self.pending.len() < self.batch {
            let more = match &mut self.from {
                Source::Held(it) => {
                    let n = self.batch - self.pending.len();
                    let chunk: Vec<KeyChange> = it
                        .by_ref()
                        .take(n)
                        .map(|(k, rc)| KeyChange {
                            key: k.clone(),
                            change: rc.clone(),
                            base_id: None,
                            cur_id: None,
                        })
                        .collect();
                    (!chunk.is_empty()).then_some(chunk)
                }
                Source::Sets(changes) => changes.next().await?,
            };
            match more {
                Some(chunk) => self.pending.extend(chunk),
                None => break,
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let rest = self.pending.split_off(self.pending.len().min(self.batch));
        Ok(Some(std::mem::replace(&mut self.pending, rest)))
    }
}

/// A row-level conflict of table `t` as reported: the key and the base,
/// ours and theirs values (of `column`, or whole rows).
fn row_conflict(
    t: &str,
    key: &[String],
    kind: ConflictKind,
    column: Option<String>,
    th: &RowChange,
    ou: Option<&RowChange>,
) -> Conflict {
    let row = th.cur.as_ref().or(th.base.as_ref());
    let key_text = row
        .map(|r| {
            key.iter()
                .map(|k| format!("{k}={}", render(Some(r), Some(k)).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let col = column.as_deref();
    let ours_base = ou.and_then(|o| o.base.as_ref());
    Conflict {
        table: t.to_string(),
        key: key_text,
        kind,
        base: render(th.base.as_ref().or(ours_base), col),
        ours: render(ou.and_then(|o| o.cur.as_ref()), col),
        theirs: render(th.cur.as_ref(), col),
        column,
    }
}
