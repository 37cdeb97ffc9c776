//! [`LanceDbBackend`]: construction, caches, locks and shared helpers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lance::dataset::Dataset;
use lancedb::{Connection, Table};

use crate::backend::{Error, TableWriteGuard, check_raw_filter, validate_table_name};
use crate::lance::durable::{SyncCounter, create_dir_synced};

/// How a [`LanceDbBackend`] behaves.
///
/// # Example
/// ```
/// use lancebranch::lance::LanceDbOptions;
/// let fast = LanceDbOptions { durable: false, ..LanceDbOptions::default() };
/// assert!(LanceDbOptions::default().durable && !fast.durable);
/// ```
#[derive(Clone)]
pub struct LanceDbOptions {
    /// Sync every file of a commit, and the directories naming them, before
    /// the commit is acknowledged (see [`crate::lance::durable_session`]).
    /// On by default; turn off only for tests and benchmarks that do not
    /// care about power loss. Has no effect on `memory://` stores, nor on
    /// object stores (`s3://`), which acknowledge a write once stored.
    pub durable: bool,
    /// How stale a read may be with respect to commits made by *other*
    /// handles or processes on the same directory. `Duration::ZERO` (the
    /// default) checks for a newer version before every operation; this
    /// backend's own writes are always visible to it at once.
    pub read_consistency: Duration,
    /// [`optimize_table`](crate::StorageBackend::optimize_table) removes
    /// versions older than this (tagged versions are always kept).
    /// Default: 7 days.
    pub cleanup_older_than: Duration,
    /// Options of the object store, passed to every table: for `s3://`
    /// (feature `s3`) the `object_store` keys `aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_session_token`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`, … ([`S3Options`] fills them).
    /// Unset keys fall back to the `AWS_*` environment variables. Empty by
    /// default; ignored by local and `memory://` stores.
    pub storage_options: HashMap<String, String>,
}

impl Default for LanceDbOptions {
    fn default() -> Self {
        Self {
            durable: true,
            read_consistency: Duration::ZERO,
            cleanup_older_than: Duration::from_secs(7 * 24 * 3600),
            storage_options: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for LanceDbOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys only: values hold credentials.
        let mut keys: Vec<&String> = self.storage_options.keys().collect();
        keys.sort();
        f.debug_struct("LanceDbOptions")
            .field("durable", &self.durable)
            .field("read_consistency", &self.read_consistency)
            .field("cleanup_older_than", &self.cleanup_older_than)
            .field("storage_options (keys)", &keys)
            .finish()
    }
}

impl LanceDbOptions {
    /// These options with the storage options of `s3` added.
    ///
    /// # Example
    /// ```
    /// use lancebranch::lance::{LanceDbOptions, S3Options};
    /// let s3 = S3Options::new("us-east-1").endpoint("http://127.0.0.1:9000").keys("id", "secret");
    /// let opts = LanceDbOptions::default().with_s3(&s3);
    /// assert_eq!(opts.storage_options["aws_allow_http"], "true");
    /// assert!(!format!("{opts:?}").contains("secret\""));
    /// ```
    pub fn with_s3(mut self, s3: &S3Options) -> Self {
        self.storage_options.extend(s3.storage_options());
        self
    }
}

/// Where and how to reach an S3-compatible object store (AWS, or a local
/// server such as moto or MinIO), as storage options for
/// [`LanceDbOptions::with_s3`]. Opening `s3://` needs the feature `s3`.
///
/// A region and static keys keep the AWS credential chain from probing
/// the instance-metadata address; leave the keys unset to use that chain
/// (environment, profile, instance role) on AWS.
///
/// # Example
/// ```
/// use lancebranch::lance::S3Options;
/// let local = S3Options::new("us-east-1").endpoint("http://127.0.0.1:5000").keys("testing", "testing");
/// assert_eq!(local.storage_options()["aws_endpoint"], "http://127.0.0.1:5000");
/// ```
#[derive(Clone, Default)]
pub struct S3Options {
    region: String,
    endpoint: Option<String>,
    keys: Option<(String, String)>,
    session_token: Option<String>,
    virtual_hosted_style: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("keys", &self.keys.as_ref().map(|(id, _)| id))
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// An S3 store in `region`, path-style requests, default endpoint.
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            ..Self::default()
        }
    }

    /// An S3-compatible endpoint (`http://…` is allowed for it).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = Some(url.to_string());
        self
    }

    /// Static credentials.
    pub fn keys(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.keys = Some((access_key_id.to_string(), secret_access_key.to_string()));
        self
    }

    /// A session token for temporary credentials.
    pub fn session_token(mut self, token: &str) -> Self {
        self.session_token = Some(token.to_string());
        self
    }

    /// Virtual-hosted-style requests (`bucket.endpoint/key`) instead of
    /// path style (`endpoint/bucket/key`, the default, which local
    /// servers need).
    pub fn virtual_hosted_style(mut self, on: bool) -> Self {
        self.virtual_hosted_style = on;
        self
    }

    /// The `object_store` storage options these settings stand for.
    pub fn storage_options(&self) -> HashMap<String, String> {
        let mut o = HashMap::new();
        o.insert("aws_region".to_string(), self.region.clone());
        if let Some(e) = &self.endpoint {
            o.insert("aws_endpoint".to_string(), e.clone());
            let http = e.starts_with("http://");
            o.insert("aws_allow_http".to_string(), http.to_string());
        }
        if let Some((id, secret)) = &self.keys {
            o.insert("aws_access_key_id".to_string(), id.clone());
            o.insert("aws_secret_access_key".to_string(), secret.clone());
        }
        if let Some(t) = &self.session_token {
            o.insert("aws_session_token".to_string(), t.clone());
        }
        let hosted = self.virtual_hosted_style.to_string();
        o.insert("aws_virtual_hosted_style_request".to_string(), hosted);
        o
    }
}

