//! The built `lancebranch` binary: the demo runs (twice in one place), every
//! command's `--json` document against the demo store, exit codes (2 for
//! bad usage, 1 with a hint for errors, 3 for a refused merge), and
//! `recover` / `wal dump` after a crash left a merge pending.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use lancebranch::branched::{BranchedBackend, MergeOptions};
use lancebranch::{Error, LanceDbBackend, StorageBackend, WriteMode};
use serde_json::Value;

use crate::people;

/// Run the binary with `args` (sequentially: each run takes the store's lock).
pub(crate) fn lb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lancebranch"))
        .args(args)
        .env_remove("LANCEBRANCH_STORE")
        .output()
        .unwrap()
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `--json --store DIR args`, expect exit `code`, parse stdout.
pub(crate) fn json(store: &Path, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--json", "--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = lb(&all);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

#[test]
fn demo_runs_twice_and_every_command_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    for run in 0..2 {
        let out = lb(&["demo", "--dir", store.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "run {run}: {}", text(&out));
        for line in [
            "default policy: Conflicted, 1 conflict(s), nothing applied",
            "vertices [id=1] divergent_update on label: ours landmark, theirs hub",
            "killed at merge::after_apply_before_publish",
            "pending    op 7: begin merge of what-if into main",
            "the crashed merge left no trace: main still has 599 edges",
            "recovery   op 7: merge undone",
            "fsck       clean",
            "main has 604 edges, hubs: [1, 2, 4, 7]",
            "fork                  ",
            "total",
        ] {
            assert!(
                stdout.contains(line),
                "run {run}: missing {line:?}:\n{stdout}"
            );
        }
    }

    // The demo's own JSON document (a third run, through --store).
    let demo = json(store, &["demo"], 0);
    let f = &demo["facts"];
    assert_eq!(f["refused"]["outcome"], "conflicted");
    assert_eq!(f["refused"]["conflicts"][0]["kind"], "divergent_update");
    assert_eq!(f["merged"]["outcome"], "merged");
    assert_eq!(f["pending_after_crash"].as_array().unwrap().len(), 1);
    assert_eq!(f["merge_absent_after_crash"], true);
    assert_eq!(f["recovery"][0]["kind"], "merge");
    assert_eq!(f["recovery"][0]["action"], "undone");
    assert_eq!(f["fsck"]["clean"], true);
    assert_eq!(f["final_merge"]["applied"], true);
    assert_eq!(f["final_hubs"], serde_json::json!([1, 2, 4, 7]));
    let steps: Vec<&str> = demo["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"fork") && steps.contains(&"reopen (recovery)"),
        "{steps:?}"
    );
    assert!(demo["steps"][4]["ms"].as_f64().unwrap() >= 0.0);

    let b = json(store, &["branches"], 0);
    let names: Vec<&str> = b["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "experiment", "what-if"]);
    let what_if = &b["branches"][2];
    assert_eq!(what_if["parent"], "main");
    assert_eq!(strs(&what_if["tables"]), ["edges", "vertices"]);
    assert_eq!(what_if["materialized"], 2);
    assert!(b["branches"][0]["parent"].is_null());

    let t = json(store, &["tags"], 0);
    assert_eq!(t["tags"][0]["name"], "baseline");
    assert_eq!(t["tags"][0]["branch"], "main");
    assert_eq!(t["tags"][0]["versions"]["vertices"], 1);

    let d = json(store, &["diff", "experiment", "--rows"], 0);
    assert_eq!(
        (d["source"].as_str(), d["target"].as_str()),
        (Some("experiment"), Some("main"))
    );
    let tables = d["tables"].as_array().unwrap();
    let by = |name: &str| tables.iter().find(|t| t["table"] == name).unwrap().clone();
    let (e, v) = (by("edges"), by("vertices"));
    assert_eq!(
        (&e["deleted"], &e["inserted"], &e["change"]),
        (&Value::from(1), &Value::from(0), &Value::from("modified"))
    );
    assert_eq!(e["rows"][0]["id"], 30);
    assert_eq!(e["rows"][0]["_change"], "delete");
    assert_eq!(v["updated"], 1);
    assert_eq!(v["rows"][0]["label"], "hub");
    assert_eq!(v["rows"][0]["_changed_columns"], "label");
    assert_eq!(v["rows"][0]["embedding"].as_array().unwrap().len(), 8);

    let m = json(store, &["merge", "experiment"], 3);
    assert_eq!(m["outcome"], "conflicted");
    assert_eq!(m["applied"], false);
    let c = &m["conflicts"][0];
    assert_eq!(
        (c["table"].as_str(), c["kind"].as_str()),
        (Some("vertices"), Some("divergent_update"))
    );
    assert_eq!(
        (c["column"].as_str(), c["key"].as_str()),
        (Some("label"), Some("id=3"))
    );
    assert_eq!(
        (c["ours"].as_str(), c["theirs"].as_str()),
        (Some("vip"), Some("hub"))
    );
    let m = json(
        store,
        &[
            "merge",
            "experiment",
            "--into",
            "main",
            "--policy",
            "vertices=theirs",
            "--key",
            "id",
        ],
        0,
    );
    assert_eq!(m["outcome"], "merged");
    assert_eq!(m["applied"], true);
    assert_eq!(m["tables"]["vertices"]["updated"], 1);
    assert_eq!(m["tables"]["edges"]["deleted"], 1);
    let m = json(store, &["merge", "experiment"], 0);
    assert_eq!(m["outcome"], "already_up_to_date");

    let s = json(
        store,
        &[
            "scan",
            "vertices",
            "--filter",
            "label = 'hub'",
            "--limit",
            "3",
            "--columns",
            "id,label",
        ],
        0,
    );
    assert_eq!(s["count"], 3);
    for row in s["rows"].as_array().unwrap() {
        assert_eq!(row["label"], "hub");
        assert!(row.get("embedding").is_none());
    }
    let s = json(
        store,
        &[
            "scan",
            "edges",
            "--branch",
            "what-if",
            "--filter",
            "id >= 700",
        ],
        0,
    );
    assert_eq!(s["count"], 5);

    let l = json(store, &["log"], 0);
    assert_eq!(l["checkpoint_lsn"], 0);
    let entries = l["entries"].as_array().unwrap();
    let lsns: Vec<u64> = entries.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, (1..=lsns.len() as u64).collect::<Vec<_>>());
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "Publish",
        "Tag",
        "Fork",
        "BeginLine",
        "EndLine",
        "BeginMerge",
        "Abort",
        "MergeBase",
        "EndMerge",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let fork = entries.iter().find(|e| e["type"] == "Fork").unwrap();
    assert_eq!(fork["record"]["name"], "what-if");
    assert_eq!(fork["record"]["parent"], "main");

    let w = json(store, &["wal", "dump"], 0);
    let frames = w["frames"].as_array().unwrap();
    assert_eq!(frames.len(), entries.len());
    assert_eq!(frames[0]["lsn"], 1);
    assert_eq!(w["next_lsn"].as_u64(), Some(entries.len() as u64 + 1));
    assert_eq!(w["torn_tail_bytes"], 0);
    assert_eq!(
        frames.last().unwrap()["type"],
        entries.last().unwrap()["type"]
    );

    let r = json(store, &["recover"], 0);
    assert_eq!(r["clean"], true);
    assert_eq!(r["pending_before"].as_array().unwrap().len(), 0);
    assert_eq!(r["operations"].as_array().unwrap().len(), 0);

    let f = json(store, &["fsck"], 0);
    assert_eq!(f["clean"], true);
    assert_eq!(f["problems"].as_array().unwrap().len(), 0);
    assert_eq!(f["checked"]["branches"], 3);
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["bogus"][..],
        &["merge"],
        &["merge", "x", "--policy", "sometimes"],
        &["diff", "a", "--key", "t="],
        &["scan"],
        &["--json", "wal"],
    ] {
        let out = lb(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("usage") || err.contains("--help"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_1_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    // No store yet: nothing is created, and the hint names the demo.
    let out = lb(&["--store", store, "branches"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: no lancebranch store at"), "{err}");
    assert!(err.contains("lancebranch demo"), "{err}");
    assert!(!dir.path().join("_lancebranch").exists());
    {
        let inner = Arc::new(LanceDbBackend::open(store).await.unwrap());
        let main = BranchedBackend::open(inner).await.unwrap();
        main.create_table("p", vec![people(0..3)]).await.unwrap();
    }
    for args in [
        &["diff", "nope"][..],
        &["merge", "nope"],
        &["scan", "p", "--branch", "nope"],
    ] {
        let mut all = vec!["--store", store];
        all.extend_from_slice(args);
        let out = lb(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error: branch \"nope\" does not exist"),
            "{err}"
        );
        assert!(
            err.contains("hint: run `lancebranch branches` to list them"),
            "{err}"
        );
    }
    let e = json(dir.path(), &["scan", "nope"], 1);
    assert_eq!(e["exit_code"], 1);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("table \"nope\" does not exist")
    );
    let e = json(
        dir.path(),
        &["scan", "p", "--filter", "no_such_column = 1"],
        1,
    );
    assert!(e["hint"].as_str().unwrap().contains("WHERE clause"));
    let e = json(dir.path(), &["fork", "main"], 1);
    assert!(e["error"].as_str().unwrap().contains("invalid branch name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reports_a_merge_cut_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    {
        let inner = Arc::new(LanceDbBackend::open(store).await.unwrap());
        let main = BranchedBackend::open(inner).await.unwrap();
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("p", vec![people(3..5)], WriteMode::Append)
            .await
            .unwrap();
        main.arm_failpoint(lancebranch::failpoints::FailPoint::MergeAfterApplyBeforePublish);
        let opts = MergeOptions::default().key("p", &["id"]);
        let e = main.merge(&b, opts).await.unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::FailPoint(_))), "{e:#}");
    }
    // Offline, before recovery: the log ends with the merge's begin record.
    let w = json(dir.path(), &["wal", "dump"], 0);
    let last = w["frames"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "BeginMerge");
    assert_eq!(last["record"]["source"], "b");
    let op = last["record"]["op"].as_u64().unwrap();

    let r = json(dir.path(), &["recover"], 0);
    assert_eq!(r["clean"], false);
    let pending = r["pending_before"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["op"].as_u64(), Some(op));
    assert_eq!(pending[0]["type"], "BeginMerge");
    let ops = r["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["op"].as_u64(), Some(op));
    assert_eq!(
        (ops[0]["kind"].as_str(), ops[0]["action"].as_str()),
        (Some("merge"), Some("undone"))
    );

    // Recovery logged the abort (then restored the target's tables); the
    // merge is absent; a second recover is clean.
    let l = json(dir.path(), &["log"], 0);
    let entries = l["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["type"] == "Abort" && e["record"]["op"].as_u64() == Some(op)),
        "{l}"
    );
    let s = json(dir.path(), &["scan", "p"], 0);
    assert_eq!(s["count"], 3);
    let r = json(dir.path(), &["recover"], 0);
    assert_eq!(r["clean"], true);

    // Recovery restored the cut merge's Lance commits away: fsck is clean.
    let f = json(dir.path(), &["fsck"], 0);
    assert_eq!(f["clean"], true);

    let m = json(dir.path(), &["merge", "b", "--key", "p=id"], 0);
    assert_eq!(m["applied"], true);
    assert_eq!(m["tables"]["p"]["inserted"], 2);
    let s = json(dir.path(), &["scan", "p"], 0);
    assert_eq!(s["count"], 5);
}
