//! Plain data types used by the [`StorageBackend`](crate::StorageBackend) contract.

use serde::{Deserialize, Serialize};

use crate::backend::filter::FilterExpr;

/// How [`StorageBackend::write`](crate::StorageBackend::write) treats existing rows.
///
/// # Example
/// ```
/// use lancebranch::WriteMode;
/// assert_eq!(WriteMode::default(), WriteMode::Append);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum WriteMode {
    /// Add the rows to the table.
    #[default]
    Append,
    /// Replace every row of the table with the new rows (one atomic commit).
    Overwrite,
}

/// What to read from a table: projection, filter, limit and, optionally, a
/// pinned line and version.
///
/// `line` and `version` let a decorator (such as a branch view) read an
/// exact snapshot through the backend it wraps: `line: None` is the
/// table's main line, `version: None` its latest version.
///
/// # Example
/// ```
/// use lancebranch::ScanRequest;
/// let req = ScanRequest::table("people")
///     .columns(["id", "name"])
///     .filter("age >= 18")
///     .limit(10)
///     .at_version(3);
/// assert_eq!(req.limit, Some(10));
/// assert_eq!(req.version, Some(3));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRequest {
    /// The table to read.
    pub table: String,
    /// Columns to return, in this order; `None` returns every column.
    pub columns: Option<Vec<String>>,
    /// A SQL filter (`WHERE` clause without the keyword); `None` reads all rows.
    pub filter: Option<String>,
    /// The most rows to return.
    pub limit: Option<usize>,
    /// Read this *line* of the table (a Lance branch of its dataset)
    /// instead of its main line. A storage-level address, not a
    /// lancebranch branch: a [`BranchedBackend`](crate::branched::BranchedBackend)
    /// view picks the line of what its branch published and refuses a set
    /// one.
    pub line: Option<String>,
    /// Read this version instead of the latest one.
    pub version: Option<u64>,
}

impl ScanRequest {
    /// A request for every row and column of `table`.
    ///
    /// # Example
    /// ```
    /// let req = lancebranch::ScanRequest::table("t");
    /// assert!(req.filter.is_none() && req.columns.is_none());
    /// ```
    pub fn table(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            ..Self::default()
        }
    }

    /// Return only these columns.
    pub fn columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Keep only rows matching this SQL filter.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Keep only rows matching a typed filter ([`FilterExpr::All`] clears the filter).
    ///
    /// # Example
    /// ```
    /// use lancebranch::{FilterExpr, ScanRequest};
    /// let req = ScanRequest::table("t").filter_expr(&FilterExpr::eq("name", "O'Hara"));
    /// assert_eq!(req.filter.as_deref(), Some("name = 'O''Hara'"));
    /// ```
    pub fn filter_expr(mut self, filter: &FilterExpr) -> Self {
        self.filter = filter.to_sql();
        self
    }

    /// Return at most `limit` rows.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Read the table's line (Lance branch) `line`: see [`ScanRequest::line`].
    pub fn on_line(mut self, line: impl Into<String>) -> Self {
        self.line = Some(line.into());
        self
    }

    /// Read version `version` (of the line, if one is set).
    pub fn at_version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }
}

/// A distance function for vector search and vector indexes.
///
/// # Example
/// ```
/// assert_eq!(lancebranch::DistanceMetric::default(), lancebranch::DistanceMetric::L2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum DistanceMetric {
    /// Squared Euclidean distance.
    #[default]
    L2,
    /// Cosine distance (`1 - cos`).
    Cosine,
    /// Dot-product distance (`1 - a·b`).
    Dot,
    /// Hamming distance over bit vectors (`UInt8` elements).
    Hamming,
}

/// Tuning and scope of one vector or multi-vector search.
///
/// Every field is optional; [`VectorQueryOpts::default`] gives an exact
/// answer on an unindexed column and Lance's defaults on an indexed one,
/// with the filter applied before the nearest neighbours are chosen.
///
/// # Example
/// ```
/// let opts = lancebranch::VectorQueryOpts { nprobes: Some(20), ..Default::default() };
/// assert!(!opts.postfilter);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorQueryOpts {
    /// IVF partitions to probe.
    pub nprobes: Option<usize>,
    /// HNSW search breadth.
    pub ef: Option<usize>,
    /// Re-rank `k * refine_factor` candidates with exact distances.
    pub refine_factor: Option<u32>,
    /// Ignore any index and search exhaustively.
    pub bypass_index: bool,
    /// Apply the filter after the nearest-neighbour search (faster, may
    /// return fewer than `k` rows). The default filters first.
    pub postfilter: bool,
    /// Columns to return besides `_distance`; `None` returns every column.
    pub columns: Option<Vec<String>>,
    /// Search this *line* of the table (a Lance branch of its dataset)
    /// instead of its main line; see [`ScanRequest::line`].
    pub line: Option<String>,
    /// Search this version instead of the latest.
    pub version: Option<u64>,
}

