//! The write path, each figure a ratio against a baseline run side by side:
//!
//! - **concurrent writers**: 8 tasks appending to 8 different branches
//!   (and, separately, to 8 different tables of main) / 1 task, in
//!   acknowledged writes per second (target ≥ 3 on the 2-core VM);
//! - **the price of our layer**: a durable 1-row append on main through
//!   `BranchedBackend` / a plain LanceDB `Table::add` of the same batch (no
//!   lancebranch, no fsync), interleaved write by write, p50 (target ≤
//!   1.2), with the steps between: our `LanceDbBackend` without fsync, and
//!   with the fsync route. Prints the synced writes (Lance files) and the
//!   catalog log syncs per commit.
//!
//! `cargo bench --bench write` (release). `LANCEBRANCH_BENCH_SMALL=1`
//! runs fewer rounds.

mod common;

use common::{p50, rows, small};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lancebranch::branched::BranchedBackend;
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};
use tokio::runtime::Runtime;

const WRITERS: usize = 8;

async fn durable_store(dir: &std::path::Path) -> (Arc<LanceDbBackend>, BranchedBackend) {
    let path = dir.to_str().expect("utf-8");
    let inner = Arc::new(
        LanceDbBackend::open_with(path, LanceDbOptions::default())
            .await
            .expect("open"),
    );
    let main = BranchedBackend::open(inner.clone())
        .await
        .expect("branched");
    (inner, main)
}

