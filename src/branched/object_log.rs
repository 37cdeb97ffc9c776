//! The catalog log on object storage (`s3://…`): one object per group of
//! records, created with a conditional put, so that exactly one writer
//! ever logs each LSN, and a writer that another one took over from is
//! fenced at its next write.
//!
//! Layout under `<store>/_lancebranch/` (`CATALOG.md` §10):
//!
//! * `FORMAT`: the format marker, as in a local catalog (format 2: the log
//!   may hold [`Record::Writer`]).
//! * `log/{lsn:020}`: one group of records, whose first record has LSN
//!   `lsn` (the next group's name is `lsn` + its record count). Bytes: a
//!   format byte ([`GROUP_FORMAT`]) and the postcard encoding of
//!   `(epoch, records)`, `epoch` being the writer's epoch. Written with
//!   `PutMode::Create` (`If-None-Match: *`): a name is written once.
//! * `checkpoint/{lsn:020}`: a checkpoint covering records `1..=lsn` (the
//!   bytes of a local checkpoint file), also created once.
//!
//! A writer's **epoch** is the LSN of the [`Record::Writer`] it logs when it
//! opens: logging it at the log's tail fences every earlier writer, whose
//! next group is then written at a name that exists (its create fails:
//! [`Error::Fenced`]). Prior art: Delta Lake's `_delta_log/{v:020}.json`
//! written with put-if-absent, SlateDB's writer epochs.
//!
//! A checkpoint at `lsn` is created, then the older checkpoints and the
//! groups it covers are deleted, except the group that ends at `lsn` (so
//! that a reader always finds the log's newest group and notices that it
//! fell behind a checkpoint) and every group holding a [`Record::Writer`]:
//! such a group is the name an earlier writer's next group would take, so
//! it must exist for as long as that writer may live. A writer deletes
//! only groups it read or wrote (after the checkpoint it opened from), so
//! it knows which those are.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::backend::Error;
use crate::branched::catalog::{CatalogState, Record};
use crate::branched::format::{
    CATALOG_FORMAT, decode_checkpoint, encode_checkpoint, format_line, parse_format,
};
use crate::branched::log::{CatalogLog, Opened, read_consistent};

/// The format byte in front of a group object.
pub const GROUP_FORMAT: u8 = 1;

/// How many times opening for writing retries taking the tail when
/// another writer logs there first.
const TAKEOVER_TRIES: usize = 32;

/// The catalog log of a store on object storage.
pub(crate) struct ObjectLog {
    store: Arc<dyn ObjectStore>,
    /// `<store base>/_lancebranch`.
    root: Path,
    /// The store's URI, for messages.
    uri: String,
    /// Where every request of the log runs (see [`IoRuntime`]).
    io: IoRuntime,
    /// The LSN the next group is written at (the end of what was read).
    next: AtomicU64,
    /// This writer's epoch (0: a read-only open).
    epoch: AtomicU64,
    /// Set once a create found its name taken: never written again.
    fenced: AtomicBool,
    /// The LSN of the checkpoint this writer opened from: it deletes no
    /// group at or below it (it never read them).
    floor: AtomicU64,
    /// The groups this writer read or wrote that hold a
    /// [`Record::Writer`]: never deleted (see [`CatalogLog::checkpoint`]).
    writer_groups: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

/// The log's own runtime: one thread that drives the I/O of the log's
/// requests. The catalog makes them under its commit lock, from blocking
/// threads; were they driven by the caller's runtime, tasks of that
/// runtime waiting for the lock (a fork taking an id, a snapshot's pin)
/// could occupy every worker, and the request would never complete.
struct IoRuntime {
    /// Taken on drop only.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl IoRuntime {
    fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lancebranch-catalog-io")
            .enable_all()
            .build()
            .context("starting the catalog log's I/O runtime")?;
        let handle = rt.handle().clone();
        Ok(Self {
            rt: Some(rt),
            handle,
        })
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropped anywhere, an async context too: do not wait for the
        // runtime's thread.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One decoded group: its records (the first has the LSN of its name).
struct Group {
    records: Vec<Record>,
}

impl ObjectLog {
    /// Open the catalog under `base` (the store's own path in `store`).
    /// For writing (`write`), this writer's epoch is taken: a
    /// [`Record::Writer`] naming `owner` is logged at the tail (returned
    /// among the records), fencing every earlier writer.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`], [`Error::CorruptCatalog`], or I/O.
    pub(crate) fn open(
        store: Arc<dyn ObjectStore>,
        base: &Path,
        uri: &str,
        write: bool,
        owner: &str,
    ) -> Result<Opened<Self>> {
        let log = Self {
            store,
            root: base.clone().join("_lancebranch"),
            uri: uri.to_string(),
            io: IoRuntime::new()?,
            next: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            floor: AtomicU64::new(0),
            writer_groups: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        };
        log.check_format(write)?;
        let (state, mut records) = read_consistent(&log)?;
        log.floor.store(state.applied, Ordering::SeqCst);
        let mut tail = records.last().map_or(state.applied, |(l, _)| *l);
        log.next.store(tail + 1, Ordering::SeqCst);
        if write {
            let writer = Record::Writer {
                owner: owner.to_string(),
            };
            for _ in 0..TAKEOVER_TRIES {
                let epoch = tail + 1;
                if log.create_group(epoch, epoch, std::slice::from_ref(&writer))? {
                    log.note_writer_group(epoch);
                    log.epoch.store(epoch, Ordering::SeqCst);
                    log.next.store(epoch + 1, Ordering::SeqCst);
                    records.push((epoch, writer));
                    return Ok((log, state, records));
                }
                // Another writer logged there first: read on and try again.
                let more = log.read_after(tail)?;
                tail = more.last().map_or(tail, |(l, _)| *l);
                records.extend(more);
            }
            anyhow::bail!("could not take the log of {uri} over: other writers keep writing");
        }
        Ok((log, state, records))
    }

