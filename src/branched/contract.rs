//! `impl StorageBackend for BranchedBackend`: every method honours the view.
//! `#[deny(clippy::missing_trait_methods)]` keeps any default ("not
//! supported", no-op) from slipping through unforwarded.

use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;
use futures::StreamExt;

use crate::backend::{
    DistanceMetric, Error, FilterExpr, IndexInfo, RecordBatchStream, ScalarIndexType, ScanRequest,
    StorageBackend, TableWriteGuard, VectorIndexParams, VectorQueryOpts, WriteMode,
    validate_table_name,
};
use crate::branched::catalog::{TableRef, line_owner};
use crate::branched::view::{BranchedBackend, check_followed};
use crate::failpoints::FailPoint;

impl BranchedBackend {
    fn inner_scan(&self, req: ScanRequest) -> Result<ScanRequest> {
        if req.line.is_some() {
            return Err(Error::InvalidArgument(
                "a branch view chooses the line itself: leave ScanRequest::line unset".into(),
            )
            .into());
        }
        let r = self.table_ref_at(&req.table, req.version)?;
        Ok(ScanRequest {
            line: r.line,
            version: Some(r.version),
            ..req
        })
    }

    fn inner_opts(&self, table: &str, opts: VectorQueryOpts) -> Result<VectorQueryOpts> {
        if opts.line.is_some() {
            return Err(Error::InvalidArgument(
                "a branch view chooses the line itself: leave VectorQueryOpts::line unset".into(),
            )
            .into());
        }
        let r = self.table_ref_at(table, opts.version)?;
        Ok(VectorQueryOpts {
            line: r.line,
            version: Some(r.version),
            ..opts
        })
    }

