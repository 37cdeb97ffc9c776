//! Diff and merge in bounded memory: peak RSS and time of a diff of 1 M
//! changed rows / of 100 k changed rows in a 10 M-row table (targets: RSS
//! ≤ 2, time ≤ 12), read as a stream (`diff_stream`), beside the collecting
//! `diff`; and of a merge of those changes (in batches, the default, and
//! at once, as one batch), whose peak RSS is also set against the streamed
//! diff of 100 k changes (target ≤ 2).
//!
//! Each diff runs in a child process (this binary again, with
//! `LANCEBRANCH_DIFF_CHILD` set) that reports its peak RSS (`VmHWM` of
//! `/proc/self/status`), so the runs do not share an allocator's high
//! water mark. The parent builds the store once: a keyed table of N rows,
//! and one branch per size whose first rows were updated (`merge_insert`,
//! so they keep their stable row ids).
//!
//! `cargo bench --bench diff_memory` (release). `LANCEBRANCH_BENCH_SMALL=1`:
//! 1 M rows, 10 k / 100 k changes. `LANCEBRANCH_BENCH_MERGE_BATCH=<n>`: the
//! merge's batch size (default `MERGE_BATCH_ROWS`).

mod common;

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::TryStreamExt;
use lancebranch::branched::{BranchedBackend, MergeOptions, PRIMARY_KEY_METADATA};
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};
use tokio::runtime::Runtime;

const CHILD: &str = "LANCEBRANCH_DIFF_CHILD";

fn keyed() -> SchemaRef {
    let md = [(PRIMARY_KEY_METADATA.to_string(), "id".to_string())];
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ])
        .with_metadata(md.into_iter().collect()),
    )
}

/// Rows `start..start + n`: `v` = `id`, or `-id - 1` when `updated`.
fn rows(start: i64, n: i64, updated: bool) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    RecordBatch::try_new(
        keyed(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().copied())),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&i| if updated { -i - 1 } else { i }),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("row number {i}")),
            )),
        ],
    )
    .expect("batch")
}

async fn open(path: &str) -> BranchedBackend {
    let inner = LanceDbBackend::open_with(path, LanceDbOptions::default())
        .await
        .expect("open");
    BranchedBackend::open(Arc::new(inner))
        .await
        .expect("branched")
}

const CHUNK: i64 = 500_000;

async fn build(path: &str, table_rows: i64, sizes: &[i64]) {
    let main = open(path).await;
    main.create_table("t", vec![rows(0, CHUNK.min(table_rows), false)])
        .await
        .expect("create");
    let mut at = CHUNK;
    while at < table_rows {
        let n = CHUNK.min(table_rows - at);
        main.write("t", vec![rows(at, n, false)], WriteMode::Append)
            .await
            .expect("append");
        at += n;
    }
    for &n in sizes {
        let b = main.fork(&format!("c{n}")).await.expect("fork");
        let mut done = 0;
        while done < n {
            let k = CHUNK.min(n - done);
            b.merge_insert("t", &["id"], vec![rows(done, k, true)])
                .await
                .expect("update");
            done += k;
        }
    }
}

