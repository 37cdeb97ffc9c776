//! Truncating a log at every byte offset recovers exactly the complete
//! prefix (whole records, whole batches), in every recovery mode, and a log
//! opened for writing cuts the torn tail and accepts new appends.

mod common;

use common::{Rec, expected, rec};
use lancebranch_wal::testing::{SEGMENT_HEADER_LEN, segment_name};
use lancebranch_wal::{
    Error, Lsn, Options, RecoveryMode, SimStorage, StdStorage, SyncPolicy, Wal, read_log,
};

const MODES: [RecoveryMode; 4] = [
    RecoveryMode::TolerateCorruptedTail,
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::PointInTime,
    RecoveryMode::SkipAnyCorrupted,
];

/// Builds a one-segment log of single records and batches. Returns its bytes
/// and the commit boundaries `(byte length, records so far)`.
fn build_log() -> (Vec<u8>, Vec<(usize, u64)>) {
    let sim = SimStorage::new();
    let opts = Options::default().sync(SyncPolicy::Never);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts).expect("open");
    let name = segment_name(1);
    let len = |s: &SimStorage| s.file(&name).map(|f| f.len()).unwrap_or(0);
    let mut boundaries = vec![(len(&sim), 0)];
    let units: [&[u64]; 7] = [&[0], &[1, 2, 3], &[4], &[5], &[6, 7], &[8], &[9]];
    for unit in units {
        let recs: Vec<Rec> = unit.iter().map(|&i| rec(i)).collect();
        if recs.len() == 1 {
            wal.append(&recs[0]).expect("append");
        } else {
            wal.append_batch(&recs).expect("append_batch");
        }
        boundaries.push((len(&sim), unit[unit.len() - 1] + 1));
    }
    wal.sync().expect("sync");
    let bytes = sim.file(&name).expect("segment");
    (bytes, boundaries)
}

/// Records committed within the first `cut` bytes, and the byte boundary.
fn complete_prefix(boundaries: &[(usize, u64)], cut: usize) -> (usize, u64) {
    boundaries
        .iter()
        .copied()
        .rfind(|&(b, _)| b <= cut)
        .unwrap_or((0, 0))
}

#[test]
fn every_byte_truncation_recovers_the_complete_prefix() {
    let (full, boundaries) = build_log();
    let name = segment_name(1);
    for cut in 0..=full.len() {
        let sim = SimStorage::new();
        sim.put_file(&name, &full[..cut]);
        if cut < SEGMENT_HEADER_LEN {
            // A segment is renamed into place only after its header is synced,
            // so a short header is not a crash artifact: refuse, delete nothing.
            let err = read_log::<Rec>(&sim, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO)
                .expect_err("short header");
            assert!(matches!(err, Error::NotASegment { .. }), "cut {cut}: {err}");
            assert!(Wal::<Rec>::open_with_storage(sim.clone(), Options::default()).is_err());
            assert_eq!(sim.file(&name).as_deref(), Some(&full[..cut]), "cut {cut}");
            continue;
        }
        let (boundary, n) = complete_prefix(&boundaries, cut);
        for mode in MODES {
            let got = read_log::<Rec>(&sim, mode, Lsn::ZERO);
            if mode == RecoveryMode::AbsoluteConsistency && boundary != cut {
                assert!(
                    matches!(got, Err(Error::Corruption { .. })),
                    "cut {cut} {mode:?}: {got:?}"
                );
                continue;
            }
            let got = got.unwrap_or_else(|e| panic!("cut {cut} {mode:?}: {e}"));
            assert_eq!(got.records, expected(1..=n), "cut {cut} {mode:?}");
            assert_eq!(got.report.torn_tail_bytes, (cut - boundary) as u64);
            assert_eq!(got.report.next_lsn, Lsn(n + 1));
        }
        // Opened for writing: the tail is cut (durably) and appends continue.
        let opts = Options::default();
        let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), opts.clone())
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(got.records, expected(1..=n), "cut {cut}");
        assert_eq!(sim.durable_file(&name).map(|f| f.len()), Some(boundary));
        assert_eq!(wal.append(&rec(n)).expect("append"), Lsn(n + 1));
        drop(wal);
        let again = read_log::<Rec>(&sim, RecoveryMode::AbsoluteConsistency, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(again.records, expected(1..=n + 1), "cut {cut}");
    }
}

#[test]
fn every_byte_truncation_on_real_files() {
    let (full, boundaries) = build_log();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = segment_name(1);
    let path = dir.path().join(&name);
    let storage = StdStorage::open(dir.path()).expect("storage");
    for cut in SEGMENT_HEADER_LEN..=full.len() {
        std::fs::write(&path, &full[..cut]).expect("write");
        let (_, n) = complete_prefix(&boundaries, cut);
        let got = read_log::<Rec>(&storage, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(got.records, expected(1..=n), "cut {cut}");
        // read_log changes nothing.
        assert_eq!(std::fs::read(&path).expect("read").len(), cut);
    }
    // A few write-opens on real files (each costs an fsync or three).
    for cut in [full.len() - 1, full.len() - 20, SEGMENT_HEADER_LEN + 3] {
        std::fs::write(&path, &full[..cut]).expect("write");
        let (boundary, n) = complete_prefix(&boundaries, cut);
        let (wal, got) = Wal::<Rec>::open(dir.path(), Options::default())
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(got.records, expected(1..=n), "cut {cut}");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            boundary as u64
        );
        assert_eq!(wal.append(&rec(n)).expect("append"), Lsn(n + 1));
        drop(wal);
        let (_, got) = Wal::<Rec>::open(dir.path(), Options::default()).expect("reopen");
        assert_eq!(got.records, expected(1..=n + 1), "cut {cut}");
        std::fs::remove_file(&path).expect("cleanup");
    }
}
