//! Store commands: branches, fork, delete-branch, tag, tags, log, recover,
//! fsck and wal dump.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use lancebranch::LanceDbBackend;
use lancebranch::branched::{BranchedBackend, FsckProblem, Record, read_catalog_offline};
use lancebranch::lance::{LanceDbOptions, S3Options, StoreLocation, store_location};
use lancebranch_wal::{Lsn, RecoveryMode, StdStorage, read_log};
use serde_json::{Value, json};

use crate::EXIT_FSCK_PROBLEMS;
use crate::errors::StoreNotFound;
use crate::output::{Out, columns, describe, done, ms, record_json};

/// Whether `store` names a store on object storage (`s3://bucket/prefix`)
/// rather than a local directory.
pub fn is_object_store(store: &Path) -> bool {
    store
        .to_str()
        .is_some_and(|s| store_location(s) == StoreLocation::Object)
}

/// The inner store at `store`: a directory, or a store on object storage
/// whose endpoint, region and keys come from the environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
async fn inner_at(store: &Path) -> Result<Arc<LanceDbBackend>> {
    let uri = store
        .to_str()
        .with_context(|| format!("store path {} is not UTF-8", store.display()))?;
    let mut opts = LanceDbOptions::default();
    if is_object_store(store) {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut s3 = S3Options::new(&env("AWS_REGION").unwrap_or_else(|| "us-east-1".into()));
        if let Some(endpoint) = env("AWS_ENDPOINT_URL") {
            s3 = s3.endpoint(&endpoint);
        }
        if let (Some(k), Some(sk)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            s3 = s3.keys(&k, &sk);
        }
        if let Some(t) = env("AWS_SESSION_TOKEN") {
            s3 = s3.session_token(&t);
        }
        opts = opts.with_s3(&s3);
    }
    Ok(Arc::new(LanceDbBackend::open_with(uri, opts).await?))
}

/// A read-only follower of the store on object storage at `store`, or
/// [`StoreNotFound`] when it holds no store.
async fn follow(store: &Path) -> Result<BranchedBackend> {
    match BranchedBackend::open_read_only(inner_at(store).await?).await {
        Err(e) if e.to_string().contains("holds no lancebranch catalog") => {
            Err(StoreNotFound(store.to_path_buf()).into())
        }
        other => other,
    }
}

/// Open the store in `store` for writing (running recovery). Fails with
/// [`StoreNotFound`] when there is none (nothing is created). On object
/// storage this takes the store over: a writer elsewhere is fenced.
pub async fn open(store: &Path) -> Result<BranchedBackend> {
    if is_object_store(store) {
        follow(store).await?;
    } else if !store.join("_lancebranch").is_dir() {
        return Err(StoreNotFound(store.to_path_buf()).into());
    }
    BranchedBackend::open(inner_at(store).await?).await
}

/// Open the store in `store` for a command that only reads: on object
/// storage as a read-only follower (a writer elsewhere goes on
/// undisturbed), on local disk as [`open`] does.
pub async fn open_reading(store: &Path) -> Result<BranchedBackend> {
    if is_object_store(store) {
        return follow(store).await;
    }
    open(store).await
}

/// `branches`
pub async fn branches(store: &Path, out: Out) -> Result<u8> {
    let main = open_reading(store).await?;
    let list = main.list_branches();
    if out.json {
        let items: Vec<Value> = list
            .iter()
            .map(|b| {
                json!({
                    "name": b.name,
                    "parent": b.parent,
                    "from_tag": b.from_tag,
                    "tables": b.tables,
                    "materialized": b.materialized,
                })
            })
            .collect();
        out.doc(&json!({ "store": store, "branches": items }))?;
        return Ok(0);
    }
    let mut rows = vec![vec![
        "BRANCH".to_string(),
        "PARENT".into(),
        "FROM TAG".into(),
        "TABLES".into(),
        "MATERIALIZED".into(),
    ]];
    for b in &list {
        rows.push(vec![
            b.name.clone(),
            b.parent.clone().unwrap_or_else(|| "-".into()),
            b.from_tag.clone().unwrap_or_else(|| "-".into()),
            if b.tables.is_empty() {
                "-".into()
            } else {
                b.tables.join(", ")
            },
            format!("{}/{}", b.materialized, b.tables.len()),
        ]);
    }
    outp!("{}", columns(&rows));
    Ok(0)
}

