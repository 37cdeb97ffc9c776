//! Branching benches, each reported as a ratio against a baseline measured
//! in the same run:
//!
//! - fork p50 at (100 tables, 1 M rows) / fork p50 at (1 table, 1 k rows)
//!   (target ≤ 1.5, and < 1 ms absolute);
//! - scan through a view of an untouched table / direct `LanceDbBackend`
//!   scan (target ≤ 1.05);
//! - scan at fork depth 10 / depth 0 (target ≤ 1.2);
//! - first write on a branch / write on main (target ≤ 1.5).
//!
//! `cargo bench --bench branching` (release). Sizes shrink with
//! `LANCEBRANCH_BENCH_SMALL=1` for a quick run.

mod common;

use common::{p50, ratio, rows, small};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lancebranch::branched::BranchedBackend;
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend, WriteMode};
use tokio::runtime::Runtime;

struct Store {
    _dir: tempfile::TempDir,
    inner: Arc<LanceDbBackend>,
    main: BranchedBackend,
}

async fn store(tables: usize, rows_each: i64) -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8").to_string();
    // Durable, as users run it.
    let inner = Arc::new(
        LanceDbBackend::open_with(&path, LanceDbOptions::default())
            .await
            .expect("open"),
    );
    let main = BranchedBackend::open(inner.clone())
        .await
        .expect("branched");
    for t in 0..tables {
        main.create_table(&format!("t{t}"), vec![rows(0, rows_each)])
            .await
            .expect("create");
    }
    Store {
        _dir: dir,
        inner,
        main,
    }
}

static FORKS: AtomicUsize = AtomicUsize::new(0);

async fn fork_samples(s: &Store, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = format!("f{}", FORKS.fetch_add(1, Ordering::Relaxed));
        let t = Instant::now();
        s.main.fork(&name).await.expect("fork");
        out.push(t.elapsed());
    }
    out
}

async fn scan_samples(b: &dyn StorageBackend, table: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let got = b.scan(ScanRequest::table(table)).await.expect("scan");
        std::hint::black_box(got);
        out.push(t.elapsed());
    }
    out
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let (big_tables, big_rows) = if small() { (10, 1_000) } else { (100, 10_000) };
    let n = if small() { 15 } else { 41 };

    // ---- fork ----
    let tiny = rt.block_on(store(1, 1_000));
    let big = rt.block_on(store(big_tables, big_rows));
    c.bench_function("fork/1 table 1k rows", |b| {
        b.iter_custom(|iters| {
            rt.block_on(fork_samples(&tiny, iters as usize))
                .into_iter()
                .sum()
        })
    });
    let fork_small = p50(rt.block_on(fork_samples(&tiny, n)));
    let fork_big = p50(rt.block_on(fork_samples(&big, n)));
    println!(
        "fork p50: 1 table {fork_small:.2?}, {big_tables} tables x {big_rows} rows {fork_big:.2?}"
    );
    ratio("fork big/small", fork_big, fork_small, "<= 1.5, and < 1 ms");

    // ---- scan through a view vs direct ----
    let view = rt.block_on(store(1, 100_000.min(big_rows * 10)));
    c.bench_function("scan/direct", |b| {
        b.iter_custom(|iters| {
            rt.block_on(scan_samples(view.inner.as_ref(), "t0", iters as usize))
                .into_iter()
                .sum()
        })
    });
    let direct = p50(rt.block_on(scan_samples(view.inner.as_ref(), "t0", n)));
    let through = p50(rt.block_on(scan_samples(&view.main, "t0", n)));
    ratio("scan view/direct", through, direct, "<= 1.05");

    // ---- scan at depth 10 vs depth 0 ----
    // Same data shape at both depths (10k rows + ten 1-row appends), so the
    // ratio measures the branch chain, not the fragment count.
    let flat = rt.block_on(async {
        let s = store(1, 10_000).await;
        for d in 0..10 {
            s.main
                .write("t0", vec![rows(1_000_000 + d, 1)], WriteMode::Append)
                .await
                .expect("write");
        }
        s
    });
    let deep = rt.block_on(async {
        let s = store(1, 10_000).await;
        let mut v = s.main.clone();
        for d in 0..10 {
            v = v.fork(&format!("d{d}")).await.expect("fork");
            v.write("t0", vec![rows(1_000_000 + d, 1)], WriteMode::Append)
                .await
                .expect("write");
        }
        (s, v)
    });
    let d0 = p50(rt.block_on(scan_samples(&flat.main, "t0", n)));
    let d10 = p50(rt.block_on(scan_samples(&deep.1, "t0", n)));
    ratio("scan depth10/depth0", d10, d0, "<= 1.2");

    // ---- first write on a branch vs write on main ----
    let w = rt.block_on(store(1, 10_000));
    let (mut first, mut on_main) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..n {
            let b = w.main.fork(&format!("w{i}")).await.expect("fork");
            let t = Instant::now();
            b.write("t0", vec![rows(2_000_000, 10)], WriteMode::Append)
                .await
                .expect("first write");
            first.push(t.elapsed());
            let t = Instant::now();
            w.main
                .write(
                    "t0",
                    vec![rows(3_000_000 + i as i64 * 10, 10)],
                    WriteMode::Append,
                )
                .await
                .expect("main write");
            on_main.push(t.elapsed());
        }
    });
    ratio(
        "first branch write/main write",
        p50(first),
        p50(on_main),
        "<= 1.5",
    );

    // Where a first write's time goes: the Lance steps alone, through the
    // store beneath (no catalog), interleaved the same way, on a store of
    // the same shape (Lance's costs grow with a dataset's branches).
    use lancebranch::backend::BranchLines;
    let w = rt.block_on(store(1, 10_000));
    let (mut make, mut line_write, mut main_write) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..n {
            let v = w.inner.latest_version("t0", None).await.expect("version");
            let line = format!("bench{i}");
            let t = Instant::now();
            w.inner
                .create_line("t0", &line, None, v)
                .await
                .expect("create line");
            make.push(t.elapsed());
            let t = Instant::now();
            w.inner
                .write_line(
                    "t0",
                    Some(&line),
                    vec![rows(4_000_000, 10)],
                    WriteMode::Append,
                )
                .await
                .expect("line write");
            line_write.push(t.elapsed());
            let t = Instant::now();
            w.inner
                .write_line(
                    "t0",
                    None,
                    vec![rows(5_000_000 + i as i64 * 10, 10)],
                    WriteMode::Append,
                )
                .await
                .expect("main line write");
            main_write.push(t.elapsed());
        }
    });
    println!(
        "  first write, step by step (p50, the store beneath, no catalog): Lance create_branch {:.2?}, \
         first write on the new branch {:.2?}, write on main {:.2?}",
        p50(make),
        p50(line_write),
        p50(main_write)
    );
}

criterion_group! {
    name = branching;
    config = common::config();
    targets = benches
}
criterion_main!(branching);
