//! Concurrent appenders under group commit: nothing lost, LSNs increase,
//! nobody is acknowledged before its record is durable, and appenders share
//! syncs.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Rec, seeds};
use lancebranch_wal::{Lsn, Options, RecoveryMode, SimStorage, SyncPolicy, Wal, read_log};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 25;

fn value(t: u64, i: u64) -> Rec {
    (t * 1000 + i, format!("thread {t} record {i}"))
}

/// How the appenders of [`run`] append.
#[derive(Clone, Copy)]
enum Mode {
    /// `Wal::append`.
    Append,
    /// `Wal::write_batch` under a lock of the callers' own (which orders
    /// the records), then `Wal::sync_until` outside it.
    WriteThenSync,
}

/// Runs `THREADS` appenders; returns every acknowledged `(lsn, record)`.
/// With `sim`, each appender checks right after its append returns that the
/// record is already in the durable image of the storage.
fn run(wal: &Arc<Wal<Rec>>, sim: Option<&SimStorage>, mode: Mode) -> Vec<(Lsn, Rec)> {
    let order = Arc::new(std::sync::Mutex::new(()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, order) = (Arc::clone(wal), Arc::clone(&order));
            let sim = sim.cloned();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..PER_THREAD {
                    let v = value(t, i);
                    let lsn = match mode {
                        Mode::Append => wal.append(&v).expect("append"),
                        Mode::WriteThenSync => {
                            let lsns = {
                                let _g = order.lock().expect("order lock");
                                wal.write_batch(std::slice::from_ref(&v)).expect("write")
                            };
                            wal.sync_until(lsns.end).expect("sync");
                            lsns.start
                        }
                    };
                    // Every 5th append; every write of `WriteThenSync`.
                    if let Some(sim) = &sim
                        && (i % 5 == 0 || matches!(mode, Mode::WriteThenSync))
                    {
                        let durable = read_log::<Rec>(
                            &sim.durable_snapshot(),
                            RecoveryMode::TolerateCorruptedTail,
                            lsn,
                        )
                        .expect("read durable image");
                        assert_eq!(
                            durable.records.first(),
                            Some(&(lsn, v.clone())),
                            "acknowledged before durable"
                        );
                    }
                    mine.push((lsn, v));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let mine = t.join().expect("appender thread");
        for w in mine.windows(2) {
            assert!(w[0].0 < w[1].0, "LSNs of one thread must increase: {w:?}");
        }
        all.extend(mine);
    }
    all.sort();
    all
}

fn check_complete(all: &[(Lsn, Rec)]) {
    assert_eq!(all.len() as u64, THREADS * PER_THREAD);
    let unique: BTreeSet<Lsn> = all.iter().map(|(l, _)| *l).collect();
    assert_eq!(unique.len(), all.len(), "duplicate LSNs");
    assert_eq!(all.first().map(|x| x.0), Some(Lsn(1)));
    assert_eq!(all.last().map(|x| x.0), Some(Lsn(THREADS * PER_THREAD)));
}

#[test]
fn concurrent_appenders_share_syncs_and_lose_nothing() {
    let sim = SimStorage::new();
    sim.set_sync_delay(Duration::from_millis(2));
    let opts = Options::default().segment_size(2048);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts.clone()).expect("open");
    let before = sim.stats().sync_data;
    let wal = Arc::new(wal);
    let all = run(&wal, Some(&sim), Mode::Append);
    check_complete(&all);
    let syncs = sim.stats().sync_data - before;
    let appends = THREADS * PER_THREAD;
    assert!(
        syncs * 2 <= appends,
        "group commit should share syncs: {syncs} syncs for {appends} appends"
    );
    assert!(wal.segment_count() > 1, "the test should rotate segments");
    drop(wal);
    for seed in seeds(0..6) {
        // Everything acknowledged survives any power loss.
        let copy = sim.durable_snapshot();
        let crash = copy.crash(seed);
        let (_, got) = Wal::<Rec>::open_with_storage(copy, opts.clone())
            .unwrap_or_else(|e| panic!("seed {seed} ({crash}): {e}"));
        assert_eq!(got.records, all, "seed {seed}");
    }
}

#[test]
fn concurrent_appenders_without_sync() {
    let sim = SimStorage::new();
    let opts = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(1024);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts.clone()).expect("open");
    let wal = Arc::new(wal);
    let all = run(&wal, None, Mode::Append);
    check_complete(&all);
    assert_eq!(
        sim.stats().sync_data as usize,
        1 + 2 * (wal.segment_count() - 1)
    );
    wal.sync().expect("sync");
    let iterated: Vec<_> = wal
        .iter_from(Lsn::ZERO)
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("read back");
    assert_eq!(iterated, all);
    drop(wal);
    let (_, got) = Wal::<Rec>::open_with_storage(sim.durable_snapshot(), opts).expect("reopen");
    assert_eq!(got.records, all);
}

#[test]
fn concurrent_appenders_on_real_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::<Rec>::open(dir.path(), Options::default()).expect("open");
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| (wal.append(&value(t, i)).expect("append"), value(t, i)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(Lsn, Rec)> = Vec::new();
    for t in threads {
        all.extend(t.join().expect("thread"));
    }
    all.sort();
    assert_eq!(all.len(), 40);
    drop(wal);
    let (_, got) = Wal::<Rec>::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(got.records, all);
}

/// `write_batch` under the caller's own lock (which orders the records),
/// then `sync_until` outside it: the callers share syncs, and nobody is
/// answered before its record is durable.
#[test]
fn writes_ordered_by_a_caller_lock_share_the_sync_outside_it() {
    let sim = SimStorage::new();
    sim.set_sync_delay(Duration::from_millis(2));
    let opts = Options::default().segment_size(2048);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts).expect("open");
    let before = sim.stats().sync_data;
    let wal = Arc::new(wal);
    let all = run(&wal, Some(&sim), Mode::WriteThenSync);
    check_complete(&all);
    let syncs = sim.stats().sync_data - before;
    let appends = THREADS * PER_THREAD;
    assert!(
        syncs * 2 <= appends,
        "the sync should be shared: {syncs} syncs for {appends} writes"
    );
}
