//! Throughput of the WAL against the physical floor of the disk, measured in
//! the same process and directory:
//!
//! * (a) a raw `write` + `fdatasync` loop with the same frame size;
//! * (b) our single-writer `append` with `SyncPolicy::Always`;
//! * (c) 1, 2, 4 and 8 concurrent writers sharing syncs (group commit);
//! * (d) `append` with `SyncPolicy::Never`.
//!
//! Prints the ratios b/a (target >= 0.8) and c8/c1 (target >= 4).
//! Run: `cargo bench -p lancebranch-wal -- --quick`. The files go to
//! `$WAL_BENCH_DIR` or the target directory's tmp (never tmpfs, if you can
//! help it: the point is the real flush cost).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use lancebranch_wal::testing::FRAME_HEADER_LEN;
use lancebranch_wal::{Options, SyncPolicy, Wal};

/// Payload bytes per record (postcard adds a 2-byte length).
const PAYLOAD: usize = 256;

type Record = Vec<u8>;

/// Records written and time spent, per benchmark, over all criterion calls.
static TALLY: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn tally(name: &str, records: u64, elapsed: Duration) {
    if let Ok(mut t) = TALLY.lock() {
        let e = t.entry(name.to_string()).or_default();
        e.0 += records;
        e.1 += elapsed;
    }
}

fn rate(name: &str) -> Option<f64> {
    let t = TALLY.lock().ok()?;
    let (n, d) = t.get(name)?;
    (d.as_secs_f64() > 0.0).then(|| *n as f64 / d.as_secs_f64())
}

fn bench_root() -> PathBuf {
    std::env::var_os("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wal-bench"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = bench_root().join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

fn record() -> Record {
    (0..PAYLOAD).map(|i| i as u8).collect()
}

fn open(name: &str, sync: SyncPolicy) -> Wal<Record> {
    let (wal, _) = Wal::open(fresh_dir(name), Options::default().sync(sync)).expect("open wal");
    wal
}

/// `iters` appends split over `writers` threads; returns the wall time.
fn appenders(wal: &Wal<Record>, writers: u64, iters: u64) -> Duration {
    let rec = record();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers {
            let share = iters / writers + u64::from(t < iters % writers);
            let rec = &rec;
            s.spawn(move || {
                for _ in 0..share {
                    wal.append(rec).expect("append");
                }
            });
        }
    });
    start.elapsed()
}

/// Prints the rates and the two ratios.
fn report(rate: &dyn Fn(&str) -> Option<f64>) {
    for (key, label) in [
        ("a", "(a) raw write+fdatasync"),
        ("b", "(b) append, Sync::Always"),
        ("c1", "(c) group commit, 1 writer"),
        ("c2", "(c) group commit, 2 writers"),
        ("c4", "(c) group commit, 4 writers"),
        ("c8", "(c) group commit, 8 writers"),
        ("d", "(d) append, Sync::Never"),
    ] {
        match rate(key) {
            Some(r) => println!("  {label:<30} {r:>12.0} records/s"),
            None => println!("  {label:<30} {:>12} (not run)", "-"),
        }
    }
    let ratio = |x: &str, y: &str| match (rate(x), rate(y)) {
        (Some(x), Some(y)) => format!("{:.2}", x / y),
        _ => "n/a".to_string(),
    };
    println!("  b/a   = {}  (target >= 0.8)", ratio("b", "a"));
    println!("  c8/c1 = {}  (target >= 4)", ratio("c8", "c1"));
}

/// Appends from `writers` threads for `slice`; returns (records, wall time).
fn run_for(wal: &Wal<Record>, writers: usize, slice: Duration) -> (u64, Duration) {
    let rec = record();
    let start = Instant::now();
    let deadline = start + slice;
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let rec = &rec;
                s.spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        wal.append(rec).expect("append");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    (total, start.elapsed())
}

/// Runs the cases in short alternating slices, so that drift in the disk's
/// flush latency affects them alike.
fn interleaved(frame_len: usize, rounds: u32) -> BTreeMap<String, (u64, Duration)> {
    let slice = Duration::from_millis(300);
    let mut out: BTreeMap<String, (u64, Duration)> = BTreeMap::new();
    let mut add = |k: &str, (n, d): (u64, Duration)| {
        let e = out.entry(k.to_string()).or_default();
        e.0 += n;
        e.1 += d;
    };
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(fresh_dir("iraw").join("raw.log"))
        .expect("open raw file");
    let frame = vec![0x5au8; frame_len];
    let synced = open("isync", SyncPolicy::Always);
    let unsynced = open("inosync", SyncPolicy::Never);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < slice {
            raw.write_all(&frame).expect("write");
            raw.sync_data().expect("fdatasync");
            n += 1;
        }
        add("a", (n, start.elapsed()));
        add("b", run_for(&synced, 1, slice));
        for w in [1, 2, 4, 8] {
            add(&format!("c{w}"), run_for(&synced, w, slice));
        }
        add("d", run_for(&unsynced, 1, slice));
    }
    out
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let frame_len = FRAME_HEADER_LEN + postcard::to_allocvec(&record()).expect("encode").len();

    let mut g = c.benchmark_group("wal_sync");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));

    g.bench_function("a_raw_write_fdatasync", |b| {
        let path = fresh_dir("raw").join("raw.log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open raw file");
        let frame = vec![0x5au8; frame_len];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&frame).expect("write");
                file.sync_data().expect("fdatasync");
            }
            let e = start.elapsed();
            tally("a", iters, e);
            e
        });
    });

    g.bench_function("b_append_sync_always", |b| {
        let wal = open("b", SyncPolicy::Always);
        let rec = record();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(wal.append(&rec).expect("append"));
            }
            let e = start.elapsed();
            tally("b", iters, e);
            e
        });
    });

    for writers in [1u64, 2, 4, 8] {
        let name = format!("c{writers}");
        g.bench_function(format!("c_group_commit_{writers}_writers"), |b| {
            let wal = open(&name, SyncPolicy::Always);
            b.iter_custom(|iters| {
                let e = appenders(&wal, writers, iters);
                tally(&name, iters, e);
                e
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wal_nosync");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    g.bench_function("d_append_sync_never", |b| {
        let wal = open("d", SyncPolicy::Never);
        let rec = record();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(wal.append(&rec).expect("append"));
            }
            let e = start.elapsed();
            tally("d", iters, e);
            e
        });
    });
    g.finish();
    c.final_summary();

    println!();
    println!(
        "record: {PAYLOAD} B payload, {frame_len} B frame; dir {}",
        bench_root().display()
    );
    println!("criterion runs (each benchmark in turn):");
    report(&rate);
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--test" || a == "--list") {
        let rounds = std::env::var("WAL_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(6);
        let inter = interleaved(frame_len, rounds);
        println!("interleaved: {rounds} rounds of 300 ms per case, a b c1 c2 c4 c8 d in turn");
        println!("(less sensitive to a disk whose flush latency drifts):");
        report(&|k| {
            inter
                .get(k)
                .map(|(n, d)| *n as f64 / d.as_secs_f64().max(1e-9))
        });
    }
    let _ = fs::remove_dir_all(bench_root());
}
