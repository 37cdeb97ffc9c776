//! `demo`: a small property graph, end to end.
//!
//! Creates a store with a vertex table (with an embedding column) and an
//! edge table, queries it (filters, vector search), tags it, forks a
//! what-if branch, edits both sides so that they conflict, diffs, merges
//! (refused under the default policy, then merged with `theirs`), then
//! crashes a second merge on purpose in a child process, reopens the store
//! (recovery), shows that the merge is entirely absent and the store is
//! consistent, and merges again. Ends with a summary of step timings.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use lancebranch::branched::{BranchedBackend, ConflictPolicy, MergeOptions, MergeOutcome, Record};
use lancebranch::{
    DistanceMetric, FilterExpr, LanceDbBackend, ScanRequest, StorageBackend, VectorQueryOpts,
    WriteMode,
};
use serde_json::{Map, Value, json};

use crate::crash::{CRASH_EXIT, FAIL_POINT};
use crate::data::{conflict_json, conflict_line, outcome_name, report_json};
use crate::demo_data::{
    EDGES, VERTICES, edges, edges_between, embedding, first_str, i64s, relabel, reweigh, vertices,
};
use crate::output::{Out, describe, ms, table_text};

/// Vertices and edges created.
const N_VERTICES: i64 = 200;
const N_EDGES: i64 = 600;
/// The number of timed steps (for the progress bar).
const STEPS: u64 = 15;

/// The demo's running state: timings, facts for `--json`, progress.
struct Demo {
    out: Out,
    pb: Option<ProgressBar>,
    steps: Vec<(&'static str, Duration)>,
    facts: Map<String, Value>,
}

impl Demo {
    /// Print `text` under `label` (human output only).
    fn say(&self, label: &str, text: impl std::fmt::Display) {
        if self.out.json {
            return;
        }
        let line = format!("{label:<10} {text}");
        match &self.pb {
            Some(pb) => pb.suspend(|| outln!("{line}")),
            None => outln!("{line}"),
        }
    }

    /// Print a block of text as it is (human output only).
    fn block(&self, text: &str) {
        if self.out.json {
            return;
        }
        match &self.pb {
            Some(pb) => pb.suspend(|| outln!("{text}")),
            None => outln!("{text}"),
        }
    }

    /// Show that step `name` starts.
    fn start(&self, name: &str) {
        if let Some(pb) = &self.pb {
            pb.set_message(name.to_string());
        }
    }

    /// Record that step `name`, started at `t`, is done.
    fn took(&mut self, name: &'static str, t: Instant) -> Duration {
        let d = t.elapsed();
        self.steps.push((name, d));
        if let Some(pb) = &self.pb {
            pb.inc(1);
        }
        d
    }

