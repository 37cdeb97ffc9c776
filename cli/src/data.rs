//! Data commands: diff, merge and scan.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use lancebranch::branched::{
    BranchedBackend, Conflict, ConflictKind, ConflictPolicy, MergeOptions, MergeOutcome,
    MergeReport, TableChange,
};
use lancebranch::{ScanRequest, StorageBackend};
use serde_json::{Value, json};

use crate::EXIT_CONFLICTS;
use crate::commands::open;
use crate::output::{Out, done, ms, rows_json, table_text};

/// `--policy [TABLE=]POLICY`, parsed.
#[derive(Debug, Clone)]
pub struct PolicyArg {
    /// The table, or `None` for every table.
    pub table: Option<String>,
    /// The policy.
    pub policy: ConflictPolicy,
}

/// Parse `fail|ours|theirs` or `TABLE=fail|ours|theirs` (a clap value parser).
pub fn parse_policy(s: &str) -> Result<PolicyArg, String> {
    let (table, p) = match s.split_once('=') {
        Some((t, p)) if !t.is_empty() => (Some(t.to_string()), p),
        Some(_) => return Err("the table before '=' is empty".into()),
        None => (None, s),
    };
    let policy = match p.to_ascii_lowercase().as_str() {
        "fail" => ConflictPolicy::Fail,
        "ours" => ConflictPolicy::Ours,
        "theirs" => ConflictPolicy::Theirs,
        other => {
            return Err(format!(
                "unknown policy {other:?}: use fail, ours or theirs"
            ));
        }
    };
    Ok(PolicyArg { table, policy })
}

/// `--key [TABLE=]COL[,COL..]`, parsed.
#[derive(Debug, Clone)]
pub struct KeyArg {
    /// The table, or `None` for every table.
    pub table: Option<String>,
    /// The key columns.
    pub columns: Vec<String>,
}

/// Parse `COL[,COL..]` or `TABLE=COL[,COL..]` (a clap value parser).
pub fn parse_key(s: &str) -> Result<KeyArg, String> {
    let (table, cols) = match s.split_once('=') {
        Some((t, c)) if !t.is_empty() => (Some(t.to_string()), c),
        Some(_) => return Err("the table before '=' is empty".into()),
        None => (None, s),
    };
    let columns: Vec<String> = cols
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if columns.is_empty() {
        return Err("no key column given".into());
    }
    Ok(KeyArg { table, columns })
}

/// Merge options from `--key` and `--policy`; a key without a table applies
/// to every table either branch has.
fn options(main: &BranchedBackend, branches: &[&str], keys: &[KeyArg]) -> MergeOptions {
    let mut opts = MergeOptions::default();
    let all: BTreeSet<String> = main
        .list_branches()
        .into_iter()
        .filter(|b| branches.contains(&b.name.as_str()))
        .flat_map(|b| b.tables)
        .collect();
    for k in keys {
        let cols: Vec<&str> = k.columns.iter().map(String::as_str).collect();
        match &k.table {
            Some(t) => opts = opts.key(t, &cols),
            None => {
                for t in &all {
                    opts = opts.key(t, &cols);
                }
            }
        }
    }
    opts
}

fn change_name(c: TableChange) -> &'static str {
    match c {
        TableChange::Created => "created",
        TableChange::Dropped => "dropped",
        TableChange::Modified => "modified",
    }
}

/// `diff A [B] [--rows]`: what merging A into B would bring.
pub async fn diff(
    store: &Path,
    out: Out,
    a: &str,
    b: &str,
    with_rows: bool,
    keys: &[KeyArg],
) -> Result<u8> {
    let main = crate::commands::open_reading(store).await?;
    let (source, target) = (main.branch(a)?, main.branch(b)?);
    let opts = options(&main, &[a, b], keys);
    let pb = out.spinner(&format!("diffing {a} against {b}"));
    let t = Instant::now();
    let res = target.diff_with(&source, &opts).await;
    done(pb);
    let diffs = res?;
    let elapsed = t.elapsed();
    if out.json {
        let mut tables = Vec::new();
        for d in &diffs {
            let (i, u, x) = d.counts;
            let mut v = json!({
                "table": d.table,
                "change": change_name(d.change),
                "inserted": i,
                "updated": u,
                "deleted": x,
            });
            if with_rows {
                v["rows"] = Value::Array(rows_json(&d.rows)?);
            }
            tables.push(v);
        }
        out.doc(&json!({
            "source": a,
            "target": b,
            "tables": tables,
            "elapsed_ms": ms(elapsed),
        }))?;
        return Ok(0);
    }
    if diffs.is_empty() {
        outln!("{a} has no changes to bring into {b}");
    }
    for d in &diffs {
        let (i, u, x) = d.counts;
        outln!(
            "{:<10} {}: {i} inserted, {u} updated, {x} deleted",
            d.table,
            change_name(d.change)
        );
        if with_rows {
            outln!("{}", table_text(&d.rows)?);
        }
    }
    Ok(0)
}

/// The stable snake_case name of a merge outcome.
pub fn outcome_name(o: MergeOutcome) -> &'static str {
    match o {
        MergeOutcome::AlreadyUpToDate => "already_up_to_date",
        MergeOutcome::FastForward => "fast_forward",
        MergeOutcome::Merged => "merged",
        MergeOutcome::Conflicted => "conflicted",
    }
}

