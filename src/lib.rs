//! # lancebranch
//!
//! Git-like branches for Arrow/Lance table stores that survive crashes.
//!
//! - [`StorageBackend`] is the contract: an async, Arrow-native store of
//!   tables with SQL filters, versions, indexes and vector / multi-vector /
//!   full-text search.
//! - [`LanceDbBackend`] implements it on LanceDB / Lance, on a local
//!   directory (durable against power loss by default) or `memory://`.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch, StringArray};
//! use arrow_schema::{DataType, Field, Schema};
//! use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let store = LanceDbBackend::open("/tmp/lancebranch-example").await?;
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("id", DataType::Int64, false),
//!     Field::new("name", DataType::Utf8, true),
//! ]));
//! let batch = RecordBatch::try_new(schema, vec![
//!     Arc::new(Int64Array::from(vec![1, 2])),
//!     Arc::new(StringArray::from(vec!["ada", "grace"])),
//! ])?;
//! store.create_table("people", vec![batch]).await?;
//! let rows = store.scan(ScanRequest::table("people").filter("id = 2")).await?;
//! assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod branched;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod failpoints;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod lance;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{
    DistanceMetric, Error, FilterExpr, IndexInfo, IndexKind, Literal, RecordBatchStream,
    ScalarIndexType, ScanRequest, StorageBackend, TableWriteGuard, VectorIndexKind,
    VectorIndexParams, VectorQueryOpts, WriteMode,
};
pub use lance::{LanceDbBackend, LanceDbOptions};