/// (table, Lance branch, version) of a cached read-only handle.
type PinnedKey = (String, Option<String>, u64);

/// The [`StorageBackend`](crate::StorageBackend) on LanceDB / Lance, for a
/// local directory, `memory://`, or an S3-compatible object store (feature
/// `s3`).
///
/// - Every table is created with stable row ids, so row-level change sets
///   (`Dataset::delta`) work on it.
/// - Writes are durable when acknowledged ([`LanceDbOptions::durable`]).
/// - `write`, `merge_insert` and `replace_table_atomic` are single Lance
///   commits: a reader sees a table before or after one, never in between.
/// - Table existence is cached; `create_*`, `drop_table` and
///   [`notify_table_created`](crate::StorageBackend::notify_table_created)
///   keep the cache right, `invalidate_cache` / `clear_cache` empty it.
///
/// # Example
/// ```no_run
/// use lancebranch::{LanceDbBackend, StorageBackend};
/// # async fn demo() -> anyhow::Result<()> {
/// let store = LanceDbBackend::open("/tmp/my-store").await?;
/// println!("{:?}", store.table_names().await?);
/// # Ok(()) }
/// ```
pub struct LanceDbBackend {
    pub(crate) uri: String,
    pub(crate) conn: Connection,
    pub(crate) opts: LanceDbOptions,
    pub(crate) sync: Option<Arc<SyncCounter>>,
    /// The Lance session of an object store (`s3://`…), to reach its
    /// objects outside a dataset; `None` for local and `memory://` stores.
    object_session: Option<Arc<lance::session::Session>>,
    /// Injected write faults of the durable store (tests).
    #[cfg(feature = "failpoints")]
    faults: Option<Arc<crate::lance::WriteFaults>>,
    existence: RwLock<HashMap<String, bool>>,
    handles: RwLock<HashMap<String, Table>>,
    /// Read-only handles of exact versions (immutable snapshots), keyed by
    /// (table, branch, version).
    pinned: RwLock<HashMap<PinnedKey, Table>>,
    /// Writable handles of Lance branches at their latest version, keyed
    /// by (table, branch): each tracks its branch's head as `handles` do
    /// the main lines' (a branch's first open reads its manifest).
    lines: RwLock<HashMap<(String, String), Table>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per dataset: the set of its Lance branches. Creating or dropping a
    /// branch holds it shared; a cleanup of old versions, which reads the
    /// manifests of every branch, holds it exclusively (a branch dropped
    /// under it failed the cleanup with a missing manifest).
    trees: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Per (table, line): the versions this handle committed and nobody
    /// has vouched for yet (see [`BranchLines::own_commits`]).
    made: Mutex<MadeVersions>,
}

