//! Reading rows of one table version by stable row id, at a cost that
//! follows the rows asked for rather than the table.
//!
//! Lance's own `take_rows` maps stable row ids to physical addresses through
//! a row-id index of the whole version (every fragment's id sequence and
//! deletion vector), built once per version. A diff or a merge reads the
//! *base* rows of what changed since a fork point: a version nobody has read
//! by id before, so on a large table that index build dominated the merge.
//! Here only the fragments whose id span covers a wanted id are looked at:
//! their id sequence (cached by Lance per fragment, shared across versions)
//! gives the offset, their deletion vector says which copy is live, and the
//! rows are read by address.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use lance::dataset::transaction::{Operation, Transaction};
use lance::dataset::{CommitBuilder, Dataset, ProjectionRequest, TakeBuilder};

/// The live rows of `ds` with these stable row ids, projected to
/// `columns` plus `_rowid`; ids not live at this version are skipped (as
/// Lance's `take_rows` does). `None` when the dataset does not use stable
/// row ids or an id has two live copies (not a state Lance makes; the
/// caller then falls back to Lance's own take).
pub(crate) async fn take_live_rows(
    ds: &Arc<Dataset>,
    table: &str,
    row_ids: &[u64],
    columns: &[String],
) -> Result<Option<RecordBatch>> {
    let Some(addr_of) = locate_live(ds, table, row_ids).await? else {
        return Ok(None);
    };
    if addr_of.is_empty() {
        // Nothing live: Lance's take answers that (an empty batch of the
        // right shape) without reading anything either.
        return Ok(None);
    }
    let id_at: HashMap<u64, u64> = addr_of.iter().map(|(id, a)| (*a, *id)).collect();
    let (data, addrs) = take_at(ds, table, addr_of.into_values().collect(), columns).await?;
    let ids = addrs
        .iter()
        .map(|a| {
            id_at
                .get(a)
                .copied()
                .context("the take returned an unknown address")
        })
        .collect::<Result<Vec<u64>>>()?;
    let mut fields: Vec<Field> = data
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("_rowid", DataType::UInt64, true));
    let mut cols = data.columns().to_vec();
    cols.push(Arc::new(UInt64Array::from(ids)));
    let schema = Schema::new(fields).with_metadata(data.schema().metadata().clone());
    Ok(Some(RecordBatch::try_new(Arc::new(schema), cols)?))
}

/// The physical address (fragment id << 32 | offset) of each live row of
/// `ds` with one of these stable row ids; ids not live are absent. Reads
/// the id sequence and deletion vector of only the fragments whose id span
/// covers a wanted id. `None` without stable row ids or when an id has two
/// live copies.
pub(crate) async fn locate_live(
    ds: &Arc<Dataset>,
    table: &str,
    row_ids: &[u64],
) -> Result<Option<HashMap<u64, u64>>> {
    if !ds.manifest.uses_stable_row_ids() {
        return Ok(None);
    }
    let mut wanted = row_ids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut addr_of: HashMap<u64, u64> = HashMap::with_capacity(wanted.len());
    for frag in ds.get_fragments() {
        let meta = frag.metadata();
        let seq = lance::dataset::rowids::load_row_id_sequence(ds, meta)
            .await
            .with_context(|| format!("reading the row ids of {table:?}"))?;
        let Some(span) = seq.row_id_range() else {
            continue;
        };
        let lo = wanted.partition_point(|id| id < span.start());
        let hi = wanted.partition_point(|id| id <= span.end());
        if lo == hi {
            continue;
        }
        let deleted = frag
            .get_deletion_vector()
            .await
            .with_context(|| format!("reading a deletion vector of {table:?}"))?;
        let frag_id = u32::try_from(meta.id).context("fragment id over 32 bits")?;
        for &id in &wanted[lo..hi] {
            let mut before = 0usize;
            let mut offset = None;
            for seg in seq.segments() {
                if let Some(p) = seg.position(id) {
                    offset = Some(before + p);
                    break;
                }
                before += seg.len();
            }
            let Some(offset) = offset else { continue };
            let offset = u32::try_from(offset).context("row offset over 32 bits")?;
            if deleted.as_ref().is_some_and(|d| d.contains(offset)) {
                continue;
            }
            let addr = (u64::from(frag_id) << 32) | u64::from(offset);
            if addr_of.insert(id, addr).is_some() {
                return Ok(None);
            }
        }
    }
    Ok(Some(addr_of))
}

/// The rows at these addresses, projected to `columns`, and the address of
/// each returned row (in the returned order).
pub(crate) async fn take_at(
    ds: &Arc<Dataset>,
    table: &str,
    mut addrs: Vec<u64>,
    columns: &[String],
) -> Result<(RecordBatch, Vec<u64>)> {
    addrs.sort_unstable();
    let plan = ProjectionRequest::from_columns(columns, ds.schema())
        .into_projection_plan(ds.clone())
        .with_context(|| format!("projecting {table:?}"))?;
    let batch = TakeBuilder::try_new_from_addresses(ds.clone(), addrs, Arc::new(plan))
        .with_context(|| format!("reading rows of {table:?} by address"))?
        .with_row_address(true)
        .execute()
        .await
        .with_context(|| format!("reading rows of {table:?} by address"))?;
    let addrs = batch
        .column_by_name("_rowaddr")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .context("the take returned no row addresses")?
        .values()
        .to_vec();
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| batch.schema().field(i).name() != "_rowaddr")
        .collect();
    Ok((batch.project(&keep)?, addrs))
}

