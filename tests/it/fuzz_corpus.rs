//! Replays the `branch_ops` fuzz corpus and regressions through the
//! library's harness, plus a fixed-seed random smoke run, so a plain
//! `cargo test` checks what the fuzzer found.

use std::path::Path;

use lancebranch::fuzzing::branch_ops;

fn replay(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        eprintln!("replaying {}", f.display());
        branch_ops(&data);
    }
    files.len()
}

#[test]
fn branch_ops_corpus_and_regressions_replay_clean() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let n = replay(&fuzz.join("regressions/branch_ops")) + replay(&fuzz.join("corpus/branch_ops"));
    assert!(n > 0, "no corpus found under {}", fuzz.display());
}

/// Six random inputs; `LANCEBRANCH_FUZZ_SMOKE=<n>` runs `n` (and
/// `LANCEBRANCH_FUZZ_SEED` picks the sequence), a poor man's fuzzer where
/// cargo-fuzz is not available.
#[test]
fn branch_ops_random_smoke() {
    let n: usize = std::env::var("LANCEBRANCH_FUZZ_SMOKE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut x = std::env::var("LANCEBRANCH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64)
        | 1;
    for i in 0..n {
        eprintln!("smoke input {i}");
        let data: Vec<u8> = (0..160)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        branch_ops(&data);
    }
}
