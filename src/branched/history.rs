//! The catalog's history: the records logged since the last checkpoint,
//! read from an open store ([`BranchedBackend::history`]) or offline from a
//! store's directory ([`read_catalog_offline`], no lock, no recovery).

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::branched::catalog::{CatalogState, Record};
use crate::branched::log::WalLog;
use crate::branched::view::BranchedBackend;

/// One logged catalog record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Its log sequence number.
    pub lsn: u64,
    /// The record.
    pub record: Record,
}

/// The catalog's history as the log holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The LSN the checkpoint covers: records `1..=checkpoint_lsn` are
    /// folded into it (0: no checkpoint yet).
    pub checkpoint_lsn: u64,
    /// The records after the checkpoint, oldest first.
    pub entries: Vec<HistoryEntry>,
}

impl History {
    fn from_pairs(checkpoint_lsn: u64, records: Vec<(u64, Record)>) -> Self {
        Self {
            checkpoint_lsn,
            entries: records
                .into_iter()
                .map(|(lsn, record)| HistoryEntry { lsn, record })
                .collect(),
        }
    }
}

/// A store's catalog read offline by [`read_catalog_offline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineCatalog {
    /// The state the checkpoint and the log give, before any recovery.
    pub(crate) state: CatalogState,
    /// The checkpoint's LSN and the records after it.
    pub history: History,
    /// Bytes of a torn last record (a write cut short), which opening the
    /// store will cut off.
    pub torn_tail_bytes: u64,
}

impl OfflineCatalog {
    /// The operations a crash interrupted (what recovery will finish or
    /// undo on the next open), by operation id: each one's first record.
    ///
    /// # Example
    /// ```no_run
    /// let cat = lancebranch::branched::read_catalog_offline("/data/store".as_ref())?;
    /// for (op, rec) in cat.pending() {
    ///     println!("operation {op} pending: {rec:?}");
    /// }
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn pending(&self) -> &std::collections::BTreeMap<u64, Record> {
        &self.state.pending
    }

    /// The branches the catalog holds, by name (main included).
    pub fn branch_names(&self) -> Vec<&str> {
        self.state.branches.keys().map(String::as_str).collect()
    }

    /// The tags the catalog holds, by name.
    pub fn tag_names(&self) -> Vec<&str> {
        self.state.tags.keys().map(String::as_str).collect()
    }
}

impl BranchedBackend {
    /// The catalog's history: the records logged since the last checkpoint
    /// with their LSNs, and the LSN the checkpoint covers.
    ///
    /// # Errors
    /// The checkpoint or the log cannot be read.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(main: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
    /// let h = main.history().await?;
    /// for e in &h.entries {
    ///     println!("{} {:?}", e.lsn, e.record);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn history(&self) -> Result<History> {
        let cat = self.core.catalog.clone();
        let (covered, records) =
            tokio::task::spawn_blocking(move || cat.log_after_checkpoint()).await??;
        Ok(History::from_pairs(covered, records))
    }
}

/// Read the catalog of the store in directory `store` without opening it:
/// no lock is taken, nothing is recovered or repaired, so this works while
/// another process has the store open, and shows what a crash left pending.
///
/// # Errors
/// `store` has no catalog (`<store>/_lancebranch/`), the checkpoint or
/// the log cannot be read or decoded,
/// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) for a
/// store of a newer format, or
/// [`Error::CorruptCatalog`](crate::Error::CorruptCatalog) for a log that
/// does not continue the checkpoint.
///
/// # Example
/// ```no_run
/// # fn demo() -> anyhow::Result<()> {
/// let cat = lancebranch::branched::read_catalog_offline(std::path::Path::new("./store"))?;
/// println!("{} operation(s) pending", cat.pending().len());
/// # Ok(()) }
/// ```
pub fn read_catalog_offline(store: &Path) -> Result<OfflineCatalog> {
    let dir = store.join("_lancebranch");
    if !dir.is_dir() {
        anyhow::bail!("{} holds no lancebranch catalog", store.display());
    }
    // The follower's read: no lock, nothing repaired, read again when the
    // owner replaced the checkpoint and truncated the log in between.
    let (log, mut state, records) = WalLog::open_read_only(&dir)?;
    let covered = state.applied;
    for (lsn, rec) in &records {
        if *lsn > state.applied {
            state.apply(*lsn, rec);
        }
    }
    Ok(OfflineCatalog {
        state,
        history: History::from_pairs(covered, records),
        torn_tail_bytes: log.torn_tail_bytes(),
    })
}

/// The steps of replaying a store's catalog on open, timed once (for the
/// recovery bench; feature `testing`).
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogReplay {
    /// Size of the checkpoint file.
    pub checkpoint_bytes: usize,
    /// Reading and decoding the checkpoint.
    pub decode: std::time::Duration,
    /// Bytes of log read after the checkpoint.
    pub log_bytes: u64,
    /// Reading and checking those records.
    pub scan: std::time::Duration,
    /// Records after the checkpoint.
    pub records_since: usize,
    /// Applying them to the checkpoint's state.
    pub apply: std::time::Duration,
}

/// Time the three steps of replaying the catalog of `store` (a store's
/// directory, not open elsewhere for writing): decode the checkpoint, read
/// the log after it, apply the records.
///
/// # Errors
/// The catalog cannot be read.
#[cfg(feature = "testing")]
pub fn time_catalog_replay(store: &Path) -> Result<CatalogReplay> {
    use crate::branched::format::read_checkpoint;
    use lancebranch_wal::{Lsn, RecoveryMode, StdStorage, read_log};
    use std::time::Instant;
    let dir = store.join("_lancebranch");
    let t = Instant::now();
    let checkpoint_bytes = std::fs::metadata(dir.join("checkpoint")).map_or(0, |m| m.len());
    let mut state = read_checkpoint(&dir)?.unwrap_or_default();
    let decode = t.elapsed();
    let t = Instant::now();
    let storage = StdStorage::open(dir.join("wal"))?;
    let log = read_log::<Record>(
        &storage,
        RecoveryMode::TolerateCorruptedTail,
        Lsn(state.applied + 1),
    )?;
    let scan = t.elapsed();
    let t = Instant::now();
    for (lsn, rec) in &log.records {
        state.apply(lsn.0, rec);
    }
    let apply = t.elapsed();
    Ok(CatalogReplay {
        checkpoint_bytes: usize::try_from(checkpoint_bytes)?,
        decode,
        log_bytes: log.report.bytes_read,
        scan,
        records_since: log.records.len(),
        apply,
    })
}
