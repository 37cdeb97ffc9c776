//! Replays the committed fuzz corpus (`../fuzz/corpus/<target>/`) and the
//! minimized crash regressions (`../fuzz/regressions/<target>/`) through the
//! harnesses of `lancebranch_wal::fuzzing`, and runs each harness on a
//! fixed-seed stream of pseudo-random inputs, so the harnesses are exercised
//! by plain `cargo test` even without cargo-fuzz or a corpus.
//!
//! `WAL_FUZZ_WRITE_SEEDS=1 cargo test -p lancebranch-wal --test fuzz_corpus
//! seed_corpus_is_current` regenerates the hand-made seed inputs (`seed-*`
//! files) of `../fuzz/corpus/`; without the variable the test checks them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use lancebranch_wal::fuzzing::{DecodeInput, wal_decode, wal_ops};
use lancebranch_wal::{Options, SimStorage, SyncPolicy, Wal};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs every file of `corpus/<target>` and `regressions/<target>` (missing
/// directories are fine) through `harness`; returns how many ran.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
                panic!("{target} fails on {}", path.display());
            }
            n += 1;
        }
    }
    n
}

/// xorshift64*: a fixed, dependency-free stream of pseudo-random inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Runs `harness` on `n` pseudo-random inputs of up to `max_len` bytes;
/// `shape` may adjust each input (e.g. to reach the structured decoder).
fn smoke(seed: u64, n: usize, max_len: usize, harness: fn(&[u8]), shape: fn(&mut Vec<u8>, u64)) {
    let mut rng = XorShift(seed);
    for i in 0..n {
        let mut data = rng.bytes(max_len);
        shape(&mut data, rng.next());
        if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
            panic!("smoke input #{i} (seed {seed:#x}) fails: {data:?}");
        }
    }
}

#[test]
fn wal_decode_corpus_and_regressions() {
    let n = replay("wal_decode", wal_decode);
    eprintln!("wal_decode: replayed {n} files");
}

#[test]
fn wal_ops_corpus_and_regressions() {
    let n = replay("wal_ops", wal_ops);
    eprintln!("wal_ops: replayed {n} files");
}

#[test]
fn wal_decode_random_smoke() {
    smoke(0x005e_edde_c0de, 2000, 200, wal_decode, |data, r| {
        // Half structured (random descriptions decode to frames with valid
        // checksums), with small file lengths so several files appear.
        if let Some(ctrl) = data.first_mut()
            && r & 1 == 0
        {
            *ctrl |= 1;
        }
        if data.len() > 3 && r & 2 == 0 {
            data[2] = (r >> 8) as u8 % 64;
            data[3] = 0;
        }
    });
}

#[test]
fn wal_ops_random_smoke() {
    smoke(0x05ee_d0b5, 2000, 300, wal_ops, |_, _| {});
}

#[test]
fn wal_decode_real_segments() {
    for (name, input) in decode_seeds() {
        if catch_unwind(AssertUnwindSafe(|| wal_decode(&input))).is_err() {
            panic!("seed {name} fails");
        }
    }
}

/// A log written by the writer: its segment files, oldest first.
fn written_log(segment_size: u64, units: &[&[&str]]) -> Vec<Vec<u8>> {
    let sim = SimStorage::new();
    let opts = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(segment_size);
    let (wal, _) = Wal::<Vec<u8>>::open_with_storage(sim.clone(), opts).expect("open");
    for unit in units {
        let recs: Vec<Vec<u8>> = unit.iter().map(|s| s.as_bytes().to_vec()).collect();
        if recs.len() == 1 {
            wal.append(&recs[0]).expect("append");
        } else {
            wal.append_batch(&recs).expect("append_batch");
        }
    }
    sim.file_names()
        .iter()
        .map(|n| sim.file(n).expect("segment"))
        .collect()
}

