//! Table commands: `create-table`, `drop-table` and `delete-rows`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use lancebranch::branched::PRIMARY_KEY_METADATA;
use lancebranch::{Error, StorageBackend};
use serde_json::json;

use crate::commands::open;
use crate::output::Out;

/// `NAME:TYPE`, parsed (a clap value parser). Types: `int8`..`int64`,
/// `uint8`..`uint64`, `float32`, `float64` (`float`, `double`), `utf8`
/// (`string`, `text`), `bool`, `date`, `timestamp` (µs), `vector(N)` (N
/// float32s).
pub fn parse_column(s: &str) -> Result<(String, DataType), String> {
    let (name, ty) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: write a column as NAME:TYPE, e.g. id:int64"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{s:?}: the column name is empty"));
    }
    let ty = ty.trim().to_ascii_lowercase();
    let dt = match ty.as_str() {
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" | "int" => DataType::Int32,
        "int64" | "bigint" | "long" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "utf8" | "string" | "text" | "str" => DataType::Utf8,
        "bool" | "boolean" => DataType::Boolean,
        "date" | "date32" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        v if v.starts_with("vector(") && v.ends_with(')') => {
            let n: i32 = v["vector(".len()..v.len() - 1]
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?}: vector(N) needs a positive N"))?;
            let item = Arc::new(Field::new("item", DataType::Float32, true));
            DataType::FixedSizeList(item, n)
        }
        other => {
            return Err(format!(
                "{s:?}: unknown type {other:?} (int8..int64, uint8..uint64, float32, float64, \
                 utf8, bool, date, timestamp, vector(N))"
            ));
        }
    };
    Ok((name.to_string(), dt))
}

/// `create-table TABLE --columns NAME:TYPE,.. [--key COLS] [--branch B]`:
/// an empty table; key columns are not nullable.
pub async fn create_table(
    store: &Path,
    out: Out,
    table: &str,
    branch: &str,
    columns: &[(String, DataType)],
    key: Option<&[String]>,
) -> Result<u8> {
    let key = key.unwrap_or_default();
    for k in key {
        if !columns.iter().any(|(c, _)| c == k) {
            return Err(Error::InvalidColumn {
                table: table.to_string(),
                column: k.clone(),
                detail: "the key is not one of --columns".into(),
            }
            .into());
        }
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|(c, t)| Field::new(c, t.clone(), !key.contains(c)))
        .collect();
    let mut md = HashMap::new();
    if !key.is_empty() {
        md.insert(PRIMARY_KEY_METADATA.to_string(), key.join(","));
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, md));
    let main = open(store).await?;
    let view = main.branch(branch)?;
    view.create_empty_table(table, schema).await?;
    if out.json {
        out.doc(&json!({ "table": table, "branch": branch, "created": true, "key": key }))?;
    } else {
        outln!("created table {table} on {branch}");
    }
    Ok(0)
}

/// `drop-table TABLE [--branch B]`
pub async fn drop_table(store: &Path, out: Out, table: &str, branch: &str) -> Result<u8> {
    let main = open(store).await?;
    let view = main.branch(branch)?;
    if !view.table_exists(table).await? {
        return Err(Error::TableNotFound(table.to_string()).into());
    }
    view.drop_table(table).await?;
    if out.json {
        out.doc(&json!({ "table": table, "branch": branch, "dropped": true }))?;
    } else {
        outln!("dropped table {table} on {branch}");
    }
    Ok(0)
}

/// `delete-rows TABLE --filter SQL [--branch B]`: refuses a blank filter;
/// prints how many rows it removed.
pub async fn delete_rows(
    store: &Path,
    out: Out,
    table: &str,
    branch: &str,
    filter: &str,
) -> Result<u8> {
    let main = open(store).await?;
    let view = main.branch(branch)?;
    // The store is this process's alone: nothing changes the table between
    // the counts and the delete.
    let before = view.count_rows(table, None).await?;
    view.delete_rows(table, filter).await?;
    let after = view.count_rows(table, None).await?;
    let deleted = before.saturating_sub(after);
    if out.json {
        out.doc(&json!({
            "table": table,
            "branch": branch,
            "filter": filter,
            "deleted": deleted,
            "remaining": after,
        }))?;
    } else {
        outln!("deleted {deleted} rows of {table} on {branch} ({after} remain)");
    }
    Ok(0)
}
