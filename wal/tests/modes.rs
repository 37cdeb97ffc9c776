//! Recovery modes on a lost segment, checkpoint truncation (recovery reads
//! only what is after the checkpoint), replay and iteration from an LSN,
//! leftover temporary files.

mod common;

use common::{Rec, expected, lsns, rec};
use lancebranch_wal::testing::segment_name;
use lancebranch_wal::{Error, Lsn, Options, RecoveryMode, SimStorage, SyncPolicy, Wal, read_log};

/// A log of `n` records in small segments. Returns the storage and the
/// segment file names, oldest first.
fn segmented(n: u64) -> (SimStorage, Vec<String>) {
    let sim = SimStorage::new();
    let opts = Options::default().segment_size(120);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts).expect("open");
    for i in 0..n {
        wal.append(&rec(i)).expect("append");
    }
    drop(wal);
    let names = sim.file_names();
    (sim, names)
}

fn first_lsn(name: &str) -> u64 {
    name.trim_end_matches(".wal").parse().expect("segment name")
}

#[test]
fn lost_middle_segment_in_each_mode() {
    let (sim, names) = segmented(30);
    assert!(names.len() >= 4, "{names:?}");
    let lost = names[1].clone();
    let gap_start = first_lsn(&lost);
    let gap_end = first_lsn(&names[2]);
    let sim2 = SimStorage::new();
    for name in &names {
        if *name != lost {
            sim2.put_file(name, &sim.file(name).expect("segment"));
        }
    }
    let sim = sim2;

    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let err = Wal::<Rec>::open_with_storage(sim.clone(), Options::default().recovery(mode))
            .expect_err("gap");
        assert!(
            matches!(err, Error::Corruption { ref segment, expected, .. }
                if *segment == names[2] && expected == Lsn(gap_start)),
            "{mode:?}: {err:?}"
        );
        assert_eq!(sim.file_names().len(), names.len() - 1, "nothing deleted");
    }

    let skip = read_log::<Rec>(&sim, RecoveryMode::SkipAnyCorrupted, Lsn::ZERO).expect("skip");
    let want: Vec<u64> = (1..=30)
        .filter(|l| !(gap_start..gap_end).contains(l))
        .collect();
    assert_eq!(lsns(&skip), want);
    assert_eq!(skip.report.skipped.len(), 1);

    let pit = Options::default().recovery(RecoveryMode::PointInTime);
    let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), pit).expect("pit");
    assert_eq!(got.records, expected(1..gap_start));
    assert_eq!(got.report.dropped_segments, names[2..].to_vec());
    assert_eq!(sim.file_names(), vec![names[0].clone()]);
    assert_eq!(
        wal.append(&rec(gap_start - 1)).expect("append"),
        Lsn(gap_start)
    );
    drop(wal);
    let strict = read_log::<Rec>(&sim, RecoveryMode::AbsoluteConsistency, Lsn::ZERO)
        .expect("consistent after point-in-time repair");
    assert_eq!(strict.records, expected(1..=gap_start));
}

#[test]
fn truncate_before_limits_recovery_to_after_the_checkpoint() {
    let sim = SimStorage::new();
    let opts = Options::default().segment_size(200);
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), opts.clone()).expect("open");
    for i in 0..200 {
        wal.append(&rec(i)).expect("append");
    }
    let segments_before = wal.segment_count();
    assert!(segments_before > 20);
    let checkpoint = Lsn(195);
    let removed = wal.truncate_before(checkpoint).expect("truncate");
    assert_eq!(removed + wal.segment_count(), segments_before);
    assert!(wal.segment_count() <= 2, "{}", wal.segment_count());
    assert!(wal.first_lsn() <= checkpoint);
    assert_eq!(wal.truncate_before(checkpoint).expect("again"), 0);
    drop(wal);
    // The removal is durable: even a crash now keeps the directory short.
    let durable = sim.durable_snapshot();
    assert_eq!(durable.file_names(), sim.file_names());

    let retained: u64 = sim
        .file_names()
        .iter()
        .map(|n| sim.file(n).map_or(0, |f| f.len() as u64))
        .sum();
    let reads_before = sim.stats().bytes_read;
    let (wal, got) =
        Wal::<Rec>::open_with_storage(sim.clone(), opts.replay_from(checkpoint)).expect("reopen");
    let read = sim.stats().bytes_read - reads_before;
    // Only the (at most two) retained segments are read, not the history.
    assert_eq!(read, retained, "recovery read {read} bytes");
    assert_eq!(got.report.segments_read, wal.segment_count());
    assert_eq!(got.records, expected(195..=200));
    assert_eq!(wal.append(&rec(200)).expect("append"), Lsn(201));
}

#[test]
fn iter_from_and_replay_from_across_segments() {
    let (sim, names) = segmented(40);
    assert!(names.len() > 3);
    let opts = Options::default().segment_size(120).replay_from(Lsn(17));
    let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), opts).expect("open");
    assert_eq!(got.records, expected(17..=40));
    for from in [0, 1, 9, 17, 33, 40, 41, 100] {
        let it: Vec<_> = wal
            .iter_from(Lsn(from))
            .expect("iter")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(it, expected(from.max(1)..=40), "from {from}");
    }
    wal.append_batch(&[rec(40), rec(41)]).expect("batch");
    let it: Vec<_> = wal
        .iter_from(Lsn(40))
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(it, expected(40..=42));
}

