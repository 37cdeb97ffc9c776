//! `impl StorageBackend for LanceDbBackend`: every method of the contract,
//! none left at its "not supported" default.

use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;

use crate::backend::{
    DistanceMetric, FilterExpr, IndexInfo, RecordBatchStream, ScalarIndexType, ScanRequest,
    StorageBackend, TableWriteGuard, VectorIndexParams, VectorQueryOpts, WriteMode,
    validate_table_name,
};
use crate::lance::backend::LanceDbBackend;

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl StorageBackend for LanceDbBackend {
    async fn table_names(&self) -> Result<Vec<String>> {
        self.do_table_names().await
    }

    async fn table_exists(&self, name: &str) -> Result<bool> {
        self.do_table_exists(name).await
    }

    async fn create_table(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        self.do_create_table(name, batches).await
    }

    async fn create_empty_table(&self, name: &str, schema: Arc<Schema>) -> Result<()> {
        self.do_create_empty_table(name, schema).await
    }

    async fn open_or_create_table(&self, name: &str, schema: Arc<Schema>) -> Result<()> {
        self.do_open_or_create(name, schema).await
    }

    async fn drop_table(&self, name: &str) -> Result<()> {
        self.do_drop_table(name).await
    }

    async fn notify_table_created(&self, name: &str) {
        if validate_table_name(name).is_ok() {
            self.notify_created(name);
        }
    }

    async fn scan(&self, request: ScanRequest) -> Result<Vec<RecordBatch>> {
        self.do_scan(request).await
    }

    async fn scan_stream(&self, request: ScanRequest) -> Result<RecordBatchStream> {
        self.do_scan_stream(request).await
    }

    async fn get_table_schema(&self, name: &str) -> Result<Option<Arc<Schema>>> {
        self.do_schema(name).await
    }

    async fn count_rows(&self, table_name: &str, filter: Option<&str>) -> Result<usize> {
        self.count_rows_at(table_name, None, None, filter).await
    }

    async fn write(
        &self,
        table_name: &str,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<()> {
        self.write_line(table_name, None, batches, mode)
            .await
            .map(|_| ())
    }

    async fn merge_insert(
        &self,
        table_name: &str,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        self.merge_insert_line(table_name, None, on, batches)
            .await
            .map(|_| ())
    }

    async fn delete_rows(&self, table_name: &str, filter: &str) -> Result<()> {
        self.delete_line(table_name, None, filter).await.map(|_| ())
    }

    async fn replace_table_atomic(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<()> {
        self.do_replace(name, batches, schema).await
    }

    async fn lock_table_for_write(&self, name: &str) -> TableWriteGuard {
        self.lock(name).await
    }

    async fn get_table_version(&self, table_name: &str) -> Result<Option<u64>> {
        self.do_version(table_name).await
    }

    async fn rollback_table(&self, table_name: &str, target_version: u64) -> Result<()> {
        self.restore_line(table_name, None, target_version)
            .await
            .map(|_| ())
    }

    async fn optimize_table(&self, table_name: &str) -> Result<()> {
        self.optimize_line(table_name, None, None).await.map(|_| ())
    }

    async fn recover_staging(&self, table_name: &str) -> Result<()> {
        self.do_recover_staging(table_name).await
    }

    fn invalidate_cache(&self, table_name: &str) {
        self.forget(table_name);
    }

    fn clear_cache(&self) {
        self.forget_all();
    }

    fn base_uri(&self) -> &str {
        &self.uri
    }

    fn supports_vector_search(&self) -> bool {
        true
    }

    fn supports_full_text_search(&self) -> bool {
        true
    }

    fn supports_scalar_index(&self) -> bool {
        true
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
        self.do_vector_search(table, column, query, k, metric, filter, opts)
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
        self.do_multivector_search(table, column, query, k, metric, filter, opts)
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
        self.fts_at(table, None, None, column, query, k, filter)
            .await
    }

    async fn create_vector_index(
        &self,
        table: &str,
        column: &str,
        name: &str,
        params: VectorIndexParams,
    ) -> Result<()> {
        self.create_vector_index_line(table, None, column, name, params)
            .await
            .map(|_| ())
    }

    async fn create_fts_index(
        &self,
        table: &str,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<()> {
        self.create_fts_index_line(table, None, columns, name, with_positions)
            .await
            .map(|_| ())
    }

    async fn create_scalar_index(
        &self,
        table: &str,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<()> {
        self.create_scalar_index_line(table, None, columns, index_type, name)
            .await
            .map(|_| ())
    }

    async fn drop_index(&self, table: &str, index_name: &str) -> Result<()> {
        self.drop_index_line(table, None, index_name)
            .await
            .map(|_| ())
    }

    async fn list_indexes(&self, table: &str) -> Result<Vec<IndexInfo>> {
        self.list_indexes_at(table, None, None).await
    }
}
