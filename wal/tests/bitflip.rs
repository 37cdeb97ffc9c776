//! Flipping every bit of the last record drops just that record; flipping
//! every bit of a middle record is corruption, handled per recovery mode.

mod common;

use common::{Rec, expected, rec};
use lancebranch_wal::testing::segment_name;
use lancebranch_wal::{
    Error, Lsn, Options, RecoveryMode, SimStorage, SkippedRange, SyncPolicy, Wal, read_log,
};

/// A one-segment log; returns its bytes and the end offset of each unit.
fn build(units: &[&[u64]]) -> (Vec<u8>, Vec<usize>) {
    let sim = SimStorage::new();
    let opts = Options::default().sync(SyncPolicy::Never);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts).expect("open");
    let name = segment_name(1);
    let mut ends = vec![sim.file(&name).map(|f| f.len()).unwrap_or(0)];
    for unit in units {
        let recs: Vec<Rec> = unit.iter().map(|&i| rec(i)).collect();
        if recs.len() == 1 {
            wal.append(&recs[0]).expect("append");
        } else {
            wal.append_batch(&recs).expect("append_batch");
        }
        ends.push(sim.file(&name).map(|f| f.len()).unwrap_or(0));
    }
    (sim.file(&name).expect("segment"), ends)
}

fn flipped(full: &[u8], bit: usize) -> SimStorage {
    let mut bytes = full.to_vec();
    bytes[bit / 8] ^= 1 << (bit % 8);
    let sim = SimStorage::new();
    sim.put_file(&segment_name(1), &bytes);
    sim
}

const SIX: [&[u64]; 6] = [&[0], &[1], &[2], &[3], &[4], &[5]];

#[test]
fn flipping_any_bit_of_the_last_record_drops_only_it() {
    let (full, ends) = build(&SIX);
    let (start, end) = (ends[5], ends[6]);
    for bit in start * 8..end * 8 {
        let sim = flipped(&full, bit);
        for mode in [
            RecoveryMode::TolerateCorruptedTail,
            RecoveryMode::PointInTime,
            RecoveryMode::SkipAnyCorrupted,
        ] {
            let got = read_log::<Rec>(&sim, mode, Lsn::ZERO)
                .unwrap_or_else(|e| panic!("bit {bit} {mode:?}: {e}"));
            assert_eq!(got.records, expected(1..=5), "bit {bit} {mode:?}");
            assert_eq!(got.report.torn_tail_bytes, (end - start) as u64);
        }
        let abs = read_log::<Rec>(&sim, RecoveryMode::AbsoluteConsistency, Lsn::ZERO);
        assert!(matches!(abs, Err(Error::Corruption { .. })), "bit {bit}");

        let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), Options::default())
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(got.records.len(), 5);
        assert_eq!(wal.append(&rec(5)).expect("append"), Lsn(6));
        drop(wal);
        let again = read_log::<Rec>(&sim, RecoveryMode::AbsoluteConsistency, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(again.records, expected(1..=6), "bit {bit}");
    }
}

#[test]
fn flipping_any_bit_of_a_middle_record_is_corruption() {
    let (full, ends) = build(&SIX);
    let (start, end) = (ends[2], ends[3]); // record 3 of 6
    let name = segment_name(1);
    for bit in start * 8..end * 8 {
        let sim = flipped(&full, bit);
        let damaged = sim.file(&name);

        // Default mode: a typed error, and nothing changed on disk.
        match Wal::<Rec>::open_with_storage(sim.clone(), Options::default()) {
            Err(Error::Corruption {
                segment,
                offset,
                expected: lsn,
                ..
            }) => {
                assert_eq!(
                    (segment.as_str(), offset, lsn),
                    (name.as_str(), start as u64, Lsn(3))
                );
            }
            other => panic!("bit {bit}: expected corruption, got {other:?}"),
        }
        assert_eq!(sim.file(&name), damaged, "bit {bit}: file changed");
        assert_eq!(sim.file_names(), vec![name.clone()], "bit {bit}");
        let abs = read_log::<Rec>(&sim, RecoveryMode::AbsoluteConsistency, Lsn::ZERO);
        assert!(matches!(abs, Err(Error::Corruption { .. })), "bit {bit}");

        // PointInTime: the records before the damage; writing continues there.
        let pit = Options::default().recovery(RecoveryMode::PointInTime);
        let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), pit.clone())
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(got.records, expected(1..=2), "bit {bit}");
        let stop = got.report.stopped_at.expect("stopped");
        assert_eq!(stop.offset, start as u64);
        assert_eq!(wal.append(&rec(2)).expect("append"), Lsn(3));
        drop(wal);
        let again = read_log::<Rec>(&sim, RecoveryMode::AbsoluteConsistency, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(again.records, expected(1..=3), "bit {bit}");

        // SkipAnyCorrupted: everything but the damaged record.
        let sim = flipped(&full, bit);
        let skip = Options::default().recovery(RecoveryMode::SkipAnyCorrupted);
        let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), skip.clone())
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(got.records, expected([1, 2, 4, 5, 6]), "bit {bit}");
        assert_eq!(
            got.report.skipped,
            vec![SkippedRange {
                segment: name.clone(),
                offset: start as u64,
                len: (end - start) as u64
            }],
            "bit {bit}"
        );
        assert_eq!(wal.append(&rec(6)).expect("append"), Lsn(7));
        drop(wal);
        let again = read_log::<Rec>(&sim, RecoveryMode::SkipAnyCorrupted, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(again.records, expected([1, 2, 4, 5, 6, 7]), "bit {bit}");
    }
}

#[test]
fn damage_inside_a_batch_drops_the_whole_batch() {
    // Units: 1, [2 3 4], 5.
    let (full, ends) = build(&[&[0], &[1, 2, 3], &[4]]);
    let batch = ends[1]..ends[2];
    let step = 8 * 3; // every third byte keeps this quick
    for bit in (batch.start * 8..batch.end * 8).step_by(step) {
        let sim = flipped(&full, bit);
        let skip = read_log::<Rec>(&sim, RecoveryMode::SkipAnyCorrupted, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(skip.records, expected([1, 5]), "bit {bit}");
        let pit = read_log::<Rec>(&sim, RecoveryMode::PointInTime, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(pit.records, expected([1]), "bit {bit}");
        let default = read_log::<Rec>(&sim, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO);
        assert!(
            matches!(default, Err(Error::Corruption { .. })),
            "bit {bit}"
        );
    }
}
