//! The storage contract: the [`StorageBackend`] trait, the types it speaks,
//! typed errors, filters and naming rules.

pub mod error;
pub mod filter;
pub mod lines;
pub mod names;
pub mod traits;
pub mod types;

pub use error::Error;
pub use filter::{CmpOp, FilterExpr, Literal, check_raw_filter};
pub use lines::{BranchLines, ObjectBase, RowChangeStreams, RowChanges};
pub use names::{MAX_TABLE_NAME_LEN, RESERVED_PREFIX, validate_table_name};
pub use traits::{RecordBatchStream, StorageBackend, TableWriteGuard};
pub use types::{
    DistanceMetric, IndexInfo, IndexKind, ScalarIndexType, ScanRequest, VectorIndexKind,
    VectorIndexParams, VectorQueryOpts, WriteMode,
};
