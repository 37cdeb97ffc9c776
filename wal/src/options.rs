//! Configuration and small value types: [`Lsn`], [`SyncPolicy`],
//! [`RecoveryMode`], [`Options`], and what recovery returns.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Log sequence number: the position of a record in the log. The first
/// record of a new log has LSN 1; every record gets the next number, with no
/// gaps, for the life of the log (numbers are never reused once a record
/// with that number was acknowledged).
///
/// # Example
///
/// ```
/// use lancebranch_wal::Lsn;
/// assert!(Lsn(1) < Lsn(2));
/// assert_eq!(Lsn(1).next(), Lsn(2));
/// assert_eq!(Lsn(5).to_string(), "5");
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Below every record's LSN; `replay_from(Lsn::ZERO)` replays everything.
    pub const ZERO: Lsn = Lsn(0);

    /// The following LSN.
    pub fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// When an append is made durable.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Options, SyncPolicy};
/// let fast = Options::default().sync(SyncPolicy::Never);
/// assert_eq!(fast.sync_policy(), SyncPolicy::Never);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `append` returns only after its bytes are `fdatasync`ed. Concurrent
    /// appenders share one sync (group commit).
    #[default]
    Always,
    /// `append` returns after the `write`; data is made durable by
    /// [`Wal::sync`](crate::Wal::sync), by segment rotation, or not at all
    /// (tests, benches, data that may be lost on power failure).
    Never,
}

/// What recovery does with damaged frames, after RocksDB's
/// `WALRecoveryMode`. A *torn tail* is damage in the last segment that no
/// valid frame follows (a write cut short by a crash); anything else is
/// *corruption*. Decode errors and foreign files are errors in every mode.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Options, RecoveryMode};
/// let o = Options::default().recovery(RecoveryMode::PointInTime);
/// assert_eq!(o.recovery_mode(), RecoveryMode::PointInTime);
/// assert_eq!(Options::default().recovery_mode(), RecoveryMode::TolerateCorruptedTail);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Default. A torn tail is end-of-log (dropped, and cut off when opened
    /// for writing); corruption is an [`Error::Corruption`](crate::Error).
    #[default]
    TolerateCorruptedTail,
    /// Any damage, even a torn tail, is an error.
    AbsoluteConsistency,
    /// Playback stops at the first damage; everything after it is dropped
    /// (and, when opened for writing, deleted), so the log is a consistent
    /// prefix.
    PointInTime,
    /// Damaged frames (and the rest of any batch they belong to) are skipped
    /// and playback continues with the next valid frame, salvaging as much as
    /// possible; LSNs may then have gaps.
    SkipAnyCorrupted,
}

/// Options of [`Wal::open`](crate::Wal::open).
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Lsn, Options, RecoveryMode, SyncPolicy};
/// let o = Options::default()
///     .sync(SyncPolicy::Always)
///     .segment_size(4 << 20)
///     .recovery(RecoveryMode::TolerateCorruptedTail)
///     .replay_from(Lsn(100));
/// assert_eq!(o.segment_size_bytes(), 4 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    sync: SyncPolicy,
    segment_size: u64,
    recovery: RecoveryMode,
    replay_from: Lsn,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Always,
            segment_size: 16 << 20,
            recovery: RecoveryMode::TolerateCorruptedTail,
            replay_from: Lsn::ZERO,
        }
    }
}

impl Options {
    /// Sets the durability policy (default [`SyncPolicy::Always`]).
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// Sets the size after which a new segment is started (default 16 MiB).
    /// A segment can exceed it by one append; opening for writing rewrites the
    /// last segment, so this also bounds the work done at open.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(1);
        self
    }

    /// Sets the recovery mode (default [`RecoveryMode::TolerateCorruptedTail`]).
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// Only records with an LSN at or above `lsn` are decoded and returned by
    /// recovery (default: all). Typically the LSN after the last checkpoint.
    pub fn replay_from(mut self, lsn: Lsn) -> Self {
        self.replay_from = lsn;
        self
    }

    /// The durability policy.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// The segment size.
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size
    }

    /// The recovery mode.
    pub fn recovery_mode(&self) -> RecoveryMode {
        self.recovery
    }

    /// The first LSN recovery returns.
    pub fn replay_from_lsn(&self) -> Lsn {
        self.replay_from
    }
}

/// A place in a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Segment file name.
    pub segment: String,
    /// Byte offset in it.
    pub offset: u64,
}

/// A damaged byte range skipped by [`RecoveryMode::SkipAnyCorrupted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRange {
    /// Segment file name.
    pub segment: String,
    /// First skipped byte.
    pub offset: u64,
    /// Number of bytes skipped.
    pub len: u64,
}

/// What recovery found and (when opened for writing) repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments_read: usize,
    /// Bytes read from storage.
    pub bytes_read: u64,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// Bytes after the last complete record of the last segment (a torn tail),
    /// dropped.
    pub torn_tail_bytes: u64,
    /// [`RecoveryMode::PointInTime`]: where playback stopped at damage.
    pub stopped_at: Option<Position>,
    /// [`RecoveryMode::PointInTime`]: later segments dropped after the stop.
    pub dropped_segments: Vec<String>,
    /// [`RecoveryMode::SkipAnyCorrupted`]: damaged ranges skipped.
    pub skipped: Vec<SkippedRange>,
    /// Leftover temporary segment files (from a crash during segment
    /// creation) that were removed.
    pub removed_temp_files: Vec<String>,
}

/// The records recovered when a log is opened, oldest first, and a report.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
///
/// let sim = SimStorage::new();
/// let (wal, _) = Wal::<String>::open_with_storage(sim.clone(), Options::default())?;
/// wal.append(&"x".to_string())?;
/// drop(wal);
/// let (_, recovered) = Wal::<String>::open_with_storage(sim, Options::default())?;
/// assert_eq!(recovered.records, vec![(Lsn(1), "x".to_string())]);
/// assert_eq!(recovered.report.next_lsn, Lsn(2));
/// # Ok::<(), lancebranch_wal::Error>(())
/// ```
#[derive(Debug)]
pub struct Recovered<R> {
    /// `(lsn, record)` for every record at or above
    /// [`Options::replay_from`], in LSN order.
    pub records: Vec<(Lsn, R)>,
    /// What was found and repaired.
    pub report: RecoveryReport,
}
