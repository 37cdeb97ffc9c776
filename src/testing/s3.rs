//! A local S3 server for tests of `s3://` stores: moto, served one request
//! at a time (its conditional-put check is not atomic under threads),
//! started once per test process by `tests/s3/moto_s3.py` (in this
//! repository) on a free loopback port. It exits when the process does
//! (its stdin closes). Needs `python3` with `moto[s3,server]`.
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

use crate::lance::S3Options;

/// The server the tests use ([`server`]).
#[derive(Debug)]
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

    /// The access key id and the secret of the server's test account.
    pub fn keys(&self) -> (&str, &str) {
        (&self.key, &self.secret)
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
///
/// # Panics
/// When moto cannot be started (the message says what to install).
///
/// # Example
/// ```no_run
/// let server = lancebranch::testing::s3::server();
/// let uri = server.fresh_uri("my-test"); // s3://lancebranch-test/my-test-…
/// let opts = lancebranch::lance::LanceDbOptions {
///     storage_options: server.options(),
///     ..Default::default()
/// };
/// # let _ = (uri, opts);
/// ```
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