/// The stable snake_case name of a conflict kind.
pub fn kind_name(k: ConflictKind) -> &'static str {
    match k {
        ConflictKind::DivergentInsert => "divergent_insert",
        ConflictKind::DivergentUpdate => "divergent_update",
        ConflictKind::UpdateDelete => "update_delete",
        ConflictKind::DeleteUpdate => "delete_update",
        ConflictKind::Schema => "schema",
    }
}

/// A conflict as JSON.
pub fn conflict_json(c: &Conflict) -> Value {
    json!({
        "table": c.table,
        "key": c.key,
        "kind": kind_name(c.kind),
        "column": c.column,
        "base": c.base,
        "ours": c.ours,
        "theirs": c.theirs,
    })
}

/// A conflict on one line.
pub fn conflict_line(c: &Conflict) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let col = c
        .column
        .as_ref()
        .map(|c| format!(" on {c}"))
        .unwrap_or_default();
    format!(
        "{} [{}] {}{col}: ours {}, theirs {} (base {})",
        c.table,
        c.key,
        kind_name(c.kind),
        show(&c.ours),
        show(&c.theirs),
        show(&c.base)
    )
}

/// A merge report as JSON.
pub fn report_json(source: &str, target: &str, r: &MergeReport, elapsed_ms: f64) -> Value {
    let tables: serde_json::Map<String, Value> = r
        .tables
        .iter()
        .map(|(t, s)| {
            (
                t.clone(),
                json!({
                    "inserted": s.inserted,
                    "updated": s.updated,
                    "deleted": s.deleted,
                    "conflicts": s.conflicts,
                    "version": s.version,
                    "full_compare": s.full_compare,
                }),
            )
        })
        .collect();
    json!({
        "source": source,
        "target": target,
        "outcome": outcome_name(r.outcome),
        "applied": !r.is_conflicted() && r.outcome != MergeOutcome::AlreadyUpToDate,
        "tables": tables,
        "conflicts": r.conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
        "elapsed_ms": elapsed_ms,
    })
}

/// `merge SOURCE [--into T] [--policy ..] [--key ..]`. Exit 3 when
/// conflicts refused the merge.
pub async fn merge(
    store: &Path,
    out: Out,
    source: &str,
    into: &str,
    policies: &[PolicyArg],
    keys: &[KeyArg],
) -> Result<u8> {
    let main = open(store).await?;
    let (src, target) = (main.branch(source)?, main.branch(into)?);
    let mut opts = options(&main, &[source, into], keys);
    for p in policies {
        opts = match &p.table {
            Some(t) => opts.policy(t, p.policy),
            None => opts.default_policy(p.policy),
        };
    }
    let pb = out.spinner(&format!("merging {source} into {into}"));
    let t = Instant::now();
    let res = target.merge(&src, opts).await;
    done(pb);
    let report = res?;
    let elapsed = ms(t.elapsed());
    let code = if report.is_conflicted() {
        EXIT_CONFLICTS
    } else {
        0
    };
    if out.json {
        out.doc(&report_json(source, into, &report, elapsed))?;
        return Ok(code);
    }
    let note = match report.outcome {
        MergeOutcome::Conflicted => " (nothing applied)",
        MergeOutcome::AlreadyUpToDate => " (nothing to bring)",
        _ => "",
    };
    outln!(
        "merge {source} into {into}: {}{note} in {elapsed:.1} ms",
        outcome_name(report.outcome)
    );
    for (t, s) in &report.tables {
        outln!(
            "  {t}: {} inserted, {} updated, {} deleted, {} conflict(s){}",
            s.inserted,
            s.updated,
            s.deleted,
            s.conflicts,
            s.version
                .map(|v| format!(", now version {v}"))
                .unwrap_or_default()
        );
    }
    let label = if report.is_conflicted() {
        "conflict"
    } else {
        "resolved"
    };
    for c in &report.conflicts {
        outln!("  {label} {}", conflict_line(c));
    }
    if report.is_conflicted() {
        eprintln!(
            "hint: re-run with --policy theirs or --policy ours (or TABLE=POLICY) to resolve the conflicts"
        );
    }
    Ok(code)
}

/// `scan TABLE [--branch B] [--filter SQL] [--limit N] [--columns a,b]`
pub async fn scan(
    store: &Path,
    out: Out,
    table: &str,
    branch: &str,
    filter: Option<String>,
    limit: Option<usize>,
    columns: Option<Vec<String>>,
) -> Result<u8> {
    let main = crate::commands::open_reading(store).await?;
    let view = main.branch(branch)?;
    let req = ScanRequest {
        table: table.to_string(),
        columns,
        filter,
        limit,
        ..Default::default()
    };
    let pb = out.spinner(&format!("scanning {table} on {branch}"));
    let res = view.scan(req).await;
    done(pb);
    let batches = res?;
    let count: usize = batches.iter().map(|b| b.num_rows()).sum();
    if out.json {
        out.doc(&json!({
            "table": table,
            "branch": branch,
            "count": count,
            "rows": rows_json(&batches)?,
        }))?;
        return Ok(0);
    }
    outln!("{}", table_text(&batches)?);
    outln!("{count} row(s)");
    Ok(0)
}