    /// This writer's epoch (0 for a read-only open).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Run `f` on the log's own runtime, from a blocking context.
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.io.handle.block_on(f)
    }

    fn place(&self) -> String {
        format!("{}/_lancebranch", self.uri.trim_end_matches('/'))
    }

    fn group_path(&self, lsn: u64) -> Path {
        self.root.clone().join("log").join(format!("{lsn:020}"))
    }

    fn checkpoint_path(&self, lsn: u64) -> Path {
        self.root
            .clone()
            .join("checkpoint")
            .join(format!("{lsn:020}"))
    }

    /// Check the format marker; a writer creates it (format 2) when
    /// missing.
    fn check_format(&self, write: bool) -> Result<()> {
        let path = self.root.clone().join("FORMAT");
        let place = self.place();
        loop {
            match self.block(self.store.get(&path)) {
                Ok(got) => {
                    let bytes = self.block(got.bytes())?;
                    parse_format(&place, &bytes)?;
                    return Ok(());
                }
                Err(object_store::Error::NotFound { .. }) if write => {
                    let line = format_line(CATALOG_FORMAT);
                    match self.put_create(&path, line.into_bytes()) {
                        Ok(true) => return Ok(()),
                        Ok(false) => continue, // another writer made it: read it
                        Err(e) => return Err(e),
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {
                    anyhow::bail!("{place} holds no lancebranch catalog")
                }
                Err(e) => return Err(e).with_context(|| format!("reading {place}/FORMAT")),
            }
        }
    }

    /// Create `path` with `bytes` unless it exists: `Ok(false)` if it did.
    fn put_create(&self, path: &Path, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self.store.put_opts(path, PutPayload::from(bytes), opts);
        match self.block(put) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("writing {path} in {}", self.uri)),
        }
    }

    /// Create the group of `records` at LSN `first` for `epoch`: `Ok(false)`
    /// when another writer's group is there. A create whose answer was
    /// lost and retried finds its own bytes there: that is a success.
    fn create_group(&self, first: u64, epoch: u64, records: &[Record]) -> Result<bool> {
        let mut bytes = vec![GROUP_FORMAT];
        bytes.extend(postcard::to_stdvec(&(epoch, records)).context("encoding catalog records")?);
        let path = self.group_path(first);
        if self.put_create(&path, bytes.clone())? {
            return Ok(true);
        }
        let there = self.block(async { self.store.get(&path).await?.bytes().await });
        Ok(there.is_ok_and(|b| b.as_ref() == bytes.as_slice()))
    }

