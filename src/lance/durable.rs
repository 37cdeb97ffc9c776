//! Power-loss durability for Lance on a local disk.
//!
//! Lance on its own never calls `fsync` for local datasets: after a power
//! loss an acknowledged commit can vanish, or a manifest can survive while
//! the data file it names does not. This module plugs a `file` provider into
//! the Lance [`Session`] that the backend's connection uses:
//!
//! - every object Lance writes (data files, deletion files, index files,
//!   transaction files, manifests, the latest-version hint) goes through
//!   `object_store`'s [`LocalFileSystem`] with `with_fsync(true)`, which
//!   syncs the file and the directories whose entries it created before the
//!   write returns;
//! - the store's `store_prefix` is changed so that Lance does not take its
//!   own "direct local path" writer for data files, which would bypass
//!   `object_store` and skip the sync.
//!
//! Because Lance writes a version's manifest only after all files it names
//! were written (and so synced), a version whose commit returned is on disk
//! in full, and a version that never got its manifest is invisible.
//!
//! **Deferred syncs.** A file only a later manifest names (a data file, a
//! deletion file, an index file, a transaction file) is written without
//! its sync and noted. Before any synced write (a manifest above all)
//! returns, a *barrier* syncs every noted file and the directories on its
//! path up to the store, all at once (concurrent `fsync`s the file system
//! joins into one journal commit), so a manifest is never durable before
//! a file it names. Concurrent commits share barriers. The latest-version
//! hint is never synced: Lance reads a lost or stale hint as none and
//! lists or probes the versions. A failed barrier fails every later synced
//! write of the session (after a failed `fsync` the page cache may have
//! dropped the data: a retry could "succeed" without it).
//!
//! [`SyncCounter`] counts the synced writes, so tests can check that the
//! route is really taken.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use lance::dataset::{DEFAULT_INDEX_CACHE_SIZE, DEFAULT_METADATA_CACHE_SIZE};
use lance::session::Session;
use lance_io::object_store::providers::local::FileStoreProvider;
use lance_io::object_store::{
    ObjectStore as LanceObjectStore, ObjectStoreParams, ObjectStoreProvider, ObjectStoreRegistry,
};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use url::Url;

/// The `store_prefix` given to durable local stores.
const DURABLE_PREFIX: &str = "file$lancebranch-durable";

/// Counts the writes that were synced to stable storage before returning.
///
/// # Example
/// ```
/// let c = lancebranch::lance::SyncCounter::default();
/// assert_eq!(c.synced_writes(), 0);
/// ```
#[derive(Debug, Default)]
pub struct SyncCounter {
    writes: AtomicU64,
    deferred: AtomicU64,
    barriers: AtomicU64,
}

