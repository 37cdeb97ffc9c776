//! Bad input gives clear typed errors and deletes nothing: an unusable
//! directory, a foreign file, a file that is not a segment, a segment of a
//! newer format version, a record that does not deserialize, a locked
//! directory.

mod common;

use common::{Rec, rec};
use lancebranch_wal::testing::{segment_header, segment_name};
use lancebranch_wal::{Error, FORMAT_VERSION, Lsn, Options, RecoveryMode, SimStorage, Wal};

/// Every visible file with its content.
fn snapshot(sim: &SimStorage) -> Vec<(String, Option<Vec<u8>>)> {
    sim.file_names()
        .into_iter()
        .map(|n| {
            let c = sim.file(&n);
            (n, c)
        })
        .collect()
}

/// A valid two-record log plus a leftover temporary file (which a
/// successful open for writing would remove).
fn valid_log() -> SimStorage {
    let sim = SimStorage::new();
    let (wal, _) = Wal::<Rec>::open_with_storage(sim.clone(), Options::default()).expect("open");
    wal.append(&rec(0)).expect("append");
    wal.append(&rec(1)).expect("append");
    drop(wal);
    sim.put_file("00000000000000000003.wal.tmp", b"half-made segment");
    sim
}

fn assert_untouched<T: std::fmt::Debug>(
    sim: &SimStorage,
    before: &[(String, Option<Vec<u8>>)],
    res: Result<T, Error>,
    check: impl Fn(&Error) -> bool,
) {
    match res {
        Err(e) => assert!(check(&e), "unexpected error: {e:?}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
    assert_eq!(
        snapshot(sim),
        before,
        "the failed open changed the directory"
    );
}

#[test]
fn directory_that_is_a_file_is_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain-file");
    std::fs::write(&path, b"data").expect("write");
    let err = Wal::<Rec>::open(&path, Options::default()).expect_err("not a directory");
    assert!(matches!(err, Error::UnreadableDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), b"data");
}

#[test]
fn subdirectory_in_the_log_directory_is_unexpected() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let err = Wal::<Rec>::open(dir.path(), Options::default()).expect_err("foreign entry");
    assert!(
        matches!(err, Error::UnexpectedFile { ref name } if name == "sub"),
        "{err:?}"
    );
    assert!(dir.path().join("sub").is_dir());
}

#[test]
fn foreign_file_is_an_error_and_nothing_is_deleted() {
    let sim = valid_log();
    sim.put_file("notes.txt", b"hello");
    let before = snapshot(&sim);
    let res = Wal::<Rec>::open_with_storage(sim.clone(), Options::default());
    assert_untouched(
        &sim,
        &before,
        res,
        |e| matches!(e, Error::UnexpectedFile { name } if name == "notes.txt"),
    );
}

#[test]
fn file_named_like_a_segment_but_not_one() {
    for content in [&b""[..], b"garbage that is long enough to hold a header"] {
        let sim = valid_log();
        sim.put_file(&segment_name(3), content);
        let before = snapshot(&sim);
        for mode in [
            RecoveryMode::SkipAnyCorrupted,
            RecoveryMode::TolerateCorruptedTail,
        ] {
            let res = Wal::<Rec>::open_with_storage(sim.clone(), Options::default().recovery(mode));
            assert_untouched(
                &sim,
                &before,
                res,
                |e| matches!(e, Error::NotASegment { name, .. } if *name == segment_name(3)),
            );
        }
    }
}

#[test]
fn segment_of_a_newer_format_version() {
    let sim = valid_log();
    let mut future = segment_header(3, FORMAT_VERSION + 1);
    future.extend_from_slice(b"frames in a format we do not know");
    sim.put_file(&segment_name(3), &future);
    let before = snapshot(&sim);
    let res = Wal::<Rec>::open_with_storage(sim.clone(), Options::default());
    assert_untouched(&sim, &before, res, |e| {
        matches!(e, Error::UnsupportedVersion { found, supported, .. }
            if *found == FORMAT_VERSION + 1 && *supported == FORMAT_VERSION)
    });
    let msg = Wal::<Rec>::open_with_storage(sim.clone(), Options::default())
        .expect_err("newer")
        .to_string();
    assert!(msg.contains("version 2"), "{msg}");
}

#[test]
fn record_that_does_not_deserialize() {
    // Records written as u64 and read back as bool: 300 is not a bool.
    let sim = SimStorage::new();
    let (wal, _) = Wal::<u64>::open_with_storage(sim.clone(), Options::default()).expect("open");
    wal.append(&0).expect("append");
    wal.append(&300).expect("append");
    drop(wal);
    let before = snapshot(&sim);
    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::PointInTime,
        RecoveryMode::SkipAnyCorrupted,
    ] {
        let res = Wal::<bool>::open_with_storage(sim.clone(), Options::default().recovery(mode));
        assert_untouched(
            &sim,
            &before,
            res,
            |e| matches!(e, Error::Decode { lsn, .. } if *lsn == Lsn(2)),
        );
    }
    // Trailing bytes are a decode error too: a String read as a u8.
    let sim = SimStorage::new();
    let (wal, _) = Wal::<String>::open_with_storage(sim.clone(), Options::default()).expect("open");
    wal.append(&"hello".to_string()).expect("append");
    drop(wal);
    let before = snapshot(&sim);
    let res = Wal::<u8>::open_with_storage(sim.clone(), Options::default());
    assert_untouched(
        &sim,
        &before,
        res,
        |e| matches!(e, Error::Decode { lsn, .. } if *lsn == Lsn(1)),
    );
    // Skipping it with replay_from avoids decoding it at all.
    let (_, got) =
        Wal::<u8>::open_with_storage(sim.clone(), Options::default().replay_from(Lsn(2)))
            .expect("not decoded");
    assert!(got.records.is_empty());
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::<Rec>::open(dir.path(), Options::default()).expect("open");
    wal.append(&rec(0)).expect("append");
    let err = Wal::<Rec>::open(dir.path(), Options::default()).expect_err("locked");
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    drop(wal);
    let (_, got) = Wal::<Rec>::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(got.records.len(), 1);
}

/// A lock released shortly after (as when a child process being spawned
/// still shares the descriptor until it execs) is waited for, not an error.
#[test]
fn a_lock_released_a_moment_later_is_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::<Rec>::open(dir.path(), Options::default()).expect("open");
    wal.append(&rec(0)).expect("append");
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(wal);
    });
    let (_, got) = Wal::<Rec>::open(dir.path(), Options::default()).expect("waited for the lock");
    assert_eq!(got.records.len(), 1);
    holder.join().expect("holder");
}