    fn fact(&mut self, key: &str, v: Value) {
        self.facts.insert(key.to_string(), v);
    }
}

/// Remove a previous demo store in `dir`: only a directory holding a
/// lancebranch catalog and Lance tables, and not open elsewhere.
fn reset(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e.collect::<std::io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if entries.is_empty() {
        return Ok(());
    }
    let ours = |n: &str| n == "_lancebranch" || n.ends_with(".lance");
    let foreign: Vec<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !ours(n))
        .collect();
    if !dir.join("_lancebranch").is_dir() || !foreign.is_empty() {
        anyhow::bail!(
            "{} is not empty and is not a lancebranch store (it holds {foreign:?}); \
             refusing to replace it: pick another --dir",
            dir.display()
        );
    }
    let wal_dir = dir.join("_lancebranch").join("wal");
    if wal_dir.is_dir() {
        // Taking the log's lock proves no other process has the store open.
        let probe = lancebranch_wal::Wal::<Record>::open(&wal_dir, Default::default());
        if let Err(e @ lancebranch_wal::Error::Locked { .. }) = probe {
            return Err(e).context("the demo store is open in another process");
        }
    }
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
        .with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

async fn open(dir: &Path) -> Result<BranchedBackend> {
    let uri = dir
        .to_str()
        .with_context(|| format!("demo path {} is not UTF-8", dir.display()))?;
    let inner = Arc::new(LanceDbBackend::open(uri).await?);
    BranchedBackend::open(inner).await
}

async fn count(view: &BranchedBackend, table: &str, filter: Option<&str>) -> Result<usize> {
    view.count_rows(table, filter).await
}

async fn label_of(view: &BranchedBackend, id: i64) -> Result<String> {
    let rows = view
        .scan(
            ScanRequest::table(VERTICES)
                .columns(["label"])
                .filter(format!("id = {id}")),
        )
        .await?;
    Ok(first_str(&rows, "label").unwrap_or_else(|| "(gone)".into()))
}

async fn hubs(view: &BranchedBackend) -> Result<Vec<i64>> {
    let mut ids = i64s(
        &view
            .scan(
                ScanRequest::table(VERTICES)
                    .columns(["id"])
                    .filter("label = 'hub'"),
            )
            .await?,
        "id",
    );
    ids.sort_unstable();
    Ok(ids)
}

/// Run the demo in `dir`.
pub async fn run(dir: &Path, out: Out) -> Result<u8> {
    let started = Instant::now();
    let mut d = Demo {
        out,
        pb: out.bar(STEPS),
        steps: Vec::new(),
        facts: Map::new(),
    };
    let res = steps(&mut d, dir).await;
    if let Some(pb) = d.pb.take() {
        pb.finish_and_clear();
    }
    res?;
    let total = started.elapsed();
    if out.json {
        let steps: Vec<Value> = d
            .steps
            .iter()
            .map(|(n, t)| json!({ "step": n, "ms": ms(*t) }))
            .collect();
        out.doc(&json!({
            "store": dir,
            "steps": steps,
            "total_ms": ms(total),
            "facts": d.facts,
        }))?;
        return Ok(0);
    }
    outln!();
    if cfg!(debug_assertions) {
        outln!("summary (a debug build; `cargo run --release -- demo` is several times faster)");
    } else {
        outln!("summary (release build)");
    }
    for (name, t) in &d.steps {
        outln!("  {name:<22} {:>9.2} ms", ms(*t));
    }
    outln!("  {:<22} {:>9.2} ms", "total", ms(total));
    let s = dir.display();
    outln!();
    outln!("explore: lancebranch --store {s} branches   (or: tags, log, wal dump, fsck, recover)");
    outln!("         lancebranch --store {s} diff experiment --rows");
    outln!("         lancebranch --store {s} merge experiment   (refused: exit code 3)");
    outln!("         lancebranch --store {s} merge experiment --policy theirs");
    outln!(
        "         lancebranch --store {s} scan vertices --filter \"label = 'hub'\" --columns id,label"
    );
    outln!("         add --json to any command for one JSON document");
    Ok(0)
}

async fn steps(d: &mut Demo, dir: &Path) -> Result<()> {
    d.start("reset");
    let t = Instant::now();
    reset(dir)?;
    d.took("reset", t);
    let main = create_graph(d, dir).await?;
    query(d, &main).await?;
    let what_if = fork_and_edit(d, &main).await?;
    diff_and_merge(d, &main, &what_if).await?;
    crash_and_recover(d, dir, main, what_if).await
}

/// Create the two tables of the graph on a fresh store.
async fn create_graph(d: &mut Demo, dir: &Path) -> Result<BranchedBackend> {
    d.start("create the graph");
    let t = Instant::now();
    let main = open(dir).await?;
    main.create_table(VERTICES, vec![vertices(0..N_VERTICES)?])
        .await?;
    main.create_table(EDGES, vec![edges(0..N_EDGES, N_VERTICES)?])
        .await?;
    d.took("create the graph", t);
    d.say("store", dir.display());
    d.say(
        "graph",
        format!(
            "{VERTICES}: {N_VERTICES} rows (id, label, embedding[{}]), {EDGES}: {N_EDGES} rows (id, src, dst, kind, weight); primary key `id`",
            crate::demo_data::DIM
        ),
    );
    Ok(main)
}

/// Filters, a hop and a vector search on main; tag `baseline`.
async fn query(d: &mut Demo, main: &BranchedBackend) -> Result<()> {
    d.start("query");
    let t = Instant::now();
    let persons = count(main, VERTICES, Some("label = 'person'")).await?;
    let strong = count(main, EDGES, Some("kind = 'knows' AND weight >= 0.9")).await?;
    let hop = i64s(
        &main
            .scan(
                ScanRequest::table(EDGES)
                    .columns(["dst"])
                    .filter("src = 42 AND kind = 'knows'"),
            )
            .await?,
        "dst",
    );
    let near = main
        .vector_search(
            VERTICES,
            "embedding",
            &embedding(42),
            3,
            DistanceMetric::L2,
            FilterExpr::eq("label", "person"),
            VectorQueryOpts {
                columns: Some(vec!["id".into(), "label".into()]),
                ..Default::default()
            },
        )
        .await?;
    d.took("query", t);
    d.say(
        "filter",
        format!(
            "{persons} persons; {strong} 'knows' edges with weight >= 0.9; vertex 42 knows {hop:?}"
        ),
    );
    d.say("vector", "3 persons nearest to vertex 42's embedding:");
    d.block(&table_text(&near)?);
    let nearest = i64s(&near, "id");
    d.fact("persons", json!(persons));
    d.fact("nearest", json!(nearest));

    let t = Instant::now();
    main.tag("baseline").await?;
    d.took("tag", t);
    d.say("tag", "baseline = main as created");
    Ok(())
}

/// Fork `what-if`, then edit it (one transaction) and main.
async fn fork_and_edit(d: &mut Demo, main: &BranchedBackend) -> Result<BranchedBackend> {
    d.start("fork");
    let t = Instant::now();
    let what_if = main.fork("what-if").await?;
    let fork = d.took("fork", t);
    d.say(
        "fork",
        format!(
            "what-if in {:.2} ms (one catalog record, no data copied)",
            ms(fork)
        ),
    );
    d.fact("fork_ms", json!(ms(fork)));

    d.start("edit both branches");
    let t = Instant::now();
    // On what-if, one transaction: three vertices become hubs, five new
    // vertices linked to them, two edges reweighed, vertex 5 and its edges gone.
    let new_edges = [
        (600, 200, 1),
        (601, 201, 2),
        (602, 202, 4),
        (603, 203, 1),
        (604, 204, 2),
    ];
    what_if
        .transaction()
        .merge_insert(VERTICES, &["id"], vec![relabel(&[1, 2, 4], "hub")?])
        .write(VERTICES, vec![vertices(200..205)?], WriteMode::Append)
        .write(
            EDGES,
            vec![edges_between(&new_edges, 0.5)?],
            WriteMode::Append,
        )
        .merge_insert(EDGES, &["id"], vec![reweigh(&[10, 11], 0.99)?])
        .delete_rows(EDGES, "src = 5 OR dst = 5")
        .delete_rows(VERTICES, "id = 5")
        .commit()
        .await?;
    // On main meanwhile: vertex 1 becomes a landmark (a conflict with
    // what-if's "hub"), edge 20 is reweighed (no conflict).
    main.merge_insert(VERTICES, &["id"], vec![relabel(&[1], "landmark")?])
        .await?;
    main.merge_insert(EDGES, &["id"], vec![reweigh(&[20], 0.05)?])
        .await?;
    d.took("edit both branches", t);
    d.say(
        "edit",
        format!(
            "what-if: {} vertices, {} edges; main: {} vertices, {} edges; vertex 1 is {:?} on main, {:?} on what-if",
            count(&what_if, VERTICES, None).await?,
            count(&what_if, EDGES, None).await?,
            count(main, VERTICES, None).await?,
            count(main, EDGES, None).await?,
            label_of(main, 1).await?,
            label_of(&what_if, 1).await?,
        ),
    );
    Ok(what_if)
}

/// Diff, a merge the default policy refuses, and the merge with `theirs`.
async fn diff_and_merge(
    d: &mut Demo,
    main: &BranchedBackend,
    what_if: &BranchedBackend,
) -> Result<()> {
    d.start("diff");
    let t = Instant::now();
    let diffs = main.diff(what_if).await?;
    d.took("diff", t);
    let mut diff_facts = Map::new();
    for td in &diffs {
        let (i, u, x) = td.counts;
        d.say(
            "diff",
            format!("{}: {i} inserted, {u} updated, {x} deleted", td.table),
        );
        diff_facts.insert(
            td.table.clone(),
            json!({ "inserted": i, "updated": u, "deleted": x }),
        );
    }
    d.fact("diff", Value::Object(diff_facts));

    d.start("merge (default policy)");
    let t = Instant::now();
    let refused = main.merge(what_if, MergeOptions::default()).await?;
    d.took("merge, refused", t);
    d.say(
        "merge",
        format!(
            "default policy: {:?}, {} conflict(s), nothing applied",
            refused.outcome,
            refused.conflicts.len()
        ),
    );
    for c in &refused.conflicts {
        d.say("conflict", conflict_line(c));
    }
    d.fact(
        "refused",
        json!({
            "outcome": outcome_name(refused.outcome),
            "conflicts": refused.conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
        }),
    );

    d.start("merge (theirs)");
    let t = Instant::now();
    let opts = MergeOptions::default().policy(VERTICES, ConflictPolicy::Theirs);
    let merged = main.merge(what_if, opts).await?;
    let took = d.took("merge, theirs", t);
    d.say(
        "merge",
        format!(
            "policy theirs on {VERTICES}: {:?} in {:.1} ms",
            merged.outcome,
            ms(took)
        ),
    );
    for (table, s) in &merged.tables {
        d.say(
            "",
            format!(
                "{table}: {} inserted, {} updated, {} deleted",
                s.inserted, s.updated, s.deleted
            ),
        );
    }
    let hubs1 = hubs(main).await?;
    d.say(
        "main",
        format!(
            "{} vertices, {} edges; hubs: {hubs1:?}",
            count(main, VERTICES, None).await?,
            count(main, EDGES, None).await?
        ),
    );
    d.fact("merged", report_json("what-if", "main", &merged, ms(took)));
    d.fact("hubs_after_merge", json!(hubs1));
    Ok(())
}

/// Round two: more edits on what-if, a merge that crashes in a child
/// process, recovery, and the merge again.
async fn crash_and_recover(
    d: &mut Demo,
    dir: &Path,
    main: BranchedBackend,
    what_if: BranchedBackend,
) -> Result<()> {
    d.start("edit what-if again");
    let t = Instant::now();
    let more = [
        (700, 7, 1),
        (701, 7, 2),
        (702, 7, 4),
        (703, 8, 7),
        (704, 9, 7),
    ];
    what_if
        .transaction()
        .merge_insert(VERTICES, &["id"], vec![relabel(&[7], "hub")?])
        .write(EDGES, vec![edges_between(&more, 0.8)?], WriteMode::Append)
        .commit()
        .await?;
    d.took("edit what-if again", t);
    let edges_before = count(&main, EDGES, None).await?;
    let label7 = label_of(&main, 7).await?;
    d.say(
        "what-if",
        format!("vertex 7 becomes a hub with 5 new edges; main has {edges_before} edges"),
    );
    // The child must be the only one with the store open.
    drop(what_if);
    drop(main);
    crash_child(d, dir).await?;
    let main = recover(d, dir, edges_before, label7).await?;
    fsck_step(d, &main).await?;
    merge_again(d, &main).await?;
    leave_experiment(d, &main).await
}

/// Run the merge in a child process that dies at the fail point; show what
/// it left pending.
async fn crash_child(d: &mut Demo, dir: &Path) -> Result<()> {
    d.start("crash mid-merge");
    let t = Instant::now();
    let exe = std::env::current_exe().context("finding this program to run the crash child")?;
    let dir_arg = dir.to_path_buf();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .arg("__crash-merge")
            .arg("--dir")
            .arg(&dir_arg)
            .args(["--source", "what-if", "--into", "main"])
            .env_remove("LANCEBRANCH_STORE")
            .output()
    })
    .await?
    .context("running the crash child")?;
    d.took("crash mid-merge", t);
    if child.status.code() != Some(CRASH_EXIT) {
        anyhow::bail!(
            "the crash child did not crash as planned ({}): {}{}",
            child.status,
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
    }
    d.say(
        "crash",
        format!(
            "child process: merge what-if into main, killed at {FAIL_POINT} (exit {CRASH_EXIT}, no cleanup)"
        ),
    );
    let pending = crate::commands::pending_offline(dir)?;
    for (_, r) in &pending {
        d.say("pending", describe(r).1);
    }
    d.fact(
        "pending_after_crash",
        json!(
            pending
                .iter()
                .map(|(op, r)| json!({ "op": op, "summary": describe(r).1 }))
                .collect::<Vec<_>>()
        ),
    );
    Ok(())
}

