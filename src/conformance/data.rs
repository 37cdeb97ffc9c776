//! Test data shared by the conformance suite.

use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// `id: Int64 not null, name: Utf8, age: Int64`.
pub fn people_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("age", DataType::Int64, true),
    ]))
}

/// People with the given ids; name `p{id}`, age `20 + id % 50`.
pub fn people(ids: impl IntoIterator<Item = i64>) -> RecordBatch {
    let ids: Vec<i64> = ids.into_iter().collect();
    let names: Vec<String> = ids.iter().map(|i| format!("p{i}")).collect();
    let ages: Vec<i64> = ids.iter().map(|i| 20 + i % 50).collect();
    RecordBatch::try_new(
        people_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from(ages)),
        ],
    )
    .expect("valid batch")
}

/// Total rows of `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The values of an Int64 column across batches, sorted.
pub fn ints(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(column)
            .unwrap_or_else(|| panic!("no column {column}"));
        let a = col
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("Int64 column");
        out.extend(a.iter().flatten());
    }
    out.sort_unstable();
    out
}

/// The values of a Utf8 column across batches, in order.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let a = b
            .column_by_name(column)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            .expect("Utf8 column");
        out.extend(a.iter().map(|s| s.unwrap_or_default().to_string()));
    }
    out
}

/// The dimension of the vectors of [`vectors`].
pub const DIM: i32 = 4;

/// `id: Int64, v: FixedSizeList<f32, 4>, text: Utf8, tags: List<Utf8>`.
pub fn vector_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "v",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), DIM),
            true,
        ),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]))
}

/// Row `i` has vector `[i, 0, 0, 0]` (so the nearest rows to `[x,0,0,0]`
/// are the ids closest to x), a text with words by parity, and tags.
pub fn vectors(ids: impl IntoIterator<Item = i64>) -> RecordBatch {
    let ids: Vec<i64> = ids.into_iter().collect();
    let mut v = FixedSizeListBuilder::new(Float32Builder::new(), DIM);
    let mut tags = ListBuilder::new(arrow_array::builder::StringBuilder::new());
    let mut texts = Vec::new();
    for &i in &ids {
        v.values().append_value(i as f32);
        for _ in 1..DIM {
            v.values().append_value(0.0);
        }
        v.append(true);
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        texts.push(format!("row {i} is {parity} and quiet"));
        tags.values().append_value(parity);
        tags.values().append_value(format!("t{}", i % 3));
        tags.append(true);
    }
    let v: FixedSizeListArray = v.finish();
    let v = v
        .to_data()
        .into_builder()
        .data_type(vector_schema().field(1).data_type().clone())
        .build()
        .expect("vector data");
    RecordBatch::try_new(
        vector_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            arrow_array::make_array(v),
            Arc::new(StringArray::from(texts)),
            Arc::new(tags.finish()) as ArrayRef,
        ],
    )
    .expect("valid vector batch")
}

/// `id: Int64, mv: List<FixedSizeList<f32, 2>>` rows with given token vectors.
pub fn multivectors(rows_: &[(i64, Vec<[f32; 2]>)]) -> RecordBatch {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let inner = DataType::FixedSizeList(item, 2);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "mv",
            DataType::List(Arc::new(Field::new("item", inner.clone(), true))),
            true,
        ),
    ]));
    let mut b = ListBuilder::new(FixedSizeListBuilder::new(Float32Builder::new(), 2))
        .with_field(Arc::new(Field::new("item", inner, true)));
    for (_, toks) in rows_ {
        for t in toks {
            b.values().values().append_value(t[0]);
            b.values().values().append_value(t[1]);
            b.values().append(true);
        }
        b.append(true);
    }
    let ids: Vec<i64> = rows_.iter().map(|r| r.0).collect();
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(b.finish())],
    )
    .expect("valid multivector batch")
}

/// The `_distance` column across batches, in order.
pub fn distances(batches: &[RecordBatch]) -> Vec<f32> {
    let mut out = Vec::new();
    for b in batches {
        let a = b
            .column_by_name("_distance")
            .and_then(|c| c.as_any().downcast_ref::<Float32Array>().cloned())
            .expect("_distance column");
        out.extend(a.iter().flatten());
    }
    out
}

/// The Int64 `id` column across batches, in result order.
pub fn ids_in_order(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let a = b
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .expect("id column");
        out.extend(a.iter().flatten());
    }
    out
}
