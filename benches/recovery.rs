//! Recovery bench: the time of `BranchedBackend::open` on an existing store
//! (every handle dropped first, as after a crash or a restart) against the
//! length of the catalog log since the last checkpoint.
//!
//! Every store gets one 1 k-row table and an explicit checkpoint, then N
//! catalog records of one of two kinds:
//!
//! - *mixed*: forks (one record each) and, every tenth record, a 1-row
//!   append on main (one `Publish` record); the forked branches stay, so
//!   the live catalog state grows with N;
//! - *churn*: fork then delete the (never written) branch, three records
//!   per cycle, topped up with 1-row appends; the live state stays one
//!   branch, so only the log grows.
//!
//! The number of records after the checkpoint is checked by reading the log
//! back before anything is timed. Reported as ratios from one run:
//!
//! - reopen with 1000 churn records since the checkpoint (one live
//!   branch) / with 10 (target ≤ 2.0): the log's length alone;
//! - reopen with 1000 mixed records since the checkpoint / the same store
//!   right after `checkpoint()` (901 live branches in both; target ≤ 2.0):
//!   the log's cost at equal live state;
//! - reopen with 1000 mixed records since the checkpoint / with 10: log and
//!   live state together (no target, for information);
//! - reopen right after `checkpoint()` of a 1000-record churn store / with
//!   10 records since the checkpoint: history behind a checkpoint
//!   (target ≤ 1.2);
//! - reopen right after `checkpoint()` of the 1000-record mixed store /
//!   with 10: the same plus 900 live branches in the checkpoint, which are
//!   state, not history (no target).
//!
//! In release (`cargo bench --bench recovery`) every target is met. A
//! debug build is slower per record (replay about 5 µs there, 1.4 µs in
//! release), and every open reads the whole log segment and rewrites its
//! last one, checkpointed records included (a checkpoint removes only
//! whole segments, which rotate at 16 MiB). See `benches/README.md`.
//!
//! Only `BranchedBackend::open` is timed (the inner `LanceDbBackend` is
//! opened just before it, untimed). A breakdown per store shows where the
//! time goes: decoding the checkpoint, reading the log files, applying the
//! records after the checkpoint.
//!
//! `cargo bench --profile dev --bench recovery`; `LANCEBRANCH_BENCH_SMALL=1`
//! takes fewer samples (the store sizes stay the same).

mod common;

use common::{p50, ratio, rows, small};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lancebranch::branched::{BranchedBackend, Record};
use lancebranch::testing::time_catalog_replay;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};
use lancebranch_wal::{Lsn, RecoveryMode, StdStorage, read_log};
use tokio::runtime::Runtime;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mixed,
    Churn,
}

/// A store on disk with no open handle.
struct Store {
    _dir: tempfile::TempDir,
    path: String,
    label: String,
}

impl Store {
    fn catalog(&self) -> PathBuf {
        Path::new(&self.path).join("_lancebranch")
    }
}

/// Open the inner store (durable, as users run it).
async fn inner(path: &str) -> Arc<LanceDbBackend> {
    Arc::new(LanceDbBackend::open(path).await.expect("open inner"))
}

/// A store whose catalog log holds `records` records of `kind` after its
/// checkpoint; checkpointed once more at the end if `checkpoint_after`.
async fn build(kind: Kind, records: usize, checkpoint_after: bool) -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8").to_string();
    let main = BranchedBackend::open(inner(&path).await)
        .await
        .expect("branched");
    main.create_table("t0", vec![rows(0, 1_000)])
        .await
        .expect("create");
    main.checkpoint().await.expect("checkpoint");
    let mut made = 0;
    while made < records {
        let name = format!("f{made}");
        if kind == Kind::Churn && records - made >= 3 {
            // Fork, BeginDelete, EndDelete.
            main.fork(&name).await.expect("fork");
            main.delete_branch(&name, false).await.expect("delete");
            made += 3;
        } else if kind == Kind::Churn || made % 10 == 9 {
            // One Publish.
            main.write("t0", vec![rows(1_000 + made as i64, 1)], WriteMode::Append)
                .await
                .expect("write");
            made += 1;
        } else {
            main.fork(&name).await.expect("fork");
            made += 1;
        }
    }
    let branches = main.list_branches().len();
    if checkpoint_after {
        main.checkpoint().await.expect("checkpoint");
    }
    drop(main);
    let label = format!(
        "{records} {} records{}",
        match kind {
            Kind::Mixed => "mixed",
            Kind::Churn => "churn",
        },
        if checkpoint_after {
            " then checkpoint()"
        } else {
            " since the checkpoint"
        }
    );
    let s = Store {
        _dir: dir,
        path,
        label,
    };
    let b = breakdown(&s);
    let want = if checkpoint_after { 0 } else { records };
    assert_eq!(b.since, want, "records since the checkpoint");
    println!(
        "store {}: {branches} live branches; checkpoint {} B ({:.2?} to decode), \
         log files {} B / {} records ({:.2?} to read), {} records after the checkpoint \
         ({:.2?} to apply)",
        s.label, b.ckpt_bytes, b.decode, b.log_bytes, b.total, b.scan, b.since, b.apply
    );
    s
}