    /// Read and decode the group at `path`.
    fn read_group(&self, path: &Path) -> Result<Group> {
        let name = path.filename().unwrap_or_default();
        let corrupt = |detail: String| -> anyhow::Error {
            Error::CorruptCatalog {
                path: self.place(),
                detail: format!("log group {name}: {detail}"),
            }
            .into()
        };
        let bytes = self
            .block(async { self.store.get(path).await?.bytes().await })
            .with_context(|| format!("reading {path} in {}", self.uri))?;
        match bytes.split_first() {
            Some((&GROUP_FORMAT, payload)) => {
                match postcard::take_from_bytes::<(u64, Vec<Record>)>(payload) {
                    Ok(((_epoch, records), [])) if !records.is_empty() => Ok(Group { records }),
                    Ok(_) => Err(corrupt("empty, or bytes after its records".to_string())),
                    Err(e) => Err(corrupt(format!("decoding: {e}"))),
                }
            }
            Some((&v, _)) if v > GROUP_FORMAT => Err(Error::UnsupportedFormat {
                what: "catalog log group",
                path: format!("{}/log/{name}", self.place()),
                found: u32::from(v),
                supported: u32::from(GROUP_FORMAT),
            }
            .into()),
            _ => Err(corrupt("no known format byte".to_string())),
        }
    }

    /// The LSNs named by the objects under `dir` (`log` or `checkpoint`)
    /// after `after`, ascending.
    fn list_lsns(&self, dir: &str, after: Option<u64>) -> Result<Vec<u64>> {
        let prefix = self.root.clone().join(dir);
        let listing = match after {
            Some(a) => {
                let offset = prefix.clone().join(format!("{a:020}"));
                self.store.list_with_offset(Some(&prefix), &offset)
            }
            None => self.store.list(Some(&prefix)),
        };
        let metas: Vec<_> = self
            .block(listing.try_collect::<Vec<_>>())
            .with_context(|| format!("listing {prefix} in {}", self.uri))?;
        let mut lsns: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.parse().ok())
            .filter(|l| after.is_none_or(|a| *l > a))
            .collect();
        lsns.sort_unstable();
        Ok(lsns)
    }

    fn note_writer_group(&self, lsn: u64) {
        self.writer_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lsn);
    }

    fn writer_groups(&self) -> std::collections::BTreeSet<u64> {
        self.writer_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fenced_error(&self) -> anyhow::Error {
        Error::Fenced {
            store: self.uri.clone(),
            epoch: self.epoch(),
        }
        .into()
    }
}

impl CatalogLog for ObjectLog {
    fn describe(&self) -> String {
        self.place()
    }

    fn append(&self, records: &[Record]) -> Result<Range<u64>> {
        let epoch = self.epoch();
        if epoch == 0 {
            return Err(Error::ReadOnlyStore {
                store: self.uri.clone(),
            }
            .into());
        }
        if self.fenced.load(Ordering::SeqCst) {
            return Err(self.fenced_error());
        }
        let first = self.next.load(Ordering::SeqCst);
        if !self.create_group(first, epoch, records)? {
            self.fenced.store(true, Ordering::SeqCst);
            return Err(self.fenced_error());
        }
        let end = first + records.len() as u64;
        self.next.store(end, Ordering::SeqCst);
        Ok(first..end)
    }

