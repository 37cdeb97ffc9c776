//! File formats of `import` and `export`: CSV (with a header line), JSON
//! lines (one object a line) and, with the `parquet` feature, Parquet.
//! Readers infer a schema from the head of a file, read it in batches
//! (never whole), and name the line of a value that does not parse.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::{Field, Schema, SchemaRef};

/// Rows per batch read from a file.
pub const BATCH_ROWS: usize = 8192;
/// Records read to infer a file's schema.
pub const INFER_RECORDS: usize = 1000;

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// JSON lines: one object per line.
    Json,
    /// Apache Parquet (feature `parquet`).
    Parquet,
}

impl Format {
    /// Parse `csv`, `json` (or `jsonl`, `ndjson`) or `parquet` (a clap
    /// value parser).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "json" | "jsonl" | "ndjson" => Ok(Self::Json),
            "parquet" | "pq" => Ok(Self::Parquet),
            other => Err(format!(
                "unknown format {other:?}: use csv, json or parquet"
            )),
        }
    }

    /// The format a file's extension names, if any.
    pub fn of_path(path: &Path) -> Option<Self> {
        Self::parse(path.extension()?.to_str()?).ok()
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Parquet => "parquet",
        }
    }
}

/// A file that does not parse: where, and what.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {detail}", .line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct BadInput {
    /// The file.
    pub file: String,
    /// The 1-based line, when known.
    pub line: Option<u64>,
    /// What is wrong.
    pub detail: String,
}

fn bad(path: &Path, line: Option<u64>, detail: impl Into<String>) -> anyhow::Error {
    BadInput {
        file: path.display().to_string(),
        line,
        detail: detail.into(),
    }
    .into()
}

fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// The schema of the file: its columns, in file order, with the types read
/// from its first [`INFER_RECORDS`] records (CSV, JSON) or stored in it
/// (Parquet).
pub fn infer_schema(path: &Path, format: Format) -> Result<Schema> {
    match format {
        Format::Csv => {
            let f = arrow_csv::reader::Format::default().with_header(true);
            let (schema, _) = f
                .infer_schema(BufReader::new(open(path)?), Some(INFER_RECORDS))
                .map_err(|e| bad(path, None, e.to_string()))?;
            Ok(schema)
        }
        Format::Json => infer_json(path),
        Format::Parquet => parquet_schema(path),
    }
}

/// The schema of a JSON-lines file from its first [`INFER_RECORDS`]
/// objects, each parsed on its own so that a bad one is named by its line.
fn infer_json(path: &Path) -> Result<Schema> {
    let mut values = Vec::new();
    for (i, line) in BufReader::new(open(path)?).lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.map_err(|e| bad(path, Some(n), e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(path, Some(n), e.to_string()))?;
        if !v.is_object() {
            return Err(bad(path, Some(n), "a line must hold one JSON object"));
        }
        values.push(v);
        if values.len() >= INFER_RECORDS {
            break;
        }
    }
    arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
        .map_err(|e| bad(path, None, e.to_string()))
}

/// The file's batches, parsed with `schema` (the file's columns, in file
/// order for CSV), lazily; `bytes` counts what was read of the file.
pub fn read_batches(
    path: &Path,
    format: Format,
    schema: SchemaRef,
    bytes: Arc<AtomicU64>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    let file = Counting {
        inner: open(path)?,
        bytes,
    };
    match format {
        Format::Csv => {
            let reader = arrow_csv::ReaderBuilder::new(schema)
                .with_header(true)
                .with_batch_size(BATCH_ROWS)
                .build(BufReader::new(file))
                .map_err(|e| bad(path, None, e.to_string()))?;
            let path = path.to_path_buf();
            Ok(Box::new(reader.map(move |r| {
                r.map_err(|e| csv_error(&path, &e.to_string()))
            })))
        }
        Format::Json => Ok(Box::new(JsonLines::new(path, schema, file)?)),
        Format::Parquet => parquet_batches(path, file),
    }
}

