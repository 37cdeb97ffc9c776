//! Vector, multi-vector and full-text search, and index management, of
//! [`LanceDbBackend`].

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use futures::TryStreamExt;
use lancedb::DistanceType;
use lancedb::index::Index;
use lancedb::index::scalar::{
    BTreeIndexBuilder, BitmapIndexBuilder, FtsIndexBuilder, FullTextSearchQuery,
    LabelListIndexBuilder,
};
use lancedb::index::vector::{
    IvfFlatIndexBuilder, IvfHnswFlatIndexBuilder, IvfHnswPqIndexBuilder, IvfHnswSqIndexBuilder,
    IvfPqIndexBuilder, IvfSqIndexBuilder,
};
use lancedb::query::{ExecutableQuery, QueryBase, Select, VectorQuery};

use crate::backend::{
    DistanceMetric, Error, FilterExpr, IndexInfo, IndexKind, ScalarIndexType, VectorIndexKind,
    VectorIndexParams, VectorQueryOpts,
};
use crate::lance::backend::{LanceDbBackend, map_lancedb, validate_filter};
use crate::lance::ops::line_key;

fn metric(m: DistanceMetric) -> DistanceType {
    match m {
        DistanceMetric::L2 => DistanceType::L2,
        DistanceMetric::Cosine => DistanceType::Cosine,
        DistanceMetric::Dot => DistanceType::Dot,
        DistanceMetric::Hamming => DistanceType::Hamming,
    }
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::InvalidArgument("k must be at least 1".into()).into());
    }
    Ok(())
}

/// Check an index name: 1-200 bytes of ASCII letters, digits, `_`, `-`, `.`.
fn check_index_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind: "index",
            name: name.to_string(),
            reason: "use 1-200 ASCII letters, digits, '_', '-', '.'".into(),
        }
        .into())
    }
}

fn column_type<'a>(table: &str, schema: &'a SchemaRef, column: &str) -> Result<&'a DataType> {
    schema
        .field_with_name(column)
        .map(|f| f.data_type())
        .map_err(|_| {
            Error::InvalidColumn {
                table: table.to_string(),
                column: column.to_string(),
                detail: "no such column".into(),
            }
            .into()
        })
}

