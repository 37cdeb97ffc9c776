//! A local S3 server for the `s3://` tests: moto, served one request at a
//! time (its conditional-put check is not atomic under threads), started
//! once per test process by `tests/s3/moto_s3.py` on a free loopback port.
//! It exits when this process does (its stdin closes).
//!
//! `LANCEBRANCH_S3_ENDPOINT` (with `LANCEBRANCH_S3_BUCKET`, default
//! `lancebranch-test`) points the tests at another S3-compatible server
//! instead (keys from `LANCEBRANCH_S3_KEY` / `LANCEBRANCH_S3_SECRET`,
//! default `testing`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lancebranch::lance::S3Options;

/// The server the tests use.
pub struct Server {
    endpoint: String,
    bucket: String,
    key: String,
    secret: String,
    /// Kept, never dropped: the server lives as long as this process.
    _child: Option<Mutex<(Child, ChildStdin)>>,
}

impl Server {
    /// Storage options for a store on this server.
    pub fn options(&self) -> HashMap<String, String> {
        S3Options::new("us-east-1")
            .endpoint(&self.endpoint)
            .keys(&self.key, &self.secret)
            .storage_options()
    }

    /// The server's endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket the tests use.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A fresh, empty `s3://` prefix.
    pub fn fresh_uri(&self, what: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("s3://{}/{what}-{}-{n}", self.bucket, std::process::id())
    }
}

/// The server, started on first use.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        if let Ok(endpoint) = std::env::var("LANCEBRANCH_S3_ENDPOINT") {
            return Server {
                endpoint,
                bucket: env("LANCEBRANCH_S3_BUCKET", "lancebranch-test"),
                key: env("LANCEBRANCH_S3_KEY", "testing"),
                secret: env("LANCEBRANCH_S3_SECRET", "testing"),
                _child: None,
            };
        }
        start_moto()
    })
}

fn start_moto() -> Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/moto_s3.py");
    let hint = "the s3 tests need python3 with moto: pip install 'moto[s3]' flask flask-cors";
    let mut child = Command::new("python3")
        .arg(script)
        .arg("lancebranch-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}; {hint}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("moto did not start within 60 s; {hint}"));
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("moto printed {line:?}, not its port; {hint}"));
    let stdin = child.stdin.take().expect("piped stdin");
    Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "lancebranch-test".to_string(),
        key: "testing".to_string(),
        secret: "testing".to_string(),
        _child: Some(Mutex::new((child, stdin))),
    }
}

// ---- what only object stores have ----

use std::sync::Arc;

use lancebranch::backend::BranchLines;
use lancebranch::conformance::data::people;
use lancebranch::conformance::run;
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};

async fn open(uri: &str) -> LanceDbBackend {
    let opts = LanceDbOptions {
        storage_options: server().options(),
        ..Default::default()
    };
    LanceDbBackend::open_with(uri, opts).await.unwrap()
}

/// Put one object at `key` under `uri` (what a crash can leave behind).
async fn put_object(uri: &str, key: &str) {
    use lance_io::object_store::{ObjectStore, ObjectStoreParams, StorageOptionsAccessor};
    let params = ObjectStoreParams {
        storage_options_accessor: Some(Arc::new(StorageOptionsAccessor::with_static_options(
            server().options(),
        ))),
        ..Default::default()
    };
    let registry = Arc::new(lance_io::object_store::ObjectStoreRegistry::default());
    let (store, root) = ObjectStore::from_uri_and_params(registry, uri, &params)
        .await
        .unwrap();
    let path = key.split('/').fold(root, |p, s| p.join(s));
    store.put(&path, b"left behind").await.unwrap();
}

#[test]
fn two_handles_on_one_prefix_see_each_others_commits() {
    run(async {
        let uri = server().fresh_uri("shared");
        let (a, b) = (open(&uri).await, open(&uri).await);
        a.create_table("p", vec![people(0..3)]).await.unwrap();
        b.notify_table_created("p").await;
        assert_eq!(b.count_rows("p", None).await.unwrap(), 3);
        b.write("p", vec![people(3..5)], WriteMode::Append)
            .await
            .unwrap();
        assert_eq!(a.count_rows("p", None).await.unwrap(), 5);
    });
}

#[test]
fn lines_and_their_leftovers_are_found_and_removed() {
    run(async {
        let uri = server().fresh_uri("lines");
        let s = open(&uri).await;
        s.create_table("t", vec![people(0..3)]).await.unwrap();
        let v = s.latest_version("t", None).await.unwrap();
        s.create_line("t", "lb1", None, v).await.unwrap();
        // A branch cut half-way: objects under tree/ only.
        put_object(&uri, "t.lance/tree/zombie/_versions/x").await;
        assert_eq!(s.list_lines("t").await.unwrap(), vec!["lb1", "zombie"]);
        s.drop_line("t", "zombie").await.unwrap();
        s.drop_line("t", "lb1").await.unwrap();
        assert!(s.list_lines("t").await.unwrap().is_empty());
        assert_eq!(s.count_rows("t", None).await.unwrap(), 3);
    });
}

#[test]
fn purge_removes_a_table_whose_creation_was_cut() {
    run(async {
        let uri = server().fresh_uri("purge");
        let s = open(&uri).await;
        s.create_table("kept", vec![people(0..2)]).await.unwrap();
        put_object(&uri, "ghost.lance/_versions/x").await;
        s.purge_table("ghost").await.unwrap();
        assert_eq!(s.table_names().await.unwrap(), vec!["kept".to_string()]);
        s.purge_table("kept").await.unwrap();
        assert!(s.table_names().await.unwrap().is_empty());
    });
}
