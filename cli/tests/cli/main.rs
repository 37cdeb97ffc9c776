//! The built `lancebranch` binary, end to end: one test binary (each file
//! directly under `tests/` would link all of Lance again), its suites as
//! modules.

mod commands;
mod data;
#[cfg(feature = "s3")]
mod s3;

/// People with the given ids; name `p{id}`, age `20 + id % 50`
/// (`id: Int64 not null, name: Utf8, age: Int64`).
pub(crate) fn people(ids: impl IntoIterator<Item = i64>) -> arrow_array::RecordBatch {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let ids: Vec<i64> = ids.into_iter().collect();
    let names: Vec<String> = ids.iter().map(|i| format!("p{i}")).collect();
    let ages: Vec<i64> = ids.iter().map(|i| 20 + i % 50).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("age", DataType::Int64, true),
    ]));
    arrow_array::RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from(ages)),
        ],
    )
    .expect("valid batch")
}
