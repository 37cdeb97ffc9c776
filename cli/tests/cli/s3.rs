//! `--store s3://…`: the binary on a store on the local S3 server
//! (`lancebranch::testing::s3`), endpoint and keys from `AWS_*` variables.
//! Commands that only read follow the store (its writer goes on); commands
//! that change it take it over (the writer is fenced).

use std::process::{Command, Output};
use std::sync::Arc;

use lancebranch::branched::BranchedBackend;
use lancebranch::lance::LanceDbOptions;
use lancebranch::testing::s3::server;
use lancebranch::{Error, LanceDbBackend, StorageBackend, WriteMode};
use serde_json::Value;

use crate::commands::text;
use crate::people;

/// Run `--json --store URI args` against the test server; expect `code`.
fn lb_s3(uri: &str, args: &[&str], code: i32) -> Value {
    let (key, secret) = server().keys();
    let out: Output = Command::new(env!("CARGO_BIN_EXE_lancebranch"))
        .args(["--json", "--store", uri])
        .args(args)
        .env_remove("LANCEBRANCH_STORE")
        .env("AWS_ENDPOINT_URL", server().endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
    if code != 0 {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_s3_is_read_by_followers_and_taken_over_by_changes() {
    let uri = server().fresh_uri("cli");
    // No store there yet: a typed error, nothing created.
    lb_s3(&uri, &["branches"], 1);
    let init = lb_s3(&uri, &["init"], 0);
    assert_eq!(init["created"], true);
    // A writer in this process.
    let opts = LanceDbOptions {
        storage_options: server().options(),
        ..Default::default()
    };
    let inner = Arc::new(LanceDbBackend::open_with(&uri, opts).await.unwrap());
    let main = BranchedBackend::open(inner).await.unwrap();
    main.create_table("people", vec![people(0..4)])
        .await
        .unwrap();
    // Reading commands follow the store: the writer is not disturbed.
    let branches = lb_s3(&uri, &["branches"], 0);
    assert_eq!(branches["branches"][0]["tables"][0], "people");
    let scan = lb_s3(&uri, &["scan", "people"], 0);
    assert_eq!(scan["rows"].as_array().map(Vec::len), Some(4), "{scan}");
    main.write("people", vec![people(4..5)], WriteMode::Append)
        .await
        .unwrap();
    // A change takes the store over: the writer here is fenced.
    lb_s3(&uri, &["fork", "dev"], 0);
    let e = main.fork("x").await.unwrap_err();
    assert!(matches!(Error::of(&e), Some(Error::Fenced { .. })), "{e:#}");
    let branches = lb_s3(&uri, &["branches"], 0);
    let names: Vec<&str> = branches["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "dev"]);
    let log = lb_s3(&uri, &["log"], 0);
    let writers = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "Writer")
        .count();
    assert!(writers >= 3, "{log}"); // init, this process, fork
    assert_eq!(lb_s3(&uri, &["fsck"], 0)["clean"], true);
    // The WAL of a local store only.
    lb_s3(&uri, &["wal", "dump"], 1);
}
