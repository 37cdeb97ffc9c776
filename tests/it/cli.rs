//! The built `lancebranch` binary: the demo runs (twice in one place) and
//! bad usage exits 2.

use std::process::Command;

#[test]
fn demo_runs_and_reruns() {
    let dir = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_lancebranch"))
            .args(["demo", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("default policy: Conflicted, 1 conflict(s)"),
            "{stdout}"
        );
        assert!(stdout.contains("hubs: [1, 2, 4, 7]"), "{stdout}");
    }
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_lancebranch"))
        .arg("bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)..to_lowercase().contains("usage"));
}
