//! `lancebranch` command line.
//!
//! For now one command, `demo`: creates a store, a table, writes, queries
//! and prints, so a new user sees the library work end to end.
//!
//! ```text
//! lancebranch demo [--dir DIR]
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lancebranch::{
    DistanceMetric, FilterExpr, LanceDbBackend, ScanRequest, StorageBackend, WriteMode,
};

const USAGE: &str = "usage: lancebranch demo [--dir DIR]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => parse_dir(&args[1..]).and_then(|dir| {
            tokio::runtime::Runtime::new()
                .context("starting the async runtime")?
                .block_on(demo(&dir))
        }),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_dir(args: &[String]) -> Result<String> {
    match args {
        [] => Ok("./lancebranch-demo".to_string()),
        [flag, dir] if flag == "--dir" => Ok(dir.clone()),
        _ => anyhow::bail!("{USAGE}"),
    }
}

fn vertices(ids: std::ops::Range<i64>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Utf8, true),
        Field::new(
            "embedding",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 3),
            true,
        ),
    ]));
    let mut emb = FixedSizeListBuilder::new(Float32Builder::new(), 3);
    let mut labels = Vec::new();
    for i in ids.clone() {
        let x = i as f32;
        emb.values().append_slice(&[x.sin(), x.cos(), x / 100.0]);
        emb.append(true);
        labels.push(if i % 3 == 0 { "person" } else { "place" }.to_string());
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(labels)),
            Arc::new(emb.finish()),
        ],
    )?)
}

async fn demo(dir: &str) -> Result<()> {
    let started = Instant::now();
    let store = LanceDbBackend::open(dir).await?;
    println!("store      {}", store.base_uri());
    if store.table_exists("vertices").await? {
        store.drop_table("vertices").await?;
    }
    store
        .create_table("vertices", vec![vertices(0..100)?])
        .await?;
    store
        .write("vertices", vec![vertices(100..150)?], WriteMode::Append)
        .await?;
    store.delete_rows("vertices", "id >= 140").await?;
    let version = store.get_table_version("vertices").await?.unwrap_or(0);
    println!(
        "vertices   {} rows at version {version}",
        store.count_rows("vertices", None).await?
    );
    let people = store
        .count_rows(
            "vertices",
            FilterExpr::eq("label", "person").to_sql().as_deref(),
        )
        .await?;
    println!("persons    {people}");
    let first = store
        .scan(
            ScanRequest::table("vertices")
                .columns(["id", "label"])
                .limit(3),
        )
        .await?;
    for b in &first {
        println!(
            "{}",
            arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))?
        );
    }
    let near = store
        .vector_search(
            "vertices",
            "embedding",
            &[0.0, 1.0, 0.5],
            3,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await?;
    let ids: Vec<i64> = near
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .map(|a| a.values().to_vec())
                .unwrap_or_default()
        })
        .collect();
    println!("nearest    {ids:?} to [0, 1, 0.5]");
    println!("done in    {:.2?}", started.elapsed());
    Ok(())
}
