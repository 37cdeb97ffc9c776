//! A store wrapper that stops one chosen inner call half-way through an
//! operation, for deterministic concurrency tests.
//!
//! [`Pausing`] wraps a [`LanceDbBackend`] and forwards every method of
//! [`StorageBackend`] and [`BranchLines`] to it, defaults included. A test
//! arms it with [`Pausing::pause_next`]: the next matching call blocks
//! before it reaches Lance. Between [`PauseHandle::reached`] and
//! [`PauseHandle::release`] the test runs a second operation, which then
//! lands at exactly that point of the first one (say, a write between a
//! merge's read of a branch and its commit).
//!
//! ```ignore
//! let store = Pausing::new(Arc::new(LanceDbBackend::open(path).await?));
//! let main = BranchedBackend::open(store.clone()).await?;
//! let pause = store.pause_next("row_changes", "p");
//! let merge = tokio::spawn(async move { main.merge(&b, opts).await });
//! pause.reached().await;
//! // ... the interleaved operation ...
//! pause.release();
//! merge.await??;
//! ```

#![allow(dead_code)] // a helper: not every test uses every part

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;
use lancebranch::backend::{BranchLines, RowChanges};
use lancebranch::{
    DistanceMetric, FilterExpr, IndexInfo, LanceDbBackend, RecordBatchStream, ScalarIndexType,
    ScanRequest, StorageBackend, TableWriteGuard, VectorIndexParams, VectorQueryOpts, WriteMode,
};
use tokio::sync::watch;

/// The line a call works on: `None` for calls about no single line
/// (`list_lines`, `purge_table`), `Some(None)` the main line,
/// `Some(Some(b))` branch `b`.
type Line<'a> = Option<Option<&'a str>>;

/// The line of every [`StorageBackend`] call but `scan`, `scan_stream` and
/// the vector searches (which name theirs).
const MAIN: Line<'static> = Some(None);

/// The two one-way flags between a paused call and its [`PauseHandle`].
struct Signal {
    arrived: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

/// The armed pause: which call it stops.
struct Armed {
    method: &'static str,
    table: String,
    /// `None`: a call on any line; else only a call on this one.
    line: Option<Option<String>>,
    signal: Arc<Signal>,
}

impl Armed {
    fn matches(&self, method: &str, table: &str, line: Line<'_>) -> bool {
        self.method == method
            && self.table == table
            && match (&self.line, line) {
                (None, _) => true,
                (Some(want), Some(got)) => want.as_deref() == got,
                (Some(_), None) => false,
            }
    }
}

/// A [`LanceDbBackend`] that can hold one chosen call until the test lets
/// it go.
pub struct Pausing {
    inner: Arc<LanceDbBackend>,
    armed: Mutex<Option<Armed>>,
}

impl Pausing {
    /// Wrap `inner`, with no pause armed.
    pub fn new(inner: Arc<LanceDbBackend>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            armed: Mutex::new(None),
        })
    }

    /// Arm: the next call of the trait method `method` (`"row_changes"`,
    /// `"take_rows_at"`, `"write_line"`, `"merge_insert_line"`,
    /// `"latest_version"`, `"scan"`, `"optimize_line"`, `"create_line"`, ...)
    /// on table `table`, on any line, blocks before it is forwarded, until
    /// the returned handle releases it. The pause fires once, then disarms;
    /// arming again replaces a pause that has not fired yet.
    pub fn pause_next(&self, method: &'static str, table: &str) -> PauseHandle {
        self.arm(method, table, None)
    }

    /// [`pause_next`](Self::pause_next) for a call on one line only:
    /// `None` the main line, `Some(b)` branch `b` (for `create_line` /
    /// `drop_line`, the branch created or dropped). Every
    /// [`StorageBackend`] call is on the main line except `scan`,
    /// `scan_stream`, `vector_search` and `multivector_search`, which are on
    /// the branch of their request; `list_lines` and `purge_table` match
    /// only [`pause_next`](Self::pause_next).
    pub fn pause_next_on(
        &self,
        method: &'static str,
        table: &str,
        line: Option<&str>,
    ) -> PauseHandle {
        self.arm(method, table, Some(line.map(str::to_string)))
    }

    fn arm(&self, method: &'static str, table: &str, line: Option<Option<String>>) -> PauseHandle {
        let signal = Arc::new(Signal {
            arrived: watch::channel(false).0,
            released: watch::channel(false).0,
        });
        let armed = Armed {
            method,
            table: table.to_string(),
            line,
            signal: signal.clone(),
        };
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(armed);
        PauseHandle { signal }
    }

    /// If the armed pause matches this call, disarm it, say the call has
    /// arrived and wait until it is released.
    async fn maybe_pause(&self, method: &'static str, table: &str, line: Line<'_>) {
        let signal = {
            let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
            if armed
                .as_ref()
                .is_some_and(|a| a.matches(method, table, line))
            {
                armed.take().map(|a| a.signal)
            } else {
                None
            }
        };
        if let Some(signal) = signal {
            signal.arrived.send_replace(true);
            let mut released = signal.released.subscribe();
            let _ = released.wait_for(|r| *r).await;
        }
    }

    fn lance(&self) -> &LanceDbBackend {
        &self.inner
    }
}

