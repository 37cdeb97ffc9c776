//! Streamed writes: a stream of batches of any length written to one table
//! of a branch in as many Lance commits as its size needs (a chunk of
//! [`ROWS_PER_COMMIT`] rows in memory at a time), then published once, so
//! readers see all of it or none of it.
//!
//! The write holds the table's locks (and the store's operation gate,
//! shared) while the stream runs: other writes of the table wait for it,
//! and so does a branch deletion (which, once queued, also holds back new
//! operations until the stream ends).
//!
//! Steps: (table missing) the create steps of `view.rs` with the first
//! chunk → *append each further chunk* → `[EndCreate/EndLine…, Publish]`;
//! (table present) the own-line steps of a write → *one commit per chunk*
//! → `[Publish]`. A crash between the commits and the publish leaves
//! versions nobody reads, restored away like any unpublished write; a
//! failure (bad input half-way) restores them at once.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::backend::{BranchLines, Error, StorageBackend, WriteMode, validate_table_name};
use crate::branched::catalog::TableRef;
use crate::branched::view::BranchedBackend;

/// Rows per Lance commit of a streamed write: the most it holds in memory.
pub const ROWS_PER_COMMIT: usize = 1 << 16;

/// Chunks of a streamed write, each one Lance commit.
pub(crate) type Chunks<'a> = Pin<Box<dyn Stream<Item = Result<Vec<RecordBatch>>> + Send + 'a>>;

/// How [`BranchedBackend::write_stream`] applies its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMode {
    /// Create the table from the rows; [`Error::TableExists`] if the branch
    /// has it.
    Create,
    /// Append the rows (creating the table when the branch has none).
    Append,
    /// Replace the table's rows, and its schema, with the stream's
    /// (creating the table when the branch has none).
    Overwrite,
    /// Update the rows whose key columns match a row of the stream and
    /// insert the others (creating the table when the branch has none).
    Upsert {
        /// The key columns.
        on: Vec<String>,
    },
}

/// What a streamed write did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Rows read from the stream.
    pub rows: u64,
    /// Rows the table gained (counted before and after the write).
    pub inserted: u64,
    /// Upsert: rows read that did not add a row (they replaced one with
    /// the same key).
    pub updated: u64,
    /// Whether the write created the table.
    pub created: bool,
    /// The table's published version afterwards.
    pub version: Option<u64>,
}

impl BranchedBackend {
    /// Write a stream of batches (all of `schema`) to `table` on this
    /// branch, holding one chunk of [`ROWS_PER_COMMIT`] rows in memory at
    /// a time, and publish the result once: a reader, a snapshot or a fork
    /// sees all of it or none of it. If the stream fails half-way (bad
    /// input) or the write does, the branch is left as it was.
    ///
    /// # Errors
    /// [`Error::TableExists`] ([`StreamMode::Create`] on a table the branch
    /// has), [`Error::SchemaMismatch`] (a batch of another schema, or rows
    /// that do not fit the table), [`Error::MissingMergeKey`] /
    /// [`Error::InvalidColumn`] (an upsert key that is empty or not a
    /// column), [`Error::ReadOnlyView`], and the stream's own errors.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(main: lancebranch::branched::BranchedBackend,
    /// #               batch: arrow_array::RecordBatch) -> anyhow::Result<()> {
    /// use lancebranch::branched::StreamMode;
    /// let schema = batch.schema();
    /// let rows = futures::stream::iter(vec![Ok(batch)]);
    /// let on = vec!["id".to_string()];
    /// let stats = main.write_stream("people", schema, rows, StreamMode::Upsert { on }).await?;
    /// println!("{} inserted, {} updated", stats.inserted, stats.updated);
    /// # Ok(()) }
    /// ```
    pub async fn write_stream<S>(
        &self,
        table: &str,
        schema: SchemaRef,
        input: S,
        mode: StreamMode,
    ) -> Result<StreamStats>
    where
        S: Stream<Item = Result<RecordBatch>> + Send,
    {
        self.writable()?;
        validate_table_name(table)?;
        if let StreamMode::Upsert { on } = &mode {
            check_key(table, &schema, on)?;
        }
        let rows = Arc::new(AtomicU64::new(0));
        let mut chunks = chunked(input, table, schema.clone(), rows.clone());
        let lock = self.core.user_lock(self.branch_name(), table);
        let _u = lock.lock().await;
        let exists = self.exists_here(table)?;
        let mut stats = StreamStats::default();
        if exists && mode == StreamMode::Create {
            return Err(Error::TableExists(table.to_string()).into());
        }
        if exists {
            // Only an upsert needs the counts to tell inserts from updates.
            let upsert = matches!(mode, StreamMode::Upsert { .. });
            let before = if upsert {
                self.count_rows(table, None).await? as u64
            } else {
                0
            };
            self.stream_into(table, schema, chunks, &mode).await?;
            stats.rows = rows.load(Ordering::Relaxed);
            (stats.inserted, stats.updated) = if upsert {
                let after = self.count_rows(table, None).await? as u64;
                let ins = after.saturating_sub(before);
                (ins, stats.rows.saturating_sub(ins))
            } else {
                (stats.rows, 0)
            };
        } else {
            // An upsert starts from an empty table (a key repeated in the
            // stream updates the row, it does not add a second one).
            let (first, on) = match &mode {
                StreamMode::Upsert { on } => (Vec::new(), Some(on.clone())),
                _ => (chunks.next().await.transpose()?.unwrap_or_default(), None),
            };
            let more = Some(Appending { chunks, on });
            self.create_then(table, first, schema, more).await?;
            stats.rows = rows.load(Ordering::Relaxed);
            stats.inserted = self.count_rows(table, None).await? as u64;
            stats.updated = stats.rows.saturating_sub(stats.inserted);
            stats.created = true;
        }
        stats.version = self.table_ref(table)?.version.into();
        Ok(stats)
    }