/// In the child: one diff; prints `RESULT <rows> <ms> <peak kB>`.
async fn child(spec: &str) {
    let mut parts = spec.split(',');
    let (path, branch, mode) = (
        parts.next().expect("path"),
        parts.next().expect("branch"),
        parts.next().expect("mode"),
    );
    let main = open(path).await;
    let other = main.branch(branch).expect("branch");
    if mode.starts_with("merge") {
        return merge_child(&main, &other, branch, mode).await;
    }
    let t = Instant::now();
    let mut n = 0usize;
    if mode == "stream" {
        let mut s = main
            .diff_stream(&other, &Default::default())
            .await
            .expect("diff_stream");
        while let Some(b) = s.try_next().await.expect("batch") {
            n += b.rows.num_rows();
        }
    } else {
        for d in main.diff(&other).await.expect("diff") {
            n += d.rows.iter().map(RecordBatch::num_rows).sum::<usize>();
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("RESULT {n} {ms:.1} {}", peak_kb());
}

/// In the child: merge `other` into a fresh fork of main, in batches
/// (`merge`) or at once (`merge-at-once`); prints `RESULT <rows> <ms> <peak
/// kB>`.
async fn merge_child(main: &BranchedBackend, other: &BranchedBackend, branch: &str, mode: &str) {
    let target = main.fork(&format!("{mode}-{branch}")).await.expect("fork");
    let mut opts = MergeOptions::default();
    if mode == "merge-at-once" {
        opts = opts.batch_rows(usize::MAX);
    } else if let Some(n) = std::env::var("LANCEBRANCH_BENCH_MERGE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts = opts.batch_rows(n);
    }
    let t = Instant::now();
    let r = target.merge(other, opts).await.expect("merge");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let s = &r.tables["t"];
    let n = s.inserted + s.updated + s.deleted;
    println!("RESULT {n} {ms:.1} {}", peak_kb());
}

fn peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Run one diff in a child process: (rows, ms, peak kB).
fn run_child(path: &str, branch: &str, mode: &str) -> (usize, f64, u64) {
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe)
        .arg("--bench")
        .env(CHILD, format!("{path},{branch},{mode}"))
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "child gave no result: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[1].parse().expect("rows"),
        f[2].parse().expect("ms"),
        f[3].parse().expect("kB"),
    )
}

fn benches(_c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    if let Ok(spec) = std::env::var(CHILD) {
        rt.block_on(child(&spec));
        return;
    }
    let (table_rows, small_n, big_n) = if common::small() {
        (1_000_000, 10_000, 100_000)
    } else {
        (10_000_000, 100_000, 1_000_000)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8").to_string();
    let t = Instant::now();
    rt.block_on(build(&path, table_rows, &[small_n, big_n]));
    println!(
        "store: {table_rows} rows, branches with {small_n} and {big_n} updated rows, built in {:.1?}",
        t.elapsed()
    );
    let mut streamed_small_kb = 0;
    for mode in ["stream", "collect", "merge", "merge-at-once"] {
        let (ns, ts, ks) = run_child(&path, &format!("c{small_n}"), mode);
        let (nb, tb, kb) = run_child(&path, &format!("c{big_n}"), mode);
        assert_eq!((ns as i64, nb as i64), (small_n, big_n), "changed rows");
        println!(
            "  {mode}: {small_n} changes {ts:.0} ms, peak {ks} kB; {big_n} changes {tb:.0} ms, peak {kb} kB"
        );
        let bounded = mode == "stream" || mode == "merge";
        let target = |t: &str| {
            if bounded {
                t.to_string()
            } else {
                "none (all changes held)".into()
            }
        };
        let what = if mode.starts_with("merge") {
            ""
        } else {
            "diff "
        };
        println!(
            "RATIO {what}({mode}) peak RSS, {big_n} / {small_n} changes: {:.3} ({kb} kB / {ks} kB; target {})",
            kb as f64 / ks as f64,
            target("<= 2")
        );
        println!(
            "RATIO {what}({mode}) time, {big_n} / {small_n} changes: {:.3} ({tb:.0} ms / {ts:.0} ms; target {})",
            tb / ts,
            target("<= 12")
        );
        if mode == "stream" {
            streamed_small_kb = ks;
        } else if mode.starts_with("merge") {
            println!(
                "RATIO ({mode}) peak RSS, merge of {big_n} / diff_stream of {small_n} changes: {:.3} ({kb} kB / {streamed_small_kb} kB; target {})",
                kb as f64 / streamed_small_kb as f64,
                target("<= 2")
            );
        }
    }
}

criterion_group! {
    name = diff_memory;
    config = common::config();
    targets = benches
}
criterion_main!(diff_memory);
