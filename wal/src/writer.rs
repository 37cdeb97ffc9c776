//! The writer: open with recovery, append with group commit, segment
//! rotation, poisoning, truncation after a checkpoint.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::commit::{GroupCommit, lock_error};
use crate::error::{Error, Result, io_err};
use crate::format::{
    Encoded, Kind, MAX_PAYLOAD, SEGMENT_HEADER_LEN, encode_segment_header, put_frame, segment_name,
    temp_name,
};
use crate::options::{Lsn, Options, Recovered, SyncPolicy};
use crate::reader::{Iter, SegmentRef, analyze, list_dir};
use crate::storage::{StdStorage, Storage, StorageFile};

struct Inner {
    active: Arc<dyn StorageFile>,
    active_len: u64,
    /// Retained segments, oldest first; the last one is `active`.
    segments: Vec<SegmentRef>,
    next_lsn: u64,
}

/// A write-ahead log of records of type `R` (any `Serialize +
/// DeserializeOwned` type, encoded with postcard).
///
/// `Wal` is `Send + Sync`: share it with `Arc` between threads. Appends block
/// the calling thread until the record is durable (with
/// [`SyncPolicy::Always`]); from async code call them inside
/// `tokio::task::spawn_blocking`. Concurrent appenders share one
/// `fdatasync` (group commit): one of them syncs everything written so far
/// while the others wait, and nobody returns before its bytes are synced.
///
/// After a failed write or sync the log is *poisoned*: every later append
/// returns [`Error::Poisoned`] until the log is reopened (which runs
/// recovery), because the kernel may have dropped the unsynced data.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lancebranch_wal::{Lsn, Options, Wal};
///
/// let dir = tempfile::tempdir()?;
/// let (wal, recovered) = Wal::<String>::open(dir.path(), Options::default())?;
/// assert!(recovered.records.is_empty());
/// let wal = Arc::new(wal);
/// let handles: Vec<_> = (0..4)
///     .map(|i| {
///         let wal = Arc::clone(&wal);
///         std::thread::spawn(move || wal.append(&format!("from thread {i}")))
///     })
///     .collect();
/// for h in handles {
///     h.join().expect("thread")?;
/// }
/// drop(wal);
/// let (wal, recovered) = Wal::<String>::open(dir.path(), Options::default())?;
/// assert_eq!(recovered.records.len(), 4);
/// assert_eq!(wal.next_lsn(), Lsn(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Wal<R> {
    storage: Arc<dyn Storage>,
    options: Options,
    inner: Mutex<Inner>,
    commit: GroupCommit,
    poison: OnceLock<String>,
    truncating: Mutex<()>,
    /// Serializes segment syncs (see `sync_file`).
    syncing: Mutex<()>,
    /// Segment syncs so far (see [`Wal::sync_count`]).
    syncs: std::sync::atomic::AtomicU64,
    _records: PhantomData<fn(R) -> R>,
}

impl<R> fmt::Debug for Wal<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("storage", &self.storage)
            .field("options", &self.options)
            .field("poisoned", &self.poison.get())
            .finish_non_exhaustive()
    }
}

/// Writes a new segment's header into a temporary file, syncs it, renames it
/// into place and syncs the directory. Returns the open file.
fn create_segment(storage: &dyn Storage, first_lsn: u64) -> Result<Arc<dyn StorageFile>> {
    install_segment(storage, first_lsn, &encode_segment_header(first_lsn))
}

/// Atomically replaces (or creates) the segment starting at `first_lsn` with
/// `content`, durably.
fn install_segment(
    storage: &dyn Storage,
    first_lsn: u64,
    content: &[u8],
) -> Result<Arc<dyn StorageFile>> {
    let tmp = temp_name(first_lsn);
    let name = segment_name(first_lsn);
    let file = storage
        .create(&tmp)
        .map_err(|e| io_err("create", &tmp, e))?;
    file.append(content)
        .map_err(|e| io_err("append", &tmp, e))?;
    file.sync_data().map_err(|e| io_err("sync_data", &tmp, e))?;
    storage
        .rename(&tmp, &name)
        .map_err(|e| io_err("rename", &tmp, e))?;
    storage
        .sync_dir()
        .map_err(|e| io_err("sync_dir", &name, e))?;
    Ok(Arc::from(file))
}

fn encode<R: Serialize>(record: &R) -> Result<Encoded> {
    let payload = postcard::to_allocvec(record).map_err(Error::Encode)?;
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::RecordTooLarge {
            size: payload.len(),
        });
    }
    Ok(Encoded::new(payload))
}

