//! Output helpers: JSON documents, Arrow rows as JSON, progress spinners,
//! and one-line descriptions of catalog records.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use lancebranch::branched::{Record, TableRef};
use serde_json::{Value, json};

/// How the command prints: human-readable lines or one JSON document.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Print one JSON document on stdout instead of lines.
    pub json: bool,
}

impl Out {
    /// Print `doc` (pretty) as the command's one JSON document.
    pub fn doc(&self, doc: &Value) -> Result<()> {
        outln!(
            "{}",
            serde_json::to_string_pretty(doc).context("rendering JSON")?
        );
        Ok(())
    }

    /// A spinner on stderr with `msg`, when stderr is a terminal and the
    /// output is not JSON; `None` otherwise.
    pub fn spinner(&self, msg: &str) -> Option<ProgressBar> {
        if self.json || !std::io::stderr().is_terminal() {
            return None;
        }
        let pb = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            pb.set_style(style);
        }
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        Some(pb)
    }

    /// A bar of `len` steps on stderr (same conditions as
    /// [`Out::spinner`]).
    pub fn bar(&self, len: u64) -> Option<ProgressBar> {
        if self.json || !std::io::stderr().is_terminal() {
            return None;
        }
        let pb = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}") {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.enable_steady_tick(Duration::from_millis(100));
        Some(pb)
    }
}

/// Clear a spinner or bar, if there is one.
pub fn done(pb: Option<ProgressBar>) {
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
}

/// Milliseconds, with microsecond precision, for JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Rows of Arrow batches as JSON objects (nulls explicit).
pub fn rows_json(batches: &[RecordBatch]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        let mut w = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::JsonArray>(Vec::new());
        w.write(b).context("rendering rows as JSON")?;
        w.finish().context("rendering rows as JSON")?;
        let rows: Vec<Value> =
            serde_json::from_slice(&w.into_inner()).context("re-reading rendered rows")?;
        out.extend(rows);
    }
    Ok(out)
}

/// Batches as a pretty table (or "(no rows)").
pub fn table_text(batches: &[RecordBatch]) -> Result<String> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok("(no rows)".to_string());
    }
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

/// `table@version` on the main line, `table@line:version` on a branch line.
fn table_ref(table: &str, r: &TableRef) -> String {
    match &r.line {
        None => format!("{table}@{}", r.version),
        Some(l) => format!("{table}@{l}:{}", r.version),
    }
}

/// A record's type name (its serde variant name) and a one-line summary.
pub fn describe(rec: &Record) -> (&'static str, String) {
    match rec {
        Record::Fork { name, parent, id } => {
            ("Fork", format!("fork {name} (id {id}) from {parent}"))
        }
        Record::ForkAt { name, tag, id } => {
            ("ForkAt", format!("fork {name} (id {id}) at tag {tag}"))
        }
        Record::Publish { branch, tables } => {
            let parts: Vec<String> = tables
                .iter()
                .map(|(t, r)| match r {
                    Some(r) => table_ref(t, r),
                    None => format!("{t} dropped"),
                })
                .collect();
            (
                "Publish",
                format!("publish on {branch}: {}", parts.join(", ")),
            )
        }
        Record::BeginLine {
            op,
            table,
            line,
            from,
        } => (
            "BeginLine",
            format!(
                "op {op}: begin Lance branch {line} of {table} from {}",
                table_ref(table, from)
            ),
        ),
        Record::EndLine { op } => ("EndLine", format!("op {op}: Lance branch created")),
        Record::BeginDelete {
            op,
            branches,
            lines,
        } => (
            "BeginDelete",
            format!(
                "op {op}: delete branch(es) {} ({} Lance branches)",
                branches.join(", "),
                lines.len()
            ),
        ),
        Record::EndDelete { op } => ("EndDelete", format!("op {op}: deletion finished")),
        Record::Tag { name, branch } => ("Tag", format!("tag {name} on {branch}")),
        Record::DeleteTag { name } => ("DeleteTag", format!("delete tag {name}")),
        Record::Abort { op } => ("Abort", format!("op {op}: undone")),
        Record::BeginMerge { op, target, source } => (
            "BeginMerge",
            format!("op {op}: begin merge of {source} into {target}"),
        ),
        Record::MergeBase {
            target,
            source,
            target_tables,
            ..
        } => (
            "MergeBase",
            format!(
                "merge base of {source} into {target} ({} tables)",
                target_tables.len()
            ),
        ),
        Record::EndMerge { op } => ("EndMerge", format!("op {op}: merge published")),
        Record::BeginCreate { op, table } => (
            "BeginCreate",
            format!("op {op}: begin creating the dataset of {table}"),
        ),
        Record::EndCreate { op } => ("EndCreate", format!("op {op}: dataset created")),
        Record::BeginCollect { op, lines, tables } => (
            "BeginCollect",
            format!(
                "op {op}: collect {} unreachable Lance branches, {} datasets",
                lines.len(),
                tables.len()
            ),
        ),
        Record::EndCollect { op } => ("EndCollect", format!("op {op}: collection finished")),
        Record::Writer { owner } => (
            "Writer",
            format!("{owner} took the store over (earlier writers are fenced)"),
        ),
        // A record type newer than this CLI knows how to summarize.
        other => ("Record", format!("{other:?}")),
    }
}

/// A record as JSON: `{"lsn", "type", "summary", "record"}` where `record`
/// holds the variant's fields.
pub fn record_json(lsn: u64, rec: &Record) -> Value {
    let (kind, summary) = describe(rec);
    let fields = match serde_json::to_value(rec) {
        Ok(Value::Object(mut m)) => m.remove(kind).unwrap_or(Value::Null),
        Ok(other) => other,
        Err(e) => json!({ "unrenderable": e.to_string() }),
    };
    json!({ "lsn": lsn, "type": kind, "summary": summary, "record": fields })
}

/// Rows of cells as aligned columns (the first row is the header).
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

/// Stdout failed: a closed pipe (`| head`) ends the program quietly with
/// success; anything else with exit code 1.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1);
}