/// The test's side of one armed pause. Dropping it releases the pause.
#[must_use = "dropping the handle releases the pause"]
pub struct PauseHandle {
    signal: Arc<Signal>,
}

impl PauseHandle {
    /// Wait until the armed call has arrived and is blocked (returns at
    /// once if it already has; never, if the pause was replaced first).
    pub async fn reached(&self) {
        let mut arrived = self.signal.arrived.subscribe();
        let _ = arrived.wait_for(|a| *a).await;
    }

    /// Whether the armed call has arrived (and, unless released, is
    /// blocked).
    pub fn is_reached(&self) -> bool {
        *self.signal.arrived.borrow()
    }

    /// Let the blocked call go on (also if it has not arrived yet: then it
    /// does not block at all).
    pub fn release(&self) {
        self.signal.released.send_replace(true);
    }
}

impl Drop for PauseHandle {
    fn drop(&mut self) {
        self.release();
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl StorageBackend for Pausing {
    async fn table_names(&self) -> Result<Vec<String>> {
        StorageBackend::table_names(self.lance()).await
    }

    async fn table_exists(&self, name: &str) -> Result<bool> {
        self.maybe_pause("table_exists", name, MAIN).await;
        StorageBackend::table_exists(self.lance(), name).await
    }

    async fn create_table(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        self.maybe_pause("create_table", name, MAIN).await;
        StorageBackend::create_table(self.lance(), name, batches).await
    }

    async fn create_empty_table(&self, name: &str, schema: Arc<Schema>) -> Result<()> {
        self.maybe_pause("create_empty_table", name, MAIN).await;
        StorageBackend::create_empty_table(self.lance(), name, schema).await
    }

    async fn open_or_create_table(&self, name: &str, schema: Arc<Schema>) -> Result<()> {
        self.maybe_pause("open_or_create_table", name, MAIN).await;
        StorageBackend::open_or_create_table(self.lance(), name, schema).await
    }

    async fn drop_table(&self, name: &str) -> Result<()> {
        self.maybe_pause("drop_table", name, MAIN).await;
        StorageBackend::drop_table(self.lance(), name).await
    }

    async fn notify_table_created(&self, name: &str) {
        self.maybe_pause("notify_table_created", name, MAIN).await;
        StorageBackend::notify_table_created(self.lance(), name).await
    }

    async fn scan(&self, request: ScanRequest) -> Result<Vec<RecordBatch>> {
        let line = Some(request.line.as_deref());
        self.maybe_pause("scan", &request.table, line).await;
        StorageBackend::scan(self.lance(), request).await
    }

    async fn scan_stream(&self, request: ScanRequest) -> Result<RecordBatchStream> {
        let line = Some(request.line.as_deref());
        self.maybe_pause("scan_stream", &request.table, line).await;
        StorageBackend::scan_stream(self.lance(), request).await
    }

    async fn get_table_schema(&self, name: &str) -> Result<Option<Arc<Schema>>> {
        self.maybe_pause("get_table_schema", name, MAIN).await;
        StorageBackend::get_table_schema(self.lance(), name).await
    }

    async fn count_rows(&self, table_name: &str, filter: Option<&str>) -> Result<usize> {
        self.maybe_pause("count_rows", table_name, MAIN).await;
        StorageBackend::count_rows(self.lance(), table_name, filter).await
    }

    async fn write(
        &self,
        table_name: &str,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<()> {
        self.maybe_pause("write", table_name, MAIN).await;
        StorageBackend::write(self.lance(), table_name, batches, mode).await
    }

    async fn merge_insert(
        &self,
        table_name: &str,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        self.maybe_pause("merge_insert", table_name, MAIN).await;
        StorageBackend::merge_insert(self.lance(), table_name, on, batches).await
    }

    async fn delete_rows(&self, table_name: &str, filter: &str) -> Result<()> {
        self.maybe_pause("delete_rows", table_name, MAIN).await;
        StorageBackend::delete_rows(self.lance(), table_name, filter).await
    }

    async fn replace_table_atomic(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<()> {
        self.maybe_pause("replace_table_atomic", name, MAIN).await;
        StorageBackend::replace_table_atomic(self.lance(), name, batches, schema).await
    }

    async fn lock_table_for_write(&self, name: &str) -> TableWriteGuard {
        self.maybe_pause("lock_table_for_write", name, MAIN).await;
        StorageBackend::lock_table_for_write(self.lance(), name).await
    }

    async fn get_table_version(&self, table_name: &str) -> Result<Option<u64>> {
        self.maybe_pause("get_table_version", table_name, MAIN)
            .await;
        StorageBackend::get_table_version(self.lance(), table_name).await
    }

    async fn rollback_table(&self, table_name: &str, target_version: u64) -> Result<()> {
        self.maybe_pause("rollback_table", table_name, MAIN).await;
        StorageBackend::rollback_table(self.lance(), table_name, target_version).await
    }

    async fn optimize_table(&self, table_name: &str) -> Result<()> {
        self.maybe_pause("optimize_table", table_name, MAIN).await;
        StorageBackend::optimize_table(self.lance(), table_name).await
    }

    async fn recover_staging(&self, table_name: &str) -> Result<()> {
        self.maybe_pause("recover_staging", table_name, MAIN).await;
        StorageBackend::recover_staging(self.lance(), table_name).await
    }

    fn invalidate_cache(&self, table_name: &str) {
        StorageBackend::invalidate_cache(self.lance(), table_name)
    }

    fn clear_cache(&self) {
        StorageBackend::clear_cache(self.lance())
    }

    fn base_uri(&self) -> &str {
        StorageBackend::base_uri(self.lance())
    }

    fn supports_vector_search(&self) -> bool {
        StorageBackend::supports_vector_search(self.lance())
    }

    fn supports_full_text_search(&self) -> bool {
        StorageBackend::supports_full_text_search(self.lance())
    }

    fn supports_scalar_index(&self) -> bool {
        StorageBackend::supports_scalar_index(self.lance())
    }

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
        let line = Some(opts.line.as_deref());
        self.maybe_pause("vector_search", table, line).await;
        StorageBackend::vector_search(self.lance(), table, column, query, k, metric, filter, opts)
            .await
    }

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
        let line = Some(opts.line.as_deref());
        self.maybe_pause("multivector_search", table, line).await;
        let inner = self.lance();
        StorageBackend::multivector_search(inner, table, column, query, k, metric, filter, opts)
            .await
    }

    async fn full_text_search(
        &self,
        table: &str,
        column: &str,
        query: &str,
        k: usize,
        filter: FilterExpr,
    ) -> Result<Vec<RecordBatch>> {
        self.maybe_pause("full_text_search", table, MAIN).await;
        StorageBackend::full_text_search(self.lance(), table, column, query, k, filter).await
    }

    async fn create_vector_index(
        &self,
        table: &str,
        column: &str,
        name: &str,
        params: VectorIndexParams,
    ) -> Result<()> {
        self.maybe_pause("create_vector_index", table, MAIN).await;
        StorageBackend::create_vector_index(self.lance(), table, column, name, params).await
    }

    async fn create_fts_index(
        &self,
        table: &str,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<()> {
        self.maybe_pause("create_fts_index", table, MAIN).await;
        StorageBackend::create_fts_index(self.lance(), table, columns, name, with_positions).await
    }

    async fn create_scalar_index(
        &self,
        table: &str,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<()> {
        self.maybe_pause("create_scalar_index", table, MAIN).await;
        StorageBackend::create_scalar_index(self.lance(), table, columns, index_type, name).await
    }

    async fn drop_index(&self, table: &str, index_name: &str) -> Result<()> {
        self.maybe_pause("drop_index", table, MAIN).await;
        StorageBackend::drop_index(self.lance(), table, index_name).await
    }

    async fn list_indexes(&self, table: &str) -> Result<Vec<IndexInfo>> {
        self.maybe_pause("list_indexes", table, MAIN).await;
        StorageBackend::list_indexes(self.lance(), table).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl BranchLines for Pausing {
    async fn latest_version(&self, table: &str, branch: Option<&str>) -> Result<u64> {
        self.maybe_pause("latest_version", table, Some(branch))
            .await;
        BranchLines::latest_version(self.lance(), table, branch).await
    }

    async fn schema_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Arc<Schema>> {
        self.maybe_pause("schema_at", table, Some(branch)).await;
        BranchLines::schema_at(self.lance(), table, branch, version).await
    }

    async fn create_line(
        &self,
        table: &str,
        branch: &str,
        from: Option<&str>,
        version: u64,
    ) -> Result<()> {
        self.maybe_pause("create_line", table, Some(Some(branch)))
            .await;
        BranchLines::create_line(self.lance(), table, branch, from, version).await
    }

    async fn drop_line(&self, table: &str, branch: &str) -> Result<()> {
        self.maybe_pause("drop_line", table, Some(Some(branch)))
            .await;
        BranchLines::drop_line(self.lance(), table, branch).await
    }

    async fn list_lines(&self, table: &str) -> Result<Vec<String>> {
        self.maybe_pause("list_lines", table, None).await;
        BranchLines::list_lines(self.lance(), table).await
    }

    async fn purge_table(&self, table: &str) -> Result<()> {
        self.maybe_pause("purge_table", table, None).await;
        BranchLines::purge_table(self.lance(), table).await
    }

    async fn write_line(
        &self,
        table: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<Option<u64>> {
        self.maybe_pause("write_line", table, Some(branch)).await;
        BranchLines::write_line(self.lance(), table, branch, batches, mode).await
    }

    async fn merge_insert_line(
        &self,
        table: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>> {
        self.maybe_pause("merge_insert_line", table, Some(branch))
            .await;
        BranchLines::merge_insert_line(self.lance(), table, branch, on, batches).await
    }

    async fn upsert_line(
        &self,
        table: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>> {
        self.maybe_pause("upsert_line", table, Some(branch)).await;
        BranchLines::upsert_line(self.lance(), table, branch, on, batches).await
    }

    async fn delete_rows_line(
        &self,
        table: &str,
        branch: Option<&str>,
        filter: &str,
    ) -> Result<u64> {
        self.maybe_pause("delete_rows_line", table, Some(branch))
            .await;
        BranchLines::delete_rows_line(self.lance(), table, branch, filter).await
    }

    async fn delete_by_row_ids_line(
        &self,
        table: &str,
        branch: Option<&str>,
        key: &[String],
        rows: &[(u64, RecordBatch)],
    ) -> Result<(Option<u64>, Vec<usize>)> {
        self.maybe_pause("delete_by_row_ids_line", table, Some(branch))
            .await;
        BranchLines::delete_by_row_ids_line(self.lance(), table, branch, key, rows).await
    }

    async fn overwrite_line(
        &self,
        table: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<u64> {
        self.maybe_pause("overwrite_line", table, Some(branch))
            .await;
        BranchLines::overwrite_line(self.lance(), table, branch, batches, schema).await
    }

    async fn restore_line(&self, table: &str, branch: Option<&str>, version: u64) -> Result<u64> {
        self.maybe_pause("restore_line", table, Some(branch)).await;
        BranchLines::restore_line(self.lance(), table, branch, version).await
    }

    async fn optimize_line(
        &self,
        table: &str,
        branch: Option<&str>,
        keep_from: Option<u64>,
    ) -> Result<u64> {
        self.maybe_pause("optimize_line", table, Some(branch)).await;
        BranchLines::optimize_line(self.lance(), table, branch, keep_from).await
    }

    async fn count_rows_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
        filter: Option<&str>,
    ) -> Result<usize> {
        self.maybe_pause("count_rows_at", table, Some(branch)).await;
        BranchLines::count_rows_at(self.lance(), table, branch, version, filter).await
    }

    async fn full_text_search_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
        column: &str,
        query: &str,
        k: usize,
        filter: FilterExpr,
    ) -> Result<Vec<RecordBatch>> {
        self.maybe_pause("full_text_search_at", table, Some(branch))
            .await;
        let inner = self.lance();
        BranchLines::full_text_search_at(inner, table, branch, version, column, query, k, filter)
            .await
    }

    async fn create_vector_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        column: &str,
        name: &str,
        params: VectorIndexParams,
    ) -> Result<u64> {
        self.maybe_pause("create_vector_index_line", table, Some(branch))
            .await;
        let inner = self.lance();
        BranchLines::create_vector_index_line(inner, table, branch, column, name, params).await
    }

    async fn create_fts_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<u64> {
        self.maybe_pause("create_fts_index_line", table, Some(branch))
            .await;
        let inner = self.lance();
        BranchLines::create_fts_index_line(inner, table, branch, columns, name, with_positions)
            .await
    }

    async fn create_scalar_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<u64> {
        self.maybe_pause("create_scalar_index_line", table, Some(branch))
            .await;
        let inner = self.lance();
        BranchLines::create_scalar_index_line(inner, table, branch, columns, index_type, name).await
    }

    async fn drop_index_line(&self, table: &str, branch: Option<&str>, name: &str) -> Result<u64> {
        self.maybe_pause("drop_index_line", table, Some(branch))
            .await;
        BranchLines::drop_index_line(self.lance(), table, branch, name).await
    }

    async fn row_changes(
        &self,
        table: &str,
        branch: Option<&str>,
        begin: u64,
        end: u64,
    ) -> Result<RowChanges> {
        self.maybe_pause("row_changes", table, Some(branch)).await;
        BranchLines::row_changes(self.lance(), table, branch, begin, end).await
    }

    async fn row_change_streams(
        &self,
        table: &str,
        branch: Option<&str>,
        begin: u64,
        end: u64,
    ) -> Result<lancebranch::backend::RowChangeStreams> {
        self.maybe_pause("row_changes", table, Some(branch)).await;
        BranchLines::row_change_streams(self.lance(), table, branch, begin, end).await
    }

    async fn take_rows_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: u64,
        row_ids: &[u64],
    ) -> Result<Vec<RecordBatch>> {
        self.maybe_pause("take_rows_at", table, Some(branch)).await;
        BranchLines::take_rows_at(self.lance(), table, branch, version, row_ids).await
    }

    async fn add_null_columns_line(
        &self,
        table: &str,
        branch: Option<&str>,
        fields: Arc<Schema>,
    ) -> Result<u64> {
        self.maybe_pause("add_null_columns_line", table, Some(branch))
            .await;
        BranchLines::add_null_columns_line(self.lance(), table, branch, fields).await
    }

    async fn list_indexes_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<IndexInfo>> {
        self.maybe_pause("list_indexes_at", table, Some(branch))
            .await;
        BranchLines::list_indexes_at(self.lance(), table, branch, version).await
    }

    async fn object_base(&self) -> Result<Option<lancebranch::backend::ObjectBase>> {
        BranchLines::object_base(self.lance()).await
    }

    fn own_commits(
        &self,
        table: &str,
        branch: Option<&str>,
        after: u64,
        upto: u64,
    ) -> Option<bool> {
        BranchLines::own_commits(self.lance(), table, branch, after, upto)
    }
}
