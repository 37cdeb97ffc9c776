//! [`LanceDbBackend`]: the [`StorageBackend`](crate::StorageBackend) on
//! LanceDB 0.41 / Lance 14, with power-loss durability on local disks, on
//! `memory://`, and on S3-compatible object stores (feature `s3`, through
//! [`S3Options`]; Lance commits there with conditional puts).

mod backend;
mod contract;
mod durable;
#[cfg(feature = "failpoints")]
mod faults;
mod lines;
mod ops;
mod search;
mod take;

pub use backend::{LanceDbBackend, LanceDbOptions, S3Options, StoreLocation, store_location};
pub(crate) use durable::create_dir_synced;
pub use durable::{SyncCounter, durable_session};
#[cfg(feature = "failpoints")]
pub use faults::WriteFaults;