/// Reopen (recovery runs) and check that the crashed merge left no trace:
/// `edges_before` edges and vertex 7 labelled `label7`, as before it.
async fn recover(
    d: &mut Demo,
    dir: &Path,
    edges_before: usize,
    label7: String,
) -> Result<BranchedBackend> {
    d.start("reopen (recovery)");
    let t = Instant::now();
    let main = open(dir).await?;
    let took = d.took("reopen (recovery)", t);
    d.say("recover", format!("store reopened in {:.1} ms", ms(took)));
    for o in &main.last_recovery().operations {
        d.say("recovery", o);
    }
    d.fact(
        "recovery",
        json!(main
            .last_recovery()
            .operations
            .iter()
            .map(|o| json!({ "op": o.op, "kind": o.kind, "action": o.action, "detail": o.detail }))
            .collect::<Vec<_>>()),
    );
    let edges_now = count(&main, EDGES, None).await?;
    let label7_now = label_of(&main, 7).await?;
    if edges_now != edges_before || label7_now != label7 {
        anyhow::bail!(
            "recovery left part of the crashed merge visible: {edges_now} edges (was {edges_before}), vertex 7 {label7_now:?} (was {label7:?})"
        );
    }
    d.say(
        "absent",
        format!("the crashed merge left no trace: main still has {edges_now} edges, vertex 7 is still {label7_now:?}"),
    );
    d.fact("merge_absent_after_crash", json!(true));
    Ok(main)
}

