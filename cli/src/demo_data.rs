//! The demo's property graph: a vertex table with a vector column and an
//! edge table, both with primary keys in their schema metadata.

use std::sync::Arc;

use anyhow::Result;
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lancebranch::branched::PRIMARY_KEY_METADATA;

/// The vertex table.
pub const VERTICES: &str = "vertices";
/// The edge table.
pub const EDGES: &str = "edges";
/// The dimension of vertex embeddings.
pub const DIM: i32 = 8;

fn keyed(fields: Vec<Field>, key: &str) -> Arc<Schema> {
    let meta = [(PRIMARY_KEY_METADATA.to_string(), key.to_string())];
    Arc::new(Schema::new_with_metadata(
        fields,
        meta.into_iter().collect(),
    ))
}

/// The embedding of vertex `id`.
pub fn embedding(id: i64) -> Vec<f32> {
    let x = id as f32;
    (0..DIM)
        .map(|k| (x * 0.37 + k as f32 * 1.3).sin())
        .collect()
}

/// The label of vertex `id` when created.
fn label(id: i64) -> &'static str {
    match id % 3 {
        0 => "person",
        1 => "place",
        _ => "org",
    }
}

/// Vertices `ids`: `id`, `label`, `embedding` (`FixedSizeList<Float32>`);
/// primary key `id`.
pub fn vertices(ids: std::ops::Range<i64>) -> Result<RecordBatch> {
    let schema = keyed(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Utf8, true),
            Field::new(
                "embedding",
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), DIM),
                true,
            ),
        ],
        "id",
    );
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), DIM);
    for i in ids.clone() {
        emb.values().append_slice(&embedding(i));
        emb.append(true);
    }
    let labels: Vec<&str> = ids.clone().map(label).collect();
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(labels)),
            Arc::new(emb.finish()),
        ],
    )?)
}

/// Edges `ids` among `n_vertices` vertices: `id`, `src`, `dst`, `kind`,
/// `weight`; primary key `id` (a synthetic edge id).
pub fn edges(ids: std::ops::Range<i64>, n_vertices: i64) -> Result<RecordBatch> {
    let schema = keyed(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("src", DataType::Int64, false),
            Field::new("dst", DataType::Int64, false),
            Field::new("kind", DataType::Utf8, true),
            Field::new("weight", DataType::Float64, true),
        ],
        "id",
    );
    let src: Vec<i64> = ids.clone().map(|i| i % n_vertices).collect();
    let dst: Vec<i64> = ids
        .clone()
        .map(|i| (i * 7 + 3 + i / n_vertices) % n_vertices)
        .collect();
    let kind: Vec<&str> = ids
        .clone()
        .map(|i| ["knows", "visits", "works_at"][(i % 3) as usize])
        .collect();
    let weight: Vec<f64> = ids
        .clone()
        .map(|i| ((i * 37) % 100) as f64 / 100.0)
        .collect();
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(Int64Array::from(src)),
            Arc::new(Int64Array::from(dst)),
            Arc::new(StringArray::from(kind)),
            Arc::new(Float64Array::from(weight)),
        ],
    )?)
}

/// Edges with explicit endpoints: `(id, src, dst)`, kind `knows`.
pub fn edges_between(list: &[(i64, i64, i64)], weight: f64) -> Result<RecordBatch> {
    let base = edges(0..1, 1)?;
    Ok(RecordBatch::try_new(
        base.schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(list.iter().map(|e| e.0))),
            Arc::new(Int64Array::from_iter_values(list.iter().map(|e| e.1))),
            Arc::new(Int64Array::from_iter_values(list.iter().map(|e| e.2))),
            Arc::new(StringArray::from(vec!["knows"; list.len()])),
            Arc::new(Float64Array::from(vec![weight; list.len()])),
        ],
    )?)
}

/// A partial vertex batch setting `label` of `ids` (for `merge_insert`).
pub fn relabel(ids: &[i64], label: &str) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Utf8, true),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(vec![label; ids.len()])),
        ],
    )?)
}

/// A partial edge batch setting `weight` of `ids` (for `merge_insert`).
pub fn reweigh(ids: &[i64], weight: f64) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("weight", DataType::Float64, true),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(Float64Array::from(vec![weight; ids.len()])),
        ],
    )?)
}

/// The values of Int64 column `col` of `batches`.
pub fn i64s(batches: &[RecordBatch], col: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(col)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .map(|a| a.values().to_vec())
                .unwrap_or_default()
        })
        .collect()
}

/// The first value of string column `col` in `batches`.
pub fn first_str(batches: &[RecordBatch], col: &str) -> Option<String> {
    let b = batches.iter().find(|b| b.num_rows() > 0)?;
    let a = b.column_by_name(col)?;
    let s = a.as_any().downcast_ref::<StringArray>()?;
    (!s.is_null(0)).then(|| s.value(0).to_string())
}
