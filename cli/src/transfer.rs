//! Moving rows in and out: `import` (a file into a table, streamed, one
//! publish) and `export` (a table out to a file or stdout, streamed).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lancebranch::branched::{BranchedBackend, PRIMARY_KEY_METADATA, StreamMode, StreamStats};
use lancebranch::{Error, ScanRequest, StorageBackend};
use serde_json::json;

use crate::commands::open;
use crate::formats::{self, Format, Sink};
use crate::output::{Out, done, ms};

/// How `import` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportMode {
    /// Create the table; fail if the branch has it.
    Create,
    /// Append the rows (create the table when missing).
    Append,
    /// Replace the table's rows (create it when missing).
    Overwrite,
    /// Update rows whose key matches, insert the others (create the table
    /// when missing).
    Upsert,
}

/// `import`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Import {
    /// The table.
    pub table: String,
    /// The file (its extension names the format: .csv, .json/.jsonl,
    /// .parquet).
    pub file: PathBuf,
    /// The branch written to.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The format, if the extension does not say.
    #[arg(long, value_parser = crate::formats::Format::parse)]
    pub format: Option<crate::formats::Format>,
    /// create: a new table; append / overwrite / upsert (update rows
    /// whose key matches, insert the others): create it when missing.
    #[arg(long, value_enum, default_value = "append")]
    pub mode: ImportMode,
    /// Key columns, comma-separated: the primary key of a table the
    /// import creates, and what upsert matches on (default: the
    /// table's primary key).
    #[arg(long, value_delimiter = ',')]
    pub key: Option<Vec<String>>,
}

/// The format of `path`: `given`, else its extension's.
fn format_of(path: &Path, given: Option<Format>) -> Result<Format> {
    given.or_else(|| Format::of_path(path)).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "cannot tell the format of {} from its extension: pass --format csv|json|parquet",
            path.display()
        ))
        .into()
    })
}

/// What the import reads and writes: the schema to parse the file with,
/// the schema of the rows written, and the key.
struct Plan {
    read: SchemaRef,
    write: SchemaRef,
    mode: StreamMode,
}

/// Work out the schemas and the mode from the file and the table (if the
/// branch has it), checking the key.
async fn plan(view: &BranchedBackend, args: &Import, format: Format) -> Result<Plan> {
    let file = formats::infer_schema(&args.file, format)?;
    let table = &args.table;
    let existing = if view.table_exists(table).await? {
        view.get_table_schema(table).await?
    } else {
        None
    };
    if existing.is_some() && args.mode == ImportMode::Create {
        return Err(Error::TableExists(table.clone()).into());
    }
    let (read, mut write) = match &existing {
        Some(t) => {
            let mut read = formats::read_schema_for(&file, t, table)?;
            if format == Format::Json && args.mode != ImportMode::Upsert {
                // JSON is read by name: every column of the table, so one
                // that first appears past the inferred head is taken too.
                let all = t
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true));
                read = Schema::new(all.collect::<Vec<_>>());
            }
            let write = if args.mode == ImportMode::Upsert {
                // Only the file's columns are updated.
                let fields: Vec<_> = t
                    .fields()
                    .iter()
                    .filter(|f| read.field_with_name(f.name()).is_ok())
                    .cloned()
                    .collect();
                Schema::new_with_metadata(fields, t.metadata().clone())
            } else {
                t.as_ref().clone()
            };
            // CSV parses in file order; JSON and Parquet by name.
            (read, write)
        }
        None => (file.clone(), file),
    };
    let table_key = write.metadata().get(PRIMARY_KEY_METADATA).map(|k| {
        k.split(',')
            .map(|c| c.trim().to_string())
            .collect::<Vec<_>>()
    });
    let key = args.key.clone().or(table_key);
    if let Some(key) = &key {
        for c in key {
            if write.field_with_name(c).is_err() {
                return Err(Error::InvalidColumn {
                    table: table.clone(),
                    column: c.clone(),
                    detail: "the key is not a column of the rows imported".into(),
                }
                .into());
            }
        }
        if existing.is_none() {
            let mut md = write.metadata().clone();
            md.insert(PRIMARY_KEY_METADATA.to_string(), key.join(","));
            write = write.with_metadata(md);
        }
    }
    let mode = match args.mode {
        ImportMode::Create => StreamMode::Create,
        ImportMode::Append => StreamMode::Append,
        ImportMode::Overwrite => StreamMode::Overwrite,
        ImportMode::Upsert => StreamMode::Upsert {
            on: key.ok_or_else(|| Error::MissingMergeKey(table.clone()))?,
        },
    };
    Ok(Plan {
        read: Arc::new(read),
        write: Arc::new(write),
        mode,
    })
}

