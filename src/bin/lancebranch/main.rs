//! `lancebranch` command line.
//!
//! For now one command, `demo`: creates a branched store, a table with a
//! vector column, writes and queries it, forks a what-if branch, edits it,
//! diffs it against main, merges it back with a conflict resolved by policy,
//! and prints what happened, so a new user sees the library work end to end.
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
use lancebranch::branched::{BranchedBackend, ConflictPolicy, MergeOptions, PRIMARY_KEY_METADATA};
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
    let key = [(PRIMARY_KEY_METADATA.to_string(), "id".to_string())];
    let schema = Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Utf8, true),
            Field::new(
                "embedding",
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 3),
                true,
            ),
        ],
        key.into_iter().collect(),
    ));
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

fn labels(ids: &[i64], label: &str) -> Result<RecordBatch> {
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

async fn demo(dir: &str) -> Result<()> {
    let started = Instant::now();
    let inner = Arc::new(LanceDbBackend::open(dir).await?);
    let main = BranchedBackend::open(inner).await?;
    println!("store      {}", main.base_uri());
    // Start from a clean slate when the demo runs again in the same place.
    if main.branch("what-if").is_ok() {
        main.delete_branch("what-if", true).await?;
    }
    if main.table_exists("vertices").await? {
        main.drop_table("vertices").await?;
    }
    main.create_table("vertices", vec![vertices(0..100)?])
        .await?;
    main.write("vertices", vec![vertices(100..150)?], WriteMode::Append)
        .await?;
    main.delete_rows("vertices", "id >= 140").await?;
    let version = main.get_table_version("vertices").await?.unwrap_or(0);
    println!(
        "vertices   {} rows at version {version}",
        main.count_rows("vertices", None).await?
    );
    let people = main
        .count_rows(
            "vertices",
            FilterExpr::eq("label", "person").to_sql().as_deref(),
        )
        .await?;
    println!("persons    {people}");
    let first = main
        .scan(
            ScanRequest::table("vertices")
                .columns(["id", "label"])
                .limit(3),
        )
        .await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&first)?);
    let near = main
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
    println!("nearest    {:?} to [0, 1, 0.5]", ids_of(&near));

    // A what-if branch: fork, edit, diff, merge back.
    let t = Instant::now();
    let what_if = main.fork("what-if").await?;
    println!(
        "fork       'what-if' in {:.2?} (no data copied)",
        t.elapsed()
    );
    what_if
        .merge_insert("vertices", &["id"], vec![labels(&[1, 2, 4], "hub")?])
        .await?;
    what_if
        .write("vertices", vec![vertices(200..205)?], WriteMode::Append)
        .await?;
    what_if.delete_rows("vertices", "id = 5").await?;
    main.merge_insert("vertices", &["id"], vec![labels(&[1], "landmark")?])
        .await?;
    println!(
        "branch     what-if has {} rows, main has {}",
        what_if.count_rows("vertices", None).await?,
        main.count_rows("vertices", None).await?
    );
    for d in main.diff(&what_if).await? {
        let (i, u, x) = d.counts;
        println!(
            "diff       {}: {i} inserted, {u} updated, {x} deleted",
            d.table
        );
    }
    let failed = main.merge(&what_if, MergeOptions::default()).await?;
    println!(
        "merge      default policy: {:?}, {} conflict(s), nothing applied",
        failed.outcome,
        failed.conflicts.len()
    );
    for c in &failed.conflicts {
        println!(
            "conflict   {:?} on {} column {:?}: ours {:?}, theirs {:?}",
            c.kind, c.key, c.column, c.ours, c.theirs
        );
    }
    let t = Instant::now();
    let merged = main
        .merge(
            &what_if,
            MergeOptions::default().policy("vertices", ConflictPolicy::Theirs),
        )
        .await?;
    let stats = merged.tables.get("vertices").cloned().unwrap_or_default();
    println!(
        "merge      policy Theirs: {:?} in {:.2?}: {} inserted, {} updated, {} deleted",
        merged.outcome,
        t.elapsed(),
        stats.inserted,
        stats.updated,
        stats.deleted
    );
    println!(
        "main       {} rows; hubs: {:?}",
        main.count_rows("vertices", None).await?,
        ids_of(
            &main
                .scan(ScanRequest::table("vertices").filter("label = 'hub'"))
                .await?
        )
    );
    println!("done in    {:.2?}", started.elapsed());
    Ok(())
}

fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .map(|a| a.values().to_vec())
                .unwrap_or_default()
        })
        .collect()
}