/// `fork NAME [--from B] [--at TAG]`
pub async fn fork(store: &Path, out: Out, name: &str, from: &str, at: Option<&str>) -> Result<u8> {
    let main = open(store).await?;
    let t = Instant::now();
    let view = match at {
        Some(tag) => main.fork_at(name, tag).await?,
        None => main.branch(from)?.fork(name).await?,
    };
    let elapsed = t.elapsed();
    let parent = main
        .list_branches()
        .into_iter()
        .find(|b| b.name == view.branch_name())
        .and_then(|b| b.parent);
    if out.json {
        out.doc(&json!({
            "branch": name,
            "parent": parent,
            "from_tag": at,
            "elapsed_ms": ms(elapsed),
        }))?;
    } else {
        let what = match at {
            Some(tag) => format!("tag {tag}"),
            None => format!("branch {from}"),
        };
        outln!(
            "forked {name} from {what} in {:.2} ms (no data copied)",
            ms(elapsed)
        );
    }
    Ok(0)
}

/// `delete-branch NAME [--cascade]`
pub async fn delete_branch(store: &Path, out: Out, name: &str, cascade: bool) -> Result<u8> {
    let main = open(store).await?;
    let before: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    let pb = out.spinner(&format!("deleting branch {name}"));
    let res = main.delete_branch(name, cascade).await;
    done(pb);
    res?;
    let after: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    let deleted: Vec<&String> = before.iter().filter(|b| !after.contains(b)).collect();
    if out.json {
        out.doc(&json!({ "deleted": deleted, "cascade": cascade }))?;
    } else {
        let names: Vec<&str> = deleted.iter().map(|s| s.as_str()).collect();
        outln!("deleted branch(es) {}", names.join(", "));
    }
    Ok(0)
}

fn tag_json(t: &lancebranch::branched::TagInfo) -> Value {
    json!({ "name": t.name, "branch": t.branch, "versions": t.versions })
}

/// `tag NAME [--branch B]`
pub async fn tag(store: &Path, out: Out, name: &str, branch: &str) -> Result<u8> {
    let main = open(store).await?;
    main.branch(branch)?.tag(name).await?;
    let info = main.list_tags().into_iter().find(|t| t.name == name);
    if out.json {
        out.doc(&info.as_ref().map(tag_json).unwrap_or(Value::Null))?;
    } else {
        outln!("tagged {branch} as {name}");
    }
    Ok(0)
}

/// `tags`
pub async fn tags(store: &Path, out: Out) -> Result<u8> {
    let main = open_reading(store).await?;
    let list = main.list_tags();
    if out.json {
        let items: Vec<Value> = list.iter().map(tag_json).collect();
        out.doc(&json!({ "tags": items }))?;
        return Ok(0);
    }
    if list.is_empty() {
        outln!("no tags");
        return Ok(0);
    }
    let mut rows = vec![vec!["TAG".to_string(), "BRANCH".into(), "VERSIONS".into()]];
    for t in &list {
        let v: Vec<String> = t.versions.iter().map(|(k, v)| format!("{k}@{v}")).collect();
        rows.push(vec![t.name.clone(), t.branch.clone(), v.join(", ")]);
    }
    outp!("{}", columns(&rows));
    Ok(0)
}

/// `log`
pub async fn log(store: &Path, out: Out) -> Result<u8> {
    let main = open_reading(store).await?;
    let h = main.history().await?;
    if out.json {
        let entries: Vec<Value> = h
            .entries
            .iter()
            .map(|e| record_json(e.lsn, &e.record))
            .collect();
        out.doc(&json!({ "checkpoint_lsn": h.checkpoint_lsn, "entries": entries }))?;
        return Ok(0);
    }
    if h.checkpoint_lsn > 0 {
        outln!(
            "checkpoint covers records 1..={} ({} folded in)",
            h.checkpoint_lsn,
            h.checkpoint_lsn
        );
    } else {
        outln!("no checkpoint yet: the log holds the whole history");
    }
    for e in &h.entries {
        let (kind, summary) = describe(&e.record);
        outln!("{:>6}  {kind:<12} {summary}", e.lsn);
    }
    Ok(0)
}

