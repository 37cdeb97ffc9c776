//! Row-level change sets between a base and a current state of a table,
//! matched by primary key: what diff reports and merge applies.
//!
//! A side's changes are computed from Lance row change sets (stable row
//! ids) when the current version lies on the base's line or on a line that
//! started at the base, so the cost grows with the change, not the table.
//! Otherwise both snapshots are compared in full.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use arrow::row::{RowConverter, SortField};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};

use crate::backend::{BranchLines, Error, FilterExpr, Literal, ScanRequest};
use crate::branched::catalog::{CatalogState, TableRef};
use crate::branched::key_changes::KeyChanges;

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

pub(crate) fn without_rowid(b: &RecordBatch) -> Result<RecordBatch> {
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

pub(crate) fn rowids(b: &RecordBatch) -> Vec<u64> {
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

/// Whether `c` lies on `b`'s line after it, or on a line that started at
/// `b`: its changes since `b` are Lance change sets.
pub(crate) fn grew_from(st: &CatalogState, table: &str, b: &TableRef, c: &TableRef) -> bool {
    let same_line = c.line == b.line && c.version >= b.version;
    let grew = c
        .line
        .as_ref()
        .and_then(|l| st.line_origin.get(&(table.to_string(), l.clone())))
        .is_some_and(|origin| origin == b);
    same_line || grew
}

/// The key codec of `table` at `r`: its key from `explicit`, else from its
/// schema's metadata.
pub(crate) async fn table_codec(
    inner: &dyn BranchLines,
    table: &str,
    r: &TableRef,
    explicit: Option<&Vec<String>>,
) -> Result<KeyCodec> {
    let schema = schema_of(inner, table, r).await?;
    let key = primary_key(table, &schema, explicit)?;
    KeyCodec::new(table, &schema, &key)
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
            if grew_from(state, table, b, c) {
                // Read from the change sets, as `diff_stream` and a merge
                // in batches read them, and held.
                let mut changes = KeyChanges::open(inner, table, codec, b, c).await?;
                while let Some(chunk) = changes.next().await? {
                    out.rows
                        .extend(chunk.into_iter().map(|kc| (kc.key, kc.change)));
                }
                return Ok(out);
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

/// One key cell of a single-row column as a filter literal.
fn literal(a: &dyn Array, i: usize) -> Result<Literal> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    if a.is_null(i) {
        return Ok(Literal::Null);
    }
    Ok(match a.data_type() {
        DataType::Int8 => Literal::Int(a.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Literal::Int(a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Literal::Int(a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Literal::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Literal::Int(a.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Literal::Int(a.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Literal::Int(a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => Literal::Int(i64::try_from(a.as_primitive::<UInt64Type>().value(i))?),
        DataType::Utf8 => Literal::Str(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Literal::Str(a.as_string::<i64>().value(i).to_string()),
        DataType::Boolean => Literal::Bool(a.as_boolean().value(i)),
        other => {
            return Err(Error::InvalidArgument(format!(
                "primary-key columns of type {other} are not supported by merge"
            ))
            .into());
        }
    })
}

/// A filter matching exactly the rows with these keys.
pub(crate) fn key_filter(key_cols: &[String], rows: &[RecordBatch]) -> Result<FilterExpr> {
    if let [col] = key_cols {
        // One key column: a single IN list plans far faster than ORs.
        let values = rows
            .iter()
            .map(|r| {
                let a = r
                    .column_by_name(col)
                    .ok_or_else(|| Error::InvalidArgument(format!("key column {col:?} missing")))?;
                literal(a.as_ref(), 0)
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(FilterExpr::In {
            column: col.clone(),
            values,
        });
    }
    let mut any = Vec::new();
    for r in rows {
        let mut all = Vec::new();
        for c in key_cols {
            let a = r
                .column_by_name(c)
                .ok_or_else(|| Error::InvalidArgument(format!("key column {c:?} missing")))?;
            all.push(FilterExpr::eq(c, literal(a.as_ref(), 0)?));
        }
        any.push(FilterExpr::And(all));
    }
    Ok(FilterExpr::Or(any))
}
