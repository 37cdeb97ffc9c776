//! The catalog's log, behind one small trait with two implementations:
//! [`WalLog`], the local write-ahead log (`lancebranch-wal`, the fast path
//! for a local directory or memory), and
//! [`ObjectLog`](crate::branched::object_log::ObjectLog), a log of objects
//! created with conditional puts on the store's own object storage.
//!
//! The catalog's state machine, its `commit_if` checks, recovery and fsck
//! are written once over [`CatalogLog`]; what differs is where records and
//! checkpoints live and how a second writer is kept out (the WAL's
//! directory lock, or the object log's fencing).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use lancebranch_wal::{Lsn, Options, RecoveryMode, SimStorage, StdStorage, Wal, read_log};

use crate::backend::Error;
use crate::branched::catalog::{CatalogState, Record};
use crate::branched::format::{
    check_continuity, check_format, read_checkpoint, upgrade_format, write_checkpoint,
};

/// Where a catalog's records and checkpoints are kept.
///
/// Every method blocks (call it from a blocking context). LSNs number the
/// records from 1 without gaps; a group of records appended together gets
/// consecutive LSNs and becomes durable (and visible to readers) at once.
pub(crate) trait CatalogLog: Send + Sync {
    /// Where the log is, for messages.
    fn describe(&self) -> String;

    /// Durably log `records` as one group right after every record this
    /// log has logged or read; returns their LSNs.
    ///
    /// # Errors
    /// [`Error::ReadOnlyStore`] on a read-only open, [`Error::Fenced`] when
    /// another writer took the log over, or I/O (then nothing is logged,
    /// or, for an error after the write, the caller may not tell: it must
    /// stop using the log).
    fn append(&self, records: &[Record]) -> Result<Range<u64>>;

    /// [`append`](Self::append), but the group need not be durable yet
    /// when this returns: [`wait_durable`](Self::wait_durable) waits for
    /// it. Groups become durable in LSN order, so the caller may order
    /// its writes under a lock of its own and wait outside it, sharing
    /// one sync with concurrent writers (the default: `append`, durable
    /// at once).
    ///
    /// # Errors
    /// As [`append`](Self::append).
    fn write(&self, records: &[Record]) -> Result<Range<u64>> {
        self.append(records)
    }

    /// How many times the log was synced since it was opened (the
    /// default: 0, for a log whose appends are durable on their own).
    fn sync_count(&self) -> u64 {
        0
    }

    /// Returns once every record below LSN `end` is durable (the
    /// default: at once).
    ///
    /// # Errors
    /// The sync failed: the log is unusable (the records may or may not
    /// be on disk).
    fn wait_durable(&self, end: u64) -> Result<()> {
        let _ = end;
        Ok(())
    }

    /// The newest checkpoint, if any.
    fn read_checkpoint(&self) -> Result<Option<CatalogState>>;

    /// Every record after LSN `covered` (a checkpoint's or a state's),
    /// checked to continue it.
    ///
    /// # Errors
    /// [`Error::CorruptCatalog`] when the log no longer holds the record
    /// after `covered` (a newer checkpoint replaced it: read that one).
    fn read_after(&self, covered: u64) -> Result<Vec<(u64, Record)>>;

    /// Whether this writer may still write: [`Error::Fenced`] once another
    /// writer took the log over and this one noticed (the default: always).
    fn check_live(&self) -> Result<()> {
        Ok(())
    }

    /// [`check_live`](Self::check_live), and ask the log whether another
    /// writer logged after this one's last group (the default: as
    /// `check_live`; a local log has one writer, kept by its lock).
    fn probe_live(&self) -> Result<()> {
        self.check_live()
    }

    /// Make `state` the newest checkpoint, then drop the records it covers.
    /// `between` runs after the checkpoint is durable and before the drop
    /// (the crash suite cuts there).
    fn checkpoint(&self, state: &CatalogState, between: &dyn Fn() -> Result<()>) -> Result<()>;
}

/// The local write-ahead log of a catalog directory (or in memory), or a
/// read-only reader of one.
pub(crate) struct WalLog {
    mode: WalMode,
}

enum WalMode {
    /// The owner: holds the directory lock (`None`: in memory).
    Writer(Box<Wal<Record>>, Option<PathBuf>),
    /// A reader in another process: no lock, nothing repaired; the bytes
    /// of a torn last record its last read found.
    Reader(PathBuf, AtomicU64),
}