fn pending_json(pending: &[(u64, Record)]) -> Vec<Value> {
    pending
        .iter()
        .map(|(op, r)| {
            let (kind, summary) = describe(r);
            json!({ "op": op, "type": kind, "summary": summary })
        })
        .collect()
}

/// The operations a crash left pending in the store's catalog, read
/// offline (before opening).
pub fn pending_offline(store: &Path) -> Result<Vec<(u64, Record)>> {
    if is_object_store(store) {
        return Ok(Vec::new()); // read offline from local stores only
    }
    if !store.join("_lancebranch").is_dir() {
        return Err(StoreNotFound(store.to_path_buf()).into());
    }
    let cat = read_catalog_offline(store)?;
    Ok(cat.pending().clone().into_iter().collect())
}

/// `recover`: what a crash left pending (read offline first), then open
/// the store, which runs recovery, and print what recovery did.
pub async fn recover(store: &Path, out: Out) -> Result<u8> {
    let pending = pending_offline(store)?;
    let pb = out.spinner("opening the store (recovery)");
    let t = Instant::now();
    let opened = open(store).await;
    done(pb);
    let main = opened?;
    let elapsed = t.elapsed();
    let report = main.last_recovery();
    if out.json {
        let ops: Vec<Value> = report
            .operations
            .iter()
            .map(|o| {
                json!({
                    "op": o.op,
                    "kind": o.kind,
                    "action": o.action,
                    "detail": o.detail,
                    "summary": o.to_string(),
                })
            })
            .collect();
        out.doc(&json!({
            "store": store,
            "pending_before": pending_json(&pending),
            "operations": ops,
            "clean": pending.is_empty() && report.operations.is_empty(),
            "elapsed_ms": ms(elapsed),
        }))?;
        return Ok(0);
    }
    if pending.is_empty() && report.operations.is_empty() {
        outln!("nothing was pending: the store was shut down cleanly");
    }
    for (_, r) in &pending {
        outln!("pending    {}", describe(r).1);
    }
    for o in &report.operations {
        outln!("recovered  {o}");
    }
    outln!("opened     in {:.1} ms", ms(elapsed));
    Ok(0)
}

/// An fsck problem as JSON: its fields (`kind` + details) and `message`.
fn problem_json(p: &FsckProblem) -> Value {
    let mut v =
        serde_json::to_value(p).unwrap_or_else(|e| json!({ "unrenderable": e.to_string() }));
    if let Value::Object(m) = &mut v {
        m.insert("message".into(), json!(p.to_string()));
        m.insert("repairable".into(), json!(p.is_repairable()));
    }
    v
}

/// `fsck [--repair]`: exit 4 when problems remain.
pub async fn fsck(store: &Path, out: Out, repair: bool) -> Result<u8> {
    let main = open(store).await?;
    let pb = out.spinner(if repair {
        "checking and repairing the store"
    } else {
        "checking the store"
    });
    let t = Instant::now();
    let res = main.fsck(repair).await;
    done(pb);
    let report = res?;
    let elapsed = t.elapsed();
    let code = if report.is_clean() {
        0
    } else {
        EXIT_FSCK_PROBLEMS
    };
    if out.json {
        out.doc(&json!({
            "store": store,
            "repair": repair,
            "clean": report.is_clean(),
            "problems": report.problems.iter().map(problem_json).collect::<Vec<_>>(),
            "repaired": report.repaired.iter().map(problem_json).collect::<Vec<_>>(),
            "checked": serde_json::to_value(&report.checked).unwrap_or(Value::Null),
            "elapsed_ms": ms(elapsed),
        }))?;
        return Ok(code);
    }
    let c = &report.checked;
    outln!(
        "checked    {} branch(es), {} tag(s), {} dataset(s), {} Lance branch(es), {} pinned version(s) in {:.1} ms",
        c.branches,
        c.tags,
        c.datasets,
        c.lines,
        c.versions,
        ms(elapsed)
    );
    for p in &report.repaired {
        outln!("repaired   {p}");
    }
    for p in &report.problems {
        let fix = if p.is_repairable() {
            " (repairable: fsck --repair)"
        } else {
            ""
        };
        outln!("problem    {p}{fix}");
    }
    if report.is_clean() {
        outln!("clean");
    } else {
        eprintln!(
            "hint: {} problem(s) remain; `lancebranch fsck --repair` fixes the repairable ones",
            report.problems.len()
        );
    }
    Ok(code)
}

