//! The public diff API: what a branch changed since a merge base or a
//! tag, per table, as Arrow batches of the changed rows
//! ([`BranchedBackend::diff`], [`BranchedBackend::diff_since_tag`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::backend::Error;
use crate::branched::catalog::{CatalogState, PinGuard, TableRef};
use crate::branched::changes::{SideChanges, changed_columns, side_changes, table_codec};
use crate::branched::report::MergeOptions;
use crate::branched::view::BranchedBackend;

/// How a table differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChange {
    /// The table is new on the compared side.
    Created,
    /// The table is gone on the compared side.
    Dropped,
    /// Rows changed.
    Modified,
}

/// The changes of one table, as Arrow batches.
///
/// `rows` holds the changed rows with two extra columns: `_change`
/// (`"insert"`, `"update"` or `"delete"`) and `_changed_columns`
/// (comma-separated names for updates, empty otherwise). Inserted and
/// updated rows carry their new values, deleted rows their old ones.
#[derive(Debug, Clone)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// How it differs.
    pub change: TableChange,
    /// The changed rows (one batch per schema: new values, then deletions).
    pub rows: Vec<RecordBatch>,
    /// Counts: inserted, updated, deleted.
    pub counts: (usize, usize, usize),
}

fn annotate(rows: Vec<(RecordBatch, &'static str, String)>) -> Result<Option<RecordBatch>> {
    let Some((first, _, _)) = rows.first() else {
        return Ok(None);
    };
    let schema = first.schema();
    let data: Vec<RecordBatch> = rows.iter().map(|(r, _, _)| r.clone()).collect();
    let body = arrow_select::concat::concat_batches(&schema, &data)?;
    let kinds = rows.iter().map(|(_, k, _)| *k).collect();
    let cols = rows.into_iter().map(|(_, _, c)| c).collect();
    with_change_columns(&body, kinds, cols).map(Some)
}

/// `rows` with the `_change` and `_changed_columns` columns (one entry of
/// `kinds` and `cols` per row).
pub(crate) fn with_change_columns(
    rows: &RecordBatch,
    kinds: Vec<&str>,
    cols: Vec<String>,
) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("_change", DataType::Utf8, false));
    fields.push(Field::new("_changed_columns", DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(StringArray::from(kinds)));
    columns.push(Arc::new(StringArray::from(cols)));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The tables that differ between `base` and `cur`, in name order: each
/// with its ref on both sides and the one it has (the current, else the
/// base).
#[allow(clippy::type_complexity)]
pub(crate) fn differing<'a>(
    base: &'a BTreeMap<String, TableRef>,
    cur: &'a BTreeMap<String, TableRef>,
) -> impl Iterator<
    Item = (
        &'a String,
        Option<&'a TableRef>,
        Option<&'a TableRef>,
        &'a TableRef,
    ),
> {
    let names: BTreeSet<&String> = base.keys().chain(cur.keys()).collect();
    names.into_iter().filter_map(|t| {
        let (b, c) = (base.get(t), cur.get(t));
        let either = c.or(b)?;
        (b != c).then_some((t, b, c, either))
    })
}

