//! A simulated storage for crash testing, in the style of SQLite's crash VFS
//! (`src/test6.c`): every file has a durable image plus the list of writes
//! and truncations made since its last successful `sync_data`; directory
//! operations become durable only at `sync_dir`. [`SimStorage::crash`]
//! computes what a power loss could leave behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::storage::{Storage, StorageFile};

/// Sector size used when garbling a torn write.
pub const SECTOR: usize = 512;

/// A small deterministic PRNG (SplitMix64), so crashes replay from a seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: usize, data: Vec<u8> },
    Truncate(usize),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Rename(String, String),
    Remove(String),
}

fn apply_dir(dir: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, id) => {
            dir.insert(name.clone(), *id);
        }
        DirOp::Rename(from, to) => {
            if let Some(id) = dir.remove(from) {
                dir.insert(to.clone(), id);
            }
        }
        DirOp::Remove(name) => {
            dir.remove(name);
        }
    }
}

fn apply_file(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => {
            let end = offset + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset..end].copy_from_slice(data);
        }
        FileOp::Truncate(len) => content.resize(*len, 0),
    }
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What reads see (the "page cache").
    live: Vec<u8>,
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// Operations since the last successful sync, in order.
    pending: Vec<FileOp>,
}

/// Counters of what a [`SimStorage`] was asked to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    /// All storage operations (the counter [`SimStorage::power_off_at`] uses).
    pub ops: u64,
    /// Calls of `sync_data` (including failed ones).
    pub sync_data: u64,
    /// Calls of `sync_dir`.
    pub sync_dir: u64,
    /// Calls of `append`.
    pub appends: u64,
    /// Calls of `read`.
    pub reads: u64,
    /// Bytes returned by `read`.
    pub bytes_read: u64,
}

#[derive(Debug, Default)]
struct SimState {
    next_id: u64,
    epoch: u64,
    live_dir: BTreeMap<String, u64>,
    durable_dir: BTreeMap<String, u64>,
    pending_dir: Vec<DirOp>,
    files: HashMap<u64, SimFile>,
    power_off_at: Option<u64>,
    powered_off: bool,
    fail_sync_in: Option<u64>,
    sync_delay: Duration,
    stats: SimStats,
}

fn power_loss() -> io::Error {
    io::Error::other("simulated power loss")
}

impl SimState {
    /// Counts one operation and fails it if the power is (now) off.
    fn begin(&mut self) -> io::Result<()> {
        self.stats.ops += 1;
        if self.powered_off {
            return Err(power_loss());
        }
        if let Some(k) = self.power_off_at
            && self.stats.ops >= k
        {
            self.powered_off = true;
            return Err(power_loss());
        }
        Ok(())
    }

    fn file_mut(&mut self, id: u64, epoch: u64) -> io::Result<&mut SimFile> {
        if epoch != self.epoch {
            return Err(io::Error::other(
                "file handle from before a simulated crash",
            ));
        }
        self.files
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("file handle of a vanished file"))
    }
}

/// In-memory [`Storage`] that simulates power loss, torn writes and failing
/// `fsync`. Clones share the same state, so a test keeps one clone to
/// inspect and crash while the log uses another.
///
/// Model:
/// * A write or truncation is visible at once but durable only after a
///   successful `sync_data` of that file.
/// * Creating, renaming and removing files is visible at once but durable
///   only after `sync_dir`.
/// * [`crash`](SimStorage::crash) keeps a random in-order prefix of the
///   pending directory operations and, independently for every surviving
///   file, one of: drop all unsynced operations, keep them all, keep a random
///   prefix, keep a prefix and tear the next write at any byte, or keep a
///   prefix and fill the unsynced bytes of the last sector of the last kept
///   write with garbage. Synced bytes are never damaged (the "powersafe
///   overwrite" assumption of SQLite).
/// * [`fail_sync`](SimStorage::fail_sync) makes a later `sync_data` fail with
///   EIO and *lose* that file's unsynced operations (they stay visible but will
///   never become durable, like Linux marking failed pages clean).
/// * [`power_off_at`](SimStorage::power_off_at) makes the k-th operation and
///   every later one fail, as if the machine stopped there.
///
/// # Example
///
/// ```
/// use lancebranch_wal::{Options, SimStorage, SyncPolicy, Wal};
///
/// let sim = SimStorage::new();
/// let opts = Options::default().sync(SyncPolicy::Never);
/// let (wal, _) = Wal::<u32>::open_with_storage(sim.clone(), opts.clone())?;
/// wal.append(&1)?;
/// wal.sync()?; // durable
/// wal.append(&2)?; // not synced
/// drop(wal);
/// sim.crash(7); // power loss: record 2 may or may not survive
/// let (_, rec) = Wal::<u32>::open_with_storage(sim.clone(), opts)?;
/// assert_eq!(rec.records[0].1, 1);
/// # Ok::<(), lancebranch_wal::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimStorage")
    }
}