/// `wal dump`: every frame of the catalog log, read offline.
pub fn wal_dump(store: &Path, out: Out) -> Result<u8> {
    if is_object_store(store) {
        return Err(lancebranch::Error::InvalidArgument(
            "`wal dump` reads a local store's WAL; the catalog of a store on object storage \
             is a log of objects: see `log`"
                .into(),
        )
        .into());
    }
    let wal_dir = store.join("_lancebranch").join("wal");
    if !wal_dir.is_dir() {
        return Err(StoreNotFound(store.to_path_buf()).into());
    }
    let checkpoint_lsn = read_catalog_offline(store)?.history.checkpoint_lsn;
    let storage =
        StdStorage::open(&wal_dir).with_context(|| format!("opening {}", wal_dir.display()))?;
    let got = read_log::<Record>(&storage, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO)
        .with_context(|| format!("reading the catalog log in {}", wal_dir.display()))?;
    let rep = &got.report;
    if out.json {
        let frames: Vec<Value> = got
            .records
            .iter()
            .map(|(lsn, r)| {
                let mut v = record_json(lsn.0, r);
                v["in_checkpoint"] = json!(lsn.0 <= checkpoint_lsn);
                v
            })
            .collect();
        out.doc(&json!({
            "wal_dir": wal_dir,
            "checkpoint_lsn": checkpoint_lsn,
            "segments_read": rep.segments_read,
            "bytes_read": rep.bytes_read,
            "next_lsn": rep.next_lsn.0,
            "torn_tail_bytes": rep.torn_tail_bytes,
            "frames": frames,
        }))?;
        return Ok(0);
    }
    outln!(
        "{}: {} segment(s), {} bytes, {} frame(s), next LSN {}, checkpoint covers LSN <= {checkpoint_lsn}",
        wal_dir.display(),
        rep.segments_read,
        rep.bytes_read,
        got.records.len(),
        rep.next_lsn
    );
    if rep.torn_tail_bytes > 0 {
        outln!(
            "torn tail: {} byte(s) after the last complete frame (cut off when the store is next opened)",
            rep.torn_tail_bytes
        );
    }
    for (lsn, r) in &got.records {
        let (kind, summary) = describe(r);
        let mark = if lsn.0 <= checkpoint_lsn { "c" } else { " " };
        outln!("{:>6} {mark} {kind:<12} {summary}", lsn.0);
    }
    Ok(0)
}

/// `init`: a new, empty store in `store` (an existing store is left as it
/// is; a directory holding anything else is refused).
pub async fn init(store: &Path, out: Out) -> Result<u8> {
    if is_object_store(store) {
        let existed = follow(store).await.is_ok();
        let main = BranchedBackend::open(inner_at(store).await?).await?;
        return report_init(store, out, existed, main.list_branches().len());
    }
    let existed = store.join("_lancebranch").is_dir();
    if !existed && store.is_dir() && std::fs::read_dir(store)?.next().is_some() {
        return Err(lancebranch::Error::InvalidArgument(format!(
            "{} is not empty and holds no lancebranch store",
            store.display()
        ))
        .into());
    }
    std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let main = BranchedBackend::open(inner_at(store).await?).await?;
    report_init(store, out, existed, main.list_branches().len())
}

/// What `init` prints.
fn report_init(store: &Path, out: Out, existed: bool, branches: usize) -> Result<u8> {
    if out.json {
        out.doc(&json!({ "store": store, "created": !existed, "branches": branches }))?;
    } else if existed {
        outln!(
            "{} already holds a store ({branches} branch(es))",
            store.display()
        );
    } else {
        outln!("created an empty store in {}", store.display());
    }
    Ok(0)
}