impl<R: Serialize + DeserializeOwned> Wal<R> {
    /// Opens (creating if needed) the log in directory `dir` for writing,
    /// with [`StdStorage`], running recovery first.
    ///
    /// Recovery reads every retained segment, returns the records at or
    /// above [`Options::replay_from`], and then repairs the log: leftover
    /// temporary files are removed, the valid part of the last segment is
    /// rewritten into a fresh file that atomically replaces it (this cuts off
    /// a torn tail and makes durable exactly what was read, even if an earlier
    /// failed `fsync` left unsynced data in the page cache), and in
    /// [`RecoveryMode::PointInTime`](crate::RecoveryMode) segments after the
    /// stop are deleted. If recovery fails with an error, nothing is changed.
    ///
    /// # Errors
    ///
    /// [`Error::UnreadableDir`], [`Error::Locked`], [`Error::UnexpectedFile`],
    /// [`Error::NotASegment`], [`Error::UnsupportedVersion`],
    /// [`Error::Corruption`], [`Error::Decode`], or [`Error::Io`] during the
    /// repair.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, Wal};
    ///
    /// let dir = tempfile::tempdir()?;
    /// {
    ///     let (wal, _) = Wal::<(u32, String)>::open(dir.path(), Options::default())?;
    ///     wal.append(&(1, "one".into()))?;
    ///     wal.append(&(2, "two".into()))?;
    /// }
    /// let (_wal, recovered) =
    ///     Wal::<(u32, String)>::open(dir.path(), Options::default().replay_from(Lsn(2)))?;
    /// assert_eq!(recovered.records, vec![(Lsn(2), (2, "two".to_string()))]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(Wal<R>, Recovered<R>)> {
        let dir = dir.as_ref();
        let storage = StdStorage::open(dir).map_err(|source| Error::UnreadableDir {
            dir: dir.display().to_string(),
            source,
        })?;
        Self::open_with_storage(storage, options)
    }

    /// Like [`Wal::open`] on any [`Storage`], for example a
    /// [`SimStorage`](crate::SimStorage) in tests.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Options, SimStorage, Wal};
    ///
    /// let sim = SimStorage::new();
    /// let (wal, _) = Wal::<u64>::open_with_storage(sim.clone(), Options::default())?;
    /// wal.append(&42)?;
    /// assert_eq!(sim.file_names(), vec!["00000000000000000001.wal".to_string()]);
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn open_with_storage<S: Storage + 'static>(
        storage: S,
        options: Options,
    ) -> Result<(Wal<R>, Recovered<R>)> {
        Self::open_shared(Arc::new(storage), options)
    }

    /// Like [`Wal::open_with_storage`] with a storage that is already shared.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lancebranch_wal::{Options, SimStorage, Storage, Wal};
    ///
    /// let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    /// let (wal, _) = Wal::<u8>::open_shared(Arc::clone(&storage), Options::default())?;
    /// wal.append(&1)?;
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn open_shared(
        storage: Arc<dyn Storage>,
        options: Options,
    ) -> Result<(Wal<R>, Recovered<R>)> {
        let dir = format!("{storage:?}");
        storage.lock().map_err(|source| {
            if source.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.clone() }
            } else {
                Error::UnreadableDir {
                    dir: dir.clone(),
                    source,
                }
            }
        })?;
        let listing = list_dir(&*storage)?;
        let mut records = Vec::new();
        let analysis = analyze(
            &*storage,
            &listing.segments,
            options.recovery_mode(),
            options.replay_from_lsn().0,
            &mut records,
        )?;

        // Everything below changes the storage; all checks have passed.
        let mut report = analysis.report;
        for t in &listing.temps {
            storage.remove(t).map_err(|e| io_err("remove", t, e))?;
        }
        report.removed_temp_files = listing.temps.clone();
        // Newest first, so an interrupted removal leaves a contiguous log.
        for d in analysis.dropped.iter().rev() {
            storage.remove(d).map_err(|e| io_err("remove", d, e))?;
        }
        if !listing.temps.is_empty() || !analysis.dropped.is_empty() {
            storage
                .sync_dir()
                .map_err(|e| io_err("sync_dir", &dir, e))?;
        }
        let next_lsn = report.next_lsn.0;
        let mut segments = analysis.kept;
        let (active, active_len) = match analysis.last {
            Some((seg, bytes)) => {
                let file = install_segment(&*storage, seg.first_lsn, &bytes)?;
                (file, bytes.len() as u64)
            }
            None => {
                let file = create_segment(&*storage, next_lsn)?;
                segments.push(SegmentRef {
                    first_lsn: next_lsn,
                    name: segment_name(next_lsn),
                });
                (file, SEGMENT_HEADER_LEN as u64)
            }
        };
        let wal = Wal {
            storage,
            options,
            inner: Mutex::new(Inner {
                active,
                active_len,
                segments,
                next_lsn,
            }),
            commit: GroupCommit::new(next_lsn),
            poison: OnceLock::new(),
            truncating: Mutex::new(()),
            syncing: Mutex::new(()),
            syncs: std::sync::atomic::AtomicU64::new(0),
            _records: PhantomData,
        };
        Ok((wal, Recovered { records, report }))
    }

    /// Appends one record and returns its LSN. With [`SyncPolicy::Always`]
    /// the record is durable when this returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::RecordTooLarge`], [`Error::Poisoned`], or
    /// [`Error::Io`] (which poisons the log).
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
    /// let (wal, _) = Wal::<String>::open_with_storage(SimStorage::new(), Options::default())?;
    /// assert_eq!(wal.append(&"a".to_string())?, Lsn(1));
    /// assert_eq!(wal.append(&"b".to_string())?, Lsn(2));
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn append(&self, record: &R) -> Result<Lsn> {
        let _active = self.active_appender();
        let enc = encode(record)?;
        let range = self.write(std::slice::from_ref(&enc))?;
        self.wait_for_policy(range.end)?;
        Ok(Lsn(range.start))
    }

    /// Appends records atomically: after a crash either all of them or none
    /// are recovered. They get consecutive LSNs; returns the half-open range
    /// `first..next`. An empty batch writes nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
    /// let (wal, _) = Wal::<u16>::open_with_storage(SimStorage::new(), Options::default())?;
    /// assert_eq!(wal.append_batch(&[7, 8, 9])?, Lsn(1)..Lsn(4));
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn append_batch(&self, records: &[R]) -> Result<Range<Lsn>> {
        if records.is_empty() {
            let next = self.next_lsn();
            return Ok(next..next);
        }
        let _active = self.active_appender();
        let encoded = records.iter().map(encode).collect::<Result<Vec<_>>>()?;
        let range = self.write(&encoded)?;
        self.wait_for_policy(range.end)?;
        Ok(Lsn(range.start)..Lsn(range.end))
    }

    /// Writes `records` atomically like [`append_batch`](Self::append_batch)
    /// but returns before they are durable: [`sync_until`](Self::sync_until)
    /// with the range's end waits for that. A caller that orders its
    /// writes under a lock of its own can so release the lock before the
    /// sync, and concurrent callers share one sync (group commit). Records
    /// become durable in LSN order: a sync never makes a later batch
    /// durable without every earlier one.
    ///
    /// # Errors
    ///
    /// As [`append_batch`](Self::append_batch) (an I/O error poisons the
    /// log).
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
    /// let (wal, _) = Wal::<u16>::open_with_storage(SimStorage::new(), Options::default())?;
    /// let lsns = wal.write_batch(&[7, 8])?; // e.g. under the caller's lock
    /// wal.sync_until(lsns.end)?; // after releasing it
    /// assert_eq!(lsns, Lsn(1)..Lsn(3));
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn write_batch(&self, records: &[R]) -> Result<Range<Lsn>> {
        if records.is_empty() {
            let next = self.next_lsn();
            return Ok(next..next);
        }
        let encoded = records.iter().map(encode).collect::<Result<Vec<_>>>()?;
        let range = self.write(&encoded)?;
        Ok(Lsn(range.start)..Lsn(range.end))
    }

    /// Returns once every record below `end` is durable (with
    /// [`SyncPolicy::Never`]: at once). Concurrent callers share one sync.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], or [`Error::Io`] when the sync fails (which
    /// poisons the log: the records may or may not be on disk).
    pub fn sync_until(&self, end: Lsn) -> Result<()> {
        let _active = self.active_appender();
        self.wait_for_policy(end.0)
    }
}

