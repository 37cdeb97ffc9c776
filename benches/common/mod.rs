//! Helpers shared by the bench targets (`mod common;` in each); each
//! target uses a part of them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use criterion::Criterion;

/// Criterion settings of every bench: few, short samples (the RATIO lines
/// are the result; criterion's own lines are for trends).
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2))
}

/// `LANCEBRANCH_BENCH_SMALL` is set: a quick run on smaller data.
pub fn small() -> bool {
    std::env::var_os("LANCEBRANCH_BENCH_SMALL").is_some()
}

/// The median of the samples.
pub fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Print one `RATIO` line: `num / den` against a target.
pub fn ratio(name: &str, num: Duration, den: Duration, target: &str) {
    println!(
        "RATIO {name}: {:.3} ({num:.2?} / {den:.2?}; target {target})",
        num.as_secs_f64() / den.as_secs_f64()
    );
}

/// `id: Int64 not null, name: Utf8`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// Rows `start..start + n` of [`schema`], named `n{id}`.
pub fn rows(start: i64, n: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .expect("batch")
}