/// A freshly opened log: the checkpoint's state and the records after it.
pub(crate) type Opened<L> = (L, CatalogState, Vec<(u64, Record)>);

impl WalLog {
    /// A log in memory (nothing survives the process).
    pub(crate) fn memory() -> Result<Opened<Self>> {
        let (wal, _) = Wal::<Record>::open_with_storage(
            SimStorage::new(),
            Options::default().sync(lancebranch_wal::SyncPolicy::Never),
        )?;
        let log = Self {
            mode: WalMode::Writer(Box::new(wal), None),
        };
        Ok((log, CatalogState::default(), Vec::new()))
    }

    /// A log in memory whose syncs take `delay` (tests of groups in
    /// flight).
    #[cfg(test)]
    pub(crate) fn memory_slow_sync(delay: std::time::Duration) -> Result<Opened<Self>> {
        let storage = SimStorage::new();
        storage.set_sync_delay(delay);
        let (wal, _) = Wal::<Record>::open_with_storage(storage, Options::default())?;
        let log = Self {
            mode: WalMode::Writer(Box::new(wal), None),
        };
        Ok((log, CatalogState::default(), Vec::new()))
    }

    /// Open the catalog directory `dir` for writing (creating it), under
    /// the log's directory lock, after the format and continuity checks;
    /// the log's recovery repairs a torn tail.
    ///
    /// # Errors
    /// [`Error::StoreLocked`] when another process has it open for writing;
    /// [`Error::UnsupportedFormat`], [`Error::CorruptCatalog`], or I/O.
    pub(crate) fn open(dir: &Path) -> Result<Opened<Self>> {
        crate::lance::create_dir_synced(dir)
            .with_context(|| format!("creating catalog directory {}", dir.display()))?;
        // Refuse a newer store before the log's recovery repairs anything.
        let format = check_format(dir)?;
        let state = read_checkpoint(dir)?.unwrap_or_default();
        let wal_dir = dir.join("wal");
        if state.applied > 0 && !has_segments(&wal_dir) {
            // Checked before the log's open creates a first segment.
            check_continuity(dir, state.applied, None, 1)?;
        }
        let opts = Options::default().replay_from(Lsn(state.applied + 1));
        let (wal, rec) = match Wal::<Record>::open(&wal_dir, opts) {
            Ok(opened) => opened,
            Err(lancebranch_wal::Error::Locked { .. }) => {
                return Err(Error::StoreLocked {
                    path: dir.display().to_string(),
                }
                .into());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the catalog log in {}", dir.display()));
            }
        };
        check_continuity(
            dir,
            state.applied,
            rec.records.first().map(|(l, _)| l.0),
            wal.next_lsn().0,
        )?;
        // Under the log's lock: only the process that owns the store marks
        // its format. The local log never holds records of format 2.
        upgrade_format(dir, format, 1)?;
        let records = rec.records.into_iter().map(|(l, r)| (l.0, r)).collect();
        let log = Self {
            mode: WalMode::Writer(Box::new(wal), Some(dir.to_path_buf())),
        };
        Ok((log, state, records))
    }

    /// Open the catalog directory `dir` to follow it: no lock, nothing
    /// created or repaired (a torn tail is the owner's write in flight).
    ///
    /// # Errors
    /// `dir` holds no catalog; [`Error::UnsupportedFormat`],
    /// [`Error::CorruptCatalog`], or I/O.
    pub(crate) fn open_read_only(dir: &Path) -> Result<Opened<Self>> {
        if !dir.is_dir() {
            anyhow::bail!("{} holds no lancebranch catalog", dir.display());
        }
        check_format(dir)?;
        let log = Self {
            mode: WalMode::Reader(dir.to_path_buf(), AtomicU64::new(0)),
        };
        let (state, records) = read_consistent(&log)?;
        Ok((log, state, records))
    }

    /// A reader: the bytes of a torn last record (a write in flight, or
    /// cut short by a crash) its last read found; 0 for a writer.
    pub(crate) fn torn_tail_bytes(&self) -> u64 {
        match &self.mode {
            WalMode::Reader(_, torn) => torn.load(Ordering::Relaxed),
            WalMode::Writer(..) => 0,
        }
    }

