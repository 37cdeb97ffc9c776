//! Replays the `branch_ops` fuzz corpus and regressions through the
//! library's harness, plus a fixed-seed random smoke run, so a plain
//! `cargo test` checks what the fuzzer found.

use std::path::Path;

use lancebranch::fuzzing::branch_ops;

fn replay(dir: &Path) -> usize {
    replay_with(dir, branch_ops)
}

fn replay_with(dir: &Path, harness: fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        eprintln!("replaying {}", f.display());
        harness(&data);
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

#[test]
fn lifecycle_ops_regressions_replay_clean() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let harness = lancebranch::fuzzing::lifecycle_ops;
    let n = replay_with(&fuzz.join("regressions/lifecycle_ops"), harness)
        + replay_with(&fuzz.join("corpus/lifecycle_ops"), harness);
    assert!(n > 0, "no lifecycle_ops inputs under {}", fuzz.display());
}

/// Random `lifecycle_ops` inputs: 8 by default (fixed seed);
/// `LANCEBRANCH_LIFECYCLE_SMOKE=<n>` runs `n` and
/// `LANCEBRANCH_LIFECYCLE_SEED` picks them. Prints the count and the rate.
#[test]
fn lifecycle_ops_random_smoke() {
    let n: usize = std::env::var("LANCEBRANCH_LIFECYCLE_SMOKE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut x = std::env::var("LANCEBRANCH_LIFECYCLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d_u64)
        | 1;
    let started = std::time::Instant::now();
    // What the sequences ran: steps, concurrent groups (2-4 operations at
    // once), armed crashes and restarts.
    let (mut steps, mut groups, mut crashes, mut reopens) = (0, 0, 0, 0);
    for i in 0..n {
        let data = next_input(&mut x);
        tally(&data, [&mut steps, &mut groups, &mut crashes, &mut reopens]);
        // Each sequence in a thread of its own, bounded in time: a hang is
        // a failure too.
        let (tx, rx) = std::sync::mpsc::channel();
        let input = data.clone();
        std::thread::spawn(move || {
            let run = std::panic::catch_unwind(|| lancebranch::fuzzing::lifecycle_ops(&input));
            let _ = tx.send(run.is_ok());
        });
        let ok = rx.recv_timeout(std::time::Duration::from_secs(120));
        if ok != Ok(true) {
            // Keep the input: a reproducer for fuzz/regressions/lifecycle_ops.
            let path = std::env::temp_dir().join(format!("lifecycle-fail-{i}.bin"));
            std::fs::write(&path, &data).unwrap();
            panic!(
                "input {i} failed or hung ({ok:?}); saved to {}",
                path.display()
            );
        }
        if (i + 1) % 250 == 0 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!("lifecycle_ops: {} clean so far, {secs:.0} s", i + 1);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "lifecycle_ops: {n} sequences clean in {secs:.1} s ({:.2}/s): {steps} steps, \
         {groups} concurrent groups, {crashes} armed crashes, {reopens} restarts",
        n as f64 / secs
    );
}

/// Count what input `data` runs: steps, concurrent groups (2-4 operations
/// at once), armed crashes and restarts.
fn tally(data: &[u8], [steps, groups, crashes, reopens]: [&mut usize; 4]) {
    use lancebranch::fuzzing::{LifecycleOp, Step, concurrency};
    for step in lancebranch::fuzzing::decode_steps(data) {
        *steps += 1;
        *groups += usize::from(concurrency(&step) >= 2);
        *crashes += usize::from(matches!(step, Step::One(LifecycleOp::Arm(_))));
        *reopens += usize::from(matches!(step, Step::One(LifecycleOp::Reopen)));
    }
}

/// The next 256 bytes of a xorshift sequence from `x`: one input.
fn next_input(x: &mut u64) -> Vec<u8> {
    (0..256)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x as u8
        })
        .collect()
}

/// The model harness's random sequences on a store on the local S3 server
/// (`lancebranch::testing::s3`), the catalog in the object log: crashes,
/// restarts, concurrent groups and `fsck` after every step, as on local
/// disk. 4 by default (fixed seed); `LANCEBRANCH_LIFECYCLE_S3=<n>` runs
/// `n` and `LANCEBRANCH_LIFECYCLE_S3_SEED` picks them.
#[test]
fn lifecycle_ops_on_s3() {
    use lancebranch::testing::s3::server;
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    let n = env("LANCEBRANCH_LIFECYCLE_S3").unwrap_or(4);
    let mut x = env("LANCEBRANCH_LIFECYCLE_S3_SEED").unwrap_or(0x5851_f42d_4c95_7f2d) | 1;
    let started = std::time::Instant::now();
    let (mut steps_run, mut groups, mut crashes, mut reopens) = (0, 0, 0, 0);
    for i in 0..n {
        let data = next_input(&mut x);
        let steps = lancebranch::fuzzing::decode_steps(&data);
        tally(
            &data,
            [&mut steps_run, &mut groups, &mut crashes, &mut reopens],
        );
        let uri = server().fresh_uri("lifecycle");
        let opts = lancebranch::lance::LanceDbOptions {
            storage_options: server().options(),
            cleanup_older_than: std::time::Duration::ZERO,
            ..Default::default()
        };
        // In a thread of its own, bounded in time: a hang is a failure too.
        let (tx, rx) = std::sync::mpsc::channel();
        let at = uri.clone();
        std::thread::spawn(move || {
            lancebranch::conformance::run(async move {
                let r = lancebranch::fuzzing::run_steps_at(&at, opts, &steps).await;
                let _ = tx.send(r.map_err(|e| format!("{e:#}")));
            })
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(900));
        if !matches!(got, Ok(Ok(()))) {
            let path = std::env::temp_dir().join(format!("lifecycle-s3-fail-{i}.bin"));
            std::fs::write(&path, &data).unwrap();
            panic!(
                "input {i} on {uri} failed or hung: {got:?}; saved to {}",
                path.display()
            );
        }
    }
    eprintln!(
        "lifecycle_ops on S3: {n} sequences clean in {:.1} s: {steps_run} steps, {groups} \
         concurrent groups, {crashes} armed crashes, {reopens} restarts",
        started.elapsed().as_secs_f64()
    );
}
