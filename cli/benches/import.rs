//! `lancebranch import` / `export` of big CSV files: peak memory (the
//! child's max RSS, from `wait4`'s rusage through GNU time when present)
//! and time, 4 M rows against 1 M rows, run side by side. Streaming means
//! memory does not grow with the file: RATIO of peak RSS ≤ 1.5, time ∝
//! rows (≤ 5).
//!
//! ```sh
//! cargo bench -p lancebranch-cli --bench import                 # release
//! cargo bench -p lancebranch-cli --profile dev --bench import   # debug
//! LANCEBRANCH_BENCH_SMALL=1 ...                                 # 100 k / 400 k rows
//! ```

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A CSV file of `n` rows `id,name,score`.
fn csv(path: &Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,name,score").unwrap();
    for i in 0..n {
        writeln!(f, "{i},name{i},{}", i as f64 * 0.5).unwrap();
    }
}

/// Run the binary with `args`; (seconds, peak RSS in KiB if measured).
fn run(args: &[&str]) -> (f64, Option<u64>) {
    let bin = env!("CARGO_BIN_EXE_lancebranch");
    let time = Path::new("/usr/bin/time");
    let t = Instant::now();
    let out = if time.exists() {
        Command::new(time)
            .arg("-f")
            .arg("MAXRSS %M")
            .arg(bin)
            .args(args)
            .output()
    } else {
        Command::new(bin).args(args).output()
    }
    .expect("running lancebranch");
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok());
    (secs, rss)
}

fn ratio(what: &str, a: f64, b: f64, unit: &str, target: &str) {
    println!(
        "RATIO {what}: {:.2} ({a:.1}{unit} / {b:.1}{unit}; target {target})",
        a / b
    );
}

fn main() {
    let small = std::env::var_os("LANCEBRANCH_BENCH_SMALL").is_some();
    let base: u64 = if small { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    run(&["--store", s, "init"]);
    let (one, four) = (dir.path().join("one.csv"), dir.path().join("four.csv"));
    csv(&one, base);
    csv(&four, 4 * base);
    let (p1, p4) = (one.to_str().unwrap(), four.to_str().unwrap());
    // Side by side: one run of each, twice, keeping the faster.
    let mut best = [(f64::MAX, 0u64); 4];
    for round in 0..2 {
        for (i, (t, f)) in [("a", p1), ("b", p4)].iter().enumerate() {
            let table = format!("{t}{round}");
            let (secs, rss) = run(&["--store", s, "import", &table, f, "--key", "id"]);
            best[i].0 = best[i].0.min(secs);
            best[i].1 = best[i].1.max(rss.unwrap_or(0));
            let out = dir.path().join("out.csv");
            let o = out.to_str().unwrap();
            let (secs, rss) = run(&["--store", s, "export", &table, "-o", o]);
            best[2 + i].0 = best[2 + i].0.min(secs);
            best[2 + i].1 = best[2 + i].1.max(rss.unwrap_or(0));
        }
    }
    let rows = |k: u64| format!("{} rows", k * base);
    println!(
        "import {}: {:.2} s, peak RSS {} KiB",
        rows(1),
        best[0].0,
        best[0].1
    );
    println!(
        "import {}: {:.2} s, peak RSS {} KiB",
        rows(4),
        best[1].0,
        best[1].1
    );
    println!(
        "export {}: {:.2} s, peak RSS {} KiB",
        rows(1),
        best[2].0,
        best[2].1
    );
    println!(
        "export {}: {:.2} s, peak RSS {} KiB",
        rows(4),
        best[3].0,
        best[3].1
    );
    if best[0].1 > 0 {
        let mib = |k: u64| k as f64 / 1024.0;
        ratio(
            "import peak RSS, 4x rows / 1x",
            mib(best[1].1),
            mib(best[0].1),
            " MiB",
            "<= 1.5",
        );
        ratio(
            "export peak RSS, 4x rows / 1x",
            mib(best[3].1),
            mib(best[2].1),
            " MiB",
            "<= 1.5",
        );
    } else {
        println!("peak RSS not measured: no /usr/bin/time (GNU time) here");
    }
    ratio(
        "import time, 4x rows / 1x",
        best[1].0,
        best[0].0,
        " s",
        "<= 5",
    );
    ratio(
        "export time, 4x rows / 1x",
        best[3].0,
        best[2].0,
        " s",
        "<= 5",
    );
}