    fn dir(&self) -> Option<&Path> {
        match &self.mode {
            WalMode::Writer(_, dir) => dir.as_deref(),
            WalMode::Reader(dir, _) => Some(dir),
        }
    }
}

/// The newest checkpoint of `log` and the records after it, read again
/// (up to three times) when the owner replaced the checkpoint and dropped
/// the records between the two reads.
pub(crate) fn read_consistent(log: &dyn CatalogLog) -> Result<(CatalogState, Vec<(u64, Record)>)> {
    let mut tries = 0;
    loop {
        let state = log.read_checkpoint()?.unwrap_or_default();
        match log.read_after(state.applied) {
            Ok(records) => return Ok((state, records)),
            // A checkpoint or a segment removed between the reads.
            Err(_) if tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

impl CatalogLog for WalLog {
    fn describe(&self) -> String {
        self.dir()
            .map_or("memory".to_string(), |d| d.display().to_string())
    }

    fn append(&self, records: &[Record]) -> Result<Range<u64>> {
        match &self.mode {
            WalMode::Writer(wal, _) => {
                let lsns = wal
                    .append_batch(records)
                    .context("logging catalog records")?;
                Ok(lsns.start.0..lsns.end.0)
            }
            WalMode::Reader(dir, _) => Err(Error::ReadOnlyStore {
                store: dir.display().to_string(),
            }
            .into()),
        }
    }

    fn write(&self, records: &[Record]) -> Result<Range<u64>> {
        match &self.mode {
            WalMode::Writer(wal, _) => {
                let lsns = wal
                    .write_batch(records)
                    .context("logging catalog records")?;
                Ok(lsns.start.0..lsns.end.0)
            }
            WalMode::Reader(..) => self.append(records),
        }
    }

    fn sync_count(&self) -> u64 {
        match &self.mode {
            WalMode::Writer(wal, _) => wal.sync_count(),
            WalMode::Reader(..) => 0,
        }
    }

    fn wait_durable(&self, end: u64) -> Result<()> {
        match &self.mode {
            WalMode::Writer(wal, _) => wal.sync_until(Lsn(end)).context("syncing the catalog log"),
            WalMode::Reader(..) => Ok(()),
        }
    }

    fn read_checkpoint(&self) -> Result<Option<CatalogState>> {
        match self.dir() {
            Some(dir) => read_checkpoint(dir),
            None => Ok(None),
        }
    }

    fn read_after(&self, covered: u64) -> Result<Vec<(u64, Record)>> {
        let from = Lsn(covered + 1);
        let (records, next) = match &self.mode {
            WalMode::Writer(wal, _) => {
                let records = wal
                    .iter_from(from)
                    .context("reading the catalog log")?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .context("reading the catalog log")?;
                (records, wal.next_lsn().0)
            }
            WalMode::Reader(dir, torn) => {
                let wal_dir = dir.join("wal");
                if !wal_dir.is_dir() {
                    torn.store(0, Ordering::Relaxed);
                    (Vec::new(), 1)
                } else {
                    let storage = StdStorage::open(&wal_dir)
                        .with_context(|| format!("opening {}", wal_dir.display()))?;
                    let got =
                        read_log::<Record>(&storage, RecoveryMode::TolerateCorruptedTail, from)
                            .with_context(|| {
                                format!("reading the catalog log in {}", wal_dir.display())
                            })?;
                    torn.store(got.report.torn_tail_bytes, Ordering::Relaxed);
                    (got.records, got.report.next_lsn.0)
                }
            }
        };
        let place = self.dir().unwrap_or(Path::new("memory"));
        check_continuity(place, covered, records.first().map(|(l, _)| l.0), next)?;
        Ok(records.into_iter().map(|(l, r)| (l.0, r)).collect())
    }

    fn checkpoint(&self, state: &CatalogState, between: &dyn Fn() -> Result<()>) -> Result<()> {
        let WalMode::Writer(wal, Some(dir)) = &self.mode else {
            return Ok(()); // memory: nothing to keep; a reader never checkpoints
        };
        write_checkpoint(dir, state)?;
        between()?;
        wal.truncate_before(Lsn(state.applied + 1))
            .context("truncating the catalog log")?;
        Ok(())
    }
}

/// Whether `wal_dir` holds any log segment.
fn has_segments(wal_dir: &Path) -> bool {
    std::fs::read_dir(wal_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".wal"))
    })
}