    pub(crate) fn exists_here(&self, name: &str) -> Result<bool> {
        match self.table_ref(name) {
            Ok(_) => Ok(true),
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn do_rollback(&self, table: &str, target: u64) -> Result<()> {
        self.writable()?;
        validate_table_name(table)?;
        let _gate = self.core.gate.read().await;
        let lock = self.core.op_lock(&self.name, table);
        let _g = lock.lock().await;
        let current = self.table_ref(table)?;
        if target > current.version {
            return Err(Error::VersionNotFound {
                table: table.to_string(),
                version: target,
            }
            .into());
        }
        let new_ref = if line_owner(current.line.as_deref()) == Some(self.id) {
            let (line, _, _) = self
                .core
                .own_line(&self.name, self.id, table, &current)
                .await?;
            let v = self
                .core
                .inner
                .restore_line(table, line.as_deref(), target)
                .await?;
            TableRef { line, version: v }
        } else {
            // Not written here yet: start a line of this branch at the target.
            if self.id == 0 {
                anyhow::bail!("main reads {table:?} from a branch line; run fsck");
            }
            let from = TableRef {
                line: current.line.clone(),
                version: target,
            };
            let line = self.core.make_line(self.id, table, from).await?;
            TableRef {
                line: Some(line),
                version: target,
            }
        };
        self.core
            .publish(&self.name, self.id, table, Some(new_ref))
            .await
    }

    async fn do_optimize(&self, table: &str) -> Result<()> {
        self.writable()?;
        validate_table_name(table)?;
        let _gate = self.core.gate.read().await;
        let lock = self.core.op_lock(&self.name, table);
        let _g = lock.lock().await;
        let current = self.table_ref(table)?;
        if line_owner(current.line.as_deref()) != Some(self.id) {
            // Nothing of this table is this branch's own: its line belongs
            // to the branch it was forked from.
            return Ok(());
        }
        let (line, _, _) = self
            .core
            .own_line(&self.name, self.id, table, &current)
            .await?;
        let keep_from = self.core.lowest_pinned(table, line.as_deref());
        let v = self
            .core
            .inner
            .optimize_line(table, line.as_deref(), keep_from)
            .await?;
        let published = self.table_ref(table)?;
        if v != published.version {
            let r = TableRef { line, version: v };
            self.core
                .publish(&self.name, self.id, table, Some(r))
                .await?;
        }
        Ok(())
    }

    async fn do_recover_staging(&self, table: &str) -> Result<()> {
        validate_table_name(table)?;
        self.store_writable()?;
        let _gate = self.core.gate.write().await;
        crate::branched::recovery::recover_pending(&self.core).await?;
        if self.pinned.is_none() {
            crate::branched::recovery::heal_table(&self.core, &self.name, self.id, table).await?;
        }
        if self.id == 0 && self.exists_here(table)? {
            let lock = self.core.op_lock(&self.name, table);
            let _g = lock.lock().await;
            self.core.inner.recover_staging(table).await?;
        }
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl StorageBackend for BranchedBackend {
    async fn table_names(&self) -> Result<Vec<String>> {
        self.seen_names()
    }

    async fn table_exists(&self, name: &str) -> Result<bool> {
        validate_table_name(name)?;
        self.exists_here(name)
    }

    async fn create_table(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        validate_table_name(name)?;
        let Some(first) = batches.first() else {
            return Err(Error::InvalidArgument(format!(
                "creating {name:?} needs at least one batch to take its schema from; \
                 use create_empty_table for a table without rows"
            ))
            .into());
        };
        let schema = first.schema();
        self.create(name, batches, schema).await
    }

    async fn create_empty_table(&self, name: &str, schema: Arc<Schema>) -> Result<()> {
        self.create(name, vec![], schema).await
    }

    async fn open_or_create_table(&self, name: &str, schema: Arc<Schema>) -> Result<()> {
        validate_table_name(name)?;
        if self.exists_here(name)? {
            return Ok(());
        }
        match self.create(name, vec![], schema).await {
            Err(e) if matches!(Error::of(&e), Some(Error::TableExists(_))) => Ok(()),
            other => other,
        }
    }

    async fn drop_table(&self, name: &str) -> Result<()> {
        self.writable()?;
        validate_table_name(name)?;
        let _gate = self.core.gate.read().await;
        let lock = self.core.op_lock(&self.name, name);
        let _g = lock.lock().await;
        self.table_ref(name)?;
        // Hidden on this branch only; the data stays for other branches.
        // What no other branch, tag or merge base reads is collected.
        let tables = vec![(name.to_string(), None)];
        let candidates = std::iter::once(name.to_string()).collect();
        let logged = self
            .core
            .publish_with(&self.name, self.id, tables, |_| Ok(vec![]), candidates)
            .await?;
        self.core.run_collects(&logged).await
    }

    async fn notify_table_created(&self, name: &str) {
        self.core.inner.notify_table_created(name).await;
    }

    async fn scan(&self, request: ScanRequest) -> Result<Vec<RecordBatch>> {
        let table = request.table.clone();
        self.follow(&table, || {
            let req = self.inner_scan(request)?;
            Ok(self.core.inner.scan(req))
        })
        .await
    }

    async fn scan_stream(&self, request: ScanRequest) -> Result<RecordBatchStream> {
        let table = request.table.clone();
        let at = self.core.catalog.read().applied;
        let stream = self
            .follow(&table, || {
                let req = self.inner_scan(request)?;
                Ok(self.core.inner.scan_stream(req))
            })
            .await?;
        if !self.core.catalog.is_read_only() {
            return Ok(stream);
        }
        // A follower's stream ends with the check of what it read.
        let check = check_followed(self.core.catalog.clone(), at, table, false);
        let check =
            futures::stream::once(check).filter_map(|r| std::future::ready(r.err().map(Err)));
        Ok(Box::pin(stream.chain(check)))
    }

    async fn get_table_schema(&self, name: &str) -> Result<Option<Arc<Schema>>> {
        validate_table_name(name)?;
        if !self.exists_here(name)? {
            return Ok(None);
        }
        let schema = self
            .follow(name, || {
                let r = self.table_ref(name)?;
                let inner = self.core.inner.clone();
                Ok(async move {
                    inner
                        .schema_at(name, r.line.as_deref(), Some(r.version))
                        .await
                })
            })
            .await?;
        Ok(Some(schema))
    }

    async fn count_rows(&self, table_name: &str, filter: Option<&str>) -> Result<usize> {
        self.follow(table_name, || {
            let r = self.table_ref(table_name)?;
            let inner = self.core.inner.clone();
            Ok(async move {
                inner
                    .count_rows_at(table_name, r.line.as_deref(), Some(r.version), filter)
                    .await
            })
        })
        .await
    }

    async fn write(
        &self,
        table_name: &str,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<()> {
        validate_table_name(table_name)?;
        let lock = self.core.user_lock(&self.name, table_name);
        let _u = lock.lock().await;
        self.mutate(table_name, move |inner, line| async move {
            inner
                .write_line(table_name, line.as_deref(), batches, mode)
                .await
        })
        .await
    }

    async fn merge_insert(
        &self,
        table_name: &str,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        validate_table_name(table_name)?;
        let lock = self.core.user_lock(&self.name, table_name);
        let _u = lock.lock().await;
        self.mutate(table_name, move |inner, line| async move {
            inner
                .merge_insert_line(table_name, line.as_deref(), on, batches)
                .await
        })
        .await
    }

    async fn delete_rows(&self, table_name: &str, filter: &str) -> Result<()> {
        crate::backend::check_raw_filter(filter)?;
        self.mutate(table_name, move |inner, line| async move {
            inner
                .delete_rows_line(table_name, line.as_deref(), filter)
                .await
                .map(Some)
        })
        .await
    }

    async fn replace_table_atomic(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<()> {
        validate_table_name(name)?;
        // Create it when missing, else overwrite it; a concurrent create or
        // drop between the check and the change makes the other one right,
        // so try again (each retry means another operation went first).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (b, s) = (batches.clone(), schema.clone());
            let result = if self.exists_here(name)? {
                self.mutate_at(
                    name,
                    FailPoint::ReplaceAfterCommitBeforePublish,
                    move |inner, line| async move {
                        inner
                            .overwrite_line(name, line.as_deref(), b, s)
                            .await
                            .map(Some)
                    },
                )
                .await
            } else {
                self.create(name, b, s).await
            };
            match result {
                Err(e)
                    if attempts < 16
                        && matches!(
                            Error::of(&e),
                            Some(Error::TableExists(_) | Error::TableNotFound(_))
                        ) => {}
                other => return other,
            }
        }
    }

    async fn lock_table_for_write(&self, name: &str) -> TableWriteGuard {
        TableWriteGuard::held(self.core.user_lock(&self.name, name).lock_owned().await)
    }

    async fn get_table_version(&self, table_name: &str) -> Result<Option<u64>> {
        validate_table_name(table_name)?;
        if !self.exists_here(table_name)? {
            return Ok(None);
        }
        Ok(Some(self.table_ref(table_name)?.version))
    }

    async fn rollback_table(&self, table_name: &str, target_version: u64) -> Result<()> {
        self.do_rollback(table_name, target_version).await
    }

    async fn optimize_table(&self, table_name: &str) -> Result<()> {
        self.do_optimize(table_name).await
    }

    async fn recover_staging(&self, table_name: &str) -> Result<()> {
        self.do_recover_staging(table_name).await
    }

    fn invalidate_cache(&self, table_name: &str) {
        self.core.inner.invalidate_cache(table_name);
    }

    fn clear_cache(&self) {
        self.core.inner.clear_cache();
    }

    fn base_uri(&self) -> &str {
        &self.base_uri
    }

    fn supports_vector_search(&self) -> bool {
        self.core.inner.supports_vector_search()
    }

    fn supports_full_text_search(&self) -> bool {
        self.core.inner.supports_full_text_search()
    }

    fn supports_scalar_index(&self) -> bool {
        self.core.inner.supports_scalar_index()
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
        self.follow(table, || {
            let opts = self.inner_opts(table, opts)?;
            Ok(self
                .core
                .inner
                .vector_search(table, column, query, k, metric, filter, opts))
        })
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
        self.follow(table, || {
            let opts = self.inner_opts(table, opts)?;
            Ok(self
                .core
                .inner
                .multivector_search(table, column, query, k, metric, filter, opts))
        })
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
        self.follow(table, || {
            let r = self.table_ref(table)?;
            let inner = self.core.inner.clone();
            Ok(async move {
                inner
                    .full_text_search_at(
                        table,
                        r.line.as_deref(),
                        Some(r.version),
                        column,
                        query,
                        k,
                        filter,
                    )
                    .await
            })
        })
        .await
    }

    async fn create_vector_index(
        &self,
        table: &str,
        column: &str,
        name: &str,
        params: VectorIndexParams,
    ) -> Result<()> {
        self.mutate(table, move |inner, line| async move {
            inner
                .create_vector_index_line(table, line.as_deref(), column, name, params)
                .await
                .map(Some)
        })
        .await
    }

    async fn create_fts_index(
        &self,
        table: &str,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<()> {
        self.mutate(table, move |inner, line| async move {
            inner
                .create_fts_index_line(table, line.as_deref(), columns, name, with_positions)
                .await
                .map(Some)
        })
        .await
    }

    async fn create_scalar_index(
        &self,
        table: &str,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<()> {
        self.mutate(table, move |inner, line| async move {
            inner
                .create_scalar_index_line(table, line.as_deref(), columns, index_type, name)
                .await
                .map(Some)
        })
        .await
    }

    async fn drop_index(&self, table: &str, index_name: &str) -> Result<()> {
        self.mutate(table, move |inner, line| async move {
            inner
                .drop_index_line(table, line.as_deref(), index_name)
                .await
                .map(Some)
        })
        .await
    }

    async fn list_indexes(&self, table: &str) -> Result<Vec<IndexInfo>> {
        self.follow(table, || {
            let r = self.table_ref(table)?;
            let inner = self.core.inner.clone();
            Ok(async move {
                inner
                    .list_indexes_at(table, r.line.as_deref(), Some(r.version))
                    .await
            })
        })
        .await
    }
}