/// Delete, in one Lance `Delete` commit on `ds`, the live rows with the
/// given stable row ids whose `key` columns still hold the values of the
/// paired one-row batch. Returns the new dataset (`None`: nothing matched)
/// and the indexes into `rows` of the rows not deleted (not live here, or
/// their key changed), which the caller deletes by key instead.
pub(crate) async fn delete_by_row_ids(
    ds: &Arc<Dataset>,
    table: &str,
    key: &[String],
    rows: &[(u64, RecordBatch)],
) -> Result<(Option<Dataset>, Vec<usize>)> {
    let all = || (0..rows.len()).collect::<Vec<usize>>();
    let ids: Vec<u64> = rows.iter().map(|(id, _)| *id).collect();
    let Some(addr_of) = locate_live(ds, table, &ids).await? else {
        return Ok((None, all()));
    };
    if addr_of.is_empty() {
        return Ok((None, all()));
    }
    let (keys, addrs) = take_at(ds, table, addr_of.values().copied().collect(), key).await?;
    let pos_of: HashMap<u64, usize> = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut left = Vec::new();
    let mut by_fragment: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, (id, row)) in rows.iter().enumerate() {
        let hit = addr_of
            .get(id)
            .and_then(|a| pos_of.get(a).map(|p| (*a, *p)));
        let same_key = hit.is_some_and(|(_, p)| {
            key.iter()
                .all(|k| match (keys.column_by_name(k), row.column_by_name(k)) {
                    (Some(have), Some(want)) => {
                        have.slice(p, 1).to_data() == want.slice(0, 1).to_data()
                    }
                    _ => false,
                })
        });
        match hit {
            Some((a, _)) if same_key => by_fragment
                .entry((a >> 32) as u32)
                .or_default()
                .push(a as u32),
            _ => left.push(i),
        }
    }
    if by_fragment.is_empty() {
        return Ok((None, left));
    }
    let (mut updated, mut removed) = (Vec::new(), Vec::new());
    for frag in ds.get_fragments() {
        let Some(offsets) = by_fragment.remove(&(frag.id() as u32)) else {
            continue;
        };
        let id = frag.id() as u64;
        match frag
            .extend_deletions(offsets)
            .await
            .with_context(|| format!("writing a deletion vector of {table:?}"))?
        {
            Some(f) => updated.push(f.metadata().clone()),
            None => removed.push(id),
        }
    }
    let op = Operation::Delete {
        updated_fragments: updated,
        deleted_fragment_ids: removed,
        predicate: "lancebranch merge: rows by stable row id".to_string(),
    };
    let txn = Transaction::new(ds.manifest.version, op, None);
    let new = CommitBuilder::new(ds.clone())
        .execute(txn)
        .await
        .with_context(|| format!("committing a delete on {table:?}"))?;
    Ok((Some(new), left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LanceDbBackend, StorageBackend, WriteMode};
    use arrow_array::Int64Array;

    fn batch(ids: std::ops::Range<i64>, v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let n = ids.end - ids.start;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(Int64Array::from(vec![v; n as usize])),
            ],
        )
        .unwrap()
    }

    /// The scoped path is taken (not the fallback) and finds the live copy
    /// of an updated row; the integration test `take_rows_at_matches_lance_take_rows`
    /// compares it with Lance's take over a longer history.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_copy_of_an_updated_row_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = LanceDbBackend::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        store
            .create_table("t", vec![batch(0..10, 0)])
            .await
            .unwrap();
        store
            .write("t", vec![batch(10..20, 0)], WriteMode::Append)
            .await
            .unwrap();
        store
            .merge_insert("t", &["id"], vec![batch(5..15, 1)])
            .await
            .unwrap();
        let ds = store.dataset("t").await.unwrap();
        let cols = vec!["id".to_string(), "v".to_string()];
        let got = take_live_rows(&ds, "t", &[3, 7, 12, 17, 99], &cols)
            .await
            .unwrap()
            .expect("stable row ids: the scoped path");
        let col = |n: &str| {
            got.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let mut rows: Vec<(i64, i64)> = col("id")
            .iter()
            .zip(col("v").iter())
            .map(|(a, b)| (a.unwrap(), b.unwrap()))
            .collect();
        rows.sort();
        assert_eq!(rows, vec![(3, 0), (7, 1), (12, 1), (17, 0)]);
        assert!(got.column_by_name("_rowid").is_some());
        assert!(got.column_by_name("_rowaddr").is_none());
    }
}