impl SyncCounter {
    /// How many synced writes (puts, copies, renames, completed multipart
    /// uploads) returned so far. Each costs at least two `fsync`s: the
    /// file and its directory.
    pub fn synced_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// How many files were written with their sync deferred to a barrier
    /// (files only a later manifest names).
    pub fn deferred_writes(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// How many barriers synced deferred files (each syncs its files and
    /// their directories concurrently).
    pub fn barriers(&self) -> u64 {
        self.barriers.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// A lance [`Session`] whose `file` stores sync every write, and the counter
/// of those syncs.
///
/// # Example
/// ```
/// let (session, counter) = lancebranch::lance::durable_session();
/// assert_eq!(counter.synced_writes(), 0);
/// # drop(session);
/// ```
pub fn durable_session() -> (Arc<Session>, Arc<SyncCounter>) {
    session_with(
        #[cfg(feature = "failpoints")]
        None,
    )
}

/// [`durable_session`], with the writes going through `faults` when given.
pub(crate) fn session_with(
    #[cfg(feature = "failpoints")] faults: Option<Arc<crate::lance::faults::WriteFaults>>,
) -> (Arc<Session>, Arc<SyncCounter>) {
    let counter = Arc::new(SyncCounter::default());
    let registry = ObjectStoreRegistry::default();
    registry.insert(
        "file",
        Arc::new(DurableFileProvider {
            counter: counter.clone(),
            deferred: Arc::new(Deferred::default()),
            #[cfg(feature = "failpoints")]
            faults,
        }),
    );
    let session = Session::new(
        DEFAULT_INDEX_CACHE_SIZE,
        DEFAULT_METADATA_CACHE_SIZE,
        Arc::new(registry),
    );
    (Arc::new(session), counter)
}

#[derive(Debug)]
struct DurableFileProvider {
    counter: Arc<SyncCounter>,
    /// Shared by every store of the session: a barrier syncs what any of
    /// them deferred (a data file and its manifest may go through two).
    deferred: Arc<Deferred>,
    /// Injected write faults (tests), as a decorator over the store.
    #[cfg(feature = "failpoints")]
    faults: Option<Arc<crate::lance::faults::WriteFaults>>,
}

#[async_trait]
impl ObjectStoreProvider for DurableFileProvider {
    async fn new_store(
        &self,
        base_path: Url,
        params: &ObjectStoreParams,
    ) -> lance::Result<LanceObjectStore> {
        let mut store = FileStoreProvider.new_store(base_path, params).await?;
        store.inner = Arc::new(SyncingStore {
            inner: LocalFileSystem::new().with_fsync(true),
            lazy: LocalFileSystem::new(),
            counter: self.counter.clone(),
            deferred: self.deferred.clone(),
        });
        #[cfg(feature = "failpoints")]
        if let Some(faults) = &self.faults {
            store.inner = Arc::new(crate::lance::faults::FaultyStore::new(
                store.inner.clone(),
                faults.clone(),
            ));
        }
        store.store_prefix = DURABLE_PREFIX.to_string();
        Ok(store)
    }

    fn extract_path(&self, url: &Url) -> lance::Result<Path> {
        FileStoreProvider.extract_path(url)
    }

    fn calculate_object_store_prefix(
        &self,
        _url: &Url,
        _storage_options: Option<&HashMap<String, String>>,
    ) -> lance::Result<String> {
        Ok(DURABLE_PREFIX.to_string())
    }
}

/// [`LocalFileSystem`] with `fsync` on, counting the synced writes; files
/// a later manifest names are synced by the barrier before the next synced
/// write (see the module's docs).
#[derive(Debug)]
struct SyncingStore {
    inner: LocalFileSystem,
    /// The same without `fsync`: deferred files and the version hint.
    lazy: LocalFileSystem,
    counter: Arc<SyncCounter>,
    deferred: Arc<Deferred>,
}

/// How a write to a path is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Synced before the write returns, after a barrier.
    Synced,
    /// Synced by the next barrier: only a later manifest names the file.
    Deferred,
    /// Never synced: Lance's latest-version hint.
    Hint,
}

/// The directories of a dataset whose files only a later manifest names.
const DEFERRED_DIRS: [&str; 3] = ["data", "_transactions", "_deletions"];

/// How a write to `location` is made durable. Files of a dataset's
/// `data`, `_transactions` and `_deletions` directories and of an index
/// directory under `_indices` are deferred, when the path shows the
/// dataset directory (`*.lance`) they belong to.
fn durability(location: &Path) -> Durability {
    let owned: Vec<object_store::path::PathPart<'_>> = location.parts().collect();
    let parts: Vec<&str> = owned.iter().map(|p| p.as_ref()).collect();
    let n = parts.len();
    if n >= 2 && parts[n - 2] == "_versions" && parts[n - 1] == "latest_version_hint.json" {
        return Durability::Hint;
    }
    let deferred_dir =
        (n >= 2 && DEFERRED_DIRS.contains(&parts[n - 2])) || (n >= 3 && parts[n - 3] == "_indices");
    if deferred_dir && dataset_dir(&parts).is_some() {
        Durability::Deferred
    } else {
        Durability::Synced
    }
}

/// The index in `parts` of the innermost dataset directory (`*.lance`)
/// above the file.
fn dataset_dir(parts: &[&str]) -> Option<usize> {
    let n = parts.len();
    (0..n.saturating_sub(2))
        .rev()
        .find(|&i| parts[i].ends_with(".lance"))
}

/// Files written without their sync, and the barrier that syncs them.
#[derive(Debug, Default)]
struct Deferred {
    /// Files written and not yet synced (filesystem paths).
    pending: std::sync::Mutex<Vec<std::path::PathBuf>>,
    /// Held by a barrier while it syncs: a later one waits for it, so
    /// when a barrier returns, every file noted before it began is synced.
    barrier: tokio::sync::Mutex<()>,
    /// The first failed barrier: every later one fails.
    failed: std::sync::OnceLock<String>,
}

impl Deferred {
    fn note(&self, file: std::path::PathBuf) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(file);
    }

    /// Sync every noted file and the directories from its own up to the
    /// store's (the directory holding its dataset), concurrently. Runs as
    /// a task of its own: a caller that stops waiting (a timeout, a
    /// sibling's failure) cannot leave files taken from the list unsynced.
    async fn barrier(self: &Arc<Self>, counter: &Arc<SyncCounter>) -> object_store::Result<()> {
        let (this, counter) = (self.clone(), counter.clone());
        tokio::spawn(async move { this.run_barrier(&counter).await })
            .await
            .map_err(|e| sync_error(std::io::Error::other(e)))?
    }

    async fn run_barrier(&self, counter: &SyncCounter) -> object_store::Result<()> {
        let _one = self.barrier.lock().await;
        if let Some(cause) = self.failed.get() {
            return Err(sync_error(std::io::Error::other(format!(
                "an earlier sync failed: {cause}"
            ))));
        }
        let files = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if files.is_empty() {
            return Ok(());
        }
        let syncs = sync_targets(&files).into_iter().map(|t| {
            tokio::task::spawn_blocking(move || match std::fs::File::open(&t) {
                Ok(f) => f.sync_all(),
                // Removed since (a failed commit's leftovers, a dropped
                // line or table): nothing names it any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
        });
        use futures::StreamExt as _;
        let done: Vec<_> = futures::stream::iter(syncs)
            .buffer_unordered(64)
            .collect()
            .await;
        let failure = done.into_iter().find_map(|r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(std::io::Error::other(e)),
        });
        if let Some(e) = failure {
            // After a failed fsync the page cache may have dropped the
            // data: a later sync could "succeed" without it.
            let _ = self.failed.set(e.to_string());
            return Err(sync_error(e));
        }
        counter.barriers.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The files and every directory from each file's own up to the store's
/// (the parent of its dataset directory, `*.lance`).
fn sync_targets(files: &[std::path::PathBuf]) -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut targets = std::collections::BTreeSet::new();
    for f in files {
        targets.insert(f.clone());
        let mut dir = f.parent();
        while let Some(d) = dir {
            targets.insert(d.to_path_buf());
            if d.extension().is_some_and(|e| e == "lance") {
                // The store's directory holds the dataset's entry.
                if let Some(store) = d.parent() {
                    targets.insert(store.to_path_buf());
                }
                break;
            }
            dir = d.parent();
        }
    }
    targets
}

fn sync_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "lancebranch-durable",
        source: Box::new(e),
    }
}

impl SyncingStore {
    /// Before a synced write: the barrier.
    async fn barrier(&self) -> object_store::Result<()> {
        self.deferred.barrier(&self.counter).await
    }