    /// Write every chunk to the table the branch has, one Lance commit
    /// each, and publish the last version; on a failure (not a crash),
    /// restore what the branch published before.
    async fn stream_into(
        &self,
        table: &str,
        schema: SchemaRef,
        mut chunks: Chunks<'_>,
        mode: &StreamMode,
    ) -> Result<()> {
        let on: Vec<&str> = match mode {
            StreamMode::Upsert { on } => on.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        let res = self
            .mutate(table, |inner, line| async move {
                let line = line.as_deref();
                let mut version = None;
                if *mode == StreamMode::Overwrite {
                    let first = chunks.next().await.transpose()?.unwrap_or_default();
                    version = Some(inner.overwrite_line(table, line, first, schema).await?);
                }
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk?;
                    let v = match mode {
                        StreamMode::Upsert { .. } => {
                            inner.upsert_line(table, line, &on, chunk).await?
                        }
                        _ => {
                            inner
                                .write_line(table, line, chunk, WriteMode::Append)
                                .await?
                        }
                    };
                    version = v.or(version);
                }
                Ok(version)
            })
            .await;
        if let Err(e) = &res
            && !crate::branched::is_crash(e)
        {
            // Commits of the chunks before the failure are unpublished:
            // bring the published version back now rather than at the
            // table's next change.
            // The table's version moves on by one; its rows are those
            // published before.
            let _gate = self.core.gate.read().await;
            let _ =
                crate::branched::recovery::heal_table(&self.core, &self.name, self.id, table).await;
        }
        res
    }
}

/// The rest of a streamed write into a table it creates: chunks appended,
/// or upserted on `on`.
pub(crate) struct Appending<'a> {
    pub chunks: Chunks<'a>,
    pub on: Option<Vec<String>>,
}

/// Write every chunk of `more` to line `r` of `table`, not published.
pub(crate) async fn append_chunks(
    inner: &Arc<dyn BranchLines>,
    table: &str,
    mut r: TableRef,
    more: Appending<'_>,
) -> Result<TableRef> {
    let Appending { mut chunks, on } = more;
    let on: Option<Vec<&str>> = on
        .as_ref()
        .map(|on| on.iter().map(String::as_str).collect());
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let line = r.line.as_deref();
        let v = match &on {
            Some(on) => inner.upsert_line(table, line, on, chunk).await?,
            None => {
                inner
                    .write_line(table, line, chunk, WriteMode::Append)
                    .await?
            }
        };
        if let Some(v) = v {
            r.version = v;
        }
    }
    Ok(r)
}

/// An upsert key must name columns of the stream.
fn check_key(table: &str, schema: &SchemaRef, on: &[String]) -> Result<()> {
    if on.is_empty() {
        return Err(Error::MissingMergeKey(table.to_string()).into());
    }
    for c in on {
        if schema.field_with_name(c).is_err() {
            return Err(Error::InvalidColumn {
                table: table.to_string(),
                column: c.clone(),
                detail: "the upsert key is not a column of the rows".into(),
            }
            .into());
        }
    }
    Ok(())
}

/// `input` in chunks of at most [`ROWS_PER_COMMIT`] rows (a bigger batch
/// is sliced), each batch checked against `schema` and counted in `rows`.
pub(crate) fn chunked<'a, S>(
    input: S,
    table: &'a str,
    schema: SchemaRef,
    rows: Arc<AtomicU64>,
) -> Chunks<'a>
where
    S: Stream<Item = Result<RecordBatch>> + Send + 'a,
{
    // (input, the part of a batch left over for the next chunk, ended)
    let state = (Box::pin(input), None::<RecordBatch>, false);
    Box::pin(futures::stream::try_unfold(
        state,
        move |(mut input, mut left, ended)| {
            let (schema, rows) = (schema.clone(), rows.clone());
            async move {
                let mut chunk = Vec::new();
                let mut n = 0;
                loop {
                    let b = match left.take() {
                        Some(b) => b,
                        None if ended => break,
                        None => match input.next().await.transpose()? {
                            Some(b) => {
                                let b = conform(table, &schema, b)?;
                                rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                                b
                            }
                            None => {
                                let next = (input, None, true);
                                return Ok((!chunk.is_empty()).then_some((chunk, next)));
                            }
                        },
                    };
                    let room = ROWS_PER_COMMIT - n;
                    if b.num_rows() > room {
                        chunk.push(b.slice(0, room));
                        left = Some(b.slice(room, b.num_rows() - room));
                        return Ok(Some((chunk, (input, left, ended))));
                    }
                    n += b.num_rows();
                    if b.num_rows() > 0 {
                        chunk.push(b);
                    }
                    if n == ROWS_PER_COMMIT {
                        return Ok(Some((chunk, (input, left, ended))));
                    }
                }
                Ok((!chunk.is_empty()).then_some((chunk, (input, None, true))))
            }
        },
    ))
}

/// `b` with the stream's schema (metadata such as a primary key
/// included), or [`Error::SchemaMismatch`].
fn conform(table: &str, schema: &SchemaRef, b: RecordBatch) -> Result<RecordBatch> {
    let mismatch = |detail: String| Error::SchemaMismatch {
        table: table.to_string(),
        detail,
    };
    if b.schema().fields() != schema.fields() {
        return Err(mismatch(format!(
            "a batch of the stream has columns {:?}, the stream's are {:?}",
            b.schema().fields(),
            schema.fields()
        ))
        .into());
    }
    RecordBatch::try_new(schema.clone(), b.columns().to_vec())
        .map_err(|e| mismatch(e.to_string()).into())
}
