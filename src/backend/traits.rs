//! The [`StorageBackend`] contract.

use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;
use futures::Stream;

use crate::backend::filter::FilterExpr;
use crate::backend::types::{
    DistanceMetric, IndexInfo, ScalarIndexType, ScanRequest, VectorIndexParams, VectorQueryOpts,
    WriteMode,
};

/// The stream of batches that [`StorageBackend::scan_stream`] returns.
pub type RecordBatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// Proof that the caller holds a table's write lock; dropping it releases
/// the lock.
///
/// Returned by [`StorageBackend::lock_table_for_write`]. Hold it across a
/// read-modify-write that spans several calls (scan, transform,
/// [`StorageBackend::replace_table_atomic`]) so that no
/// [`StorageBackend::write`] or [`StorageBackend::merge_insert`] can slip in
/// between the read and the overwrite and be lost.
///
/// # Example
/// ```
/// let guard = lancebranch::TableWriteGuard::none();
/// drop(guard); // releases nothing: a backend without per-table locks
/// ```
#[must_use = "the table lock is released when the guard is dropped"]
pub struct TableWriteGuard(Option<tokio::sync::OwnedMutexGuard<()>>);

impl std::fmt::Debug for TableWriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriteGuard")
            .field("held", &self.0.is_some())
            .finish()
    }
}

impl TableWriteGuard {
    /// A guard that holds no lock, for backends that do not lock tables.
    pub fn none() -> Self {
        Self(None)
    }

    /// A guard that keeps `guard`'s mutex locked until it is dropped.
    ///
    /// # Example
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let m = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    /// let g = lancebranch::TableWriteGuard::held(m.clone().lock_owned().await);
    /// assert!(m.try_lock().is_err());
    /// drop(g);
    /// assert!(m.try_lock().is_ok());
    /// # });
    /// ```
    pub fn held(guard: tokio::sync::OwnedMutexGuard<()>) -> Self {
        Self(Some(guard))
    }

    /// Whether this guard holds a lock.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

/// An async, Arrow-native store of named tables.
///
/// Everything an engine keeps goes through this trait: tables of
/// [`RecordBatch`]es, filtered with SQL predicates, versioned, indexed and
/// searchable by vector, multi-vector and full text. Implementations are
/// shared as `Arc<dyn StorageBackend>`, so they are `Send + Sync + 'static`.
///
/// Methods for optional capabilities have default bodies that fail with a
/// "not supported" error; the `supports_*` methods say which a backend has.
/// A decorator (such as a branch view) must forward every method, defaults
/// included.
///
/// Errors caused by the caller's input are [`crate::Error`] values inside the
/// returned [`anyhow::Error`], and leave the store unchanged.
///
/// # Example
/// ```no_run
/// use std::sync::Arc;
/// use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend};
/// # async fn demo(batch: arrow_array::RecordBatch) -> anyhow::Result<()> {
/// let store: Arc<dyn StorageBackend> = Arc::new(LanceDbBackend::open("memory://demo").await?);
/// store.create_table("people", vec![batch]).await?;
/// let rows = store.scan(ScanRequest::table("people").filter("age > 30")).await?;
/// # let _ = rows; Ok(()) }
/// ```
#[async_trait]
pub trait StorageBackend: Send + Sync + 'static {
    // ---- tables ----

    /// The names of every table, in no promised order.
    async fn table_names(&self) -> Result<Vec<String>>;

    /// Whether a table of this name exists.
    async fn table_exists(&self, name: &str) -> Result<bool>;

