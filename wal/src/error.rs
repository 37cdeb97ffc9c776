//! Typed errors of the write-ahead log.

use std::io;

use crate::Lsn;

/// Everything that can go wrong when opening, reading or writing a log.
///
/// Errors about bad input ([`Error::UnreadableDir`], [`Error::UnexpectedFile`],
/// [`Error::NotASegment`], [`Error::UnsupportedVersion`], [`Error::Decode`],
/// [`Error::Corruption`]) are reported *before* anything is changed on disk:
/// an open that fails with one of them deletes and truncates nothing.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Error, Options, SimStorage, Wal};
///
/// let sim = SimStorage::new();
/// sim.put_file("notes.txt", b"not a segment");
/// match Wal::<u64>::open_with_storage(sim.clone(), Options::default()) {
///     Err(Error::UnexpectedFile { name }) => assert_eq!(name, "notes.txt"),
///     other => panic!("unexpected: {other:?}"),
/// }
/// // Nothing was deleted.
/// assert_eq!(sim.file("notes.txt").as_deref(), Some(&b"not a segment"[..]));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log directory could not be created, listed or locked.
    #[error("cannot use WAL directory {dir}: {source}")]
    UnreadableDir {
        /// The directory (as the storage describes it).
        dir: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Another writer holds the directory lock.
    #[error("WAL directory {dir} is locked by another writer")]
    Locked {
        /// The directory (as the storage describes it).
        dir: String,
    },
    /// The directory holds a file whose name is neither a segment nor a
    /// temporary segment. The log directory must be used by the log only.
    #[error(
        "unexpected file {name:?} in the WAL directory (the directory must hold only segments)"
    )]
    UnexpectedFile {
        /// The file's name.
        name: String,
    },
    /// A file named like a segment does not have a valid segment header.
    #[error("{name} is not a WAL segment: {reason}")]
    NotASegment {
        /// The file's name.
        name: String,
        /// What is wrong with its header.
        reason: String,
    },
    /// A segment was written by a newer version of this crate.
    #[error(
        "segment {name} has format version {found}; this build reads up to version {supported}"
    )]
    UnsupportedVersion {
        /// The file's name.
        name: String,
        /// The version found in the header.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// A frame failed its checksum or sequence check and valid data follows it
    /// (or, in [`RecoveryMode::AbsoluteConsistency`](crate::RecoveryMode),
    /// any damage at all, including a torn tail).
    #[error("WAL corruption in {segment} at byte {offset} (expected lsn {expected}): {reason}")]
    Corruption {
        /// The segment file holding the bad frame.
        segment: String,
        /// Byte offset of the bad frame in the segment.
        offset: u64,
        /// The LSN the bad frame should have carried.
        expected: Lsn,
        /// What was wrong.
        reason: String,
    },
    /// A checksummed record could not be decoded into the caller's type
    /// (a schema mismatch, not on-disk damage).
    #[error("record {lsn} in {segment} does not deserialize: {source}")]
    Decode {
        /// The record's LSN.
        lsn: Lsn,
        /// The segment file holding the record.
        segment: String,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// A record could not be serialized.
    #[error("record does not serialize: {0}")]
    Encode(#[source] postcard::Error),
    /// A serialized record is larger than a frame can hold (4 GiB - 1).
    #[error("record of {size} bytes is too large for one frame")]
    RecordTooLarge {
        /// The encoded size.
        size: usize,
    },
    /// A storage operation failed.
    #[error("I/O error during {op} of {name}: {source}")]
    Io {
        /// The operation (`"append"`, `"sync_data"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        name: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or sync failed; the kernel may have dropped the
    /// unsynced data, so nothing more is written until the log is reopened
    /// (which runs recovery).
    #[error("WAL is poisoned by an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// Description of the failure that poisoned the log.
        cause: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(op: &'static str, name: &str, source: io::Error) -> Error {
    Error::Io {
        op,
        name: name.to_owned(),
        source,
    }
}