/// Per (table, line): the versions a handle committed, each with the
/// version whose contents it restored, if it was a restore.
type MadeVersions = HashMap<(String, Option<String>), std::collections::BTreeMap<u64, Option<u64>>>;

impl std::fmt::Debug for LanceDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanceDbBackend")
            .field("uri", &self.uri)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl LanceDbBackend {
    /// Open (creating if needed) a store with [`LanceDbOptions::default`].
    ///
    /// `uri` is a local directory path, a `file://` URL, `memory://name`,
    /// or, with the feature `s3`, `s3://bucket/prefix` (its endpoint and
    /// credentials in [`LanceDbOptions::storage_options`], see
    /// [`open_with`](Self::open_with)).
    ///
    /// # Errors
    /// The directory cannot be created or LanceDB refuses the URI;
    /// [`Error::UnsupportedStore`] for `s3://` in a build without the
    /// feature `s3`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let store = lancebranch::LanceDbBackend::open("memory://scratch").await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, LanceDbOptions::default()).await
    }

    /// Open (creating if needed) a store with explicit options.
    ///
    /// # Errors
    /// As [`LanceDbBackend::open`].
    ///
    /// # Example
    /// ```no_run
    /// use lancebranch::{LanceDbBackend, lance::LanceDbOptions};
    /// # async fn demo() -> anyhow::Result<()> {
    /// let opts = LanceDbOptions { durable: false, ..Default::default() };
    /// let store = LanceDbBackend::open_with("/tmp/bench-store", opts).await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn open_with(uri: &str, opts: LanceDbOptions) -> Result<Self> {
        let uri = normalize_uri(uri)?;
        let mut builder = lancedb::connect(&uri)
            .read_consistency_interval(opts.read_consistency)
            .storage_option("new_table_enable_stable_row_ids", "true");
        let mut sync = None;
        let mut object_session = None;
        #[cfg(feature = "failpoints")]
        let mut faults = None;
        if store_location(&uri) == StoreLocation::Object {
            // The store acknowledges a PUT once it is stored: no syncs.
            let session = Arc::new(lance::session::Session::default());
            builder = builder
                .storage_options(opts.storage_options.clone())
                .session(session.clone());
            object_session = Some(session);
        } else if opts.durable && !uri.starts_with("memory://") {
            #[cfg(feature = "failpoints")]
            let (session, counter) = {
                let f = Arc::new(crate::lance::WriteFaults::default());
                faults = Some(f.clone());
                crate::lance::durable::session_with(Some(f))
            };
            #[cfg(not(feature = "failpoints"))]
            let (session, counter) = crate::lance::durable::session_with();
            builder = builder.session(session);
            sync = Some(counter);
        }
        let conn = builder
            .execute()
            .await
            .with_context(|| format!("opening LanceDB store at {uri}"))?;
        Ok(Self {
            uri,
            conn,
            opts,
            sync,
            object_session,
            #[cfg(feature = "failpoints")]
            faults,
            existence: RwLock::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            pinned: RwLock::new(HashMap::new()),
            lines: RwLock::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            trees: Mutex::new(HashMap::new()),
            made: Mutex::new(HashMap::new()),
        })
    }

    /// The options this backend was opened with.
    pub fn options(&self) -> &LanceDbOptions {
        &self.opts
    }

    /// The counter of synced writes, when durability is on.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let store = lancebranch::LanceDbBackend::open("/tmp/s").await?;
    /// assert!(store.sync_counter().is_some());
    /// # Ok(()) }
    /// ```
    pub fn sync_counter(&self) -> Option<&Arc<SyncCounter>> {
        self.sync.as_ref()
    }

    /// The write faults of the durable store (feature `failpoints`; `None`
    /// without durability), for crash tests.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let store = lancebranch::LanceDbBackend::open("/tmp/s").await?;
    /// store.write_faults().unwrap().fail_writes_after(2);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "failpoints")]
    pub fn write_faults(&self) -> Option<&Arc<crate::lance::WriteFaults>> {
        self.faults.as_ref()
    }

    /// The LanceDB table handle of `name` (cached; reads through it see the
    /// latest version, per [`LanceDbOptions::read_consistency`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TableNotFound`], or an I/O error.
    ///
    /// Crate-private: a writable LanceDB handle would bypass the catalog.
    pub(crate) async fn table(&self, name: &str) -> Result<Table> {
        validate_table_name(name)?;
        if let Some(t) = read_lock(&self.handles).get(name) {
            return Ok(t.clone());
        }
        match self.conn.open_table(name).execute().await {
            Ok(t) => {
                // One handle per table: when two calls open it at once, both
                // use the first one cached, so no write goes through a
                // handle the cache's does not see (with a consistency
                // interval, nothing would refresh it).
                let t = write_lock(&self.handles)
                    .entry(name.to_string())
                    .or_insert(t)
                    .clone();
                write_lock(&self.existence).insert(name.to_string(), true);
                Ok(t)
            }
            Err(lancedb::Error::TableNotFound { .. }) => {
                write_lock(&self.existence).insert(name.to_string(), false);
                Err(Error::TableNotFound(name.to_string()).into())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("opening table {name:?}"))),
        }
    }

    /// A read-only handle of `name` at a Lance branch and/or version
    /// (`None`, `None` is the latest of the main line).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TableNotFound`],
    /// [`Error::VersionNotFound`], or an I/O error.
    pub async fn table_at(
        &self,
        name: &str,
        branch: Option<&str>,
        version: Option<u64>,
    ) -> Result<Table> {
        let base = self.table(name).await?;
        if branch.is_none() && version.is_none() {
            return Ok(base);
        }
        let branch = branch.filter(|b| *b != "main");
        let key = version.map(|v| (name.to_string(), branch.map(str::to_string), v));
        if let Some(k) = &key
            && let Some(t) = read_lock(&self.pinned).get(k)
        {
            return Ok(t.clone());
        }
        match base
            .checkout_branch(branch.unwrap_or("main"), version)
            .await
        {
            Ok(t) => {
                if let Some(k) = key {
                    let mut pinned = write_lock(&self.pinned);
                    if pinned.len() >= 1024 {
                        pinned.clear();
                    }
                    pinned.insert(k, t.clone());
                }
                Ok(t)
            }
            Err(e) => {
                if let Some(v) = version {
                    let msg = e.to_string();
                    if msg.contains("not found") || msg.contains("Not found") {
                        return Err(Error::VersionNotFound {
                            table: name.to_string(),
                            version: v,
                        }
                        .into());
                    }
                }
                Err(anyhow::Error::new(e).context(format!(
                    "opening table {name:?} at branch {branch:?} version {version:?}"
                )))
            }
        }
    }

    /// A writable handle of one line of a table: its main line (`None`) or
    /// the Lance branch `branch`, at the line's latest version.
    ///
    /// # Errors
    /// As `table`, or the branch does not exist.
    ///
    /// Crate-private: a writable LanceDB handle would bypass the catalog.
    pub(crate) async fn line_table(&self, name: &str, branch: Option<&str>) -> Result<Table> {
        let base = self.table(name).await?;
        let Some(b) = branch else {
            return Ok(base);
        };
        let key = (name.to_string(), b.to_string());
        if let Some(t) = read_lock(&self.lines).get(&key) {
            return Ok(t.clone());
        }
        let t = base.checkout_branch(b, None).await.map_err(|e| {
            anyhow::Error::new(e).context(format!("opening branch {b:?} of {name:?}"))
        })?;
        // One handle per line, as per table (see `table`).
        Ok(write_lock(&self.lines).entry(key).or_insert(t).clone())
    }

    /// The Lance [`Dataset`] of a table at its latest version, for Lance
    /// primitives this contract does not cover (branches, tags, deltas).
    /// Goes through the same cache as every other call.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TableNotFound`], or an I/O error.
    pub async fn dataset(&self, name: &str) -> Result<Arc<Dataset>> {
        let table = self.table(name).await?;
        let wrapper = table
            .dataset()
            .ok_or_else(|| anyhow::anyhow!("table {name:?} is not a native Lance table"))?;
        Ok(wrapper.get().await?)
    }

    /// The URI of a table's dataset directory.
    pub fn table_uri(&self, name: &str) -> String {
        format!("{}/{}.lance", self.uri.trim_end_matches('/'), name)
    }

    /// For an object store: the store holding `table`'s objects and the
    /// path of its dataset in it (`None` for local and `memory://`
    /// stores, whose files the local file system reaches).
    pub(crate) async fn object_dir(
        &self,
        table: &str,
    ) -> Result<
        Option<(
            Arc<lance_io::object_store::ObjectStore>,
            object_store::path::Path,
        )>,
    > {
        let Some(session) = &self.object_session else {
            return Ok(None);
        };
        let uri = self.table_uri(table);
        let (store, path) = lance_io::object_store::ObjectStore::from_uri_and_params(
            session.store_registry(),
            &uri,
            &self.object_params(),
        )
        .await
        .with_context(|| format!("opening the object store of {uri}"))?;
        Ok(Some((store, path)))
    }

    /// For an object store: the store and this store's base path in it
    /// (where a branched store keeps its catalog); `None` for local and
    /// `memory://` stores. A client of its own, not the one Lance's
    /// tables share: the catalog runs its requests on a runtime of its own
    /// (see `ObjectLog`), and a pooled connection of the shared client
    /// would be driven by the caller's runtime.
    pub(crate) async fn object_base(&self) -> Result<Option<crate::backend::ObjectBase>> {
        if self.object_session.is_none() {
            return Ok(None);
        }
        let (store, path) = lance_io::object_store::ObjectStore::from_uri_and_params(
            Arc::new(lance_io::object_store::ObjectStoreRegistry::default()),
            &self.uri,
            &self.object_params(),
        )
        .await
        .with_context(|| format!("opening the object store of {}", self.uri))?;
        Ok(Some(crate::backend::ObjectBase {
            store: store.inner.clone(),
            path,
        }))
    }

    /// The parameters that reach this store's object store (its storage
    /// options).
    fn object_params(&self) -> lance_io::object_store::ObjectStoreParams {
        let options = self.opts.storage_options.clone();
        lance_io::object_store::ObjectStoreParams {
            storage_options_accessor: Some(Arc::new(
                lance_io::object_store::StorageOptionsAccessor::with_static_options(options),
            )),
            ..Default::default()
        }
    }

    // ---- caches ----

    pub(crate) fn cached_existence(&self, name: &str) -> Option<bool> {
        read_lock(&self.existence).get(name).copied()
    }

    pub(crate) fn set_existence(&self, name: &str, exists: bool) {
        write_lock(&self.existence).insert(name.to_string(), exists);
        if !exists {
            self.forget_handles(name);
        }
    }

    pub(crate) fn forget(&self, name: &str) {
        write_lock(&self.existence).remove(name);
        self.forget_handles(name);
    }

    /// Drop every cached handle of a table.
    fn forget_handles(&self, name: &str) {
        write_lock(&self.handles).remove(name);
        write_lock(&self.pinned).retain(|(t, _, _), _| t != name);
        write_lock(&self.lines).retain(|(t, _), _| t != name);
    }

    /// Drop cached handles of one Lance branch of a table (its versions
    /// mean something else once the branch is removed or re-created).
    pub(crate) fn forget_line(&self, name: &str, line: &str) {
        write_lock(&self.lines).remove(&(name.to_string(), line.to_string()));
        write_lock(&self.pinned).retain(|(t, b, _), _| !(t == name && b.as_deref() == Some(line)));
        self.lock_made()
            .remove(&(name.to_string(), Some(line.to_string())));
    }

    fn lock_made(&self) -> std::sync::MutexGuard<'_, MadeVersions> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note that this handle committed `version` of a line (returned as
    /// is); `restored`: the commit restored the line's contents of that
    /// version.
    pub(crate) fn made(
        &self,
        table: &str,
        line: Option<&str>,
        version: u64,
        restored: Option<u64>,
    ) -> u64 {
        self.lock_made()
            .entry((table.to_string(), line.map(str::to_string)))
            .or_default()
            .insert(version, restored);
        version
    }

    /// Note that this handle committed every version of a line from
    /// `after` (exclusive) up to `upto`.
    pub(crate) fn made_range(&self, table: &str, line: Option<&str>, after: u64, upto: u64) {
        self.lock_made()
            .entry((table.to_string(), line.map(str::to_string)))
            .or_default()
            .extend((after + 1..=upto).map(|v| (v, None)));
    }

    /// Whether the contents of version `upto` of a line come from version
    /// `after` through commits of this handle only: each version down from
    /// `upto` is this handle's, back to `after` or to a commit of this
    /// handle that restored a version at or below `after` (what lies
    /// under such a restore is not part of the contents). Versions below
    /// `after` are forgotten.
    pub(crate) fn made_all(&self, table: &str, line: Option<&str>, after: u64, upto: u64) -> bool {
        let mut made = self.lock_made();
        let key = (table.to_string(), line.map(str::to_string));
        let Some(versions) = made.get_mut(&key) else {
            return upto <= after;
        };
        *versions = versions.split_off(&after);
        for v in (after + 1..=upto).rev() {
            match versions.get(&v) {
                None => return false,
                Some(Some(restored)) if *restored <= after => return true,
                Some(_) => {}
            }
        }
        true
    }

    /// Forget the versions noted for every line of `table` (its dataset
    /// is gone).
    pub(crate) fn forget_made(&self, table: &str) {
        self.lock_made().retain(|(t, _), _| t != table);
    }

    pub(crate) fn forget_all(&self) {
        write_lock(&self.existence).clear();
        write_lock(&self.handles).clear();
        write_lock(&self.pinned).clear();
        write_lock(&self.lines).clear();
    }

    // ---- locks ----

    pub(crate) fn table_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }

    pub(crate) async fn lock(&self, name: &str) -> TableWriteGuard {
        TableWriteGuard::held(self.table_lock(name).lock_owned().await)
    }

    /// The lock of dataset `name`'s set of Lance branches (see `trees`).
    pub(crate) fn tree_lock(&self, name: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        trees.entry(name.to_string()).or_default().clone()
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Where a store URI keeps its data ([`store_location`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreLocation<'a> {
    /// A local directory: a plain path or a `file://` URL (this path).
    Local(&'a str),
    /// `memory://`.
    Memory,
    /// An object store: any other scheme (`s3://`, `gs://`, …).
    Object,
}

/// Where `uri` keeps its data. The one place that tells local, memory and
/// object-store URIs apart (the CLI asks it too).
///
/// # Example
/// ```
/// use lancebranch::lance::{StoreLocation, store_location};
/// assert_eq!(store_location("/data/s"), StoreLocation::Local("/data/s"));
/// assert_eq!(store_location("file:///data/s"), StoreLocation::Local("/data/s"));
/// assert_eq!(store_location("memory://x"), StoreLocation::Memory);
/// assert_eq!(store_location("s3://bucket/s"), StoreLocation::Object);
/// ```
pub fn store_location(uri: &str) -> StoreLocation<'_> {
    match uri.split_once("://") {
        None => StoreLocation::Local(uri),
        Some(("file", path)) => StoreLocation::Local(path),
        Some(("memory", _)) => StoreLocation::Memory,
        Some(_) => StoreLocation::Object,
    }
}

/// Make a local path absolute (creating the directory); leave URLs alone.
fn normalize_uri(uri: &str) -> Result<String> {
    if uri.trim().is_empty() {
        return Err(Error::InvalidArgument("the store URI is empty".into()).into());
    }
    if !cfg!(feature = "s3") && (uri.starts_with("s3://") || uri.starts_with("s3+ddb://")) {
        return Err(Error::UnsupportedStore {
            uri: uri.to_string(),
            detail: "this build has no S3 support: build lancebranch with the cargo feature `s3`"
                .to_string(),
        }
        .into());
    }
    if uri.contains("://") {
        if let Some(path) = uri.strip_prefix("file://") {
            create_dir_synced(std::path::Path::new(path))
                .with_context(|| format!("creating store directory {path}"))?;
        }
        return Ok(uri.trim_end_matches('/').to_string());
    }
    create_dir_synced(std::path::Path::new(uri))
        .with_context(|| format!("creating store directory {uri}"))?;
    let abs = std::fs::canonicalize(uri).with_context(|| format!("resolving {uri}"))?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidArgument(format!("store path {abs:?} is not UTF-8")).into())
}

/// Turn a LanceDB error into our typed error where the cause is the caller's.
pub(crate) fn map_lancedb(e: lancedb::Error, table: &str) -> anyhow::Error {
    match e {
        lancedb::Error::TableNotFound { .. } => Error::TableNotFound(table.to_string()).into(),
        lancedb::Error::TableAlreadyExists { .. } => Error::TableExists(table.to_string()).into(),
        lancedb::Error::Schema { message } => Error::SchemaMismatch {
            table: table.to_string(),
            detail: message,
        }
        .into(),
        other => anyhow::Error::new(other).context(format!("table {table:?}")),
    }
}

/// The schema every batch of a create shares.
pub(crate) fn common_schema(table: &str, batches: &[RecordBatch]) -> Result<SchemaRef> {
    let first = batches.first().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "creating {table:?} needs at least one batch to take its schema from; \
             use create_empty_table for a table without rows"
        ))
    })?;
    let schema = first.schema();
    for b in &batches[1..] {
        if !same_fields(&b.schema(), &schema) {
            return Err(Error::SchemaMismatch {
                table: table.to_string(),
                detail: "the batches do not share one schema".into(),
            }
            .into());
        }
    }
    Ok(schema)
}