    /// Create a table holding `batches` (its schema is the first batch's).
    async fn create_table(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()>;

    /// Create a table with no rows and the given schema.
    async fn create_empty_table(&self, name: &str, schema: Arc<Schema>) -> Result<()>;

    /// Make sure a table exists: open it if it does, else create it empty
    /// with `schema`.
    async fn open_or_create_table(&self, name: &str, schema: Arc<Schema>) -> Result<()>;

    /// Remove a table and all its versions.
    async fn drop_table(&self, name: &str) -> Result<()>;

    /// Tell the backend that `name` now exists although it was made without
    /// going through this trait (for instance a Lance branch dataset created
    /// directly). Backends that cache existence must drop a stale "missing"
    /// answer here. The default does nothing.
    async fn notify_table_created(&self, name: &str) {
        let _ = name;
    }

    // ---- reads ----

    /// Read the rows `request` selects, all at once.
    async fn scan(&self, request: ScanRequest) -> Result<Vec<RecordBatch>>;

    /// Read the rows `request` selects as a stream of batches.
    async fn scan_stream(&self, request: ScanRequest) -> Result<RecordBatchStream>;

    /// The schema of a table, or `None` if there is no such table.
    async fn get_table_schema(&self, name: &str) -> Result<Option<Arc<Schema>>>;

    /// How many rows of the table match `filter` (all rows for `None`).
    async fn count_rows(&self, table_name: &str, filter: Option<&str>) -> Result<usize>;

    // ---- writes ----

    /// Append `batches` to the table, or replace its rows ([`WriteMode`]).
    async fn write(
        &self,
        table_name: &str,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<()>;

    /// Update existing rows in place: every source row is matched to the
    /// table's rows on the columns `on`; a matched row takes the values of
    /// every column present in the source and keeps the others. Source rows
    /// that match nothing are dropped, never inserted (inserts go through
    /// [`StorageBackend::write`] with [`WriteMode::Append`]).
    ///
    /// The default fails as unsupported.
    async fn merge_insert(
        &self,
        table_name: &str,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        let _ = (table_name, on, batches);
        anyhow::bail!("merge_insert is not supported by this backend")
    }

    /// Delete the rows matching the SQL predicate `filter`.
    async fn delete_rows(&self, table_name: &str, filter: &str) -> Result<()>;

    /// Replace the table's contents with `batches` in one step: a reader sees
    /// the old rows or the new ones, nothing in between. Empty `batches`
    /// clear the table; a missing table is created with `schema`.
    async fn replace_table_atomic(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<()>;

    /// Take the table's write lock until the returned guard is dropped.
    ///
    /// [`StorageBackend::write`] and [`StorageBackend::merge_insert`] take
    /// the same lock, so while the guard lives they wait. Use it around a
    /// scan → transform → [`StorageBackend::replace_table_atomic`] sequence.
    /// The default returns a guard that holds nothing.
    async fn lock_table_for_write(&self, name: &str) -> TableWriteGuard {
        let _ = name;
        TableWriteGuard::none()
    }

    // ---- versions ----

    /// The table's current version, or `None` if there is no such table.
    async fn get_table_version(&self, table_name: &str) -> Result<Option<u64>>;

    /// Make the contents of `target_version` the table's current contents.
    async fn rollback_table(&self, table_name: &str, target_version: u64) -> Result<()>;

    // ---- maintenance ----

    /// Compact the table, clean up old versions and bring indexes up to date.
    async fn optimize_table(&self, table_name: &str) -> Result<()>;

    /// Finish or undo whatever an interrupted operation left behind on the
    /// table. Safe to call at any time and any number of times.
    async fn recover_staging(&self, table_name: &str) -> Result<()>;

    // ---- caches ----

    /// Forget anything cached about one table.
    fn invalidate_cache(&self, table_name: &str) {
        let _ = table_name;
    }

    /// Forget everything cached.
    fn clear_cache(&self) {}

    // ---- metadata ----

    /// Where this backend keeps its tables.
    fn base_uri(&self) -> &str;

    // ---- capabilities ----

    /// Whether [`StorageBackend::vector_search`] works.
    fn supports_vector_search(&self) -> bool {
        false
    }

    /// Whether [`StorageBackend::full_text_search`] works.
    fn supports_full_text_search(&self) -> bool {
        false
    }

    /// Whether [`StorageBackend::create_scalar_index`] works.
    fn supports_scalar_index(&self) -> bool {
        false
    }

    /// The `k` rows nearest to `query` in `column` under `metric`, among
    /// rows matching `filter`, with their distance in `_distance`.
    ///
    /// The default fails as unsupported.
    #[allow(clippy::too_many_arguments)]
    async fn vector_search(
        &self,
        table: &str,
        column: &str,
        query: &[f32],
        k: usize,
        metric: DistanceMetric,
        filter: FilterExpr,
        opts: VectorQueryOpts,
    ) -> Result<Vec<RecordBatch>> {
        let _ = (table, column, query, k, metric, filter, opts);
        anyhow::bail!("vector search is not supported by this backend")
    }

    /// Late-interaction (MaxSim) search: `query` is a set of token vectors,
    /// `column` a `List<FixedSizeList<f32>>` of token vectors per row; a
    /// row's score sums, over the query tokens, the best match among its own
    /// tokens.
    ///
    /// The default fails as unsupported.
    #[allow(clippy::too_many_arguments)]
    async fn multivector_search(
        &self,
        table: &str,
        column: &str,
        query: &[Vec<f32>],
        k: usize,
        metric: DistanceMetric,
        filter: FilterExpr,
        opts: VectorQueryOpts,
    ) -> Result<Vec<RecordBatch>> {
        let _ = (table, column, query, k, metric, filter, opts);
        anyhow::bail!("multi-vector search is not supported by this backend")
    }

    /// The `k` rows that best match the text `query` in `column`, among
    /// rows matching `filter`, with their relevance in `_score`.
    ///
    /// The default fails as unsupported.
    async fn full_text_search(
        &self,
        table: &str,
        column: &str,
        query: &str,
        k: usize,
        filter: FilterExpr,
    ) -> Result<Vec<RecordBatch>> {
        let _ = (table, column, query, k, filter);
        anyhow::bail!("full-text search is not supported by this backend")
    }

    /// Build a vector index called `name` on `column`, replacing an index of
    /// that name.
    ///
    /// The default fails as unsupported.
    async fn create_vector_index(
        &self,
        table: &str,
        column: &str,
        name: &str,
        params: VectorIndexParams,
    ) -> Result<()> {
        let _ = (table, column, name, params);
        anyhow::bail!("vector indexes are not supported by this backend")
    }

    /// Build a full-text index over `columns` (`name: None` lets the backend
    /// choose one); `with_positions` keeps token positions for phrase queries.
    ///
    /// The default fails as unsupported.
    async fn create_fts_index(
        &self,
        table: &str,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<()> {
        let _ = (table, columns, name, with_positions);
        anyhow::bail!("full-text indexes are not supported by this backend")
    }

    /// Build a scalar index of `index_type` over `columns` (`name: None`
    /// lets the backend choose one).
    ///
    /// The default fails as unsupported.
    async fn create_scalar_index(
        &self,
        table: &str,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<()> {
        let _ = (table, columns, index_type, name);
        anyhow::bail!("scalar indexes are not supported by this backend")
    }

    /// Remove the index called `index_name`.
    ///
    /// The default fails as unsupported.
    async fn drop_index(&self, table: &str, index_name: &str) -> Result<()> {
        let _ = (table, index_name);
        anyhow::bail!("dropping indexes is not supported by this backend")
    }

    /// Every index of the table. The default lists none.
    async fn list_indexes(&self, table: &str) -> Result<Vec<IndexInfo>> {
        let _ = table;
        Ok(vec![])
    }
}
