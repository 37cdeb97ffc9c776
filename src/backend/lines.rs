//! [`BranchLines`]: what a branching decorator needs from the store beneath
//! it, beyond the [`StorageBackend`] contract.
//!
//! A *line* of a table is its main line (`line: None`) or one of its Lance
//! branches (`Some(name)`). Versions are numbered per line; a branch's first
//! version has the number of the version it was created from.

use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;

use crate::backend::filter::FilterExpr;
use crate::backend::traits::StorageBackend;
use crate::backend::types::{IndexInfo, ScalarIndexType, VectorIndexParams, WriteMode};

/// Row-level changes of a line between two of its versions.
///
/// Batches carry every table column plus `_rowid` (stable row ids, so a
/// row keeps its id across updates on one line).
#[derive(Debug, Clone, Default)]
pub struct RowChanges {
    /// Rows created after the begin version.
    pub inserted: Vec<RecordBatch>,
    /// Rows that existed at the begin version and were changed since.
    pub updated: Vec<RecordBatch>,
    /// Ids of rows live at the begin version and gone at the end version.
    pub deleted: Vec<u64>,
}

/// [`RowChanges`] as streams, for changes too big to hold at once: each
/// stream yields batches as the store reads them.
pub struct RowChangeStreams {
    /// Rows created after the begin version (with `_rowid`).
    pub inserted: futures::stream::BoxStream<'static, Result<RecordBatch>>,
    /// Rows that existed at the begin version and were changed since (with
    /// `_rowid`).
    pub updated: futures::stream::BoxStream<'static, Result<RecordBatch>>,
    /// Ids of rows live at the begin version and gone at the end version,
    /// a chunk at a time.
    pub deleted: futures::stream::BoxStream<'static, Result<Vec<u64>>>,
}

impl std::fmt::Debug for RowChangeStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowChangeStreams").finish_non_exhaustive()
    }
}

impl From<RowChanges> for RowChangeStreams {
    fn from(ch: RowChanges) -> Self {
        use futures::StreamExt as _;
        Self {
            inserted: futures::stream::iter(ch.inserted.into_iter().map(Ok)).boxed(),
            updated: futures::stream::iter(ch.updated.into_iter().map(Ok)).boxed(),
            deleted: futures::stream::iter([Ok(ch.deleted)]).boxed(),
        }
    }
}