/// The merge again, after recovery, with `theirs` everywhere.
async fn merge_again(d: &mut Demo, main: &BranchedBackend) -> Result<()> {
    d.start("merge again");
    let t = Instant::now();
    let what_if = main.branch("what-if")?;
    let opts = MergeOptions::default().default_policy(ConflictPolicy::Theirs);
    let again = main.merge(&what_if, opts).await?;
    let took = d.took("merge again", t);
    if again.outcome == MergeOutcome::Conflicted {
        anyhow::bail!("the final merge was refused");
    }
    let hubs2 = hubs(main).await?;
    let edges_after = count(main, EDGES, None).await?;
    d.say(
        "merge",
        format!(
            "again: {:?} in {:.1} ms; main has {edges_after} edges, hubs: {hubs2:?}",
            again.outcome,
            ms(took)
        ),
    );
    d.fact(
        "final_merge",
        report_json("what-if", "main", &again, ms(took)),
    );
    d.fact("final_edges", json!(edges_after));
    d.fact("final_hubs", json!(hubs2));
    Ok(())
}

/// Leave a branch to explore with the other commands: `experiment`, which
/// conflicts with main on vertex 3, and deletes edge 30.
async fn leave_experiment(d: &mut Demo, main: &BranchedBackend) -> Result<()> {
    d.start("leave a branch to explore");
    let t = Instant::now();
    let exp = main.fork("experiment").await?;
    exp.transaction()
        .merge_insert(VERTICES, &["id"], vec![relabel(&[3], "hub")?])
        .delete_rows(EDGES, "id = 30")
        .commit()
        .await?;
    main.merge_insert(VERTICES, &["id"], vec![relabel(&[3], "vip")?])
        .await?;
    d.took("leave a branch", t);
    d.say(
        "left",
        "branch experiment: vertex 3 is \"hub\" there and \"vip\" on main (a conflict), edge 30 deleted",
    );
    Ok(())
}

