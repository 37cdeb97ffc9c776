//! Row-level change sets between a base and a current state of a table,
//! matched by primary key, and the public diff API.
//!
//! A side's changes are computed from Lance row change sets (stable row
//! ids) when the current version lies on the base's line or on a line that
//! started at the base, so the cost grows with the change, not the table.
//! Otherwise both snapshots are compared in full.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::row::{RowConverter, SortField};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::backend::{BranchLines, Error, ScanRequest};
use crate::branched::catalog::{CatalogState, TableRef};

/// Schema metadata key naming a table's primary key (comma-separated
/// column names), used by diff and merge to match rows.
pub const PRIMARY_KEY_METADATA: &str = "lancebranch.primary_key";

/// One row's change on one side: its value at the base and now.
#[derive(Debug, Clone)]
pub(crate) struct RowChange {
    pub base: Option<RecordBatch>,
    pub cur: Option<RecordBatch>,
}

/// A side's changes of one table, by encoded key.
#[derive(Debug, Default)]
pub(crate) struct SideChanges {
    pub rows: BTreeMap<Vec<u8>, RowChange>,
    /// The stable row id of each changed key's base row, where known.
    pub base_ids: BTreeMap<Vec<u8>, u64>,
    /// Rows were found by comparing full snapshots, not change sets.
    pub full_compare: bool,
}

/// Encodes key columns of single rows into comparable bytes.
pub(crate) struct KeyCodec {
    columns: Vec<String>,
    converter: RowConverter,
}

impl KeyCodec {
    pub(crate) fn new(table: &str, schema: &Schema, columns: &[String]) -> Result<Self> {
        let mut fields = Vec::new();
        for c in columns {
            let f = schema
                .field_with_name(c)
                .map_err(|_| Error::InvalidColumn {
                    table: table.to_string(),
                    column: c.clone(),
                    detail: "primary-key column is not in the table".into(),
                })?;
            fields.push(SortField::new(f.data_type().clone()));
        }
        Ok(Self {
            columns: columns.to_vec(),
            converter: RowConverter::new(fields)?,
        })
    }

    /// The encoded key of every row of `batch`.
    pub(crate) fn keys(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .cloned()
                    .with_context(|| format!("key column {c:?} missing from a batch"))
            })
            .collect::<Result<_>>()?;
        let rows = self.converter.convert_columns(&cols)?;
        Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
    }
}

/// The table's primary key: from `explicit`, else from schema metadata.
pub(crate) fn primary_key(
    table: &str,
    schema: &Schema,
    explicit: Option<&Vec<String>>,
) -> Result<Vec<String>> {
    if let Some(k) = explicit
        && !k.is_empty()
    {
        return Ok(k.clone());
    }
    match schema.metadata().get(PRIMARY_KEY_METADATA) {
        Some(v) if !v.trim().is_empty() => Ok(v.split(',').map(|s| s.trim().to_string()).collect()),
        _ => Err(Error::MissingMergeKey(table.to_string()).into()),
    }
}

fn without_rowid(b: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = b
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != "_rowid")
        .map(|(i, _)| i)
        .collect();
    Ok(b.project(&keep)?)
}

fn rowids(b: &RecordBatch) -> Vec<u64> {
    b.column_by_name("_rowid")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow_array::UInt64Array>()
                .cloned()
        })
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

pub(crate) fn index_rows(
    codec: &KeyCodec,
    batches: &[RecordBatch],
    into: &mut BTreeMap<Vec<u8>, RecordBatch>,
) -> Result<()> {
    for b in batches {
        let b = without_rowid(b)?;
        for (i, k) in codec.keys(&b)?.into_iter().enumerate() {
            into.insert(k, b.slice(i, 1));
        }
    }
    Ok(())
}

/// Whether two single-row batches hold the same values in the same columns.
pub(crate) fn same_row(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_columns() == b.num_columns()
        && a.schema().fields().iter().all(|f| {
            match (a.column_by_name(f.name()), b.column_by_name(f.name())) {
                (Some(x), Some(y)) => x.to_data() == y.to_data(),
                _ => false,
            }
        })
}

/// The value of column `name` of a single-row batch, if the column exists.
pub(crate) fn cell(row: &RecordBatch, name: &str) -> Option<ArrayRef> {
    row.column_by_name(name).cloned()
}