/// An arrow-csv error with the file's own 1-based line number. A value
/// that does not parse is reported "at line N" counting the header as line
/// 0 (so the file's line is N + 1); a record with the wrong number of
/// fields "... for line N" with N already the file's line.
fn csv_error(path: &Path, msg: &str) -> anyhow::Error {
    let number = |rest: &str| -> Option<u64> {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let strip = |head: &str, rest: &str| {
        let tail = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        format!("{head}{tail}")
    };
    if let Some((head, rest)) = msg.split_once(" at line ") {
        return bad(path, number(rest).map(|n| n + 1), strip(head, rest));
    }
    if let Some((head, rest)) = msg.split_once(" for line ") {
        return bad(path, number(rest), strip(head, rest));
    }
    bad(path, None, msg.to_string())
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// JSON lines decoded a batch at a time, with the line of a bad value: the
/// lines of the current batch are kept, and a batch that fails to convert
/// is decoded again line by line to find the first bad one.
struct JsonLines {
    path: std::path::PathBuf,
    schema: SchemaRef,
    lines: std::io::Lines<BufReader<Counting<File>>>,
    /// 1-based number of the last line read.
    at: u64,
    done: bool,
}

impl JsonLines {
    fn new(path: &Path, schema: SchemaRef, file: Counting<File>) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            lines: BufReader::new(file).lines(),
            at: 0,
            done: false,
        })
    }

    fn decoder(&self) -> Result<arrow_json::reader::Decoder> {
        arrow_json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(BATCH_ROWS)
            .with_strict_mode(true)
            .build_decoder()
            .context("building the JSON decoder")
    }

    /// Decode `line` (number `n`) alone, for its error.
    fn check_line(&self, n: u64, line: &str) -> Result<()> {
        let mut d = self.decoder()?;
        d.decode(line.as_bytes())
            .and_then(|_| d.flush())
            .map(|_| ())
            .map_err(|e| bad(&self.path, Some(n), e.to_string()))
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut d = self.decoder()?;
        let mut kept: Vec<(u64, String)> = Vec::new();
        while kept.len() < BATCH_ROWS {
            let Some(line) = self.lines.next() else {
                self.done = true;
                break;
            };
            self.at += 1;
            let line = line.map_err(|e| bad(&self.path, Some(self.at), e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let used = d
                .decode(line.as_bytes())
                .map_err(|e| bad(&self.path, Some(self.at), e.to_string()))?;
            // One whole object per line: not a part of one (a value split
            // over lines), not two.
            if used != line.len() || d.has_partial_record() || d.len() != kept.len() + 1 {
                let msg = "not exactly one complete JSON object on this line";
                return Err(bad(&self.path, Some(self.at), msg));
            }
            kept.push((self.at, line));
        }
        match d.flush() {
            Ok(b) => Ok(b),
            Err(e) => {
                for (n, line) in &kept {
                    self.check_line(*n, line)?;
                }
                Err(bad(&self.path, None, e.to_string()))
            }
        }
    }
}

impl Iterator for JsonLines {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// `batch` with the columns of `target`, in its order: cast where the
/// types differ, null where the batch lacks a nullable column.
pub fn conform(batch: &RecordBatch, target: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let mut cols = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        match batch.schema().index_of(f.name()) {
            Ok(i) => {
                let c = batch.column(i);
                if c.data_type() == f.data_type() {
                    cols.push(c.clone());
                } else {
                    let strict = arrow_cast::CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    let cast =
                        arrow_cast::cast_with_options(c, f.data_type(), &strict).map_err(|e| {
                            lancebranch::Error::SchemaMismatch {
                                table: table.to_string(),
                                detail: format!("column {:?}: {e}", f.name()),
                            }
                        })?;
                    cols.push(cast);
                }
            }
            Err(_) if f.is_nullable() => cols.push(new_null_array(f.data_type(), batch.num_rows())),
            Err(_) => {
                return Err(lancebranch::Error::SchemaMismatch {
                    table: table.to_string(),
                    detail: format!(
                        "the file has no column {:?}, which cannot be null",
                        f.name()
                    ),
                }
                .into());
            }
        }
    }
    RecordBatch::try_new(target.clone(), cols).map_err(|e| {
        lancebranch::Error::SchemaMismatch {
            table: table.to_string(),
            detail: e.to_string(),
        }
        .into()
    })
}

/// The schema to parse a file with when it goes into an existing table:
/// the file's columns (in file order) with the table's types. A file
/// column the table lacks is a [`lancebranch::Error::SchemaMismatch`].
pub fn read_schema_for(file: &Schema, table_schema: &Schema, table: &str) -> Result<Schema> {
    let mut fields: Vec<Field> = Vec::new();
    for f in file.fields() {
        match table_schema.field_with_name(f.name()) {
            Ok(t) => fields.push(t.as_ref().clone().with_nullable(true)),
            Err(_) => {
                let have: Vec<&str> = table_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                return Err(lancebranch::Error::SchemaMismatch {
                    table: table.to_string(),
                    detail: format!(
                        "the file's column {:?} is not a column of the table (it has {})",
                        f.name(),
                        have.join(", ")
                    ),
                }
                .into());
            }
        }
    }
    Ok(Schema::new(fields))
}

/// Writes batches to a file or stdout in one format.
// One sink per export: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Sink {
    /// CSV with a header line.
    Csv(arrow_csv::Writer<Box<dyn Write + Send>>),
    /// JSON lines.
    Json(arrow_json::LineDelimitedWriter<Box<dyn Write + Send>>),
    /// Parquet.
    #[cfg(feature = "parquet")]
    Parquet(parquet::arrow::ArrowWriter<Box<dyn Write + Send>>),
}