/// Line-level primitives of a store with Lance-style branches per table.
///
/// Reads of a line at a version go through [`StorageBackend::scan`] with
/// [`ScanRequest::line`](crate::ScanRequest::line) / `version` set, and through
/// the `line` / `version` of [`VectorQueryOpts`](crate::VectorQueryOpts).
///
/// # Example
/// ```no_run
/// use lancebranch::{LanceDbBackend, backend::BranchLines};
/// # async fn demo(store: LanceDbBackend) -> anyhow::Result<()> {
/// let v = store.latest_version("people", None).await?;
/// store.create_line("people", "lb1", None, v).await?;
/// assert_eq!(store.latest_version("people", Some("lb1")).await?, v);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait BranchLines: StorageBackend {
    /// The newest version of a line.
    async fn latest_version(&self, table: &str, branch: Option<&str>) -> Result<u64>;

    /// The schema of a line at a version (`None`: the newest).
    async fn schema_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Arc<Schema>>;

    /// Create the Lance branch `branch` of `table` from version `version` of
    /// the line `from`. No data is copied.
    async fn create_line(
        &self,
        table: &str,
        branch: &str,
        from: Option<&str>,
        version: u64,
    ) -> Result<()>;

    /// Remove the Lance branch `branch` of `table`, including a half-created
    /// one. Removing a branch that does not exist succeeds.
    async fn drop_line(&self, table: &str, branch: &str) -> Result<()>;

    /// The Lance branches of `table` that exist in any form: those Lance
    /// lists and every directory (on an object store: prefix) under
    /// `tree/` (a half-created "zombie" branch may have only its
    /// directory). Sorted.
    async fn list_lines(&self, table: &str) -> Result<Vec<String>>;

    /// Remove everything stored for `table`, including a dataset whose
    /// creation failed half-way and cannot be opened. Removing a table that
    /// does not exist succeeds. Only for datasets nothing reads.
    async fn purge_table(&self, table: &str) -> Result<()>;

    /// Append or overwrite on a line; the new version, `None` if nothing
    /// was committed.
    async fn write_line(
        &self,
        table: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<Option<u64>>;

    /// [`StorageBackend::merge_insert`] on a line; the new version, `None`
    /// if nothing was committed.
    async fn merge_insert_line(
        &self,
        table: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>>;

    /// Upsert on a line in one commit: every row of `batches` whose `on`
    /// columns match a row of the line replaces that row's values (of the
    /// columns it has); every other row is inserted. The new version,
    /// `None` if nothing was committed.
    ///
    /// The default fails as unsupported.
    async fn upsert_line(
        &self,
        table: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>> {
        let _ = (table, branch, on, batches);
        anyhow::bail!("upsert is not supported by this backend")
    }

    /// Delete rows of a line; the new version.
    async fn delete_rows_line(
        &self,
        table: &str,
        branch: Option<&str>,
        filter: &str,
    ) -> Result<u64>;

    /// Delete, in one commit, the rows with these stable row ids whose
    /// `key` columns still hold the values of the paired one-row batch.
    /// Returns the new version (`None`: nothing deleted) and the indexes into
    /// `rows` of the rows left (not live on the line, or their key changed),
    /// for the caller to delete by key. Costs what is deleted: no lookup
    /// through the whole table.
    async fn delete_by_row_ids_line(
        &self,
        table: &str,
        branch: Option<&str>,
        key: &[String],
        rows: &[(u64, RecordBatch)],
    ) -> Result<(Option<u64>, Vec<usize>)>;

    /// Replace a line's rows and schema in one commit; the new version.
    async fn overwrite_line(
        &self,
        table: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<u64>;

    /// Commit the contents of `version` as the line's newest version; the
    /// new version.
    async fn restore_line(&self, table: &str, branch: Option<&str>, version: u64) -> Result<u64>;

    /// Compact a line and prune old versions, keeping every version
    /// `>= keep_from`; the line's newest version afterwards.
    async fn optimize_line(
        &self,
        table: &str,
        branch: Option<&str>,
        keep_from: Option<u64>,
    ) -> Result<u64>;

    /// Count rows of a line at a version.
    async fn count_rows_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
        filter: Option<&str>,
    ) -> Result<usize>;

    /// Full-text search of a line at a version.
    #[allow(clippy::too_many_arguments)]
    async fn full_text_search_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
        column: &str,
        query: &str,
        k: usize,
        filter: FilterExpr,
    ) -> Result<Vec<RecordBatch>>;

    /// Build a vector index on a line; the new version.
    async fn create_vector_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        column: &str,
        name: &str,
        params: VectorIndexParams,
    ) -> Result<u64>;

    /// Build a full-text index on a line; the new version.
    async fn create_fts_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<u64>;

    /// Build a scalar index on a line; the new version.
    async fn create_scalar_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<u64>;

    /// Drop an index on a line; the new version.
    async fn drop_index_line(&self, table: &str, branch: Option<&str>, name: &str) -> Result<u64>;

    /// The row changes of a line from `begin` (exclusive) to `end`
    /// (inclusive); both versions must be on the line (a Lance branch's
    /// first version is the one it was created from).
    async fn row_changes(
        &self,
        table: &str,
        branch: Option<&str>,
        begin: u64,
        end: u64,
    ) -> Result<RowChanges>;

    /// [`row_changes`](Self::row_changes) as streams (the default: read
    /// whole, then streamed).
    async fn row_change_streams(
        &self,
        table: &str,
        branch: Option<&str>,
        begin: u64,
        end: u64,
    ) -> Result<RowChangeStreams> {
        Ok(self.row_changes(table, branch, begin, end).await?.into())
    }

    /// The rows with the given stable row ids of a line at a version, with
    /// every column plus `_rowid`.
    async fn take_rows_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: u64,
        row_ids: &[u64],
    ) -> Result<Vec<RecordBatch>>;

    /// Add the (nullable) fields of `fields` to a line as all-null columns;
    /// the new version.
    async fn add_null_columns_line(
        &self,
        table: &str,
        branch: Option<&str>,
        fields: Arc<Schema>,
    ) -> Result<u64>;

    /// The indexes of a line at a version.
    async fn list_indexes_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<IndexInfo>>;

    /// For a store on object storage: the object store and the store's
    /// own path in it, where a branched store keeps its catalog beside the
    /// tables. `None` (the default) for a local or in-memory store, whose
    /// catalog is a local log.
    async fn object_base(&self) -> Result<Option<ObjectBase>> {
        Ok(None)
    }

    /// Whether the contents of version `upto` of a line come from version
    /// `after` through commits of this handle only (none by another
    /// process that wrote the line meanwhile, such as a writer fenced a
    /// moment ago); a commit of this handle that restored a version at or
    /// below `after` starts the contents afresh. Versions below `after` may
    /// be forgotten. A branched store publishes a version only if so.
    /// `None` (the default): the store does not keep track, and the check
    /// is skipped.
    fn own_commits(
        &self,
        table: &str,
        branch: Option<&str>,
        after: u64,
        upto: u64,
    ) -> Option<bool> {
        let _ = (table, branch, after, upto);
        None
    }
}

/// Where a store on object storage lives: the object store and the store's
/// path in it (see [`BranchLines::object_base`]).
#[derive(Debug, Clone)]
pub struct ObjectBase {
    /// The object store (with the store's credentials and endpoint).
    pub store: Arc<dyn object_store::ObjectStore>,
    /// The store's base path in it (the URI's path).
    pub path: object_store::path::Path,
}
