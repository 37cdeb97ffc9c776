//! Injected write faults (feature `failpoints`): an `ObjectStore` decorator
//! over the durable store that lets the first `n` of Lance's writes through
//! and fails every later one, as if the process died or the disk went away
//! in the middle of a commit. The durable store itself
//! (`durable.rs`) only syncs and counts.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// The write faults of a store opened with the `failpoints` feature (see
/// [`LanceDbBackend::write_faults`](crate::LanceDbBackend::write_faults)).
///
/// # Example
/// ```
/// let f = lancebranch::lance::WriteFaults::default();
/// f.fail_writes_after(3);
/// f.heal();
/// assert_eq!(f.injected_faults(), 0);
/// ```
#[derive(Debug, Default)]
pub struct WriteFaults {
    armed: AtomicBool,
    /// The writes still let through while armed.
    budget: AtomicU64,
    injected: AtomicU64,
}

impl WriteFaults {
    /// Let `n` more writes (puts, multipart completions, copies, renames,
    /// deletes) through, then fail every later one with an I/O error.
    pub fn fail_writes_after(&self, n: u64) {
        self.budget.store(n, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Let every write through again.
    pub fn heal(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// How many writes were refused by an injected fault.
    pub fn injected_faults(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Admit one write, or refuse it with an injected fault.
    fn admit(&self) -> object_store::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let left = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1));
        if left.is_ok() {
            return Ok(());
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        Err(object_store::Error::Generic {
            store: "lancebranch-faults",
            source: "injected write fault".into(),
        })
    }
}

/// `inner` with its writes admitted by [`WriteFaults`].
#[derive(Debug)]
pub(crate) struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<WriteFaults>,
}

impl FaultyStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, faults: Arc<WriteFaults>) -> Self {
        Self { inner, faults }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults.admit()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults.admit()?;
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner: upload,
            faults: self.faults.clone(),
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
        use futures::StreamExt;
        let faults = self.faults.clone();
        let admitted = locations.map(move |p| {
            faults.admit()?;
            p
        });
        self.inner.delete_stream(admitted.boxed())
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
        self.faults.admit()?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.faults.admit()?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Arc<WriteFaults>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.faults.admit()?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