/// CPU time (user + system) this process used so far, from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Writes per second of `targets.len()` tasks, each appending `each`
/// 1-row batches to its (view, table), and the CPU seconds per write.
async fn rate(targets: &[(BranchedBackend, String)], each: usize, base: i64) -> (f64, f64) {
    let cpu = cpu_seconds();
    let t = Instant::now();
    let tasks: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(k, (view, table))| {
            let (view, table) = (view.clone(), table.clone());
            tokio::spawn(async move {
                for i in 0..each {
                    let id = base + (k * 100_000 + i) as i64;
                    view.write(&table, vec![rows(id, 1)], WriteMode::Append)
                        .await
                        .expect("write");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
    let n = (targets.len() * each) as f64;
    (n / t.elapsed().as_secs_f64(), (cpu_seconds() - cpu) / n)
}

/// Interleaved rounds of 1 writer and of `WRITERS` writers; prints the
/// ratio of the median rates.
async fn scaling(what: &str, targets: &[(BranchedBackend, String)], rounds: usize, each: usize) {
    let (mut one, mut many, mut cpu1, mut cpu8) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let base = 10_000_000 * (r as i64 + 1);
        let (w, c) = rate(&targets[..1], each, base).await;
        one.push(w);
        cpu1.push(c);
        let (w, c) = rate(targets, each, base + 5_000_000).await;
        many.push(w);
        cpu8.push(c);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (one, many, cpu1, cpu8) = (med(one), med(many), med(cpu1), med(cpu8));
    // With every core busy, the rate cannot pass cores / CPU per write.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  {what}: CPU per write {:.2} ms (1 writer), {:.2} ms ({WRITERS} writers); \
         {cores} cores: at most {:.0} writes/s, {WRITERS} writers reach {:.0} % of it; \
         1 writer uses {:.0} % of one core",
        cpu1 * 1e3,
        cpu8 * 1e3,
        cores / cpu8,
        100.0 * many * cpu8 / cores,
        100.0 * one * cpu1,
    );
    println!(
        "RATIO {WRITERS} writers / 1, {what}: {:.3} ({many:.0} / {one:.0} writes/s; target >= 3)",
        many / one
    );
}

async fn concurrent(rounds: usize, each: usize) {
    // 8 branches of one table, each with its line made (first write done).
    let dir = tempfile::tempdir().expect("tempdir");
    let (_inner, main) = durable_store(dir.path()).await;
    main.create_table("t", vec![rows(0, 10_000)])
        .await
        .expect("create");
    let mut targets = Vec::new();
    for b in 0..WRITERS {
        let view = main.fork(&format!("b{b}")).await.expect("fork");
        view.write("t", vec![rows(1_000_000 + b as i64, 1)], WriteMode::Append)
            .await
            .expect("first write");
        targets.push((view, "t".to_string()));
    }
    scaling("8 branches of one table", &targets, rounds, each).await;

    // 8 tables of main.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_inner, main) = durable_store(dir.path()).await;
    let mut targets = Vec::new();
    for t in 0..WRITERS {
        let name = format!("t{t}");
        main.create_table(&name, vec![rows(0, 10_000)])
            .await
            .expect("create");
        targets.push((main.clone(), name));
    }
    scaling("8 tables of main", &targets, rounds, each).await;
}

/// A plain LanceDB table (no lancebranch, no fsync) beside ours: the same
/// 1-row batch, write by write.
async fn layer_cost(n: usize) {
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain_db = lancedb::connect(plain_dir.path().to_str().expect("utf-8"))
        .execute()
        .await
        .expect("connect");
    let plain = plain_db
        .create_table("t", rows(0, 10_000))
        .execute()
        .await
        .expect("create plain");

    // Plain LanceDB with stable row ids, which every table of ours has
    // (diff and merge read Lance change sets, which need them).
    let stable_dir = tempfile::tempdir().expect("tempdir");
    let stable_db = lancedb::connect(stable_dir.path().to_str().expect("utf-8"))
        .storage_option("new_table_enable_stable_row_ids", "true")
        .execute()
        .await
        .expect("connect");
    let stable = stable_db
        .create_table("t", rows(0, 10_000))
        .execute()
        .await
        .expect("create plain, stable row ids");

    // The same with a consistency interval set, as our store always sets
    // one (an hour here: no check falls due during the run).
    let interval_dir = tempfile::tempdir().expect("tempdir");
    let interval_db = lancedb::connect(interval_dir.path().to_str().expect("utf-8"))
        .storage_option("new_table_enable_stable_row_ids", "true")
        .read_consistency_interval(Duration::from_secs(3600))
        .execute()
        .await
        .expect("connect");
    let interval = interval_db
        .create_table("t", rows(0, 10_000))
        .execute()
        .await
        .expect("create plain, consistency interval");

    let nosync_dir = tempfile::tempdir().expect("tempdir");
    let nosync = LanceDbBackend::open_with(
        nosync_dir.path().to_str().expect("utf-8"),
        LanceDbOptions {
            durable: false,
            ..LanceDbOptions::default()
        },
    )
    .await
    .expect("open without fsync");
    nosync
        .create_table("t", vec![rows(0, 10_000)])
        .await
        .expect("create");

    // The same without checking for other handles' commits before each
    // call (`read_consistency`), as the plain table does not.
    let lax_dir = tempfile::tempdir().expect("tempdir");
    let lax = LanceDbBackend::open_with(
        lax_dir.path().to_str().expect("utf-8"),
        LanceDbOptions {
            durable: false,
            read_consistency: Duration::from_secs(3600),
            ..LanceDbOptions::default()
        },
    )
    .await
    .expect("open without fsync or consistency checks");
    lax.create_table("t", vec![rows(0, 10_000)])
        .await
        .expect("create");

    let synced_dir = tempfile::tempdir().expect("tempdir");
    let synced = LanceDbBackend::open_with(
        synced_dir.path().to_str().expect("utf-8"),
        LanceDbOptions::default(),
    )
    .await
    .expect("open durable");
    synced
        .create_table("t", vec![rows(0, 10_000)])
        .await
        .expect("create");

    let ours_dir = tempfile::tempdir().expect("tempdir");
    let (ours_inner, ours) = durable_store(ours_dir.path()).await;
    ours.create_table("t", vec![rows(0, 10_000)])
        .await
        .expect("create");
    let counter = ours_inner.sync_counter().expect("durable").clone();
    let before = (
        counter.synced_writes(),
        counter.deferred_writes(),
        counter.barriers(),
        ours.log_syncs(),
    );

    // LanceDB's own `add` on our store's table handle: our write path
    // around it left out.
    let raw = nosync.table_at("t", None, None).await.expect("handle");
    let mut times: [Vec<Duration>; 8] = Default::default();
    for i in 0..n {
        let batch = rows(1_000_000 + i as i64, 1);
        let t = Instant::now();
        plain.add(batch.clone()).execute().await.expect("plain add");
        times[0].push(t.elapsed());
        let t = Instant::now();
        nosync
            .write("t", vec![batch.clone()], WriteMode::Append)
            .await
            .expect("write without fsync");
        times[1].push(t.elapsed());
        let t = Instant::now();
        synced
            .write("t", vec![batch.clone()], WriteMode::Append)
            .await
            .expect("durable write");
        times[2].push(t.elapsed());
        let t = Instant::now();
        ours.write("t", vec![batch], WriteMode::Append)
            .await
            .expect("branched write");
        times[3].push(t.elapsed());
        let t = Instant::now();
        lax.write("t", vec![rows(2_000_000 + i as i64, 1)], WriteMode::Append)
            .await
            .expect("write without checks");
        times[4].push(t.elapsed());
        let t = Instant::now();
        stable
            .add(rows(3_000_000 + i as i64, 1))
            .execute()
            .await
            .expect("plain add, stable row ids");
        times[5].push(t.elapsed());
        let t = Instant::now();
        raw.add(rows(4_000_000 + i as i64, 1))
            .execute()
            .await
            .expect("add on our handle");
        times[6].push(t.elapsed());
        let t = Instant::now();
        interval
            .add(rows(5_000_000 + i as i64, 1))
            .execute()
            .await
            .expect("plain add, consistency interval");
        times[7].push(t.elapsed());
    }
    let [
        plain_t,
        nosync_t,
        synced_t,
        ours_t,
        lax_t,
        stable_t,
        raw_t,
        interval_t,
    ] = times.map(p50);
    let show = |what: &str, d: Duration| {
        println!(
            "  {what}: p50 {d:.2?} ({:.3} x plain)",
            d.as_secs_f64() / plain_t.as_secs_f64()
        );
    };
    show("plain LanceDB, stable row ids", stable_t);
    show(
        "plain LanceDB, stable row ids, consistency interval 1 h",
        interval_t,
    );
    show(
        "LanceDB add on the handle of our store's table, no fsync",
        raw_t,
    );
    show("LanceDbBackend, no fsync, no consistency checks", lax_t);
    show("LanceDbBackend, no fsync", nosync_t);
    show("LanceDbBackend, fsync route", synced_t);
    let per = |now: u64, then: u64| (now - then) as f64 / n as f64;
    println!(
        "  per durable commit: {:.2} synced Lance writes (file + directory fsync each), \
         {:.2} files synced at a barrier, {:.2} barriers, {:.2} catalog log syncs",
        per(counter.synced_writes(), before.0),
        per(counter.deferred_writes(), before.1),
        per(counter.barriers(), before.2),
        per(ours.log_syncs(), before.3),
    );
    common::ratio(
        "durable write on main / plain LanceDB Table::add",
        ours_t,
        plain_t,
        "<= 1.2",
    );
}

fn benches(_c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let (rounds, each, n) = if small() { (3, 10, 30) } else { (7, 25, 150) };
    rt.block_on(layer_cost(n));
    rt.block_on(concurrent(rounds, each));
}

criterion_group! {
    name = write;
    config = common::config();
    targets = benches
}
criterion_main!(write);