/// Where an open of the catalog spends its time, measured piecewise without
/// opening the store (median of a few runs).
struct Breakdown {
    ckpt_bytes: usize,
    decode: Duration,
    log_bytes: u64,
    total: usize,
    scan: Duration,
    since: usize,
    apply: Duration,
}

fn breakdown(s: &Store) -> Breakdown {
    let steps: Vec<_> = (0..5)
        .map(|_| time_catalog_replay(Path::new(&s.path)).expect("replay"))
        .collect();
    let storage = StdStorage::open(s.catalog().join("wal")).expect("log dir");
    let total = read_log::<Record>(&storage, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO)
        .expect("log")
        .records
        .len();
    Breakdown {
        ckpt_bytes: steps[0].checkpoint_bytes,
        decode: p50(steps.iter().map(|r| r.decode).collect()),
        log_bytes: steps[0].log_bytes,
        total,
        scan: p50(steps.iter().map(|r| r.scan).collect()),
        since: steps[0].records_since,
        apply: p50(steps.iter().map(|r| r.apply).collect()),
    }
}

/// One timed reopen; every handle is dropped before returning.
async fn reopen(s: &Store) -> Duration {
    let inner = inner(&s.path).await;
    let t = Instant::now();
    let main = BranchedBackend::open(inner).await.expect("reopen");
    let d = t.elapsed();
    std::hint::black_box(&main);
    drop(main);
    d
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let n = if small() { 11 } else { 41 };

    let t = Instant::now();
    let stores: Vec<Store> = [
        (Kind::Mixed, 10, false),
        (Kind::Mixed, 100, false),
        (Kind::Mixed, 1000, false),
        (Kind::Churn, 1000, true),
        (Kind::Mixed, 1000, true),
        (Kind::Churn, 1000, false),
    ]
    .into_iter()
    .map(|(k, r, c)| rt.block_on(build(k, r, c)))
    .collect();
    println!("stores built in {:.1?}", t.elapsed());

    c.bench_function("reopen/10 records since checkpoint", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(reopen(&stores[0]))).sum())
    });

    // Rounds over every store, so drift hits all of them alike.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    for _ in 0..n {
        for (i, s) in stores.iter().enumerate() {
            samples[i].push(rt.block_on(reopen(s)));
        }
    }
    let p: Vec<Duration> = samples.into_iter().map(p50).collect();
    for (s, d) in stores.iter().zip(&p) {
        println!("reopen p50, {}: {d:.2?}", s.label);
    }
    println!(
        "replay cost per record since the checkpoint: {:.1?}",
        (p[2].saturating_sub(p[0])) / 990
    );
    ratio(
        "reopen 1000 records (1 live branch) / 10 records since checkpoint",
        p[5],
        p[0],
        "<= 2.0",
    );
    ratio(
        "reopen 1000 mixed records since checkpoint / the same store right after checkpoint (901 live branches both)",
        p[2],
        p[4],
        "<= 2.0: the log's own cost at equal live state",
    );
    ratio(
        "reopen 1000 mixed records (901 live branches) / 10 records since checkpoint",
        p[2],
        p[0],
        "none: log and live state grow together; for information",
    );
    ratio(
        "reopen after checkpoint (1000 records of history, 1 live branch) / 10 records since checkpoint",
        p[3],
        p[0],
        "<= 1.2",
    );
    ratio(
        "reopen after checkpoint (1000 records of history, 901 live branches) / 10 records since checkpoint",
        p[4],
        p[0],
        "none: live state, not history; for information",
    );
}

criterion_group! {
    name = recovery;
    config = common::config();
    targets = benches
}
criterion_main!(recovery);
