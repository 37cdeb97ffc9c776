//! Table lifecycle, reads, writes, versions and maintenance of [`LanceDbBackend`].

use anyhow::{Context, Result};
use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use lance::dataset::cleanup::CleanupPolicy;
use lancedb::database::CreateTableMode;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::AddDataMode;
use lancedb::table::optimize::OptimizeAction;

use crate::backend::{
    Error, RecordBatchStream, ScanRequest, WriteMode, check_raw_filter, validate_table_name,
};
use crate::lance::backend::{
    LanceDbBackend, common_schema, conform_append, conform_subset, map_lancedb, validate_filter,
};

fn reader(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Box<dyn arrow_array::RecordBatchReader + Send> {
    Box::new(RecordBatchIterator::new(
        batches.into_iter().map(Ok),
        schema,
    ))
}

impl LanceDbBackend {
    pub(crate) async fn do_table_names(&self) -> Result<Vec<String>> {
        let mut names = self
            .conn
            .table_names()
            .execute()
            .await
            .context("listing tables")?;
        names.retain(|n| validate_table_name(n).is_ok());
        Ok(names)
    }

    pub(crate) async fn do_table_exists(&self, name: &str) -> Result<bool> {
        validate_table_name(name)?;
        if let Some(known) = self.cached_existence(name) {
            return Ok(known);
        }
        match self.table(name).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn do_create_table(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        validate_table_name(name)?;
        let schema = common_schema(name, &batches)?;
        self.conn
            .create_table(name, reader(schema, batches))
            .mode(CreateTableMode::Create)
            .execute()
            .await
            .map_err(|e| map_lancedb(e, name))?;
        self.remember(name);
        Ok(())
    }

    pub(crate) async fn do_create_empty_table(&self, name: &str, schema: SchemaRef) -> Result<()> {
        validate_table_name(name)?;
        self.conn
            .create_empty_table(name, schema)
            .mode(CreateTableMode::Create)
            .execute()
            .await
            .map_err(|e| map_lancedb(e, name))?;
        self.remember(name);
        Ok(())
    }

    pub(crate) async fn do_open_or_create(&self, name: &str, schema: SchemaRef) -> Result<()> {
        match self.table(name).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => {
                match self.do_create_empty_table(name, schema).await {
                    // Lost a race with another creator: the table exists, as asked.
                    Err(e) if matches!(Error::of(&e), Some(Error::TableExists(_))) => {
                        self.forget(name);
                        self.table(name).await.map(|_| ())
                    }
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn do_drop_table(&self, name: &str) -> Result<()> {
        validate_table_name(name)?;
        // Ask the store, not the cache: a typo must not "succeed".
        self.forget(name);
        if !self.do_table_exists(name).await? {
            return Err(Error::TableNotFound(name.to_string()).into());
        }
        let result = self.conn.drop_table(name, &[]).await;
        self.set_existence(name, false);
        result.map_err(|e| map_lancedb(e, name))?;
        // The object store removes files, not directories: remove the
        // empty directory tree left on a local disk, or the dataset would
        // still be listed.
        let uri = self.table_uri(name);
        if !uri.contains("://") {
            let dir = std::path::PathBuf::from(uri);
            tokio::task::spawn_blocking(move || crate::lance::lines::remove_empty_tree(&dir))
                .await?
                .with_context(|| format!("removing the directory of table {name:?}"))?;
        }
        Ok(())
    }

    fn remember(&self, name: &str) {
        // Drop any stale handle; the next call opens a fresh one.
        self.forget(name);
        self.set_existence(name, true);
    }

    pub(crate) fn notify_created(&self, name: &str) {
        self.forget(name);
        self.set_existence(name, true);
    }

    // ---- reads ----

    async fn query_for(&self, req: &ScanRequest) -> Result<lancedb::query::Query> {
        let table = self
            .table_at(&req.table, req.line.as_deref(), req.version)
            .await?;
        let schema = table
            .schema()
            .await
            .map_err(|e| map_lancedb(e, &req.table))?;
        let mut q = table.query();
        if let Some(cols) = &req.columns {
            for c in cols {
                if schema.field_with_name(c).is_err()
                    && !matches!(c.as_str(), "_rowid" | "_rowaddr")
                {
                    return Err(Error::InvalidColumn {
                        table: req.table.clone(),
                        column: c.clone(),
                        detail: "no such column".into(),
                    }
                    .into());
                }
            }
            q = q.select(Select::columns(cols));
        }
        if let Some(f) = &req.filter {
            validate_filter(&schema, f)?;
            q = q.only_if(f);
        }
        if let Some(limit) = req.limit {
            q = q.limit(limit);
        }
        Ok(q)
    }

    pub(crate) async fn do_scan_stream(&self, req: ScanRequest) -> Result<RecordBatchStream> {
        let table = req.table.clone();
        if req.limit == Some(0) {
            return Ok(futures::stream::empty().boxed());
        }
        let q = self.query_for(&req).await?;
        let stream = q.execute().await.map_err(|e| map_lancedb(e, &table))?;
        Ok(stream
            .map_err(move |e| anyhow::Error::new(e).context(format!("scanning {table:?}")))
            .boxed())
    }

    pub(crate) async fn do_scan(&self, req: ScanRequest) -> Result<Vec<RecordBatch>> {
        let batches: Vec<RecordBatch> = self.do_scan_stream(req).await?.try_collect().await?;
        Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    pub(crate) async fn do_schema(&self, name: &str) -> Result<Option<SchemaRef>> {
        match self.table(name).await {
            Ok(t) => Ok(Some(t.schema().await.map_err(|e| map_lancedb(e, name))?)),
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn count_rows_at(
        &self,
        name: &str,
        branch: Option<&str>,
        version: Option<u64>,
        filter: Option<&str>,
    ) -> Result<usize> {
        let table = self.table_at(name, branch, version).await?;
        if let Some(f) = filter {
            let schema = table.schema().await.map_err(|e| map_lancedb(e, name))?;
            validate_filter(&schema, f)?;
        }
        table
            .count_rows(filter.map(str::to_string))
            .await
            .map_err(|e| map_lancedb(e, name))
    }

    // ---- writes ----

    /// Write to a line (main or a Lance branch); the new version, or `None`
    /// when nothing was committed (an empty append).
    pub(crate) async fn write_line(
        &self,
        name: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<Option<u64>> {
        let table = self.line_table(name, branch).await?;
        let _guard = self.lock(&line_key(name, branch)).await;
        let version = match mode {
            WriteMode::Append => {
                let schema = table.schema().await.map_err(|e| map_lancedb(e, name))?;
                let batches = conform_append(name, &schema, batches)?;
                if batches.iter().all(|b| b.num_rows() == 0) {
                    return Ok(None);
                }
                table
                    .add(reader(schema, batches))
                    .mode(AddDataMode::Append)
                    .execute()
                    .await
                    .map_err(|e| map_lancedb(e, name))?
                    .version
            }
            WriteMode::Overwrite => {
                let schema = match batches.first() {
                    Some(_) => common_schema(name, &batches)?,
                    None => table.schema().await.map_err(|e| map_lancedb(e, name))?,
                };
                self.overwrite(&table, name, schema, batches).await?
            }
        };
        Ok(Some(version))
    }

    async fn overwrite(
        &self,
        table: &lancedb::Table,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<u64> {
        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(schema.clone())]
        } else {
            batches
        };
        Ok(table
            .add(reader(schema, batches))
            .mode(AddDataMode::Overwrite)
            .execute()
            .await
            .map_err(|e| map_lancedb(e, name))?
            .version)
    }

    pub(crate) async fn merge_insert_line(
        &self,
        name: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
    ) -> Result<Option<u64>> {
        self.merge_line(name, branch, on, batches, false).await
    }

    /// One Lance merge-insert on a line: matched rows take the source's
    /// values; unmatched source rows are inserted when `insert`, else
    /// dropped.
    pub(crate) async fn merge_line(
        &self,
        name: &str,
        branch: Option<&str>,
        on: &[&str],
        batches: Vec<RecordBatch>,
        insert: bool,
    ) -> Result<Option<u64>> {
        if on.is_empty() {
            return Err(Error::InvalidArgument(
                "merge_insert needs at least one key column".into(),
            )
            .into());
        }
        let table = self.line_table(name, branch).await?;
        let _guard = self.lock(&line_key(name, branch)).await;
        let schema = table.schema().await.map_err(|e| map_lancedb(e, name))?;
        for key in on {
            if schema.field_with_name(key).is_err() {
                return Err(Error::InvalidColumn {
                    table: name.to_string(),
                    column: key.to_string(),
                    detail: "merge key is not a column of the table".into(),
                }
                .into());
            }
        }
        let batches = conform_subset(name, &schema, batches)?;
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let src_schema = first.schema();
        for key in on {
            if src_schema.field_with_name(key).is_err() {
                return Err(Error::InvalidColumn {
                    table: name.to_string(),
                    column: key.to_string(),
                    detail: "merge key is missing from the source batches".into(),
                }
                .into());
            }
        }
        if batches
            .iter()
            .any(|b| b.schema().fields() != src_schema.fields())
        {
            return Err(Error::SchemaMismatch {
                table: name.to_string(),
                detail: "the source batches do not share one schema".into(),
            }
            .into());
        }
        let mut builder = table.merge_insert(on);
        builder.when_matched_update_all(None);
        if insert {
            builder.when_not_matched_insert_all();
        }
        let result = builder
            .execute(reader(src_schema, batches))
            .await
            .map_err(|e| map_lancedb(e, name))?;
        Ok(Some(result.version))
    }

    pub(crate) async fn delete_line(
        &self,
        name: &str,
        branch: Option<&str>,
        filter: &str,
    ) -> Result<u64> {
        check_raw_filter(filter)?;
        let table = self.line_table(name, branch).await?;
        let schema = table.schema().await.map_err(|e| map_lancedb(e, name))?;
        validate_filter(&schema, filter)?;
        Ok(table
            .delete(filter)
            .await
            .map_err(|e| map_lancedb(e, name))?
            .version)
    }

    /// Replace the contents of an existing line in one overwrite commit.
    pub(crate) async fn overwrite_line(
        &self,
        name: &str,
        branch: Option<&str>,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<u64> {
        let batches = fit_to_schema(name, batches, &schema)?;
        let table = self.line_table(name, branch).await?;
        self.overwrite(&table, name, schema, batches).await
    }

    pub(crate) async fn do_replace(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<()> {
        validate_table_name(name)?;
        let batches = fit_to_schema(name, batches, &schema)?;
        match self.table(name).await {
            Ok(table) => self
                .overwrite(&table, name, schema, batches)
                .await
                .map(|_| ()),
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => {
                let rows = if batches.is_empty() {
                    vec![RecordBatch::new_empty(schema.clone())]
                } else {
                    batches
                };
                let created = self
                    .conn
                    .create_table(name, reader(schema.clone(), rows.clone()))
                    .mode(CreateTableMode::Create)
                    .execute()
                    .await;
                match created {
                    Ok(_) => {
                        self.remember(name);
                        Ok(())
                    }
                    // Someone created it meanwhile: replace its contents instead.
                    Err(lancedb::Error::TableAlreadyExists { .. }) => {
                        self.forget(name);
                        let table = self.table(name).await?;
                        self.overwrite(&table, name, schema, rows).await.map(|_| ())
                    }
                    Err(e) => Err(map_lancedb(e, name)),
                }
            }
            Err(e) => Err(e),
        }
    }

    // ---- versions ----

    pub(crate) async fn do_version(&self, name: &str) -> Result<Option<u64>> {
        match self.table(name).await {
            Ok(t) => Ok(Some(t.version().await.map_err(|e| map_lancedb(e, name))?)),
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest version of a line.
    pub(crate) async fn line_version(&self, name: &str, branch: Option<&str>) -> Result<u64> {
        let table = self.line_table(name, branch).await?;
        table.version().await.map_err(|e| map_lancedb(e, name))
    }

    /// Commit the contents of `version` of a line as its newest version.
    pub(crate) async fn restore_line(
        &self,
        name: &str,
        branch: Option<&str>,
        version: u64,
    ) -> Result<u64> {
        let table = self.line_table(name, branch).await?;
        let versions = table
            .list_versions()
            .await
            .map_err(|e| map_lancedb(e, name))?;
        if !versions.iter().any(|v| v.version == version) {
            return Err(Error::VersionNotFound {
                table: name.to_string(),
                version,
            }
            .into());
        }
        let _guard = self.lock(&line_key(name, branch)).await;
        // A handle of its own: restore() turns it into a handle of the
        // latest version, so it must not be a cached snapshot handle.
        let pinned = self
            .table(name)
            .await?
            .checkout_branch(branch.unwrap_or("main"), Some(version))
            .await
            .map_err(|e| map_lancedb(e, name))?;
        pinned.restore().await.map_err(|e| map_lancedb(e, name))?;
        table
            .checkout_latest()
            .await
            .map_err(|e| map_lancedb(e, name))?;
        table.version().await.map_err(|e| map_lancedb(e, name))
    }

    // ---- maintenance ----

    /// Compact a line, prune versions older than the retention (never a
    /// tagged one, nor any version `>= keep_from`), optimize its indexes;
    /// returns the line's newest version.
    pub(crate) async fn optimize_line(
        &self,
        name: &str,
        branch: Option<&str>,
        keep_from: Option<u64>,
    ) -> Result<u64> {
        let table = self.line_table(name, branch).await?;
        let _guard = self.lock(&line_key(name, branch)).await;
        table
            .optimize(OptimizeAction::Compact {
                options: Default::default(),
                remap_options: None,
            })
            .await
            .map_err(|e| map_lancedb(e, name))?;
        let older_than = lancedb::table::Duration::from_std(self.opts.cleanup_older_than)
            .map_err(|e| Error::InvalidArgument(format!("cleanup_older_than: {e}")))?;
        // A cleanup reads every branch's manifests: no branch of the
        // dataset is created or dropped meanwhile.
        let tree = self.tree_lock(name);
        let exclusive = tree.write().await;
        match keep_from {
            None => {
                table
                    .optimize(OptimizeAction::Prune {
                        older_than: Some(older_than),
                        delete_unverified: Some(false),
                        error_if_tagged_old_versions: Some(false),
                    })
                    .await
                    .map_err(|e| map_lancedb(e, name))?;
            }
            Some(keep) => {
                let ds = line_dataset(&table, name).await?;
                let policy = CleanupPolicy {
                    before_timestamp: Some(chrono::Utc::now() - older_than),
                    before_version: Some(keep),
                    delete_unverified: false,
                    error_if_tagged_old_versions: false,
                    ..CleanupPolicy::default()
                };
                ds.cleanup_with_policy(policy)
                    .await
                    .with_context(|| format!("pruning old versions of {name:?}"))?;
            }
        }
        drop(exclusive);
        table
            .optimize(OptimizeAction::Index(Default::default()))
            .await
            .map_err(|e| map_lancedb(e, name))?;
        table.version().await.map_err(|e| map_lancedb(e, name))
    }

    pub(crate) async fn do_recover_staging(&self, name: &str) -> Result<()> {
        if !self.do_table_exists(name).await? {
            // Nothing of the table survived: nothing to recover.
            return Ok(());
        }
        let _guard = self.lock(name).await;
        let tree = self.tree_lock(name);
        let _exclusive = tree.write().await;
        let ds = self.dataset(name).await?;
        // Keep every version; delete only files that no version references
        // (left by a commit that never wrote its manifest).
        let policy = CleanupPolicy {
            before_version: Some(0),
            delete_unverified: true,
            error_if_tagged_old_versions: false,
            ..CleanupPolicy::default()
        };
        ds.cleanup_with_policy(policy)
            .await
            .with_context(|| format!("removing unreferenced files of {name:?}"))?;
        Ok(())
    }
}

/// The lock key of a line.
pub(crate) fn line_key(name: &str, branch: Option<&str>) -> String {
    match branch {
        None => name.to_string(),
        Some(b) => format!("{name}\u{0}{b}"),
    }
}

/// The Lance dataset behind a LanceDB table handle.
pub(crate) async fn line_dataset(
    table: &lancedb::Table,
    name: &str,
) -> Result<std::sync::Arc<lance::dataset::Dataset>> {
    let wrapper = table
        .dataset()
        .ok_or_else(|| anyhow::anyhow!("table {name:?} is not a native Lance table"))?;
    Ok(wrapper.get().await?)
}

/// Check that every batch has `schema`'s columns and types, and give it
/// exactly that schema.
fn fit_to_schema(
    name: &str,
    batches: Vec<RecordBatch>,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    for b in &batches {
        if !crate::lance::backend::same_shape(&b.schema(), schema) {
            return Err(Error::SchemaMismatch {
                table: name.to_string(),
                detail: "a batch does not have the schema given to replace_table_atomic".into(),
            }
            .into());
        }
    }
    let fitted: Vec<RecordBatch> = batches
        .into_iter()
        .map(|b| b.with_schema(schema.clone()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::SchemaMismatch {
            table: name.to_string(),
            detail: e.to_string(),
        })?;
    Ok(fitted)
}