/// Turn a side's changes into a [`TableDiff`].
pub(crate) fn to_table_diff(
    table: &str,
    change: TableChange,
    side: &SideChanges,
) -> Result<TableDiff> {
    let mut by_schema: BTreeMap<String, Vec<(RecordBatch, &'static str, String)>> = BTreeMap::new();
    let (mut ins, mut upd, mut del) = (0, 0, 0);
    for rc in side.rows.values() {
        let (row, kind, cols) = match (&rc.base, &rc.cur) {
            (None, Some(c)) => {
                ins += 1;
                (c.clone(), "insert", String::new())
            }
            (Some(b), Some(c)) => {
                upd += 1;
                (c.clone(), "update", changed_columns(b, c).join(","))
            }
            (Some(b), None) => {
                del += 1;
                (b.clone(), "delete", String::new())
            }
            (None, None) => continue,
        };
        let schema_key = format!("{:?}", row.schema().fields());
        by_schema
            .entry(schema_key)
            .or_default()
            .push((row, kind, cols));
    }
    let mut rows = Vec::new();
    for group in by_schema.into_values() {
        if let Some(b) = annotate(group)? {
            rows.push(b);
        }
    }
    Ok(TableDiff {
        table: table.to_string(),
        change,
        rows,
        counts: (ins, upd, del),
    })
}

impl BranchedBackend {
    /// The changes `other` made since the merge base of this branch and
    /// `other` (what [`merge`](Self::merge) would bring in), per table.
    ///
    /// # Errors
    /// [`Error::BranchNotFound`], [`Error::NoMergeBase`],
    /// [`Error::MissingMergeKey`] for a changed table without a key.
    pub async fn diff(&self, other: &BranchedBackend) -> Result<Vec<TableDiff>> {
        self.diff_with(other, &MergeOptions::default()).await
    }

    /// [`diff`](Self::diff) with primary keys given in `opts`.
    ///
    /// # Errors
    /// As [`diff`](Self::diff).
    pub async fn diff_with(
        &self,
        other: &BranchedBackend,
        opts: &MergeOptions,
    ) -> Result<Vec<TableDiff>> {
        let (st, (base, cur), _pin) = self.pinned_state(|st| {
            let (_, base) = self.merge_bases(st, other)?;
            Ok((base, other.tables_in(st)?))
        })?;
        self.diff_tables(&st, &base, &cur, opts).await
    }

    /// The changes this branch made since tag `tag` was taken (the tag may
    /// come from this branch or an ancestor).
    ///
    /// # Errors
    /// [`Error::TagNotFound`], [`Error::MissingMergeKey`].
    pub async fn diff_since_tag(&self, tag: &str, opts: &MergeOptions) -> Result<Vec<TableDiff>> {
        let (st, (base, cur), _pin) = self.pinned_state(|st| {
            let base = st
                .tags
                .get(tag)
                .ok_or_else(|| Error::TagNotFound(tag.to_string()))?
                .tables
                .clone();
            Ok((base, self.tables_in(st)?))
        })?;
        self.diff_tables(&st, &base, &cur, opts).await
    }

    /// A copy of the catalog state and the two table sets `f` picks from
    /// it, pinned (kept readable) until the guard is dropped.
    #[allow(clippy::type_complexity)]
    pub(crate) fn pinned_state(
        &self,
        f: impl FnOnce(
            &CatalogState,
        ) -> Result<(BTreeMap<String, TableRef>, BTreeMap<String, TableRef>)>,
    ) -> Result<(
        CatalogState,
        (BTreeMap<String, TableRef>, BTreeMap<String, TableRef>),
        PinGuard,
    )> {
        let mut out = None;
        let (_, guard) = self.core.catalog.pin(|st| {
            let (a, b) = f(st)?;
            let refs = a.iter().chain(b.iter());
            let refs = refs.map(|(t, r)| (t.clone(), r.clone())).collect();
            out = Some((st.clone(), (a, b)));
            Ok(refs)
        })?;
        let (st, sets) = out.ok_or_else(|| anyhow::anyhow!("no catalog state pinned"))?;
        Ok((st, sets, guard))
    }

    async fn diff_tables(
        &self,
        st: &CatalogState,
        base: &BTreeMap<String, TableRef>,
        cur: &BTreeMap<String, TableRef>,
        opts: &MergeOptions,
    ) -> Result<Vec<TableDiff>> {
        let inner = self.core.inner.clone();
        let mut out = Vec::new();
        for (t, b, c, either) in differing(base, cur) {
            let codec = table_codec(inner.as_ref(), t, either, opts.keys.get(t)).await?;
            let side = side_changes(inner.as_ref(), st, t, &codec, b, c).await?;
            let change = match (b, c) {
                (None, Some(_)) => TableChange::Created,
                (Some(_), None) => TableChange::Dropped,
                _ => TableChange::Modified,
            };
            if change == TableChange::Modified && side.rows.is_empty() {
                continue;
            }
            out.push(to_table_diff(t, change, &side)?);
        }
        Ok(out)
    }
}
