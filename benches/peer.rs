//! Peer baseline: branching a table by a full copy, Lance's
//! `Dataset::deep_clone` (14.0.2: copies every data, deletion and index
//! file of one version into a new dataset, then commits a `Clone`
//! operation there), against our `fork` — one catalog record, no Lance call
//! — and against our fork plus the first write on the branch, which is when
//! the table's Lance branch is made.
//!
//! One table of 1 M rows (`id` i64, `name` string, `vec` f32 × 8, about
//! 50 MB); `LANCEBRANCH_BENCH_SMALL=1` uses 10 k rows. Reported as ratios
//! from one run:
//!
//! - deep_clone / fork (target ≥ 100 at 1 M rows);
//! - deep_clone / (fork + first write of 10 rows on the branch) (target ≥ 5
//!   at 1 M rows). No targets at 10 k rows, where a copy is cheap.
//!
//! The ratios use the deep clone through the store's own (durable) Lance
//! session, so both sides give the same power-loss guarantee; the deep
//! clone of a plain Lance handle (Lance's default session, no fsync) is
//! printed beside it. Every clone goes to a fresh directory, removed
//! untimed after each sample.
//!
//! `cargo bench --profile dev --bench peer`.

mod common;

use common::{p50, ratio, small};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use criterion::{Criterion, criterion_group, criterion_main};
use lancebranch::branched::BranchedBackend;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};
use tokio::runtime::Runtime;

const DIM: i32 = 8;

fn item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, true))
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("vec", DataType::FixedSizeList(item(), DIM), true),
    ]))
}

fn rows(start: i64, n: i64) -> RecordBatch {
    let ids = Int64Array::from_iter_values(start..start + n);
    let names = StringArray::from_iter_values((start..start + n).map(|i| format!("row-{i}")));
    let floats = Float32Array::from_iter_values(
        (start * i64::from(DIM)..(start + n) * i64::from(DIM)).map(|k| (k % 1000) as f32 * 1e-3),
    );
    let vecs = FixedSizeListArray::try_new(item(), DIM, Arc::new(floats), None).expect("vectors");
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(ids), Arc::new(names), Arc::new(vecs)],
    )
    .expect("batch")
}

struct Store {
    _dir: tempfile::TempDir,
    inner: Arc<LanceDbBackend>,
    main: BranchedBackend,
    rows: usize,
    /// Where the clones go (same file system as the store).
    clones: tempfile::TempDir,
}

async fn store(n: i64) -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    // Durable, as users run it.
    let inner = Arc::new(
        LanceDbBackend::open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("open"),
    );
    let main = BranchedBackend::open(inner.clone())
        .await
        .expect("branched");
    let chunk = 100_000;
    let batches: Vec<RecordBatch> = (0..n)
        .step_by(chunk as usize)
        .map(|s| rows(s, chunk.min(n - s)))
        .collect();
    main.create_table("t", batches).await.expect("create");
    let clones = tempfile::tempdir_in(dir.path().parent().expect("parent")).expect("tempdir");
    Store {
        _dir: dir,
        inner,
        main,
        rows: n as usize,
        clones,
    }
}

static CLONES: AtomicUsize = AtomicUsize::new(0);
static FORKS: AtomicUsize = AtomicUsize::new(0);

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// One deep clone of table `t` at its current version, through the store's
/// own session (`durable`) or a plain Lance handle. Checks the copy the
/// first time.
async fn deep_clone_once(s: &Store, durable: bool, check: bool) -> Duration {
    let mut ds = if durable {
        (*s.inner.dataset("t").await.expect("dataset")).clone()
    } else {
        lance::Dataset::open(&s.inner.table_uri("t"))
            .await
            .expect("plain open")
    };
    let version = ds.version().version;
    let target = s
        .clones
        .path()
        .join(format!("c{}.lance", CLONES.fetch_add(1, Ordering::Relaxed)));
    let uri = target.to_str().expect("utf-8");
    let t = Instant::now();
    let copy = ds.deep_clone(uri, version, None).await.expect("deep_clone");
    let d = t.elapsed();
    if check {
        assert_eq!(copy.count_rows(None).await.expect("count"), s.rows);
        println!(
            "deep_clone: {} rows, {:.1} MB copied through {} (source at version {version}, copy at version {})",
            s.rows,
            dir_bytes(&target) as f64 / 1e6,
            if durable {
                "the durable session"
            } else {
                "plain Lance"
            },
            copy.version().version,
        );
    }
    drop(copy);
    std::fs::remove_dir_all(&target).expect("remove clone");
    d
}

async fn fork_once(s: &Store) -> (BranchedBackend, Duration) {
    let name = format!("f{}", FORKS.fetch_add(1, Ordering::Relaxed));
    let t = Instant::now();
    let b = s.main.fork(&name).await.expect("fork");
    (b, t.elapsed())
}

/// Fork, then the first write on the branch (which makes its Lance branch).
async fn fork_and_write_once(s: &Store) -> Duration {
    let t = Instant::now();
    let (b, _) = fork_once(s).await;
    b.write("t", vec![rows(10_000_000, 10)], WriteMode::Append)
        .await
        .expect("first write");
    t.elapsed()
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let n_rows = if small() { 10_000 } else { 1_000_000 };
    let (n_clone, n_fork) = if small() { (9, 15) } else { (9, 21) };

    let t = Instant::now();
    let s = rt.block_on(store(n_rows));
    println!("table of {n_rows} rows made in {:.1?}", t.elapsed());

    c.bench_function(&format!("fork/{n_rows} rows"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(fork_once(&s)).1).sum())
    });

    let mut clones = Vec::new();
    let mut plain = Vec::new();
    for i in 0..n_clone {
        clones.push(rt.block_on(deep_clone_once(&s, true, i == 0)));
        plain.push(rt.block_on(deep_clone_once(&s, false, i == 0)));
    }
    let forks: Vec<Duration> = (0..n_fork).map(|_| rt.block_on(fork_once(&s)).1).collect();
    let firsts: Vec<Duration> = (0..n_fork)
        .map(|_| rt.block_on(fork_and_write_once(&s)))
        .collect();
    let (clone, plain, fork, first) = (p50(clones), p50(plain), p50(forks), p50(firsts));
    println!(
        "p50 on {n_rows} rows: deep_clone {clone:.2?} (plain Lance {plain:.2?}), fork {fork:.2?}, fork + first write {first:.2?}"
    );
    // A full copy costs what the table holds, a fork nothing: the targets
    // are for the full size; at 10 k rows a copy is cheap.
    let (t_fork, t_first) = if small() {
        ("none at 10 k rows", "none at 10 k rows")
    } else {
        (">= 100 at 1 M rows", ">= 5 at 1 M rows")
    };
    ratio("deep_clone/fork", clone, fork, t_fork);
    ratio("deep_clone/(fork+first write)", clone, first, t_first);
    ratio(
        "plain-Lance deep_clone/(fork+first write)",
        plain,
        first,
        "none, for information",
    );
}

criterion_group! {
    name = peer;
    config = common::config();
    targets = benches
}
criterion_main!(peer);