/// The physical shape of a vector index.
///
/// # Example
/// ```
/// use lancebranch::{VectorIndexKind, VectorIndexParams, DistanceMetric};
/// let p = VectorIndexParams::new(VectorIndexKind::IvfPq, DistanceMetric::Cosine);
/// assert_eq!(p.kind, VectorIndexKind::IvfPq);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VectorIndexKind {
    /// Exact search through the index: one IVF partition, raw vectors.
    Flat,
    /// IVF partitions holding raw vectors.
    IvfFlat,
    /// IVF with product quantization.
    IvfPq,
    /// IVF with scalar quantization.
    IvfSq,
    /// IVF partitions searched with HNSW graphs over raw vectors.
    IvfHnswFlat,
    /// IVF + HNSW with product quantization.
    IvfHnswPq,
    /// IVF + HNSW with scalar quantization.
    IvfHnswSq,
}

/// Parameters of [`StorageBackend::create_vector_index`](crate::StorageBackend::create_vector_index).
///
/// `None` fields take Lance's defaults (derived from the row count and the
/// dimension).
///
/// # Example
/// ```
/// use lancebranch::{VectorIndexParams, DistanceMetric};
/// let p = VectorIndexParams::ivf_pq(DistanceMetric::L2).partitions(4).sub_vectors(2);
/// assert_eq!(p.num_partitions, Some(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VectorIndexParams {
    /// The index shape.
    pub kind: VectorIndexKind,
    /// The distance the index is built for.
    pub metric: DistanceMetric,
    /// IVF partitions.
    pub num_partitions: Option<u32>,
    /// PQ sub-vectors (PQ kinds only).
    pub num_sub_vectors: Option<u32>,
    /// HNSW neighbours per node (HNSW kinds only).
    pub hnsw_m: Option<u32>,
    /// HNSW construction breadth (HNSW kinds only).
    pub hnsw_ef_construction: Option<u32>,
}

impl VectorIndexParams {
    /// Parameters of `kind` for `metric`, everything else defaulted.
    pub fn new(kind: VectorIndexKind, metric: DistanceMetric) -> Self {
        Self {
            kind,
            metric,
            num_partitions: None,
            num_sub_vectors: None,
            hnsw_m: None,
            hnsw_ef_construction: None,
        }
    }

    /// An exact (flat) index.
    pub fn flat(metric: DistanceMetric) -> Self {
        Self::new(VectorIndexKind::Flat, metric)
    }

    /// An IVF-PQ index.
    pub fn ivf_pq(metric: DistanceMetric) -> Self {
        Self::new(VectorIndexKind::IvfPq, metric)
    }

    /// Set the number of IVF partitions.
    pub fn partitions(mut self, n: u32) -> Self {
        self.num_partitions = Some(n);
        self
    }

    /// Set the number of PQ sub-vectors.
    pub fn sub_vectors(mut self, n: u32) -> Self {
        self.num_sub_vectors = Some(n);
        self
    }
}

/// The kind of a scalar index.
///
/// # Example
/// ```
/// let t = lancebranch::ScalarIndexType::Bitmap;
/// assert_ne!(t, lancebranch::ScalarIndexType::BTree);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScalarIndexType {
    /// Sorted index: ranges and equality on high-cardinality columns.
    BTree,
    /// Bitmap per value: equality on low-cardinality columns.
    Bitmap,
    /// For `List` columns: `array_has_any` / `array_has_all` filters.
    LabelList,
}

/// What an index is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexKind {
    /// Nearest-neighbour search over vectors.
    Vector,
    /// Filter acceleration on scalar columns.
    Scalar,
    /// Full-text search.
    FullText,
}

/// One index of a table, as listed by
/// [`StorageBackend::list_indexes`](crate::StorageBackend::list_indexes).
///
/// # Example
/// ```
/// use lancebranch::{IndexInfo, IndexKind};
/// let info = IndexInfo { name: "v_idx".into(), columns: vec!["v".into()],
///     index_type: "IVF_PQ".into(), kind: IndexKind::Vector };
/// assert_eq!(info.kind, IndexKind::Vector);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexInfo {
    /// The index name.
    pub name: String,
    /// The indexed columns.
    pub columns: Vec<String>,
    /// The physical type as Lance names it (`"IVF_PQ"`, `"BTREE"`, `"FTS"`, ...).
    pub index_type: String,
    /// What the index is for.
    pub kind: IndexKind,
}
