//! A crash-safe write-ahead log of serde records.
//!
//! * **Format** (see `FORMAT.md` in the crate): segment files named by their
//!   first LSN, each with a header (magic, format version, first LSN) and
//!   checksummed frames `length | crc32 | lsn | kind | payload`; payloads are
//!   the caller's `Serialize + DeserializeOwned` type encoded with postcard.
//! * **Writer** ([`Wal`]): [`append`](Wal::append) and atomic
//!   [`append_batch`](Wal::append_batch) return an [`Lsn`] that is durable per
//!   the [`SyncPolicy`]; concurrent appenders share one `fdatasync` (group
//!   commit); segments rotate at a configurable size; after a failed write or
//!   sync the log is poisoned until reopened.
//! * **Recovery** on open: a torn last record is cut off, damage followed by
//!   valid data is corruption, handled per [`RecoveryMode`] (the four modes of
//!   RocksDB). [`Wal::truncate_before`] drops segments below a checkpoint.
//! * **Storage**: all I/O goes through the [`Storage`] trait: [`StdStorage`]
//!   in production, [`SimStorage`] to simulate power loss, torn writes and
//!   failing `fsync` in tests.
//!
//! # Example
//!
//! ```
//! use lancebranch_wal::{Lsn, Options, Wal};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum Op {
//!     Put { key: String, value: u64 },
//!     Delete { key: String },
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let (wal, recovered) = Wal::<Op>::open(dir.path(), Options::default())?;
//! assert!(recovered.records.is_empty());
//! let lsn = wal.append(&Op::Put { key: "a".into(), value: 1 })?; // durable now
//! wal.append_batch(&[Op::Delete { key: "a".into() }, Op::Put { key: "b".into(), value: 2 }])?;
//! drop(wal);
//!
//! // After a crash or restart: reopen, replay, continue.
//! let (wal, recovered) = Wal::<Op>::open(dir.path(), Options::default())?;
//! assert_eq!(recovered.records.len(), 3);
//! assert_eq!(recovered.records[0], (lsn, Op::Put { key: "a".into(), value: 1 }));
//! // After a checkpoint that covers everything below LSN 3:
//! wal.truncate_before(Lsn(3))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod commit;
mod error;
mod format;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod options;
mod reader;
mod scan;
mod sim;
mod storage;
mod writer;

pub use error::{Error, Result};
pub use format::FORMAT_VERSION;
pub use options::{
    Lsn, Options, Position, Recovered, RecoveryMode, RecoveryReport, SkippedRange, SyncPolicy,
};
pub use reader::{Iter, read_log};
pub use sim::{SECTOR, SimStats, SimStorage};
pub use storage::{StdStorage, Storage, StorageFile};
pub use writer::Wal;

#[doc(hidden)]
pub mod testing {
    //! Helpers for this crate's tests; not a stable API.

    /// The encoded segment header for `first_lsn` with an arbitrary format
    /// `version` (to build "future" segments in tests).
    pub fn segment_header(first_lsn: u64, version: u32) -> Vec<u8> {
        crate::format::encode_segment_header_version(first_lsn, version).to_vec()
    }

    /// An encoded frame carrying `payload` (already postcard-encoded) with
    /// `lsn` and frame `kind` (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST).
    pub fn frame(lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        crate::format::encode_frame_raw(lsn, kind, payload)
    }

    /// The file name of the segment starting at `first_lsn`.
    pub fn segment_name(first_lsn: u64) -> String {
        crate::format::segment_name(first_lsn)
    }

    /// Size of the segment header.
    pub const SEGMENT_HEADER_LEN: usize = crate::format::SEGMENT_HEADER_LEN;

    /// Size of a frame header.
    pub const FRAME_HEADER_LEN: usize = crate::format::FRAME_HEADER_LEN;
}

#[cfg(test)]
mod tests {
    #[test]
    fn wal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Wal<String>>();
        check::<crate::Wal<Vec<u8>>>();
        check::<crate::SimStorage>();
        check::<crate::StdStorage>();
        check::<crate::Error>();
    }
}