/// A progress bar over the file's bytes (or a spinner), with rows and
/// rows/s, on a terminal only.
fn progress(out: Out, path: &Path, format: Format) -> Option<ProgressBar> {
    if out.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let pb = if format == Format::Parquet || len == 0 {
        let pb = ProgressBar::new_spinner();
        if let Ok(s) = ProgressStyle::with_template("{spinner} importing {msg} {elapsed}") {
            pb.set_style(s);
        }
        pb
    } else {
        let pb = ProgressBar::new(len);
        let t = "[{bar:30}] {bytes}/{total_bytes} {msg} (eta {eta})";
        if let Ok(s) = ProgressStyle::with_template(t) {
            pb.set_style(s.progress_chars("=> "));
        }
        pb
    };
    pb.enable_steady_tick(Duration::from_millis(100));
    Some(pb)
}

/// `import TABLE FILE [--branch B] [--format F] [--mode M] [--key COLS]`
pub async fn import(store: &Path, out: Out, args: Import) -> Result<u8> {
    let format = format_of(&args.file, args.format)?;
    if !args.file.is_file() {
        anyhow::bail!(formats::BadInput {
            file: args.file.display().to_string(),
            line: None,
            detail: "no such file".into(),
        });
    }
    let main = open(store).await?;
    let view = main.branch(&args.branch)?;
    let plan = plan(&view, &args, format).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    let batches = formats::read_batches(&args.file, format, plan.read.clone(), bytes.clone())?;
    let pb = progress(out, &args.file, format);
    let t = Instant::now();
    let stream = file_stream(batches, plan.write.clone(), args.table.clone());
    let seen = Arc::new(AtomicU64::new(0));
    let stream = {
        let (pb, seen, bytes) = (pb.clone(), seen.clone(), bytes.clone());
        stream.inspect(move |b| {
            if let Ok(b) = b {
                let n =
                    seen.fetch_add(b.num_rows() as u64, Ordering::Relaxed) + b.num_rows() as u64;
                if let Some(pb) = &pb {
                    let rate = n as f64 / t.elapsed().as_secs_f64().max(1e-3);
                    pb.set_position(bytes.load(Ordering::Relaxed));
                    pb.set_message(format!("{n} rows, {rate:.0} rows/s"));
                }
            }
        })
    };
    let res = view
        .write_stream(&args.table, plan.write.clone(), stream, plan.mode.clone())
        .await;
    done(pb);
    let stats = res?;
    report_import(out, &args, format, &stats, t.elapsed())
}

/// The file's batches as a stream of rows of `write`, read on a blocking
/// thread at most two batches ahead (bounded memory).
fn file_stream(
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    write: SchemaRef,
    table: String,
) -> futures::stream::BoxStream<'static, Result<RecordBatch>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    tokio::task::spawn_blocking(move || {
        for b in batches {
            let b = b.and_then(|b| formats::conform(&b, &write, &table));
            let stop = b.is_err();
            if tx.blocking_send(b).is_err() || stop {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).boxed()
}

fn report_import(
    out: Out,
    args: &Import,
    format: Format,
    s: &StreamStats,
    elapsed: Duration,
) -> Result<u8> {
    let rate = s.rows as f64 / elapsed.as_secs_f64().max(1e-6);
    if out.json {
        out.doc(&json!({
            "table": args.table,
            "branch": args.branch,
            "file": args.file,
            "format": format.name(),
            "rows_read": s.rows,
            "inserted": s.inserted,
            "updated": s.updated,
            "created": s.created,
            "version": s.version,
            "elapsed_ms": ms(elapsed),
            "rows_per_s": rate.round(),
        }))?;
        return Ok(0);
    }
    let created = if s.created { " (table created)" } else { "" };
    outln!(
        "imported {} rows into {} on {}{created}: {} inserted, {} updated, in {:.1} ms ({rate:.0} rows/s)",
        s.rows,
        args.table,
        args.branch,
        s.inserted,
        s.updated,
        ms(elapsed)
    );
    Ok(0)
}

/// `export`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Export {
    /// The table.
    pub table: String,
    /// The branch read.
    #[arg(long, default_value = "main", conflicts_with = "at")]
    pub branch: String,
    /// Read what this tag pins instead.
    #[arg(long)]
    pub at: Option<String>,
    /// A SQL filter (a WHERE clause without the keyword).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only these columns, in this order.
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// The format (default: the output's extension; csv on stdout).
    #[arg(long, value_parser = crate::formats::Format::parse)]
    pub format: Option<crate::formats::Format>,
    /// The output file, or `-` for stdout (then a summary, if any,
    /// goes to stderr).
    #[arg(short = 'o', long = "output", default_value = "-")]
    pub output: PathBuf,
    /// Sort the rows by these columns (holds the rows in memory).
    #[arg(long, value_delimiter = ',')]
    pub order_by: Option<Vec<String>>,
}