/// Same column names and equal types, in the same order.
pub(crate) fn same_shape(a: &Schema, b: &Schema) -> bool {
    same_fields(a, b)
}

fn same_fields(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields().iter())
            .all(|(x, y)| x.name() == y.name() && x.data_type().equals_datatype(y.data_type()))
}

/// Fit `batches` to the table schema `target` for an append: the same
/// columns (in any order) with equal types. Columns are reordered and
/// nested field names aligned; anything else is [`Error::SchemaMismatch`].
pub(crate) fn conform_append(
    table: &str,
    target: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| conform(table, target, b, false))
        .collect()
}

/// Fit a merge source to the table: a subset of its columns with equal
/// types, kept in the source's order.
pub(crate) fn conform_subset(
    table: &str,
    target: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| conform(table, target, b, true))
        .collect()
}

fn conform(
    table: &str,
    target: &SchemaRef,
    batch: RecordBatch,
    subset: bool,
) -> Result<RecordBatch> {
    let mismatch = |detail: String| -> anyhow::Error {
        Error::SchemaMismatch {
            table: table.to_string(),
            detail,
        }
        .into()
    };
    let src = batch.schema();
    for f in src.fields() {
        if target.field_with_name(f.name()).is_err() {
            return Err(mismatch(format!(
                "column {:?} is not in the table",
                f.name()
            )));
        }
    }
    let wanted: Vec<&Field> = if subset {
        src.fields()
            .iter()
            .filter_map(|f| target.field_with_name(f.name()).ok())
            .collect()
    } else {
        target.fields().iter().map(|f| f.as_ref()).collect()
    };
    let mut columns = Vec::with_capacity(wanted.len());
    let mut fields = Vec::with_capacity(wanted.len());
    for tf in wanted {
        let Ok(idx) = src.index_of(tf.name()) else {
            return Err(mismatch(format!("column {:?} is missing", tf.name())));
        };
        let col = batch.column(idx);
        if !col.data_type().equals_datatype(tf.data_type()) {
            return Err(mismatch(format!(
                "column {:?} has type {} but the table has {}",
                tf.name(),
                col.data_type(),
                tf.data_type()
            )));
        }
        let col = if col.data_type() == tf.data_type() {
            col.clone()
        } else {
            arrow_cast::cast(col, tf.data_type()).map_err(|e| mismatch(e.to_string()))?
        };
        if !tf.is_nullable() && col.null_count() > 0 {
            return Err(mismatch(format!(
                "column {:?} is not nullable but the data has nulls",
                tf.name()
            )));
        }
        columns.push(col);
        fields.push(tf.clone());
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, target.metadata().clone()));
    RecordBatch::try_new(schema, columns).map_err(|e| mismatch(e.to_string()))
}

/// Check that `filter` parses and names only columns of `schema`.
pub(crate) fn validate_filter(schema: &SchemaRef, filter: &str) -> Result<()> {
    check_raw_filter(filter)?;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for hidden in ["_rowid", "_rowaddr"] {
        if schema.field_with_name(hidden).is_err() {
            fields.push(Field::new(hidden, DataType::UInt64, true));
        }
    }
    let planner = lance_datafusion::planner::Planner::new(Arc::new(Schema::new(fields)));
    let bad = |e: String| -> anyhow::Error {
        Error::InvalidFilter {
            filter: filter.to_string(),
            detail: e,
        }
        .into()
    };
    let expr = planner
        .parse_filter(filter)
        .map_err(|e| bad(e.to_string()))?;
    let expr = planner
        .optimize_expr(expr)
        .map_err(|e| bad(e.to_string()))?;
    planner
        .create_physical_expr(&expr)
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}
