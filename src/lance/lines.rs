//! `impl BranchLines for LanceDbBackend`: line-level primitives on Lance
//! branches.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;
use lance::dataset::refs::Ref;

use crate::backend::{
    BranchLines, Error, FilterExpr, IndexInfo, RowChangeStreams, RowChanges, ScalarIndexType,
    VectorIndexParams, WriteMode,
};
use crate::lance::backend::{LanceDbBackend, map_lancedb};

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl BranchLines for LanceDbBackend {
    async fn latest_version(&self, table: &str, branch: Option<&str>) -> Result<u64> {
        self.line_version(table, branch).await
    }

    async fn schema_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Arc<Schema>> {
        let t = self.table_at(table, branch, version).await?;
        t.schema().await.map_err(|e| map_lancedb(e, table))
    }

    async fn create_line(
        &self,
        table: &str,
        branch: &str,
        from: Option<&str>,
        version: u64,
    ) -> Result<()> {
        self.forget_line(table, branch);
        let tree = self.tree_lock(table);
        let _shared = tree.read().await;
        let ds = self.dataset(table).await?;
        let mut ds = (*ds).clone();
        let from = Ref::Version(from.map(str::to_string), Some(version));
        let made = ds
            .create_branch(branch, from, None)
            .await
            .with_context(|| format!("creating branch {branch:?} of {table:?} at v{version}"));
        // And again: a handle opened while the branch changed is dropped.
        self.forget_line(table, branch);
        made.map(|_| ())
    }

    async fn drop_line(&self, table: &str, branch: &str) -> Result<()> {
        self.forget_line(table, branch);
        let tree = self.tree_lock(table);
        let _shared = tree.read().await;
        let ds = self.dataset(table).await?;
        let mut ds = (*ds).clone();
        match ds.force_delete_branch(branch).await {
            Ok(()) => {}
            Err(e) if e.to_string().to_lowercase().contains("not found") => {}
            Err(e) => {
                self.forget_line(table, branch);
                return Err(anyhow::Error::new(e)
                    .context(format!("deleting branch {branch:?} of {table:?}")));
            }
        }
        self.forget_line(table, branch);
        // Remove what is left of the branch's directory on a local disk:
        // the object store removes files, not directories, and a deletion
        // cut short (a crash) leaves files that a second
        // `force_delete_branch` no longer finds. The line is dead: nothing
        // the catalog reads lives under it (lines forked from it are
        // deleted first).
        let uri = self.table_uri(table);
        if let Some((store, path)) = self.object_dir(table).await? {
            let dir = branch.split('/').fold(path.join("tree"), |p, s| p.join(s));
            store
                .remove_dir_all(dir)
                .await
                .with_context(|| format!("removing the objects of branch {branch:?}"))?;
        } else if !uri.contains("://") {
            let dir = std::path::Path::new(&uri).join("tree").join(branch);
            tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await?
            .with_context(|| format!("removing the directory of branch {branch:?}"))?;
        }
        Ok(())
    }

    async fn list_lines(&self, table: &str) -> Result<Vec<String>> {
        let ds = self.dataset(table).await?;
        let mut all: std::collections::BTreeSet<String> = ds
            .list_branches()
            .await
            .with_context(|| format!("listing the branches of {table:?}"))?
            .into_keys()
            .collect();
        let uri = self.table_uri(table);
        if let Some((store, path)) = self.object_dir(table).await? {
            let dirs = store
                .read_dir(path.join("tree"))
                .await
                .with_context(|| format!("listing the branch prefixes of {table:?}"))?;
            all.extend(dirs);
        } else if !uri.contains("://") {
            let tree = std::path::Path::new(&uri).join("tree");
            let dirs = tokio::task::spawn_blocking(move || tree_dirs(&tree))
                .await?
                .with_context(|| format!("listing the branch directories of {table:?}"))?;
            all.extend(dirs);
        }
        Ok(all.into_iter().collect())
    }

    async fn purge_table(&self, table: &str) -> Result<()> {
        crate::backend::validate_table_name(table)?;
        self.forget_made(table);
        match self.do_drop_table(table).await {
            Ok(()) => {}
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => {}
            Err(e) => return Err(e),
        }
        // What a failed create left may not open as a dataset: remove it.
        let uri = self.table_uri(table);
        if let Some((store, path)) = self.object_dir(table).await? {
            store
                .remove_dir_all(path)
                .await
                .with_context(|| format!("removing the objects of table {table:?}"))?;
        } else if !uri.contains("://") {
            let dir = std::path::PathBuf::from(uri);
            tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await?
            .with_context(|| format!("removing the files of table {table:?}"))?;
        }
        Ok(())
    }

    async fn write_line(
        &self,
        table: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<Option<u64>> {
        let v = LanceDbBackend::write_line(self, table, branch, batches, mode).await?;
        Ok(v.map(|v| self.made(table, branch, v, None)))
    }

    async fn merge_insert_line(
        &self,
        table: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>> {
        let v = LanceDbBackend::merge_insert_line(self, table, branch, on, batches).await?;
        Ok(v.map(|v| self.made(table, branch, v, None)))
    }

    async fn upsert_line(
        &self,
        table: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>> {
        let v = LanceDbBackend::merge_line(self, table, branch, on, batches, true).await?;
        Ok(v.map(|v| self.made(table, branch, v, None)))
    }

    async fn delete_rows_line(
        &self,
        table: &str,
        branch: Option<&str>,
        filter: &str,
    ) -> Result<u64> {
        let v = self.delete_line(table, branch, filter).await?;
        Ok(self.made(table, branch, v, None))
    }

    async fn delete_by_row_ids_line(
        &self,
        table: &str,
        branch: Option<&str>,
        key: &[String],
        rows: &[(u64, RecordBatch)],
    ) -> Result<(Option<u64>, Vec<usize>)> {
        let t = self.line_table(table, branch).await?;
        let _guard = self.lock(&crate::lance::ops::line_key(table, branch)).await;
        let ds = crate::lance::ops::line_dataset(&t, table).await?;
        let (new, left) = crate::lance::take::delete_by_row_ids(&ds, table, key, rows).await?;
        let Some(new) = new else {
            return Ok((None, left));
        };
        t.checkout_latest()
            .await
            .map_err(|e| map_lancedb(e, table))?;
        Ok((
            Some(self.made(table, branch, new.version().version, None)),
            left,
        ))
    }

    async fn overwrite_line(
        &self,
        table: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        schema: Arc<Schema>,
    ) -> Result<u64> {
        let v = LanceDbBackend::overwrite_line(self, table, branch, batches, schema).await?;
        Ok(self.made(table, branch, v, None))
    }

    async fn restore_line(&self, table: &str, branch: Option<&str>, version: u64) -> Result<u64> {
        let v = LanceDbBackend::restore_line(self, table, branch, version).await?;
        Ok(self.made(table, branch, v, Some(version)))
    }

    async fn optimize_line(
        &self,
        table: &str,
        branch: Option<&str>,
        keep_from: Option<u64>,
    ) -> Result<u64> {
        // Several commits (compaction, index upkeep): the range is noted.
        let before = self.line_version(table, branch).await?;
        let v = LanceDbBackend::optimize_line(self, table, branch, keep_from).await?;
        self.made_range(table, branch, before, v);
        Ok(v)
    }

    async fn count_rows_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
        filter: Option<&str>,
    ) -> Result<usize> {
        LanceDbBackend::count_rows_at(self, table, branch, version, filter).await
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
        self.fts_at(table, branch, version, column, query, k, filter)
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
        let before = self.line_version(table, branch).await?;
        let v = LanceDbBackend::create_vector_index_line(self, table, branch, column, name, params)
            .await?;
        self.made_range(table, branch, before, v);
        Ok(v)
    }

    async fn create_fts_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<u64> {
        let before = self.line_version(table, branch).await?;
        let v = LanceDbBackend::create_fts_index_line(
            self,
            table,
            branch,
            columns,
            name,
            with_positions,
        )
        .await?;
        self.made_range(table, branch, before, v);
        Ok(v)
    }

    async fn create_scalar_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        index_type: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<u64> {
        let before = self.line_version(table, branch).await?;
        let v = LanceDbBackend::create_scalar_index_line(
            self, table, branch, columns, index_type, name,
        )
        .await?;
        self.made_range(table, branch, before, v);
        Ok(v)
    }

    async fn drop_index_line(&self, table: &str, branch: Option<&str>, name: &str) -> Result<u64> {
        let v = LanceDbBackend::drop_index_line(self, table, branch, name).await?;
        Ok(self.made(table, branch, v, None))
    }

    async fn row_changes(
        &self,
        table: &str,
        branch: Option<&str>,
        begin: u64,
        end: u64,
    ) -> Result<RowChanges> {
        use futures::TryStreamExt;
        let streams = self.row_change_streams(table, branch, begin, end).await?;
        let inserted: Vec<RecordBatch> = streams.inserted.try_collect().await?;
        let updated: Vec<RecordBatch> = streams.updated.try_collect().await?;
        let deleted: Vec<Vec<u64>> = streams.deleted.try_collect().await?;
        Ok(RowChanges {
            inserted,
            updated,
            deleted: deleted.concat(),
        })
    }

    async fn row_change_streams(
        &self,
        table: &str,
        branch: Option<&str>,
        begin: u64,
        end: u64,
    ) -> Result<RowChangeStreams> {
        use futures::{StreamExt, TryStreamExt};
        if begin == end {
            return Ok(RowChanges::default().into());
        }
        let t = self
            .table_at(table, Some(branch.unwrap_or("main")), Some(end))
            .await?;
        let ds = crate::lance::ops::line_dataset(&t, table).await?;
        let delta = ds
            .delta()
            .with_begin_version(begin)
            .with_end_version(end)
            .build()
            .with_context(|| format!("row changes of {table:?} v{begin}..v{end}"))?;
        let rows = |s: lance::dataset::scanner::DatasetRecordBatchStream| {
            s.map_err(anyhow::Error::from)
                .try_filter(|b| futures::future::ready(b.num_rows() > 0))
                .and_then(|b| futures::future::ready(strip_version_columns(&b)))
                .boxed()
        };
        let inserted = rows(delta.get_inserted_rows().await?);
        let updated = rows(delta.get_updated_rows().await?);
        let deleted = delta
            .get_deleted_row_ids()
            .await?
            .map_err(anyhow::Error::from)
            .map_ok(|b| {
                b.column_by_name("_rowid")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt64Array>())
                    .map(|ids| ids.values().to_vec())
                    .unwrap_or_default()
            })
            .boxed();
        Ok(RowChangeStreams {
            inserted,
            updated,
            deleted,
        })
    }

    async fn take_rows_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: u64,
        row_ids: &[u64],
    ) -> Result<Vec<RecordBatch>> {
        if row_ids.is_empty() {
            return Ok(vec![]);
        }
        let t = self
            .table_at(table, Some(branch.unwrap_or("main")), Some(version))
            .await?;
        let ds = crate::lance::ops::line_dataset(&t, table).await?;
        let mut columns: Vec<String> = ds.schema().fields.iter().map(|f| f.name.clone()).collect();
        if let Some(batch) =
            crate::lance::take::take_live_rows(&ds, table, row_ids, &columns).await?
        {
            return Ok(vec![batch]);
        }
        columns.push("_rowid".to_string());
        let projection = lance::dataset::ProjectionRequest::from_columns(&columns, ds.schema());
        let batch = ds
            .take_rows(row_ids, projection)
            .await
            .with_context(|| format!("reading rows of {table:?} at v{version}"))?;
        Ok(vec![batch])
    }

    async fn add_null_columns_line(
        &self,
        table: &str,
        branch: Option<&str>,
        fields: Arc<Schema>,
    ) -> Result<u64> {
        let t = self.line_table(table, branch).await?;
        let _guard = self.lock(&crate::lance::ops::line_key(table, branch)).await;
        let ds = crate::lance::ops::line_dataset(&t, table).await?;
        let mut ds = (*ds).clone();
        ds.add_columns(
            lance::dataset::NewColumnTransform::AllNulls(fields),
            None,
            None,
        )
        .await
        .with_context(|| format!("adding columns to {table:?}"))?;
        t.checkout_latest()
            .await
            .map_err(|e| map_lancedb(e, table))?;
        Ok(self.made(table, branch, ds.version().version, None))
    }

    async fn list_indexes_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<IndexInfo>> {
        LanceDbBackend::list_indexes_at(self, table, branch, version).await
    }

    async fn object_base(&self) -> Result<Option<crate::backend::ObjectBase>> {
        LanceDbBackend::object_base(self).await
    }

    fn own_commits(
        &self,
        table: &str,
        branch: Option<&str>,
        after: u64,
        upto: u64,
    ) -> Option<bool> {
        Some(self.made_all(table, branch, after, upto))
    }
}

/// Remove `dir` if it holds only (nested) empty directories.
/// The directory names directly under `tree` (none if it does not exist).
fn tree_dirs(tree: &std::path::Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(tree) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

pub(crate) fn remove_empty_tree(dir: &std::path::Path) -> std::io::Result<()> {
    fn only_dirs(dir: &std::path::Path) -> std::io::Result<bool> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() || !only_dirs(&entry.path())? {
                return Ok(false);
            }
        }
        Ok(true)
    }
    match only_dirs(dir) {
        Ok(true) => std::fs::remove_dir_all(dir),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A change batch without Lance's per-row version columns.
fn strip_version_columns(b: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = b
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            !matches!(
                f.name().as_str(),
                "_row_created_at_version" | "_row_last_updated_at_version"
            )
        })
        .map(|(i, _)| i)
        .collect();
    Ok(b.project(&keep)?)
}
