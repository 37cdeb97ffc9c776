//! A failed fsync poisons the log; reopening recovers it with nothing
//! acknowledged lost, even though the failed data may still be visible in
//! the (simulated) page cache while never reaching the disk.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Rec, expected, lsns, rec, seeds};
use lancebranch_wal::{Error, Lsn, Options, SimStorage, Wal};

fn opts() -> Options {
    Options::default().segment_size(300)
}

#[test]
fn failed_sync_poisons_then_reopen_recovers() {
    for seed in seeds(0..24) {
        let crash_before_reopen = seed % 2 == 0;
        let sim = SimStorage::new();
        let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts()).expect("open");
        let acked = 5 + seed % 7;
        for i in 0..acked {
            assert_eq!(wal.append(&rec(i)).expect("append"), Lsn(i + 1));
        }
        sim.fail_sync(1);
        let err = wal.append(&rec(acked)).expect_err("sync fails");
        assert!(
            matches!(
                err,
                Error::Io {
                    op: "sync_data",
                    ..
                }
            ),
            "seed {seed}: {err}"
        );
        assert!(wal.is_poisoned(), "seed {seed}");
        for _ in 0..2 {
            let err = wal.append(&rec(acked + 1)).expect_err("poisoned");
            assert!(matches!(err, Error::Poisoned { .. }), "seed {seed}: {err}");
        }
        assert!(
            matches!(wal.sync(), Err(Error::Poisoned { .. })),
            "seed {seed}"
        );
        assert!(
            matches!(
                wal.append_batch(&[rec(0), rec(1)]),
                Err(Error::Poisoned { .. })
            ),
            "seed {seed}"
        );
        drop(wal);
        if crash_before_reopen {
            sim.crash(seed);
        }

        // The unacknowledged record may or may not be there (it is still in
        // the page cache when there was no crash); the acked ones are.
        let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), opts())
            .unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        let l = lsns(&got);
        assert!(
            l.len() as u64 == acked || l.len() as u64 == acked + 1,
            "seed {seed}: {l:?}"
        );
        assert_eq!(got.records, expected(1..=l.len() as u64), "seed {seed}");
        let next = wal
            .append(&rec(l.len() as u64))
            .expect("append after reopen");
        assert_eq!(next, Lsn(l.len() as u64 + 1));
        drop(wal);

        // The new record is durable: a power loss now keeps it and everything
        // acked before, and recovery does not mistake the lost sync for
        // corruption.
        let crash = sim.crash(seed + 100);
        let (_, again) = Wal::<Rec>::open_with_storage(sim.clone(), opts())
            .unwrap_or_else(|e| panic!("seed {seed} ({crash}): {e}"));
        assert_eq!(again.records, expected(1..=next.0), "seed {seed} ({crash})");
    }
}

#[test]
fn failed_sync_during_rotation_poisons() {
    let sim = SimStorage::new();
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), Options::default().segment_size(100))
        .expect("open");
    let mut acked = 0;
    // Fail a sync a few appends in; one of them is a rotation's sync.
    sim.fail_sync(6);
    for i in 0..20 {
        match wal.append(&rec(i)) {
            Ok(_) => acked += 1,
            Err(_) => break,
        }
    }
    assert!(wal.is_poisoned());
    assert!(acked >= 2, "acked {acked}");
    drop(wal);
    // Worst case (only what is durable) and best case (the page cache).
    for storage in [sim.durable_snapshot(), sim.clone()] {
        let (_, got) = Wal::<Rec>::open_with_storage(storage, Options::default().segment_size(100))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(got.records.len() as u64 >= acked);
        assert_eq!(got.records[..acked as usize], expected(1..=acked)[..]);
    }
}

#[test]
fn failed_sync_under_group_commit_fails_every_waiter_it_covered() {
    let sim = SimStorage::new();
    sim.set_sync_delay(Duration::from_millis(1));
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts()).expect("open");
    let wal = Arc::new(wal);
    sim.fail_sync(8);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for i in 0..30 {
                    match wal.append(&rec(t * 100 + i)) {
                        Ok(lsn) => ok.push((lsn, rec(t * 100 + i))),
                        Err(_) => break,
                    }
                }
                ok
            })
        })
        .collect();
    let mut acked: Vec<(Lsn, Rec)> = Vec::new();
    for t in threads {
        acked.extend(t.join().expect("thread"));
    }
    assert!(wal.is_poisoned());
    assert!(acked.len() < 120);
    let durable = wal.durable_lsn();
    for (lsn, _) in &acked {
        assert!(*lsn < durable, "{lsn} acked but not durable ({durable})");
    }
    drop(wal);
    let (_, got) = Wal::<Rec>::open_with_storage(sim.durable_snapshot(), opts()).expect("recover");
    for a in &acked {
        assert!(got.records.contains(a), "lost {a:?}");
    }
}