impl<R> Wal<R> {
    fn lock_inner(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| lock_error())
    }

    /// Counts the caller as a concurrent appender (for group commit).
    fn active_appender(&self) -> Option<crate::commit::Active<'_>> {
        (self.options.sync_policy() == SyncPolicy::Always).then(|| self.commit.enter())
    }

    fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records the first failure; returns `err` for convenience.
    fn poison_with(&self, err: Error) -> Error {
        let _ = self.poison.set(err.to_string());
        err
    }

    /// Writes the frames of `recs` (one batch) and returns their LSNs.
    fn write(&self, recs: &[Encoded]) -> Result<Range<u64>> {
        let total: usize = recs.iter().map(Encoded::frame_len).sum();
        let mut inner = self.lock_inner()?;
        self.check_poison()?;
        let seg_size = self.options.segment_size_bytes();
        if inner.active_len > SEGMENT_HEADER_LEN as u64
            && inner.active_len.saturating_add(total as u64) > seg_size
        {
            self.rotate(&mut inner)?;
        }
        let first = inner.next_lsn;
        let Some(end) = first.checked_add(recs.len() as u64) else {
            return Err(io_err(
                "append",
                "log",
                std::io::Error::other("LSN space exhausted"),
            ));
        };
        let mut buf = Vec::with_capacity(total);
        for (i, rec) in recs.iter().enumerate() {
            put_frame(
                &mut buf,
                first + i as u64,
                Kind::in_batch(i, recs.len()),
                rec,
            );
        }
        if let Err(e) = inner.active.append(&buf) {
            let name = inner
                .segments
                .last()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            return Err(self.poison_with(io_err("append", &name, e)));
        }
        inner.active_len += total as u64;
        inner.next_lsn = end;
        Ok(first..end)
    }

    /// `sync_data` of a segment, serialized with every other segment sync
    /// and refused once poisoned. After a failed sync Linux may report a
    /// later sync of the same file as successful although the data of the
    /// failed one was dropped; serializing and checking the poison under one
    /// lock guarantees no sync "succeeds" after a failure.
    fn sync_file(&self, file: &dyn StorageFile, name: &str) -> Result<()> {
        let _serial = self.syncing.lock().map_err(|_| lock_error())?;
        self.check_poison()?;
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        file.sync_data()
            .map_err(|e| self.poison_with(io_err("sync_data", name, e)))
    }

    /// Syncs the full active segment and starts a new one.
    fn rotate(&self, inner: &mut Inner) -> Result<()> {
        let old = inner
            .segments
            .last()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        self.sync_file(&*inner.active, &old)?;
        let first = inner.next_lsn;
        let file = create_segment(&*self.storage, first).map_err(|e| self.poison_with(e))?;
        inner.active = file;
        inner.active_len = SEGMENT_HEADER_LEN as u64;
        inner.segments.push(SegmentRef {
            first_lsn: first,
            name: segment_name(first),
        });
        // Everything before the new segment is durable now.
        self.commit.advance(first);
        Ok(())
    }

    fn wait_for_policy(&self, end: u64) -> Result<()> {
        match self.options.sync_policy() {
            SyncPolicy::Always => self.wait_durable(end),
            SyncPolicy::Never => Ok(()),
        }
    }

    /// Returns once every record below `end` is durable (group commit, see
    /// `commit.rs`).
    fn wait_durable(&self, end: u64) -> Result<()> {
        self.commit
            .wait(end, || self.check_poison(), || self.sync_active())
    }

    /// Syncs the active segment; returns the LSN below which all is durable.
    fn sync_active(&self) -> Result<u64> {
        let (file, target, name) = {
            let inner = self.lock_inner()?;
            let name = inner
                .segments
                .last()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            (Arc::clone(&inner.active), inner.next_lsn, name)
        };
        self.sync_file(&*file, &name)?;
        Ok(target)
    }

    /// Makes every record appended so far durable (useful with
    /// [`SyncPolicy::Never`]). Shares the sync with concurrent appenders.
    /// Fails with [`Error::Poisoned`] on a poisoned log.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Options, SimStorage, SyncPolicy, Wal};
    /// let opts = Options::default().sync(SyncPolicy::Never);
    /// let (wal, _) = Wal::<u8>::open_with_storage(SimStorage::new(), opts)?;
    /// wal.append(&1)?;
    /// wal.append(&2)?;
    /// wal.sync()?; // both durable now
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn sync(&self) -> Result<()> {
        self.check_poison()?;
        let end = self.lock_inner()?.next_lsn;
        self.wait_durable(end)
    }

    /// Deletes whole segments all of whose records have an LSN below `lsn`,
    /// typically after a checkpoint that covers them, and syncs the directory.
    /// The active segment is never deleted, so records below `lsn` in the
    /// oldest remaining segment are still there (recovery returns them unless
    /// [`Options::replay_from`] skips them). Returns the number of segments
    /// deleted. A failed directory sync poisons the log.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
    /// let opts = Options::default().segment_size(64); // tiny segments
    /// let (wal, _) = Wal::<u64>::open_with_storage(SimStorage::new(), opts)?;
    /// for i in 0..20 {
    ///     wal.append(&i)?;
    /// }
    /// let checkpoint = Lsn(15);
    /// assert!(wal.truncate_before(checkpoint)? > 0);
    /// assert!(wal.first_lsn() <= checkpoint);
    /// let rest: Vec<_> = wal.iter_from(checkpoint)?.collect::<Result<_, _>>()?;
    /// assert_eq!(rest.len(), 6);
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        let _one_at_a_time = self.truncating.lock().map_err(|_| lock_error())?;
        let doomed: Vec<String> = {
            let inner = self.lock_inner()?;
            let segs = &inner.segments;
            let mut k = 0;
            while k + 1 < segs.len() && segs[k + 1].first_lsn <= lsn.0 {
                k += 1;
            }
            segs[..k].iter().map(|s| s.name.clone()).collect()
        };
        let mut removed = 0;
        let mut failure = None;
        // Oldest first, so an interrupted truncation leaves a contiguous log.
        for name in &doomed {
            match self.storage.remove(name) {
                Ok(()) => removed += 1,
                Err(e) => {
                    failure = Some(io_err("remove", name, e));
                    break;
                }
            }
        }
        self.lock_inner()?.segments.drain(..removed);
        if removed > 0 {
            self.storage.sync_dir().map_err(|e| {
                self.poison_with(io_err("sync_dir", &format!("{:?}", self.storage), e))
            })?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// The LSN the next appended record will get.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
    /// let (wal, _) = Wal::<u8>::open_with_storage(SimStorage::new(), Options::default())?;
    /// assert_eq!(wal.next_lsn(), Lsn(1));
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.inner.lock().map(|i| i.next_lsn).unwrap_or(0))
    }

    /// The first LSN of the oldest retained segment: records below it were
    /// removed by [`Wal::truncate_before`].
    pub fn first_lsn(&self) -> Lsn {
        Lsn(self
            .inner
            .lock()
            .ok()
            .and_then(|i| i.segments.first().map(|s| s.first_lsn))
            .unwrap_or(0))
    }

    /// Every record below this LSN is known to be durable.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.commit.synced())
    }

    /// How many times a segment was synced since the log was opened
    /// (`fdatasync` on files; directory syncs are not counted): with group
    /// commit, fewer than the appends.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Options, SimStorage, Wal};
    /// let (wal, _) = Wal::<u8>::open_with_storage(SimStorage::new(), Options::default())?;
    /// wal.append(&1)?;
    /// assert_eq!(wal.sync_count(), 1);
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether an earlier failure poisoned the log (see [`Error::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poison.get().is_some()
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Number of retained segment files.
    pub fn segment_count(&self) -> usize {
        self.inner.lock().map(|i| i.segments.len()).unwrap_or(0)
    }
}

impl<R: DeserializeOwned> Wal<R> {
    /// Iterates over the records with LSN at or above `lsn` appended so far
    /// (as of this call), reading them back from storage. Records below
    /// [`Wal::first_lsn`] are gone; the iterator starts where the log does.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Lsn, Options, SimStorage, Wal};
    /// let (wal, _) = Wal::<char>::open_with_storage(SimStorage::new(), Options::default())?;
    /// wal.append_batch(&['a', 'b', 'c'])?;
    /// let all: Vec<_> = wal.iter_from(Lsn::ZERO)?.map(|r| r.map(|(_, c)| c)).collect::<Result<_, _>>()?;
    /// assert_eq!(all, vec!['a', 'b', 'c']);
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn iter_from(&self, lsn: Lsn) -> Result<Iter<R>> {
        let inner = self.lock_inner()?;
        let start = inner
            .segments
            .iter()
            .rposition(|s| s.first_lsn <= lsn.0)
            .unwrap_or(0);
        Ok(Iter::new(
            Arc::clone(&self.storage),
            inner.segments[start..].to_vec(),
            self.options.recovery_mode(),
            lsn.0,
            inner.next_lsn,
        ))
    }
}
