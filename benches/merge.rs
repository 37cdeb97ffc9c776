//! Merge and diff benches, as ratios from one run:
//!
//! - merge of 1 k changed rows into a large table / into a 10 k-row table
//!   (target ≤ 1.5: merge costs what changed);
//! - full-table comparison / diff of 1 k changes in the large table
//!   (target ≥ 20: diff reads the change, not the table), for a repeated
//!   diff and for the first diff of a fresh branch.
//!
//! `cargo bench --bench merge`; `LANCEBRANCH_BENCH_SMALL=1` uses 100 k rows
//! instead of 1 M for the large table.

mod common;

use common::{p50, ratio};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use criterion::{Criterion, criterion_group, criterion_main};
use lancebranch::branched::{BranchedBackend, MergeOptions, PRIMARY_KEY_METADATA};
use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend};
use tokio::runtime::Runtime;

fn schema() -> SchemaRef {
    let mut md = HashMap::new();
    md.insert(PRIMARY_KEY_METADATA.to_string(), "id".to_string());
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ])
        .with_metadata(md),
    )
}

fn rows(ids: impl Iterator<Item = i64>, v: i64) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    let vs = vec![v; ids.len()];
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(vs)),
        ],
    )
    .expect("batch")
}

struct Store {
    _dir: tempfile::TempDir,
    main: BranchedBackend,
    n: i64,
}

async fn store(n: i64) -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = Arc::new(
        LanceDbBackend::open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("open"),
    );
    let main = BranchedBackend::open(inner).await.expect("branched");
    let chunk = 100_000;
    let mut start = 0;
    let mut first = true;
    while start < n {
        let end = (start + chunk).min(n);
        let b = rows(start..end, 0);
        if first {
            main.create_table("t", vec![b]).await.expect("create");
            first = false;
        } else {
            main.write("t", vec![b], lancebranch::WriteMode::Append)
                .await
                .expect("append");
        }
        start = end;
    }
    // Users index the primary key; merge_insert then finds matches through
    // the index instead of scanning the table.
    main.create_scalar_index("t", &["id"], lancebranch::ScalarIndexType::BTree, None)
        .await
        .expect("index");
    Store { _dir: dir, main, n }
}

static BRANCHES: AtomicUsize = AtomicUsize::new(0);

/// A fresh branch of `s` with 1 k rows updated (spread over the table).
async fn changed_branch(s: &Store) -> BranchedBackend {
    let k = BRANCHES.fetch_add(1, Ordering::Relaxed);
    let b = s.main.fork(&format!("b{k}")).await.expect("fork");
    let step = (s.n / 1000).max(1);
    let ids = (0..1000).map(|i| (i * step) % s.n);
    // A value no earlier branch wrote, so every update is a real change.
    b.merge_insert("t", &["id"], vec![rows(ids, k as i64 + 1)])
        .await
        .expect("update");
    b
}

async fn merge_once(s: &Store) -> Duration {
    let b = changed_branch(s).await;
    let t = Instant::now();
    let r = s
        .main
        .merge(&b, MergeOptions::default())
        .await
        .expect("merge");
    let d = t.elapsed();
    assert!(!r.is_conflicted());
    d
}

async fn full_compare(a: &BranchedBackend, b: &BranchedBackend) -> usize {
    let read = |v: &BranchedBackend| {
        let v = v.clone();
        async move {
            let mut m = HashMap::new();
            for batch in v.scan(ScanRequest::table("t")).await.expect("scan") {
                let id = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("id")
                    .clone();
                let val = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("v")
                    .clone();
                for i in 0..batch.num_rows() {
                    m.insert(id.value(i), val.value(i));
                }
            }
            m
        }
    };
    let (x, y) = (read(a).await, read(b).await);
    x.iter().filter(|(k, v)| y.get(k) != Some(v)).count()
        + y.keys().filter(|k| !x.contains_key(k)).count()
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let big_n = if std::env::var_os("LANCEBRANCH_BENCH_SMALL").is_some() {
        100_000
    } else {
        1_000_000
    };
    let n = 15;
    let small = rt.block_on(store(10_000));
    let big = rt.block_on(store(big_n));

    let m_small = p50((0..n).map(|_| rt.block_on(merge_once(&small))).collect());
    let m_big = p50((0..n).map(|_| rt.block_on(merge_once(&big))).collect());
    ratio(
        &format!("merge 1k changes: {big_n} rows / 10k rows"),
        m_big,
        m_small,
        "<= 1.5",
    );

    let b = rt.block_on(changed_branch(&big));
    c.bench_function("diff/1k changes", |bench| {
        bench.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let d = rt.block_on(big.main.diff(&b)).expect("diff");
                std::hint::black_box(d);
            }
            t.elapsed()
        })
    });
    let mut diffs = Vec::new();
    let mut fulls = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let d = rt.block_on(big.main.diff(&b)).expect("diff");
        diffs.push(t.elapsed());
        assert_eq!(d[0].counts.1, 1000);
        let t = Instant::now();
        let changed = rt.block_on(full_compare(&big.main, &b));
        fulls.push(t.elapsed());
        assert_eq!(changed, 1000);
    }
    // The first diff of a fresh branch: nothing of its line read before.
    let mut firsts = Vec::new();
    for _ in 0..n {
        let b = rt.block_on(changed_branch(&big));
        let t = Instant::now();
        let d = rt.block_on(big.main.diff(&b)).expect("diff");
        firsts.push(t.elapsed());
        assert_eq!(d[0].counts.1, 1000);
    }
    let full = p50(fulls);
    ratio(
        &format!("full comparison / diff, 1k changes in {big_n} rows"),
        full,
        p50(diffs),
        ">= 20",
    );
    ratio(
        &format!("full comparison / first diff of a fresh branch, 1k changes in {big_n} rows"),
        full,
        p50(firsts),
        ">= 20",
    );
}

criterion_group! {
    name = merge;
    config = common::config();
    targets = benches
}
criterion_main!(merge);