/// `export TABLE [--branch B | --at TAG] [--filter SQL] [--columns ..]
/// [--format F] [-o FILE|-] [--order-by COLS]`
pub async fn export(store: &Path, out: Out, args: Export) -> Result<u8> {
    let to_stdout = args.output.as_os_str() == "-";
    let format = match args.format {
        Some(f) => f,
        None if to_stdout => Format::Csv,
        None => format_of(&args.output, None)?,
    };
    let main = crate::commands::open_reading(store).await?;
    let view = match &args.at {
        Some(tag) => main.at_tag(tag)?,
        None => main.branch(&args.branch)?,
    };
    let req = ScanRequest {
        table: args.table.clone(),
        columns: args.columns.clone(),
        filter: args.filter.clone(),
        ..Default::default()
    };
    let t = Instant::now();
    let schema = export_schema(&view, &args).await?;
    let mut stream = view.scan_stream(req).await?;
    // A file is written beside its name and renamed at the end: a failed
    // export leaves an earlier file of that name as it was.
    let partial = args
        .output
        .with_extension(format!("{}.partial", format.name()));
    let sink_out: Box<dyn Write + Send> = if to_stdout {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let written = write_rows(format, sink_out, &schema, &mut stream, &args).await;
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(e);
        }
    };
    if !to_stdout {
        std::fs::rename(&partial, &args.output).with_context(|| {
            format!(
                "renaming {} to {}",
                partial.display(),
                args.output.display()
            )
        })?;
    }
    let elapsed = t.elapsed();
    let summary = json!({
        "table": args.table,
        "branch": args.at.as_ref().map_or(args.branch.clone(), |t| format!("tag {t}")),
        "output": args.output,
        "format": format.name(),
        "rows": rows,
        "elapsed_ms": ms(elapsed),
    });
    // With `-o -` the rows are the output: the summary goes to stderr.
    match (to_stdout, out.json) {
        (true, true) => eprintln!("{summary}"),
        (true, false) => {}
        (false, true) => out.doc(&summary)?,
        (false, false) => outln!(
            "exported {rows} rows of {} to {} ({}) in {:.1} ms",
            args.table,
            args.output.display(),
            format.name(),
            ms(elapsed)
        ),
    }
    Ok(0)
}

/// The schema of the rows exported: the table's, or its `--columns` in
/// that order; `--columns` and `--order-by` must name its columns.
async fn export_schema(view: &BranchedBackend, args: &Export) -> Result<SchemaRef> {
    let full = view
        .get_table_schema(&args.table)
        .await?
        .ok_or_else(|| Error::TableNotFound(args.table.clone()))?;
    let unknown = |c: &str, what: &str| Error::InvalidColumn {
        table: args.table.clone(),
        column: c.to_string(),
        detail: format!("{what} names no column of the table"),
    };
    let schema = match &args.columns {
        Some(cols) => {
            let mut idx = Vec::new();
            for c in cols {
                idx.push(full.index_of(c).map_err(|_| unknown(c, "--columns"))?);
            }
            Arc::new(full.project(&idx)?)
        }
        None => full,
    };
    for c in args.order_by.iter().flatten() {
        schema.index_of(c).map_err(|_| unknown(c, "--order-by"))?;
    }
    Ok(schema)
}

/// Write the scanned rows (sorted if asked) to `out`; the row count.
async fn write_rows(
    format: Format,
    out: Box<dyn Write + Send>,
    schema: &SchemaRef,
    stream: &mut lancebranch::RecordBatchStream,
    args: &Export,
) -> Result<u64> {
    let mut sink = Sink::new(format, out, schema)?;
    let mut rows = 0u64;
    // The table's schema (its metadata too) on every batch.
    let conform = |b: RecordBatch| RecordBatch::try_new(schema.clone(), b.columns().to_vec());
    if let Some(order) = &args.order_by {
        let mut all = Vec::new();
        while let Some(b) = stream.next().await {
            all.push(conform(b?)?);
        }
        let sorted = sort_batches(schema, &all, order, &args.table)?;
        rows = sorted.num_rows() as u64;
        sink.write(&sorted)?;
    } else {
        sink.write(&RecordBatch::new_empty(schema.clone()))?;
        while let Some(b) = stream.next().await {
            let b = conform(b?)?;
            rows += b.num_rows() as u64;
            sink.write(&b)?;
        }
    }
    sink.finish()?;
    Ok(rows)
}

/// All of `batches` in one batch sorted by the `order` columns.
fn sort_batches(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    order: &[String],
    table: &str,
) -> Result<RecordBatch> {
    let all = arrow_select::concat::concat_batches(schema, batches)?;
    let mut keys = Vec::new();
    for c in order {
        let i = schema.index_of(c).map_err(|_| Error::InvalidColumn {
            table: table.to_string(),
            column: c.clone(),
            detail: "--order-by names no column of the export".into(),
        })?;
        keys.push(arrow::compute::SortColumn {
            values: all.column(i).clone(),
            options: None,
        });
    }
    let idx = arrow::compute::lexsort_to_indices(&keys, None)?;
    Ok(arrow_select::take::take_record_batch(&all, &idx)?)
}