impl SimStorage {
    /// An empty simulated directory.
    ///
    /// # Example
    ///
    /// ```
    /// let sim = lancebranch_wal::SimStorage::new();
    /// assert!(sim.file_names().is_empty());
    /// ```
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates or replaces a file whose content and directory entry are
    /// already durable (for building test inputs).
    pub fn put_file(&self, name: &str, content: &[u8]) {
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.files.insert(
            id,
            SimFile {
                live: content.to_vec(),
                durable: content.to_vec(),
                pending: Vec::new(),
            },
        );
        st.live_dir.insert(name.to_owned(), id);
        st.durable_dir.insert(name.to_owned(), id);
    }

    /// The visible content of a file, if it exists.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state();
        let id = st.live_dir.get(name)?;
        st.files.get(id).map(|f| f.live.clone())
    }

    /// The content of a file that is sure to survive a crash (its durable
    /// image, if its directory entry is durable).
    pub fn durable_file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state();
        let id = st.durable_dir.get(name)?;
        st.files.get(id).map(|f| f.durable.clone())
    }

    /// A new, independent storage holding only what is sure to survive any
    /// crash now: the durable directory entries with their durable content.
    pub fn durable_snapshot(&self) -> SimStorage {
        let st = self.state();
        let copy = SimStorage::new();
        for (name, id) in &st.durable_dir {
            if let Some(f) = st.files.get(id) {
                copy.put_file(name, &f.durable);
            }
        }
        copy
    }

    /// The visible file names, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.state().live_dir.keys().cloned().collect()
    }

    /// Operation counters so far.
    pub fn stats(&self) -> SimStats {
        self.state().stats
    }

    /// Makes operation number `k` (counting every storage call since this
    /// storage was created, from 1; see [`SimStats::ops`]) and all later ones
    /// fail, as if the power went off just before it. `None` turns it off.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Options, SimStorage, Wal};
    ///
    /// let sim = SimStorage::new();
    /// let (wal, _) = Wal::<u8>::open_with_storage(sim.clone(), Options::default())?;
    /// sim.power_off_at(Some(sim.stats().ops + 2)); // the append's sync never happens
    /// assert!(wal.append(&1).is_err());
    /// drop(wal);
    /// sim.crash(3);
    /// let (_, rec) = Wal::<u8>::open_with_storage(sim.clone(), Options::default())?;
    /// assert!(rec.records.len() <= 1); // unacknowledged: may or may not be there
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn power_off_at(&self, k: Option<u64>) {
        self.state().power_off_at = k;
    }

    /// Whether the simulated power is off.
    pub fn is_powered_off(&self) -> bool {
        self.state().powered_off
    }

    /// Makes the `n`-th `sync_data` call from now (1 = the next one) fail
    /// with EIO, losing the unsynced operations of that file.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{Error, Options, SimStorage, Wal};
    ///
    /// let sim = SimStorage::new();
    /// let (wal, _) = Wal::<u8>::open_with_storage(sim.clone(), Options::default())?;
    /// sim.fail_sync(1);
    /// assert!(wal.append(&1).is_err());
    /// assert!(matches!(wal.append(&2), Err(Error::Poisoned { .. })));
    /// # Ok::<(), lancebranch_wal::Error>(())
    /// ```
    pub fn fail_sync(&self, n: u64) {
        self.state().fail_sync_in = Some(n.max(1));
    }

    /// Makes every `sync_data` take `delay` (to make group commit observable).
    pub fn set_sync_delay(&self, delay: Duration) {
        self.state().sync_delay = delay;
    }

    /// Simulates a power loss and reboot: computes the surviving state from
    /// `seed` (see the type's documentation), makes it both visible and
    /// durable, switches the power back on, clears injected faults and
    /// invalidates open file handles. Returns a description of the choices
    /// made, for failure messages.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::{SimStorage, Storage};
    ///
    /// let sim = SimStorage::new();
    /// let f = sim.create("a")?;
    /// sim.sync_dir()?; // the entry is durable
    /// f.append(b"synced")?;
    /// f.sync_data()?;
    /// f.append(b" and not")?;
    /// let what = sim.crash(42);
    /// let got = sim.file("a").expect("durable entry");
    /// assert!(got.starts_with(b"synced"), "{what}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn crash(&self, seed: u64) -> String {
        let mut st = self.state();
        let mut rng = Rng::new(seed);
        let mut log = String::new();

        let n_dir = st.pending_dir.len();
        let keep_dir = rng.below(n_dir + 1);
        let mut dir = st.durable_dir.clone();
        for op in &st.pending_dir[..keep_dir] {
            apply_dir(&mut dir, op);
        }
        log.push_str(&format!("dir ops kept {keep_dir}/{n_dir}"));

        let ids: BTreeSet<u64> = dir.values().copied().collect();
        let mut files = HashMap::new();
        for id in ids {
            let Some(f) = st.files.get(&id) else { continue };
            let mut content = f.durable.clone();
            let n = f.pending.len();
            if n > 0 {
                let mode = rng.below(5);
                let (desc, keep) = match mode {
                    0 => ("drop", 0),
                    1 => ("keep", n),
                    2 => ("prefix", rng.below(n + 1)),
                    3 => ("tear", rng.below(n)),
                    _ => ("garble", 1 + rng.below(n)),
                };
                for op in &f.pending[..keep] {
                    apply_file(&mut content, op);
                }
                let mut extra = String::new();
                if mode == 3
                    && let Some(FileOp::Write { offset, data }) = f.pending.get(keep)
                {
                    let cut = rng.below(data.len());
                    apply_file(
                        &mut content,
                        &FileOp::Write {
                            offset: *offset,
                            data: data[..cut].to_vec(),
                        },
                    );
                    extra = format!(" torn at {cut}/{}", data.len());
                }
                if mode == 4
                    && let Some(FileOp::Write { offset, data }) = f.pending.get(keep - 1)
                    && !data.is_empty()
                {
                    let end = offset + data.len();
                    let start = ((end - 1) / SECTOR * SECTOR).max(*offset);
                    for b in &mut content[start..end] {
                        *b = rng.next_u64() as u8;
                    }
                    extra = format!(" garbled {start}..{end}");
                }
                log.push_str(&format!("; file#{id} {desc} {keep}/{n}{extra}"));
            }
            files.insert(
                id,
                SimFile {
                    live: content.clone(),
                    durable: content,
                    pending: Vec::new(),
                },
            );
        }
        st.files = files;
        st.live_dir = dir.clone();
        st.durable_dir = dir;
        st.pending_dir.clear();
        st.powered_off = false;
        st.power_off_at = None;
        st.fail_sync_in = None;
        st.epoch += 1;
        log
    }

    fn handle(&self, id: u64, epoch: u64) -> Box<dyn StorageFile> {
        Box::new(SimHandle {
            sim: self.clone(),
            id,
            epoch,
        })
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut st = self.state();
        st.begin()?;
        Ok(st.live_dir.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut st = self.state();
        st.begin()?;
        let id = *st.live_dir.get(name).ok_or_else(|| not_found(name))?;
        let data = st
            .files
            .get(&id)
            .map(|f| f.live.clone())
            .unwrap_or_default();
        st.stats.reads += 1;
        st.stats.bytes_read += data.len() as u64;
        Ok(data)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.state();
        st.begin()?;
        let epoch = st.epoch;
        if let Some(&id) = st.live_dir.get(name) {
            let f = st.file_mut(id, epoch)?;
            f.live.clear();
            f.pending.push(FileOp::Truncate(0));
            return Ok(self.handle(id, epoch));
        }
        let id = st.next_id;
        st.next_id += 1;
        st.files.insert(id, SimFile::default());
        st.live_dir.insert(name.to_owned(), id);
        st.pending_dir.push(DirOp::Link(name.to_owned(), id));
        Ok(self.handle(id, epoch))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.state();
        st.begin()?;
        let id = *st.live_dir.get(name).ok_or_else(|| not_found(name))?;
        Ok(self.handle(id, st.epoch))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state();
        st.begin()?;
        let id = st.live_dir.remove(from).ok_or_else(|| not_found(from))?;
        st.live_dir.insert(to.to_owned(), id);
        st.pending_dir
            .push(DirOp::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state();
        st.begin()?;
        st.live_dir.remove(name).ok_or_else(|| not_found(name))?;
        st.pending_dir.push(DirOp::Remove(name.to_owned()));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state();
        st.begin()?;
        st.stats.sync_dir += 1;
        let pending = std::mem::take(&mut st.pending_dir);
        for op in &pending {
            apply_dir(&mut st.durable_dir, op);
        }
        Ok(())
    }
}

struct SimHandle {
    sim: SimStorage,
    id: u64,
    epoch: u64,
}

impl StorageFile for SimHandle {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.sim.state();
        st.begin()?;
        st.stats.appends += 1;
        let f = st.file_mut(self.id, self.epoch)?;
        let offset = f.live.len();
        f.live.extend_from_slice(buf);
        f.pending.push(FileOp::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = {
            let mut st = self.sim.state();
            st.begin()?;
            st.sync_delay
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut st = self.sim.state();
        if st.powered_off {
            return Err(power_loss());
        }
        st.stats.sync_data += 1;
        let fail = match st.fail_sync_in {
            Some(n) if n <= 1 => {
                st.fail_sync_in = None;
                true
            }
            Some(n) => {
                st.fail_sync_in = Some(n - 1);
                false
            }
            None => false,
        };
        let f = st.file_mut(self.id, self.epoch)?;
        let pending = std::mem::take(&mut f.pending);
        if fail {
            // Like Linux after a writeback error: the pages are marked clean,
            // the data stays visible but will never reach the disk.
            return Err(io::Error::other("simulated EIO on sync_data"));
        }
        for op in &pending {
            apply_file(&mut f.durable, op);
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut st = self.sim.state();
        st.begin()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let f = st.file_mut(self.id, self.epoch)?;
        f.live.resize(len, 0);
        f.pending.push(FileOp::Truncate(len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.sim.state();
        st.begin()?;
        let f = st.file_mut(self.id, self.epoch)?;
        Ok(f.live.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_dir_entries_can_vanish() {
        let sim = SimStorage::new();
        let f = sim.create("a").expect("create");
        f.append(b"hello").expect("append");
        f.sync_data().expect("sync");
        // Directory entry not synced: across seeds, sometimes the file is gone.
        let mut gone = 0;
        for seed in 0..20 {
            let s = SimStorage::new();
            let f = s.create("a").expect("create");
            f.append(b"hello").expect("append");
            f.sync_data().expect("sync");
            s.crash(seed);
            if s.file("a").is_none() {
                gone += 1;
            } else {
                assert_eq!(s.file("a").as_deref(), Some(&b"hello"[..]));
            }
        }
        assert!(gone > 0 && gone < 20);
        sim.sync_dir().expect("sync_dir");
        f.append(b" world").expect("append");
        for seed in 0..50 {
            let s2 = sim.clone();
            let (snapshot, dirs, pend) = {
                let st = s2.state();
                (
                    st.files.clone(),
                    (st.live_dir.clone(), st.durable_dir.clone()),
                    st.pending_dir.clone(),
                )
            };
            s2.crash(seed);
            let got = s2.file("a").expect("durable entry");
            assert!(got.starts_with(b"hello") && got.len() <= 11, "{got:?}");
            // restore for the next seed
            let mut st = s2.state();
            st.files = snapshot;
            st.live_dir = dirs.0;
            st.durable_dir = dirs.1;
            st.pending_dir = pend;
        }
    }

    #[test]
    fn failed_sync_loses_data_for_good() {
        let sim = SimStorage::new();
        let f = sim.create("a").expect("create");
        sim.sync_dir().expect("sync_dir");
        f.append(b"lost").expect("append");
        sim.fail_sync(1);
        assert!(f.sync_data().is_err());
        assert_eq!(sim.file("a").as_deref(), Some(&b"lost"[..]));
        f.append(b"kept").expect("append");
        f.sync_data().expect("sync");
        assert_eq!(sim.durable_file("a").as_deref(), Some(&b"\0\0\0\0kept"[..]));
    }

    #[test]
    fn power_off_fails_every_later_op() {
        let sim = SimStorage::new();
        sim.power_off_at(Some(2));
        assert!(sim.list().is_ok());
        assert!(sim.list().is_err());
        assert!(sim.list().is_err());
        sim.crash(0);
        assert!(sim.list().is_ok());
    }
}