/// Hand-made seeds of the `wal_decode` corpus.
fn decode_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let units: &[&[&str]] = &[
        &["put a=1"],
        &["begin", "x", "commit"],
        &[""],
        &["a longer record that spans more bytes than the others"],
        &["b1", "b2"],
        &["last"],
    ];
    let one = written_log(1 << 20, units).remove(0);
    let many = written_log(90, units);
    let raw = |segs: &[&[u8]]| {
        segs.iter()
            .fold(DecodeInput::raw(), |i, s| i.file(0, s))
            .into_bytes()
    };
    let mut flipped = one.clone();
    flipped[28 + 17 + 3] ^= 0x10; // payload byte of record 1
    let mut middle = one.clone();
    middle[28 + 26] ^= 1; // inside the batch
    let many_refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let mut lost = many_refs.clone();
    if lost.len() > 2 {
        lost.remove(1);
    }
    // Structured descriptions: op [arg] len payload (see `DecodeInput`).
    let clean = [0, 2, b'h', b'i', 1, 1, b'a', 2, 1, b'b', 3, 1, b'c', 0, 0];
    let gap = [0, 1, b'x', 8, 5, 1, b'y', 0, 1, b'z'];
    let bad_crc_mid = [0, 1, b'x', 0x20, 1, b'y', 0, 1, b'z'];
    let torn_tail = [0, 1, b'x', 1, 1, b'a', 6, 3, b'a', b'b', b'c', 9];
    let garbage = [0, 1, b'x', 5, 7, 1, 2, 3, 4, 5, 6, 7, 0, 1, b'z'];
    let stale = [0, 1, b'x', 0, 1, b'y', 7, 0, 0, 1, b'z'];
    let kinds = [4, 9, 1, b'k', 2, 1, b'm', 1, 1, b'f', 0, 0];
    let max_lsn = [0x18, 1, 1, b'm', 3, 1, b'n', 0x18, 0, 0, b'o'];
    let raw_payload = [0x40, 2, 0x80, 0x00, 0x40, 1, 5];
    vec![
        ("seed-real-one-segment", raw(&[&one])),
        ("seed-real-cut-mid-frame", raw(&[&one[..one.len() - 2]])),
        (
            "seed-real-cut-mid-batch",
            raw(&[&one[..28 + 17 + 8 + 17 + 3]]),
        ),
        ("seed-real-header-only", raw(&[&one[..28]])),
        ("seed-real-short-header", raw(&[&one[..20]])),
        ("seed-real-bitflip-first", raw(&[&flipped])),
        ("seed-real-bitflip-batch", raw(&[&middle])),
        ("seed-real-segments", raw(&many_refs)),
        ("seed-real-lost-segment", raw(&lost)),
        (
            "seed-real-temp-file",
            DecodeInput::raw()
                .temp_last()
                .file(0, &one)
                .file(5, &one[..40])
                .into_bytes(),
        ),
        (
            "seed-struct-clean",
            DecodeInput::structured().file(0, &clean).into_bytes(),
        ),
        (
            "seed-struct-two-segments",
            DecodeInput::structured()
                .replay_offset(1)
                .file(0, &clean)
                .file(0, &clean)
                .into_bytes(),
        ),
        (
            "seed-struct-overlap",
            DecodeInput::structured()
                .file(3, &clean)
                .file(-2, &clean)
                .into_bytes(),
        ),
        (
            "seed-struct-gap",
            DecodeInput::structured().file(0, &gap).into_bytes(),
        ),
        (
            "seed-struct-bad-crc",
            DecodeInput::structured().file(0, &bad_crc_mid).into_bytes(),
        ),
        (
            "seed-struct-torn-tail",
            DecodeInput::structured().file(0, &torn_tail).into_bytes(),
        ),
        (
            "seed-struct-garbage",
            DecodeInput::structured().file(0, &garbage).into_bytes(),
        ),
        (
            "seed-struct-stale-copy",
            DecodeInput::structured().file(0, &stale).into_bytes(),
        ),
        (
            "seed-struct-kinds",
            DecodeInput::structured().file(0, &kinds).into_bytes(),
        ),
        (
            "seed-struct-max-lsn",
            DecodeInput::structured().file(0, &max_lsn).into_bytes(),
        ),
        (
            "seed-struct-raw-payload",
            DecodeInput::structured().file(0, &raw_payload).into_bytes(),
        ),
    ]
}

/// The hand-made seeds (and a few pseudo-random `wal_ops` inputs) in
/// `../fuzz/corpus/` are exactly what this generator makes; with
/// `WAL_FUZZ_WRITE_SEEDS=1` it (re)writes them instead.
#[test]
fn seed_corpus_is_current() {
    let write = std::env::var_os("WAL_FUZZ_WRITE_SEEDS").is_some();
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let dir = fuzz_dir().join("corpus/wal_decode");
    for (name, input) in decode_seeds() {
        seeds.push((dir.join(name), input));
    }
    let dir = fuzz_dir().join("corpus/wal_ops");
    let mut rng = XorShift(0x0b55_eed0);
    for i in 0..12 {
        let data = rng.bytes(64 + 48 * i);
        seeds.push((dir.join(format!("seed-random-{i:02}")), data));
    }
    for (path, data) in seeds {
        if write {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, data).expect("write seed");
        } else {
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("seed {} missing ({e}); regenerate", path.display()));
            assert_eq!(
                on_disk,
                data,
                "seed {} is stale; regenerate",
                path.display()
            );
        }
    }
}
