//! The built binary moving data in and out: `init`, `import` (CSV, JSON
//! lines, Parquet; create / append / overwrite / upsert), `export`,
//! `delete-rows`, `create-table`, `drop-table`, end to end through fork,
//! diff and merge, with outputs compared byte for byte; bad input exits 1
//! with the line and a hint and publishes nothing; a 1 M-row file streams.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::commands::{json, lb, text};

/// Run `--store DIR args`, expect exit `code`, return (stdout, stderr).
fn run(store: &Path, args: &[&str], code: i32) -> (String, String) {
    let mut all = vec!["--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = lb(&all);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn write(path: &Path, s: &str) {
    std::fs::write(path, s).unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every row of `table` on `branch`, sorted by id, as CSV on stdout.
fn csv_of(store: &Path, table: &str, branch: &str) -> String {
    let args = ["export", table, "--branch", branch, "--order-by", "id"];
    run(store, &args, 0).0
}

/// The catalog's records since the last checkpoint (nothing published
/// means this does not change).
fn log_len(store: &Path) -> usize {
    json(store, &["log"], 0)["entries"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn import_fork_import_diff_merge_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let files = dir.path();
    let init = json(&store, &["init"], 0);
    assert_eq!(init["created"], true);
    // A second init leaves the store as it is.
    assert_eq!(json(&store, &["init"], 0)["created"], false);

    write(
        &files.join("people.csv"),
        "id,name,age\n1,ada,36\n2,alan,41\n3,grace,85\n",
    );
    let a = json(
        &store,
        &[
            "import",
            "people",
            p(&files.join("people.csv")),
            "--key",
            "id",
        ],
        0,
    );
    assert_eq!(
        (&a["rows_read"], &a["inserted"], &a["created"]),
        (&Value::from(3), &Value::from(3), &Value::from(true))
    );
    run(&store, &["fork", "what-if"], 0);
    // On the branch: alan's age changes, linus arrives (upsert by the key
    // stored at creation); from JSON lines.
    write(
        &files.join("changes.jsonl"),
        "{\"id\": 2, \"name\": \"alan\", \"age\": 42}\n{\"id\": 4, \"name\": \"linus\", \"age\": 55}\n",
    );
    let u = json(
        &store,
        &[
            "import",
            "people",
            p(&files.join("changes.jsonl")),
            "--branch",
            "what-if",
            "--mode",
            "upsert",
        ],
        0,
    );
    assert_eq!(
        (&u["inserted"], &u["updated"]),
        (&Value::from(1), &Value::from(1))
    );
    // main is untouched until the merge.
    assert_eq!(
        csv_of(&store, "people", "main"),
        "id,name,age\n1,ada,36\n2,alan,41\n3,grace,85\n"
    );
    let d = json(&store, &["diff", "what-if"], 0);
    let t = &d["tables"][0];
    assert_eq!(
        (&t["table"], &t["inserted"], &t["updated"], &t["deleted"]),
        (
            &Value::from("people"),
            &Value::from(1),
            &Value::from(1),
            &Value::from(0)
        )
    );
    let m = json(&store, &["merge", "what-if"], 0);
    assert_eq!(m["outcome"], "fast_forward"); // main did not move meanwhile
    let expected = "id,name,age\n1,ada,36\n2,alan,42\n3,grace,85\n4,linus,55\n";
    assert_eq!(csv_of(&store, "people", "main"), expected);

    // To a file, as JSON lines, filtered and projected.
    let out = files.join("old.jsonl");
    let e = json(
        &store,
        &[
            "export",
            "people",
            "--filter",
            "age > 50",
            "--columns",
            "name,id",
            "--order-by",
            "id",
            "-o",
            p(&out),
        ],
        0,
    );
    assert_eq!(e["rows"], 2);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"name\":\"grace\",\"id\":3}\n{\"name\":\"linus\",\"id\":4}\n"
    );

    // Parquet there and back (CSV in a build without it), into a new table.
    let ext = if cfg!(feature = "parquet") {
        "parquet"
    } else {
        "csv"
    };
    let pq = files.join(format!("people.{ext}"));
    run(&store, &["export", "people", "-o", p(&pq)], 0);
    let c = json(
        &store,
        &["import", "copy", p(&pq), "--mode", "create", "--key", "id"],
        0,
    );
    assert_eq!(
        (&c["rows_read"], &c["created"]),
        (&Value::from(4), &Value::from(true))
    );
    assert_eq!(csv_of(&store, "copy", "main"), expected);

    // Overwrite replaces the rows; append adds.
    write(&files.join("one.csv"), "id,name,age\n9,edsger,72\n");
    run(
        &store,
        &[
            "import",
            "copy",
            p(&files.join("one.csv")),
            "--mode",
            "overwrite",
        ],
        0,
    );
    assert_eq!(csv_of(&store, "copy", "main"), "id,name,age\n9,edsger,72\n");
    run(&store, &["import", "copy", p(&files.join("one.csv"))], 0);
    assert_eq!(
        csv_of(&store, "copy", "main"),
        "id,name,age\n9,edsger,72\n9,edsger,72\n"
    );

    // delete-rows counts what it removed; drop-table; create-table.
    let del = json(
        &store,
        &["delete-rows", "people", "--filter", "age < 40"],
        0,
    );
    assert_eq!(
        (&del["deleted"], &del["remaining"]),
        (&Value::from(1), &Value::from(3))
    );
    run(&store, &["drop-table", "copy"], 0);
    let made = json(
        &store,
        &[
            "create-table",
            "edges",
            "--columns",
            "id:int64,src:int64,dst:int64,w:float64",
            "--key",
            "id",
        ],
        0,
    );
    assert_eq!(made["created"], true);
    write(
        &files.join("edges.csv"),
        "src,dst,w,id\n1,2,0.5,10\n2,3,1.5,11\n",
    );
    run(&store, &["import", "edges", p(&files.join("edges.csv"))], 0);
    assert_eq!(
        csv_of(&store, "edges", "main"),
        "id,src,dst,w\n10,1,2,0.5\n11,2,3,1.5\n"
    );
    // At a tag, after later changes.
    run(&store, &["tag", "v1"], 0);
    run(&store, &["delete-rows", "edges", "--filter", "id = 10"], 0);
    let (at, _) = run(
        &store,
        &["export", "edges", "--at", "v1", "--order-by", "id"],
        0,
    );
    assert_eq!(at, "id,src,dst,w\n10,1,2,0.5\n11,2,3,1.5\n");
    let f = json(&store, &["fsck"], 0);
    assert_eq!(f["clean"], true, "{f}");
}

#[test]
fn bad_input_exits_1_with_the_line_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let files = dir.path();
    run(&store, &["init"], 0);
    write(&files.join("t.csv"), "id,v\n1,10\n2,20\n");
    run(
        &store,
        &["import", "t", p(&files.join("t.csv")), "--key", "id"],
        0,
    );
    let before = (log_len(&store), csv_of(&store, "t", "main"));
    let unchanged = |why: &str| {
        assert_eq!(
            (log_len(&store), csv_of(&store, "t", "main")),
            before,
            "{why}"
        );
    };

    // A value that does not parse, on the file's line 4.
    write(&files.join("bad.csv"), "id,v\n3,30\n4,40\n5,forty\n");
    let (_, err) = run(&store, &["import", "t", p(&files.join("bad.csv"))], 1);
    assert!(err.contains("line 4") && err.contains("forty"), "{err}");
    assert!(err.contains("hint: fix line 4"), "{err}");
    unchanged("a bad CSV value");

    // A malformed JSON line.
    write(
        &files.join("bad.jsonl"),
        "{\"id\": 3, \"v\": 30}\n{\"id\": 4, \"v\": \n",
    );
    let (_, err) = run(&store, &["import", "t", p(&files.join("bad.jsonl"))], 1);
    assert!(err.contains("line 2"), "{err}");
    unchanged("a malformed JSON line");

    // A JSON value of the wrong type, past the first line.
    write(
        &files.join("type.jsonl"),
        "{\"id\": 3, \"v\": 30}\n{\"id\": 4, \"v\": \"x\"}\n",
    );
    let (_, err) = run(&store, &["import", "t", p(&files.join("type.jsonl"))], 1);
    assert!(err.contains("line 2"), "{err}");
    unchanged("a JSON value of the wrong type");

    // A column the table does not have.
    write(&files.join("extra.csv"), "id,v,w\n3,30,1\n");
    let (_, err) = run(&store, &["import", "t", p(&files.join("extra.csv"))], 1);
    assert!(err.contains("\"w\"") && err.contains("hint:"), "{err}");
    unchanged("a column the table lacks");

    // An unknown key column; a missing file; create over an existing
    // table; a blank delete filter; an unknown format.
    let (_, err) = run(
        &store,
        &[
            "import",
            "t",
            p(&files.join("t.csv")),
            "--mode",
            "upsert",
            "--key",
            "nope",
        ],
        1,
    );
    assert!(err.contains("\"nope\""), "{err}");
    let (_, err) = run(&store, &["import", "t", p(&files.join("missing.csv"))], 1);
    assert!(err.contains("no such file"), "{err}");
    let (_, err) = run(
        &store,
        &["import", "t", p(&files.join("t.csv")), "--mode", "create"],
        1,
    );
    assert!(
        err.contains("already exists") && err.contains("hint:"),
        "{err}"
    );
    let (_, err) = run(&store, &["delete-rows", "t", "--filter", " "], 1);
    assert!(err.contains("invalid filter"), "{err}");
    let (_, err) = run(
        &store,
        &["delete-rows", "t", "--filter", "1=1; DROP TABLE t"],
        1,
    );
    assert!(err.contains("invalid filter"), "{err}");
    write(&files.join("t.txt"), "id,v\n");
    let (_, err) = run(&store, &["import", "t", p(&files.join("t.txt"))], 1);
    assert!(err.contains("--format"), "{err}");
    unchanged("refused arguments");
    let f = json(&store, &["fsck"], 0);
    assert_eq!(f["clean"], true, "{f}");
}

/// A file of `n` rows `id,v` (v = id * 2), with `bad` replacing row
/// `bad_at`'s value if given.
fn big_csv(path: &Path, n: u64, bad_at: Option<u64>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,v").unwrap();
    for i in 0..n {
        if Some(i) == bad_at {
            writeln!(f, "{i},oops").unwrap();
        } else {
            writeln!(f, "{i},{}", i * 2).unwrap();
        }
    }
}

#[test]
fn a_million_rows_stream_in_and_a_failure_half_way_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    run(&store, &["init"], 0);
    let big = dir.path().join("big.csv");
    big_csv(&big, 1_000_000, None);
    let a = json(&store, &["import", "big", p(&big), "--key", "id"], 0);
    assert_eq!(
        (&a["rows_read"], &a["inserted"]),
        (&Value::from(1_000_000), &Value::from(1_000_000))
    );
    let n = json(
        &store,
        &["delete-rows", "big", "--filter", "id >= 999990"],
        0,
    );
    assert_eq!(
        (&n["deleted"], &n["remaining"]),
        (&Value::from(10), &Value::from(999_990))
    );
    // A bad value on line 200,002: three chunks were committed to Lance
    // before it, and none is published.
    let log = log_len(&store);
    big_csv(&big, 300_000, Some(200_000));
    let (_, err) = run(&store, &["import", "big", p(&big)], 1);
    assert!(err.contains("line 200002"), "{err}");
    assert_eq!(
        log_len(&store),
        log + 1,
        "only the restore of the published version"
    );
    let (tail, _) = run(
        &store,
        &["export", "big", "--filter", "id < 3", "--order-by", "id"],
        0,
    );
    assert_eq!(tail, "id,v\n0,0\n1,2\n2,4\n");
    let c = json(&store, &["scan", "big", "--filter", "id = 150000"], 0);
    assert_eq!(c["count"], 1, "the row from before, once");
    let f = json(&store, &["fsck"], 0);
    assert_eq!(f["clean"], true, "{f}");
}

/// The README's shell session, run as written with `lancebranch` the built
/// binary, in an empty directory; its last command prints what the README
/// says it prints.
#[test]
fn the_readme_shell_session_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let block = |start: &str| -> String {
        let from = readme
            .find(start)
            .unwrap_or_else(|| panic!("README lacks {start}"));
        let rest = &readme[from..];
        let open = rest.find("```").unwrap();
        let body = &rest[open..];
        let body = &body[body.find('\n').unwrap() + 1..];
        body[..body.find("```").unwrap()].to_string()
    };
    let script = block("<!-- shell-session -->");
    let expected = block("<!-- shell-output -->");
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_lancebranch");
    let full = format!("set -euo pipefail\nlancebranch() {{ \"{bin}\" \"$@\"; }}\n{script}");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&full)
        .current_dir(dir.path())
        .env_remove("LANCEBRANCH_STORE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.ends_with(&expected),
        "{stdout}\n---\nexpected the end:\n{expected}"
    );
}