fn fixed_dim(dt: &DataType) -> Option<usize> {
    match dt {
        DataType::FixedSizeList(_, n) => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// Run a query and keep its non-empty batches.
async fn collect_rows(q: impl ExecutableQuery, table: &str) -> Result<Vec<RecordBatch>> {
    let batches: Vec<RecordBatch> = q
        .execute()
        .await
        .map_err(|e| map_lancedb(e, table))?
        .try_collect()
        .await
        .map_err(|e| map_lancedb(e, table))?;
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}

impl LanceDbBackend {
    #[allow(clippy::too_many_arguments)]
    async fn finish_vector_query(
        &self,
        table: &str,
        schema: &SchemaRef,
        mut q: VectorQuery,
        k: usize,
        metric_: DistanceMetric,
        filter: &FilterExpr,
        opts: &VectorQueryOpts,
    ) -> Result<Vec<RecordBatch>> {
        q = q.distance_type(metric(metric_)).limit(k);
        if let Some(sql) = filter.to_sql() {
            validate_filter(schema, &sql)?;
            q = q.only_if(sql);
        }
        if opts.postfilter {
            q = q.postfilter();
        }
        if let Some(n) = opts.nprobes {
            q = q.nprobes(n).map_err(|e| map_lancedb(e, table))?;
        }
        if let Some(ef) = opts.ef {
            q = q.ef(ef);
        }
        if let Some(r) = opts.refine_factor {
            q = q.refine_factor(r);
        }
        if opts.bypass_index {
            q = q.bypass_vector_index();
        }
        if let Some(cols) = &opts.columns {
            for c in cols {
                column_type(table, schema, c)?;
            }
            q = q.select(Select::columns(cols));
        }
        collect_rows(q, table).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn do_vector_search(
        &self,
        table: &str,
        column: &str,
        query: &[f32],
        k: usize,
        metric_: DistanceMetric,
        filter: FilterExpr,
        opts: VectorQueryOpts,
    ) -> Result<Vec<RecordBatch>> {
        check_k(k)?;
        let t = self
            .table_at(table, opts.line.as_deref(), opts.version)
            .await?;
        let schema = t.schema().await.map_err(|e| map_lancedb(e, table))?;
        let dt = column_type(table, &schema, column)?;
        let Some(dim) = fixed_dim(dt) else {
            return Err(Error::InvalidColumn {
                table: table.to_string(),
                column: column.to_string(),
                detail: format!("{dt} is not a fixed-size vector column"),
            }
            .into());
        };
        if query.len() != dim {
            return Err(Error::DimensionMismatch {
                column: column.to_string(),
                expected: dim,
                got: query.len(),
            }
            .into());
        }
        let q = t
            .query()
            .nearest_to(query)
            .map_err(|e| map_lancedb(e, table))?
            .column(column);
        self.finish_vector_query(table, &schema, q, k, metric_, &filter, &opts)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn do_multivector_search(
        &self,
        table: &str,
        column: &str,
        query: &[Vec<f32>],
        k: usize,
        metric_: DistanceMetric,
        filter: FilterExpr,
        opts: VectorQueryOpts,
    ) -> Result<Vec<RecordBatch>> {
        check_k(k)?;
        let Some(first) = query.first() else {
            return Err(Error::InvalidArgument(
                "a multi-vector query needs at least one vector".into(),
            )
            .into());
        };
        let t = self
            .table_at(table, opts.line.as_deref(), opts.version)
            .await?;
        let schema = t.schema().await.map_err(|e| map_lancedb(e, table))?;
        let dt = column_type(table, &schema, column)?;
        let dim = match dt {
            DataType::List(inner) | DataType::LargeList(inner) => fixed_dim(inner.data_type()),
            _ => None,
        };
        let Some(dim) = dim else {
            return Err(Error::InvalidColumn {
                table: table.to_string(),
                column: column.to_string(),
                detail: format!("{dt} is not a List<FixedSizeList> multi-vector column"),
            }
            .into());
        };
        if let Some(bad) = query.iter().find(|v| v.len() != dim) {
            return Err(Error::DimensionMismatch {
                column: column.to_string(),
                expected: dim,
                got: bad.len(),
            }
            .into());
        }
        let mut q = t
            .query()
            .nearest_to(first.as_slice())
            .map_err(|e| map_lancedb(e, table))?
            .column(column);
        for v in &query[1..] {
            q = q
                .add_query_vector(v.as_slice())
                .map_err(|e| map_lancedb(e, table))?;
        }
        self.finish_vector_query(table, &schema, q, k, metric_, &filter, &opts)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fts_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
        column: &str,
        query: &str,
        k: usize,
        filter: FilterExpr,
    ) -> Result<Vec<RecordBatch>> {
        check_k(k)?;
        if query.trim().is_empty() {
            return Err(Error::InvalidArgument("the full-text query is blank".into()).into());
        }
        let t = self.table_at(table, branch, version).await?;
        let schema = t.schema().await.map_err(|e| map_lancedb(e, table))?;
        let dt = column_type(table, &schema, column)?;
        if !matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(Error::InvalidColumn {
                table: table.to_string(),
                column: column.to_string(),
                detail: format!("{dt} is not a text column"),
            }
            .into());
        }
        let fts = FullTextSearchQuery::new(query.to_string())
            .with_column(column.to_string())
            .map_err(|e| anyhow::Error::new(e).context("building the full-text query"))?;
        let mut q = t.query().full_text_search(fts).limit(k);
        if let Some(sql) = filter.to_sql() {
            validate_filter(&schema, &sql)?;
            q = q.only_if(sql);
        }
        collect_rows(q, table).await
    }

    // ---- indexes ----

    pub(crate) async fn create_vector_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        column: &str,
        name: &str,
        p: VectorIndexParams,
    ) -> Result<u64> {
        check_index_name(name)?;
        let t = self.line_table(table, branch).await?;
        let schema = t.schema().await.map_err(|e| map_lancedb(e, table))?;
        let dt = column_type(table, &schema, column)?;
        let is_vector = fixed_dim(dt).is_some()
            || matches!(dt, DataType::List(f) if fixed_dim(f.data_type()).is_some());
        if !is_vector {
            return Err(Error::InvalidColumn {
                table: table.to_string(),
                column: column.to_string(),
                detail: format!("{dt} is not a vector column"),
            }
            .into());
        }
        let index = vector_index(&p);
        let _guard = self.lock(&line_key(table, branch)).await;
        t.create_index(&[column], index)
            .name(name.to_string())
            .replace(true)
            .execute()
            .await
            .map_err(|e| map_lancedb(e, table))?;
        t.version().await.map_err(|e| map_lancedb(e, table))
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_per_column(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        name: Option<&str>,
        make: impl Fn() -> Index,
        check: impl Fn(&DataType) -> Option<String>,
    ) -> Result<u64> {
        if columns.is_empty() {
            return Err(Error::InvalidArgument("an index needs at least one column".into()).into());
        }
        if let Some(n) = name {
            check_index_name(n)?;
        }
        let t = self.line_table(table, branch).await?;
        let schema = t.schema().await.map_err(|e| map_lancedb(e, table))?;
        for c in columns {
            let dt = column_type(table, &schema, c)?;
            if let Some(detail) = check(dt) {
                return Err(Error::InvalidColumn {
                    table: table.to_string(),
                    column: c.to_string(),
                    detail,
                }
                .into());
            }
        }
        let _guard = self.lock(&line_key(table, branch)).await;
        for c in columns {
            let mut b = t.create_index(&[*c], make()).replace(true);
            // Lance indexes cover one column each: with several columns, the
            // given name is suffixed with the column name.
            match (name, columns.len()) {
                (Some(n), 1) => b = b.name(n.to_string()),
                (Some(n), _) => b = b.name(format!("{n}_{c}")),
                (None, _) => {}
            }
            b.execute().await.map_err(|e| map_lancedb(e, table))?;
        }
        t.version().await.map_err(|e| map_lancedb(e, table))
    }

    pub(crate) async fn create_fts_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        name: Option<&str>,
        with_positions: bool,
    ) -> Result<u64> {
        self.create_per_column(
            table,
            branch,
            columns,
            name,
            || Index::FTS(FtsIndexBuilder::default().with_position(with_positions)),
            |dt| {
                (!matches!(
                    dt,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ))
                .then(|| format!("{dt} is not a text column"))
            },
        )
        .await
    }

    pub(crate) async fn create_scalar_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        columns: &[&str],
        kind: ScalarIndexType,
        name: Option<&str>,
    ) -> Result<u64> {
        let make = move || match kind {
            ScalarIndexType::BTree => Index::BTree(BTreeIndexBuilder::default()),
            ScalarIndexType::Bitmap => Index::Bitmap(BitmapIndexBuilder::default()),
            ScalarIndexType::LabelList => Index::LabelList(LabelListIndexBuilder::default()),
        };
        self.create_per_column(table, branch, columns, name, make, move |dt| {
            let is_list = matches!(dt, DataType::List(_) | DataType::LargeList(_));
            match kind {
                ScalarIndexType::LabelList if !is_list => {
                    Some(format!("a label-list index needs a List column, not {dt}"))
                }
                ScalarIndexType::BTree | ScalarIndexType::Bitmap if is_list => {
                    Some(format!("a {kind:?} index needs a scalar column, not {dt}"))
                }
                _ => None,
            }
        })
        .await
    }

    pub(crate) async fn drop_index_line(
        &self,
        table: &str,
        branch: Option<&str>,
        name: &str,
    ) -> Result<u64> {
        let t = self.line_table(table, branch).await?;
        let exists = t
            .list_indices()
            .await
            .map_err(|e| map_lancedb(e, table))?
            .iter()
            .any(|i| i.name == name);
        if !exists {
            return Err(Error::IndexNotFound {
                table: table.to_string(),
                index: name.to_string(),
            }
            .into());
        }
        let _guard = self.lock(&line_key(table, branch)).await;
        t.drop_index(name)
            .await
            .map_err(|e| map_lancedb(e, table))?;
        t.version().await.map_err(|e| map_lancedb(e, table))
    }

    pub(crate) async fn list_indexes_at(
        &self,
        table: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<IndexInfo>> {
        let t = self.table_at(table, branch, version).await?;
        let list = t.list_indices().await.map_err(|e| map_lancedb(e, table))?;
        Ok(list
            .into_iter()
            .map(|c| {
                use lancedb::index::IndexType as T;
                let kind = match c.index_type {
                    T::FTS => IndexKind::FullText,
                    T::IvfFlat
                    | T::IvfPq
                    | T::IvfSq
                    | T::IvfRq
                    | T::IvfHnswPq
                    | T::IvfHnswSq
                    | T::IvfHnswFlat => IndexKind::Vector,
                    _ => IndexKind::Scalar,
                };
                IndexInfo {
                    name: c.name,
                    columns: c.columns,
                    index_type: c.index_type.to_string(),
                    kind,
                }
            })
            .collect())
    }
}

/// The LanceDB index of a vector index request.
fn vector_index(p: &VectorIndexParams) -> Index {
    let d = metric(p.metric);
    macro_rules! ivf {
        ($b:expr) => {{
            let mut b = $b.distance_type(d);
            if let Some(n) = p.num_partitions {
                b = b.num_partitions(n);
            }
            b
        }};
    }
    macro_rules! pq {
        ($b:expr) => {{
            let mut b = $b;
            if let Some(n) = p.num_sub_vectors {
                b = b.num_sub_vectors(n);
            }
            b
        }};
    }
    macro_rules! hnsw {
        ($b:expr) => {{
            let mut b = $b;
            if let Some(m) = p.hnsw_m {
                b = b.num_edges(m);
            }
            if let Some(ef) = p.hnsw_ef_construction {
                b = b.ef_construction(ef);
            }
            b
        }};
    }
    match p.kind {
        VectorIndexKind::Flat => Index::IvfFlat(
            IvfFlatIndexBuilder::default()
                .distance_type(d)
                .num_partitions(1),
        ),
        VectorIndexKind::IvfFlat => Index::IvfFlat(ivf!(IvfFlatIndexBuilder::default())),
        VectorIndexKind::IvfPq => Index::IvfPq(pq!(ivf!(IvfPqIndexBuilder::default()))),
        VectorIndexKind::IvfSq => Index::IvfSq(ivf!(IvfSqIndexBuilder::default())),
        VectorIndexKind::IvfHnswFlat => {
            Index::IvfHnswFlat(hnsw!(ivf!(IvfHnswFlatIndexBuilder::default())))
        }
        VectorIndexKind::IvfHnswPq => {
            Index::IvfHnswPq(pq!(hnsw!(ivf!(IvfHnswPqIndexBuilder::default()))))
        }
        VectorIndexKind::IvfHnswSq => {
            Index::IvfHnswSq(hnsw!(ivf!(IvfHnswSqIndexBuilder::default())))
        }
    }
}
