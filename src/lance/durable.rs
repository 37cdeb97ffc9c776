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
}

impl SyncCounter {
    /// How many synced writes (puts, copies, renames, completed multipart
    /// uploads) returned so far.
    pub fn synced_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
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
            counter: self.counter.clone(),
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

/// [`LocalFileSystem`] with `fsync` on, counting the synced writes.
#[derive(Debug)]
struct SyncingStore {
    inner: LocalFileSystem,
    counter: Arc<SyncCounter>,
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
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.counter.bump();
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountedUpload {
            inner: upload,
            counter: self.counter.clone(),
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
        self.inner.rename_opts(from, to, options).await?;
        self.counter.bump();
        Ok(())
    }
}

#[derive(Debug)]
struct CountedUpload {
    inner: Box<dyn MultipartUpload>,
    counter: Arc<SyncCounter>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let r = self.inner.complete().await?;
        self.counter.bump();
        Ok(r)
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