    /// A deferred write returned: note its file for the next barrier.
    fn defer(&self, location: &Path) -> object_store::Result<()> {
        let file = self.lazy.path_to_filesystem(location)?;
        self.deferred.note(file);
        self.counter.deferred.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Display for SyncingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Syncing({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for SyncingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match durability(location) {
            Durability::Synced => {
                self.barrier().await?;
                let r = self.inner.put_opts(location, payload, opts).await?;
                self.counter.bump();
                Ok(r)
            }
            Durability::Deferred => {
                let r = self.lazy.put_opts(location, payload, opts).await?;
                self.defer(location)?;
                Ok(r)
            }
            Durability::Hint => self.lazy.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let durability = durability(location);
        let upload = match durability {
            Durability::Synced => self.inner.put_multipart_opts(location, opts).await?,
            _ => self.lazy.put_multipart_opts(location, opts).await?,
        };
        Ok(Box::new(CountedUpload {
            inner: upload,
            counter: self.counter.clone(),
            deferred: self.deferred.clone(),
            durability,
            file: Some(self.lazy.path_to_filesystem(location)?),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.barrier().await?;
        self.inner.copy_opts(from, to, options).await?;
        self.counter.bump();
        Ok(())
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.barrier().await?;
        self.inner.rename_opts(from, to, options).await?;
        self.counter.bump();
        Ok(())
    }
}

#[derive(Debug)]
struct CountedUpload {
    inner: Box<dyn MultipartUpload>,
    counter: Arc<SyncCounter>,
    deferred: Arc<Deferred>,
    durability: Durability,
    /// The file (noted for the barrier when deferred).
    file: Option<std::path::PathBuf>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        match self.durability {
            Durability::Synced => {
                self.deferred.barrier(&self.counter).await?;
                let r = self.inner.complete().await?;
                self.counter.bump();
                Ok(r)
            }
            Durability::Deferred => {
                let r = self.inner.complete().await?;
                if let Some(file) = self.file.take() {
                    self.deferred.note(file);
                    self.counter.deferred.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r)
            }
            Durability::Hint => self.inner.complete().await,
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// Create the local directory `path` and any missing ancestors, syncing the
/// parent of each directory created, so that the new entries survive a
/// power cut (a store whose directory entry is lost loses everything in
/// it, synced or not).
pub(crate) fn create_dir_synced(path: &std::path::Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        create_dir_synced(p)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => {}
        // Made meanwhile by another opener, who syncs it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::File::open(parent.unwrap_or(std::path::Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(path: &str) -> Durability {
        durability(&Path::from(path))
    }

    #[test]
    fn only_files_a_later_manifest_names_are_deferred() {
        use Durability::*;
        let store = "home/u/data/store";
        for (file, want) in [
            ("t.lance/data/a.lance", Deferred),
            ("t.lance/_transactions/1-x.txn", Deferred),
            ("t.lance/_deletions/0-1-2.arrow", Deferred),
            ("t.lance/_indices/5e1c/index.idx", Deferred),
            ("t.lance/tree/lb7_3/data/b.lance", Deferred),
            ("t.lance/tree/lb7_3/_transactions/2-y.txn", Deferred),
            ("t.lance/_versions/3.manifest", Synced),
            ("t.lance/tree/lb7_3/_versions/4.manifest", Synced),
            ("t.lance/_versions/latest_version_hint.json", Hint),
            ("t.lance/_refs/branches/lb7_3.json", Synced),
            ("t.lance/_indices/5e1c", Synced),
        ] {
            assert_eq!(of(&format!("{store}/{file}")), want, "{file}");
        }
        // Outside a dataset directory (no `*.lance` above it): synced.
        assert_eq!(of("home/u/data/x.bin"), Synced);
        assert_eq!(of("data/x.bin"), Synced);
    }

    /// A caller that stops waiting for a barrier does not stop it: the
    /// files it took are synced, and the next barrier waits for that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_barrier_dropped_by_its_caller_still_syncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("t.lance").join("data");
        std::fs::create_dir_all(&data).expect("dirs");
        let file = data.join("a.lance");
        std::fs::write(&file, b"rows").expect("write");
        let (deferred, counter) = (
            Arc::new(Deferred::default()),
            Arc::new(SyncCounter::default()),
        );
        deferred.note(file.clone());
        // A barrier in progress elsewhere: the next one waits for it, and
        // its caller gives up meanwhile.
        let busy = deferred.barrier.lock().await;
        let wait = std::time::Duration::from_millis(50);
        let cut = tokio::time::timeout(wait, deferred.barrier(&counter)).await;
        assert!(cut.is_err(), "the caller gave up");
        drop(busy);
        for _ in 0..500 {
            if counter.barriers() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(counter.barriers(), 1, "the dropped barrier ran to its end");
        assert!(deferred.pending.lock().expect("pending").is_empty());
        deferred.barrier(&counter).await.expect("next barrier");
        assert_eq!(counter.barriers(), 1, "nothing left to sync");
        // Targets: the file and each directory up to the store's.
        let targets = sync_targets(std::slice::from_ref(&file));
        assert!(targets.contains(&file) && targets.contains(&data));
        assert!(targets.contains(dir.path()) && targets.contains(&dir.path().join("t.lance")));
        assert_eq!(targets.len(), 4);
    }
}