/// Whether column `name` differs between two single-row batches (a column
/// missing on one side counts as null there).
pub(crate) fn column_differs(a: &RecordBatch, b: &RecordBatch, name: &str) -> bool {
    match (cell(a, name), cell(b, name)) {
        (Some(x), Some(y)) => x.to_data() != y.to_data(),
        (Some(x), None) | (None, Some(x)) => x.null_count() == 0,
        (None, None) => false,
    }
}

/// The columns that differ between a base row and a current row.
pub(crate) fn changed_columns(base: &RecordBatch, cur: &RecordBatch) -> Vec<String> {
    let mut names: Vec<String> = cur
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    for f in base.schema().fields() {
        if !names.contains(f.name()) {
            names.push(f.name().clone());
        }
    }
    names
        .into_iter()
        .filter(|n| column_differs(base, cur, n))
        .collect()
}

async fn scan_all(inner: &dyn BranchLines, table: &str, r: &TableRef) -> Result<Vec<RecordBatch>> {
    inner
        .scan(ScanRequest {
            table: table.to_string(),
            line: r.line.clone(),
            version: Some(r.version),
            ..Default::default()
        })
        .await
}

/// The changes of one side of `table` from `base` to `cur`.
pub(crate) async fn side_changes(
    inner: &dyn BranchLines,
    state: &CatalogState,
    table: &str,
    codec: &KeyCodec,
    base: Option<&TableRef>,
    cur: Option<&TableRef>,
) -> Result<SideChanges> {
    let mut out = SideChanges::default();
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    match (base, cur) {
        (Some(b), Some(c)) if b == c => return Ok(out),
        (None, None) => return Ok(out),
        (None, Some(c)) => index_rows(codec, &scan_all(inner, table, c).await?, &mut after)?,
        (Some(b), None) => index_rows(codec, &scan_all(inner, table, b).await?, &mut before)?,
        (Some(b), Some(c)) => {
            let same_line = c.line == b.line && c.version >= b.version;
            let grew_from_base = c
                .line
                .as_ref()
                .and_then(|l| state.line_origin.get(&(table.to_string(), l.clone())))
                .is_some_and(|origin| origin == b);
            if same_line || grew_from_base {
                let ch = inner
                    .row_changes(table, c.line.as_deref(), b.version, c.version)
                    .await?;
                let mut ids: Vec<u64> = ch.updated.iter().flat_map(rowids).collect();
                ids.extend(&ch.deleted);
                let base_rows = inner
                    .take_rows_at(table, b.line.as_deref(), b.version, &ids)
                    .await?;
                index_rows(codec, &base_rows, &mut before)?;
                for b in &base_rows {
                    let keys = codec.keys(&without_rowid(b)?)?;
                    out.base_ids.extend(keys.into_iter().zip(rowids(b)));
                }
                index_rows(codec, &ch.inserted, &mut after)?;
                index_rows(codec, &ch.updated, &mut after)?;
            } else {
                out.full_compare = true;
                index_rows(codec, &scan_all(inner, table, b).await?, &mut before)?;
                index_rows(codec, &scan_all(inner, table, c).await?, &mut after)?;
            }
        }
    }
    let mut keys: Vec<Vec<u8>> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (b, c) = (before.remove(&k), after.remove(&k));
        if let (Some(x), Some(y)) = (&b, &c)
            && same_row(x, y)
        {
            continue;
        }
        out.rows.insert(k, RowChange { base: b, cur: c });
    }
    Ok(out)
}

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
    let kinds = StringArray::from(rows.iter().map(|(_, k, _)| *k).collect::<Vec<_>>());
    let cols = StringArray::from(rows.iter().map(|(_, _, c)| c.clone()).collect::<Vec<_>>());
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_change", DataType::Utf8, false));
    fields.push(Field::new("_changed_columns", DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = body.columns().to_vec();
    columns.push(Arc::new(kinds));
    columns.push(Arc::new(cols));
    Ok(Some(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?))
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

/// The schema of a table at a ref.
pub(crate) async fn schema_of(
    inner: &dyn BranchLines,
    table: &str,
    r: &TableRef,
) -> Result<SchemaRef> {
    inner
        .schema_at(table, r.line.as_deref(), Some(r.version))
        .await
}