    fn check_live(&self) -> Result<()> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(self.fenced_error());
        }
        Ok(())
    }

    fn probe_live(&self) -> Result<()> {
        self.check_live()?;
        if self.epoch() == 0 {
            return Ok(());
        }
        let next = self.group_path(self.next.load(Ordering::SeqCst));
        match self.block(self.store.head(&next)) {
            Ok(_) => {
                self.fenced.store(true, Ordering::SeqCst);
                Err(self.fenced_error())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("reading {next} in {}", self.uri)),
        }
    }

    fn read_checkpoint(&self) -> Result<Option<CatalogState>> {
        let Some(newest) = self.list_lsns("checkpoint", None)?.pop() else {
            return Ok(None);
        };
        let path = self.checkpoint_path(newest);
        let bytes = self
            .block(async { self.store.get(&path).await?.bytes().await })
            .with_context(|| format!("reading {path} in {}", self.uri))?;
        let state =
            decode_checkpoint(&format!("{}/checkpoint/{newest:020}", self.place()), &bytes)?;
        if state.applied != newest {
            return Err(Error::CorruptCatalog {
                path: self.place(),
                detail: format!("checkpoint {newest} covers records up to {}", state.applied),
            }
            .into());
        }
        Ok(Some(state))
    }

    fn read_after(&self, covered: u64) -> Result<Vec<(u64, Record)>> {
        let mut out = Vec::new();
        let mut want = covered + 1;
        for first in self.list_lsns("log", Some(covered))? {
            if first != want {
                return Err(Error::CorruptCatalog {
                    path: self.place(),
                    detail: format!(
                        "the log resumes at record {first}, not {want}: records were \
                         checkpointed and dropped meanwhile (or removed)"
                    ),
                }
                .into());
            }
            let group = self.read_group(&self.group_path(first))?;
            if group
                .records
                .iter()
                .any(|r| matches!(r, Record::Writer { .. }))
            {
                self.note_writer_group(first);
            }
            for r in group.records {
                out.push((want, r));
                want += 1;
            }
        }
        // A writer that finds groups at or after its next one was taken
        // over (its next group would be written nowhere else: never move
        // it on past another writer's records).
        let epoch = self.epoch();
        if epoch != 0 && want > self.next.load(Ordering::SeqCst) {
            self.fenced.store(true, Ordering::SeqCst);
        }
        Ok(out)
    }

    fn checkpoint(&self, state: &CatalogState, between: &dyn Fn() -> Result<()>) -> Result<()> {
        if self.epoch() == 0 {
            return Ok(());
        }
        if self.fenced.load(Ordering::SeqCst) {
            return Err(self.fenced_error());
        }
        let m = state.applied;
        self.put_create(&self.checkpoint_path(m), encode_checkpoint(state)?)?;
        between()?;
        let paths: Vec<Path> = self
            .list_lsns("checkpoint", None)?
            .into_iter()
            .filter(|c| *c < m)
            .map(|c| self.checkpoint_path(c))
            .chain({
                let groups: Vec<u64> = self.list_lsns("log", None)?;
                let last_covered = groups.iter().copied().filter(|g| *g <= m).max();
                let floor = self.floor.load(Ordering::SeqCst);
                let kept = self.writer_groups();
                groups
                    .into_iter()
                    .filter(move |g| Some(*g) < last_covered && *g > floor && !kept.contains(g))
                    .map(|g| self.group_path(g))
                    .collect::<Vec<_>>()
            })
            .collect();
        for p in paths {
            match self.block(self.store.delete(&p)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {p}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::branched::log::CatalogLog;

    fn open(store: &Arc<dyn ObjectStore>, write: bool) -> Opened<ObjectLog> {
        let base = Path::from("stores/s");
        ObjectLog::open(store.clone(), &base, "mem://s", write, "test").unwrap()
    }

    fn tag(n: u64) -> Record {
        Record::DeleteTag {
            name: format!("t{n}"),
        }
    }

    #[test]
    fn groups_round_trip_and_a_checkpoint_drops_what_it_covers() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (log, state, recs) = open(&store, true);
        assert_eq!((state.applied, recs.len()), (0, 1)); // the writer record
        assert_eq!(log.epoch(), 1);
        assert_eq!(log.append(&[tag(1), tag(2)]).unwrap(), 2..4);
        assert_eq!(log.append(&[tag(3)]).unwrap(), 4..5);
        let all = log.read_after(0).unwrap();
        assert_eq!(
            all.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // A checkpoint at 3 keeps the group ending there (from 2) and the
        // writer's own group (1).
        let mut st = CatalogState::default();
        for (l, r) in &all[..3] {
            st.apply(*l, r);
        }
        log.checkpoint(&st, &|| Ok(())).unwrap();
        assert_eq!(log.list_lsns("log", None).unwrap(), [1, 2, 4]);
        assert_eq!(log.read_checkpoint().unwrap().unwrap().applied, 3);
        // A follower reads the checkpoint and the rest; here nothing was
        // dropped (the writer group and the last covered group are kept).
        let (_, st2, rest) = open(&store, false);
        assert_eq!((st2.applied, rest.len()), (3, 1));
        assert_eq!(log.read_after(0).unwrap().len(), 4);
        assert_eq!(log.read_after(1).unwrap().len(), 3);
        assert_eq!(log.read_after(3).unwrap().len(), 1);
    }

    #[test]
    fn a_second_writer_fences_the_first() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (a, _, _) = open(&store, true);
        a.append(&[tag(1)]).unwrap();
        let (b, _, recs) = open(&store, true);
        assert_eq!(b.epoch(), 3);
        // The first writer learns it by asking, before any write.
        assert!(a.check_live().is_ok());
        let e = a.probe_live().unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::Fenced { .. })));
        assert!(a.check_live().is_err());
        assert_eq!(recs.len(), 3);
        for _ in 0..2 {
            let e = a.append(&[tag(2)]).unwrap_err();
            assert!(
                matches!(Error::of(&e), Some(Error::Fenced { epoch: 1, .. })),
                "{e:#}"
            );
        }
        assert!(b.probe_live().is_ok());
        b.append(&[tag(3)]).unwrap();
        let names: Vec<Record> = b
            .read_after(0)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert!(!names.contains(&tag(2)));
        // A follower cannot write.
        let (f, _, _) = open(&store, false);
        let e = f.append(&[tag(4)]).unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::ReadOnlyStore { .. })));
    }

    /// A writer that has not noticed it was taken over stays fenced after
    /// the new writer checkpointed past it (the group that fences it is
    /// kept) and after it read the log (reading does not move it on).
    #[test]
    fn a_checkpoint_or_a_read_never_unfences_a_writer() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (x, _, _) = open(&store, true);
        x.append(&[tag(1)]).unwrap();
        let (y, st, recs) = open(&store, true);
        y.append(&[tag(2), tag(3)]).unwrap();
        let mut state = st;
        for (l, r) in recs
            .iter()
            .chain(y.read_after(recs.last().unwrap().0).unwrap().iter())
        {
            state.apply(*l, r);
        }
        assert_eq!(state.applied, 5);
        y.checkpoint(&state, &|| Ok(())).unwrap();
        // The writer groups (1, 3) are kept, so is the last one (4).
        assert_eq!(y.list_lsns("log", None).unwrap(), [1, 3, 4]);
        let before = x.read_after(0);
        assert!(before.is_err(), "records 1..3 were dropped");
        assert_eq!(x.read_after(2).unwrap().len(), 3);
        for _ in 0..2 {
            let e = x.append(&[tag(9)]).unwrap_err();
            assert!(matches!(Error::of(&e), Some(Error::Fenced { .. })), "{e:#}");
        }
        let all: Vec<Record> = y
            .read_after(5)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert!(all.is_empty());
        // A third writer opened from the checkpoint keeps y's group too.
        let (z, st, _) = open(&store, true);
        z.append(&[tag(4)]).unwrap();
        let mut state = st;
        for (l, r) in z.read_after(5).unwrap() {
            state.apply(l, &r);
        }
        z.checkpoint(&state, &|| Ok(())).unwrap();
        assert!(y.list_lsns("log", None).unwrap().contains(&3));
        assert!(y.append(&[tag(9)]).is_err());
    }

    /// Writers taking the log over from each other while they append:
    /// every acknowledged record is in the log exactly once, nothing else
    /// is, and the LSNs have no gap.
    #[test]
    fn racing_writers_never_lose_or_duplicate_a_record() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let acked = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..4u64 {
                let (store, acked) = (&store, &acked);
                s.spawn(move || {
                    for round in 0..5u64 {
                        let (log, _, _) = open(store, true);
                        for i in 0..20u64 {
                            let r = tag(w * 10_000 + round * 100 + i);
                            match log.append(std::slice::from_ref(&r)) {
                                Ok(_) => acked.lock().unwrap().push(r),
                                Err(e) => {
                                    assert!(matches!(Error::of(&e), Some(Error::Fenced { .. })));
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        let (log, _, _) = open(&store, false);
        let all = log.read_after(0).unwrap();
        for (i, (l, _)) in all.iter().enumerate() {
            assert_eq!(*l, i as u64 + 1);
        }
        let mut logged: Vec<Record> = all
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| !matches!(r, Record::Writer { .. }))
            .collect();
        let mut acked = acked.into_inner().unwrap();
        let key = |r: &Record| format!("{r:?}");
        logged.sort_by_key(key);
        acked.sort_by_key(key);
        assert_eq!(logged, acked);
        assert!(!acked.is_empty());
    }
}
