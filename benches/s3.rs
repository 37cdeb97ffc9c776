//! A branched store on S3 (the local moto server of
//! `lancebranch::testing::s3`, one request at a time) against the same
//! store on local disk, in one run:
//!
//! - requests per fork, counted by the server (its request recorder), at
//!   1, 10 and 112 tables (goal: one PUT, whatever the number of tables);
//! - the requests of a first write on a branch and of a merge;
//! - fork, first write on a branch and merge p50 latency, S3 / local disk
//!   (`RATIO` lines; the figures say what object storage costs, on a
//!   server that answers in well under a millisecond: a real S3 bucket
//!   adds its round trips).
//!
//! `cargo bench --bench s3` (release; needs python3 with moto).
//! `LANCEBRANCH_BENCH_SMALL=1` takes fewer samples.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{p50, ratio, rows, small};
use criterion::{Criterion, criterion_group, criterion_main};
use lancebranch::branched::{BranchedBackend, MergeOptions};
use lancebranch::lance::LanceDbOptions;
use lancebranch::testing::s3::server;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};
use tokio::runtime::Runtime;

/// One HTTP request to the server's control API; the response body.
fn moto_api(method: &str, path: &str) -> String {
    let endpoint = server()
        .endpoint()
        .trim_start_matches("http://")
        .to_string();
    let mut conn = std::net::TcpStream::connect(&endpoint).expect("connect to moto");
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The requests the server received while `f` ran, by method.
fn requests<T>(
    rt: &Runtime,
    f: impl std::future::Future<Output = T>,
) -> (T, BTreeMap<String, usize>) {
    moto_api("POST", "/moto-api/recorder/reset-recording");
    moto_api("POST", "/moto-api/recorder/start-recording");
    let out = rt.block_on(f);
    moto_api("POST", "/moto-api/recorder/stop-recording");
    let log = moto_api("GET", "/moto-api/recorder/download-recording");
    if std::env::var_os("LANCEBRANCH_BENCH_SHOW_REQUESTS").is_some() {
        for line in log.lines() {
            if let Some(url) = line.split("\"url\": \"").nth(1) {
                println!("  request {}", url.split('"').next().unwrap_or(""));
            }
        }
    }
    let mut by_method = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("\"method\"")) {
        let m = line
            .split("\"method\": \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        *by_method.entry(m.to_string()).or_insert(0) += 1;
    }
    (out, by_method)
}

fn show(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    let each: Vec<String> = counts.iter().map(|(m, n)| format!("{m} {n}")).collect();
    format!("{total} ({})", each.join(", "))
}

async fn open(uri: &str) -> BranchedBackend {
    let opts = if uri.starts_with("s3://") {
        LanceDbOptions {
            storage_options: server().options(),
            ..Default::default()
        }
    } else {
        LanceDbOptions::default()
    };
    let inner = Arc::new(LanceDbBackend::open_with(uri, opts).await.expect("open"));
    BranchedBackend::open(inner).await.expect("branched")
}

async fn with_tables(uri: &str, tables: usize) -> BranchedBackend {
    let main = open(uri).await;
    for t in 0..tables {
        main.create_table(&format!("t{t}"), vec![rows(0, 100)])
            .await
            .expect("create");
    }
    main
}

/// Fork, first write on the fork, merge back: `n` rounds; the p50 of each.
async fn rounds(main: &BranchedBackend, n: usize) -> [Duration; 3] {
    let (mut fork, mut write, mut merge) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        let b = main.fork(&format!("r{i}")).await.expect("fork");
        fork.push(t.elapsed());
        let t = Instant::now();
        b.write(
            "t0",
            vec![rows(1_000 + i as i64 * 10, 10)],
            WriteMode::Append,
        )
        .await
        .expect("first write");
        write.push(t.elapsed());
        let t = Instant::now();
        let opts = MergeOptions::default().key("t0", &["id"]);
        let report = main.merge(&b, opts).await.expect("merge");
        assert!(!report.is_conflicted(), "{report:?}");
        merge.push(t.elapsed());
    }
    [p50(fork), p50(write), p50(merge)]
}

fn benches(c: &mut Criterion) {
    // The recorder keeps its log in a file: not in the repository.
    let rec = tempfile::tempdir().expect("tempdir");
    // SAFETY: set before any thread of this process reads the environment
    // (the server, which inherits it, starts below).
    unsafe { std::env::set_var("MOTO_RECORDER_FILEPATH", rec.path().join("recording")) };
    let rt = Runtime::new().expect("runtime");
    let n = if small() { 7 } else { 21 };

    // ---- requests ----
    for tables in [1, 10, 112] {
        let uri = server().fresh_uri("bench-fork");
        let main = rt.block_on(with_tables(&uri, tables));
        let (_, counts) = requests(&rt, main.fork("f"));
        println!(
            "REQUESTS fork, {tables} table(s): {} (goal: 1 PUT)",
            show(&counts)
        );
    }
    let uri = server().fresh_uri("bench-write");
    let main = rt.block_on(with_tables(&uri, 1));
    let b = rt.block_on(main.fork("w")).expect("fork");
    let (_, counts) = requests(&rt, b.write("t0", vec![rows(500, 10)], WriteMode::Append));
    println!(
        "REQUESTS first write on a branch (10 rows): {}",
        show(&counts)
    );
    let (_, counts) = requests(
        &rt,
        main.merge(&b, MergeOptions::default().key("t0", &["id"])),
    );
    println!("REQUESTS merge of 10 new rows: {}", show(&counts));

    // ---- latency, S3 / local disk ----
    let dir = tempfile::tempdir().expect("tempdir");
    let local = rt.block_on(with_tables(dir.path().to_str().expect("utf-8"), 1));
    let s3 = rt.block_on(with_tables(&server().fresh_uri("bench-rounds"), 1));
    c.bench_function("s3/fork", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let name = format!("c{}", rand_id());
                    let t = Instant::now();
                    s3.fork(&name).await.expect("fork");
                    total += t.elapsed();
                }
                total
            })
        })
    });
    let [lf, lw, lm] = rt.block_on(rounds(&local, n));
    let [sf, sw, sm] = rt.block_on(rounds(&s3, n));
    println!("p50 local disk: fork {lf:.2?}, first write {lw:.2?}, merge {lm:.2?}");
    println!("p50 S3 (moto):  fork {sf:.2?}, first write {sw:.2?}, merge {sm:.2?}");
    ratio("s3/local fork", sf, lf, "report");
    ratio("s3/local first write on a branch", sw, lw, "report");
    ratio("s3/local merge", sm, lm, "report");
}

/// A fresh number for branch names of criterion's own iterations.
fn rand_id() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

criterion_group! {
    name = s3;
    config = common::config();
    targets = benches
}
criterion_main!(s3);