#[test]
fn leftover_temp_files_are_removed_only_by_a_writer() {
    let (sim, names) = segmented(5);
    let tmp = "00000000000000000099.wal.tmp";
    sim.put_file(tmp, b"half-made");
    let got = read_log::<Rec>(&sim, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO).expect("read");
    assert_eq!(got.records.len(), 5);
    assert!(sim.file(tmp).is_some(), "read_log must not delete");
    let (_, got) = Wal::<Rec>::open_with_storage(sim.clone(), Options::default()).expect("open");
    assert_eq!(got.report.removed_temp_files, vec![tmp.to_string()]);
    assert_eq!(sim.file_names(), names);
}

#[test]
fn clean_log_opens_in_every_mode() {
    let (sim, _) = segmented(25);
    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
        RecoveryMode::SkipAnyCorrupted,
    ] {
        let opts = Options::default().recovery(mode).sync(SyncPolicy::Never);
        let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), opts).expect("open");
        assert_eq!(got.records, expected(1..=25), "{mode:?}");
        assert_eq!(got.report.torn_tail_bytes, 0);
        assert!(got.report.skipped.is_empty() && got.report.stopped_at.is_none());
        assert_eq!(wal.next_lsn(), Lsn(26));
    }
}

/// A segment: a damaged first frame, then a checksummed frame with LSN
/// `far_lsn` (payload "far"), then 40 bytes of garbage.
fn damaged_then_frame(first: u64, far_lsn: u64) -> Vec<u8> {
    use lancebranch_wal::testing::{frame, segment_header};
    let mut seg = segment_header(first, 1);
    let mut damaged = frame(first, 1, b"\x04lost");
    damaged[5] ^= 1;
    seg.extend(damaged);
    seg.extend(frame(far_lsn, 1, b"\x03far"));
    seg.extend([0xee; 40]);
    seg
}

/// Regression (found by the `wal_decode` fuzz target): in SkipAnyCorrupted
/// mode, whether a checksummed frame after damage was accepted depended on
/// the length of the whole file (its LSN had to be below `expected + len /
/// 17 + 1`). Opening for writing cuts the tail after the last record, which
/// shrank that bound: the record recovery had just returned vanished on the
/// next read, and the next LSN went backwards (reusing LSNs the caller had
/// seen). The bound now depends only on the bytes between the damage and the
/// frame, so reading is stable under the repair.
#[test]
fn skip_any_reads_the_same_records_after_its_repair() {
    let first = 10;
    // A real frame right after the damaged one carries LSN 11; LSN 17 cannot
    // be reached within 22 bytes of the damage, LSN 11 can.
    for (far, want) in [(17, vec![]), (11, vec![(Lsn(11), b"far".to_vec())])] {
        let sim = SimStorage::new();
        sim.put_file(&segment_name(first), &damaged_then_frame(first, far));
        let skip = RecoveryMode::SkipAnyCorrupted;
        let before = read_log::<Vec<u8>>(&sim, skip, Lsn::ZERO).expect("read");
        assert_eq!(before.records, want, "lsn {far}");
        let (wal, opened) =
            Wal::<Vec<u8>>::open_with_storage(sim.clone(), Options::default().recovery(skip))
                .expect("open");
        assert_eq!(opened.records, want, "lsn {far}");
        let next = wal.next_lsn();
        drop(wal);
        let after = read_log::<Vec<u8>>(&sim, skip, Lsn::ZERO).expect("read after repair");
        assert_eq!(
            after.records, want,
            "lsn {far}: records changed by the repair"
        );
        assert_eq!(after.report.next_lsn, next, "lsn {far}: next lsn changed");
    }
}

/// Regression (found by the `wal_decode` fuzz target): LSN `u64::MAX` is
/// never written (an append that would reach it fails), but the reader
/// accepted a checksummed frame carrying it, and the expected LSN saturated
/// there: a batch at the end of the LSN space came back with LSN `u64::MAX`
/// twice, and in SkipAnyCorrupted mode a jump to `u64::MAX` left a next LSN
/// equal to the last record's. A frame carrying `u64::MAX` is now damage.
#[test]
fn a_frame_with_lsn_u64_max_is_damage() {
    use lancebranch_wal::testing::{frame, segment_header};
    let max = u64::MAX;
    let mut batch = segment_header(max - 1, 1);
    batch.extend(frame(max - 1, 2, b"\x01a"));
    batch.extend(frame(max, 3, b"\x01b"));
    batch.extend(frame(max, 4, b"\x01c"));
    let sim = SimStorage::new();
    sim.put_file(&segment_name(max - 1), &batch);
    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
        RecoveryMode::SkipAnyCorrupted,
    ] {
        if let Ok(got) = read_log::<Vec<u8>>(&sim, mode, Lsn::ZERO) {
            assert!(got.records.is_empty(), "{mode:?}: {:?}", got.records);
        }
    }
    let pit = read_log::<Vec<u8>>(&sim, RecoveryMode::PointInTime, Lsn::ZERO).expect("pit");
    assert_eq!(pit.report.next_lsn, Lsn(max - 1));

    let mut jump = segment_header(1, 1);
    jump.extend(frame(1, 1, b"\x01a"));
    jump.extend(frame(max, 1, b"\x01b"));
    let sim = SimStorage::new();
    sim.put_file(&segment_name(1), &jump);
    let skip = read_log::<Vec<u8>>(&sim, RecoveryMode::SkipAnyCorrupted, Lsn::ZERO).expect("skip");
    assert_eq!(skip.records, vec![(Lsn(1), b"a".to_vec())]);
    assert_eq!(skip.report.next_lsn, Lsn(2));
}