/// fsck after recovery: clean (recovery restores the versions a cut merge
/// committed). Leftovers that are invisible to every view and repairable
/// (say, of a write that crashed before publishing) are shown and
/// repaired; anything else is an error.
async fn fsck_step(d: &mut Demo, main: &BranchedBackend) -> Result<()> {
    d.start("fsck");
    let t = Instant::now();
    let check = main.fsck(false).await?;
    let mut leftovers = Vec::new();
    for p in &check.problems {
        if !p.is_repairable() {
            anyhow::bail!("fsck after recovery found a problem: {p}");
        }
        d.say("fsck", format!("found {p} (invisible; repairable)"));
        leftovers.push(p.to_string());
    }
    let mut repaired = Vec::new();
    if !check.is_clean() {
        let fixed = main.fsck(true).await?;
        repaired = fixed.repaired.iter().map(|p| p.to_string()).collect();
        d.say(
            "fsck",
            format!("--repair: {} problem(s) repaired", repaired.len()),
        );
    }
    let last = if check.is_clean() {
        check
    } else {
        main.fsck(false).await?
    };
    let took = d.took("fsck", t);
    if !last.is_clean() {
        let problems: Vec<String> = last.problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("fsck after repair still finds problems: {problems:?}");
    }
    let c = &last.checked;
    d.say(
        "fsck",
        format!(
            "clean: {} branches, {} tags, {} datasets, {} Lance branches, {} pinned versions checked",
            c.branches, c.tags, c.datasets, c.lines, c.versions
        ),
    );
    d.fact(
        "fsck",
        json!({ "found": leftovers, "repaired": repaired, "clean": true, "ms": ms(took) }),
    );
    Ok(())
}