impl Sink {
    /// A sink of `format` writing to `out`, for batches of `schema`.
    pub fn new(format: Format, out: Box<dyn Write + Send>, schema: &SchemaRef) -> Result<Self> {
        let _ = schema;
        Ok(match format {
            Format::Csv => Self::Csv(arrow_csv::WriterBuilder::new().with_header(true).build(out)),
            Format::Json => Self::Json(arrow_json::LineDelimitedWriter::new(out)),
            #[cfg(feature = "parquet")]
            Format::Parquet => Self::Parquet(
                parquet::arrow::ArrowWriter::try_new(out, schema.clone(), None)
                    .context("starting the Parquet file")?,
            ),
            #[cfg(not(feature = "parquet"))]
            Format::Parquet => anyhow::bail!(NO_PARQUET),
        })
    }

    /// Write one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Self::Csv(w) => w.write(batch).context("writing CSV"),
            Self::Json(w) => w.write(batch).context("writing JSON lines"),
            #[cfg(feature = "parquet")]
            Self::Parquet(w) => w.write(batch).context("writing Parquet"),
        }
    }

    /// Flush and close.
    pub fn finish(self) -> Result<()> {
        match self {
            Self::Csv(w) => {
                let mut out = w.into_inner();
                out.flush().context("flushing CSV")
            }
            Self::Json(mut w) => {
                w.finish().context("finishing JSON lines")?;
                w.into_inner().flush().context("flushing JSON lines")
            }
            #[cfg(feature = "parquet")]
            Self::Parquet(w) => {
                let mut out = w.into_inner().context("closing the Parquet file")?;
                out.flush().context("flushing Parquet")
            }
        }
    }
}

#[cfg(not(feature = "parquet"))]
const NO_PARQUET: &str = "this build has no Parquet support (build with --features parquet)";

#[cfg(feature = "parquet")]
fn parquet_schema(path: &Path) -> Result<Schema> {
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open(path)?)
        .map_err(|e| bad(path, None, e.to_string()))?;
    Ok(b.schema().as_ref().clone())
}

#[cfg(not(feature = "parquet"))]
fn parquet_schema(_: &Path) -> Result<Schema> {
    anyhow::bail!(NO_PARQUET)
}

#[cfg(feature = "parquet")]
fn parquet_batches(
    path: &Path,
    file: Counting<File>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    // Parquet reads by offset, not front to back: progress is in rows.
    let Counting { inner, .. } = file;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(inner)
        .map_err(|e| bad(path, None, e.to_string()))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(path, None, e.to_string()))?;
    let path = path.to_path_buf();
    Ok(Box::new(reader.map(move |r| {
        r.map_err(|e| bad(&path, None, e.to_string()))
    })))
}

#[cfg(not(feature = "parquet"))]
fn parquet_batches(
    _: &Path,
    _: Counting<File>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    anyhow::bail!(NO_PARQUET)
}
