//! [`BranchedBackend`]: a view of one branch, and the branch operations.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::backend::{BranchLines, Error, validate_table_name};
use crate::branched::catalog::{
    Catalog, CatalogState, PinGuard, Record, TableRef, Touched, line_owner,
};
use crate::branched::core::Core;
use crate::branched::log::WalLog;
use crate::branched::names::{MAIN, validate_branch_name, validate_tag_name};
use crate::branched::object_log::ObjectLog;
use crate::failpoints::FailPoint;
use crate::lance::{StoreLocation, store_location};

/// A view of one branch of a branched store. It implements
/// [`StorageBackend`](crate::StorageBackend), so an engine uses a branch
/// exactly as it uses the store.
///
/// - Every table is read at the version the catalog *published* for this
///   branch, so a change that spans several tables (a
///   [`transaction`](BranchedBackend::transaction)) becomes visible at once.
/// - A write is acknowledged only after it is published: the Lance commit
///   (synced by the inner store), then one synced catalog record.
/// - [`fork`](BranchedBackend::fork) writes one catalog record and makes no
///   Lance call; a table gets its own Lance branch on its first write.
///
/// # Example
/// ```no_run
/// use std::sync::Arc;
/// use lancebranch::{LanceDbBackend, StorageBackend, branched::BranchedBackend};
/// # async fn demo(batch: arrow_array::RecordBatch) -> anyhow::Result<()> {
/// let inner = Arc::new(LanceDbBackend::open("/tmp/branched-store").await?);
/// let main = BranchedBackend::open(inner).await?;
/// main.create_table("people", vec![batch.clone()]).await?;
/// let what_if = main.fork("what-if").await?;
/// what_if.delete_rows("people", "true").await?;
/// assert_eq!(what_if.count_rows("people", None).await?, 0);
/// assert!(main.count_rows("people", None).await? > 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BranchedBackend {
    pub(crate) core: Arc<Core>,
    pub(crate) name: String,
    pub(crate) id: u64,
    /// Set for read-only snapshots: the tables as of the snapshot.
    pub(crate) pinned: Option<Arc<Pinned>>,
    pub(crate) base_uri: String,
}

/// What a snapshot reads, registered with the catalog for as long as any
/// clone of the snapshot lives (retention and garbage collection keep it).
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) tables: BTreeMap<String, TableRef>,
    _guard: PinGuard,
}

impl std::fmt::Debug for BranchedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BranchedBackend")
            .field("branch", &self.name)
            .field("snapshot", &self.pinned.is_some())
            .finish_non_exhaustive()
    }
}

/// One branch, as [`BranchedBackend::list_branches`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchInfo {
    /// The branch name.
    pub name: String,
    /// Its parent (`None` for main).
    pub parent: Option<String>,
    /// The tag it was forked from, if any.
    pub from_tag: Option<String>,
    /// The tables it sees.
    pub tables: Vec<String>,
    /// How many tables have their own Lance branch (were written on it).
    pub materialized: usize,
}

/// One tag, as [`BranchedBackend::list_tags`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag name.
    pub name: String,
    /// The branch it was taken on.
    pub branch: String,
    /// Table → pinned version.
    pub versions: BTreeMap<String, u64>,
}

/// Where the catalog of a store with this base URI lives: a local
/// directory (`Some`), memory (`None`), or the store's object storage
/// (`Err(uri)`).
fn catalog_dir(base_uri: &str) -> std::result::Result<Option<PathBuf>, String> {
    match store_location(base_uri) {
        StoreLocation::Memory => Ok(None),
        StoreLocation::Local(path) => Ok(Some(PathBuf::from(path).join("_lancebranch"))),
        StoreLocation::Object => Err(base_uri.to_string()),
    }
}

/// A follower's check of a read of `table` made on its state at LSN `at`
/// (`failed`: the read failed): [`Error::StaleRead`] when the writer has
/// since removed a line or the dataset of `table` (what was read may be
/// another dataset of the same name), or, for a failed read, published
/// `table` anew (retention may have removed the version read).
///
/// # Errors
/// [`Error::StaleRead`], or the log cannot be read.
pub(crate) async fn check_followed(
    cat: Arc<Catalog>,
    at: u64,
    table: String,
    failed: bool,
) -> Result<()> {
    let t = table.clone();
    let touched = tokio::task::spawn_blocking(move || cat.touched_since(at, &t)).await??;
    let stale = match touched {
        Touched::Removed => true,
        Touched::Republished => failed,
        Touched::Untouched => false,
    };
    if stale {
        return Err(Error::StaleRead { table }.into());
    }
    Ok(())
}

/// Who opens a store for writing (host, process id and a random nonce),
/// logged in its writer record. Unique per open: two writers that both
/// find their own bytes at a name after a retried create must not be able
/// to take the same epoch.
fn owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}:{}:{:016x}", host.trim(), std::process::id(), h.finish())
}

/// Open the catalog of the store `inner`: a local log in
/// `<base>/_lancebranch/` (in memory for `memory://`), or the object log
/// on the store's own object storage (never a local file: two machines
/// would diverge). `write`: as the store's one writer; otherwise as a
/// read-only follower.
async fn open_catalog(inner: &dyn BranchLines, write: bool) -> Result<Arc<Catalog>> {
    let base_uri = inner.base_uri().to_string();
    match catalog_dir(&base_uri) {
        Ok(None) if !write => Err(Error::UnsupportedStore {
            uri: base_uri,
            detail: "an in-memory store has no followers: take a snapshot() instead".to_string(),
        }
        .into()),
        Ok(dir) => {
            let open = move || match (write, dir) {
                (true, dir) => Catalog::open(dir.as_deref()),
                (false, Some(dir)) => {
                    let (log, state, records) = WalLog::open_read_only(&dir)?;
                    Ok(Catalog::from_log(Box::new(log), state, records, true))
                }
                (false, None) => unreachable!("refused above"),
            };
            tokio::task::spawn_blocking(open).await?
        }
        Err(uri) => {
            let Some(base) = inner.object_base().await? else {
                return Err(Error::UnsupportedStore {
                    uri,
                    detail: "this store gives no object store to keep the catalog in (a \
                             LanceDbBackend on s3:// needs the `s3` feature)"
                        .to_string(),
                }
                .into());
            };
            let open = move || {
                let (log, state, records) =
                    ObjectLog::open(base.store, &base.path, &uri, write, &owner())?;
                Ok(Catalog::from_log(Box::new(log), state, records, !write))
            };
            tokio::task::spawn_blocking(open).await?
        }
    }
}

impl BranchedBackend {
    /// Open the branched store over `inner` and return the view of `main`,
    /// after finishing or undoing every operation a crash interrupted.
    ///
    /// The catalog lives in `<inner base>/_lancebranch/`: a local log for
    /// a local directory (in memory for `memory://`), objects on the same
    /// object storage for `s3://…` (see the README's multi-process model).
    /// A store has one writer at a time: on local disk a second open for
    /// writing fails with [`Error::StoreLocked`] while the first lives; on
    /// object storage the open takes the store over and the earlier writer
    /// is fenced ([`Error::Fenced`] at its next change). Other processes
    /// follow it with [`open_read_only`](Self::open_read_only).
    ///
    /// # Errors
    /// [`Error::StoreLocked`]; [`Error::UnsupportedStore`] for an object
    /// store `inner` gives no access to; the catalog cannot be read, or
    /// recovery fails.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use std::sync::Arc;
    /// let inner = Arc::new(lancebranch::LanceDbBackend::open("memory://x").await?);
    /// let main = lancebranch::branched::BranchedBackend::open(inner).await?;
    /// assert_eq!(main.branch_name(), "main");
    /// # Ok(()) }
    /// ```
    pub async fn open(inner: Arc<dyn BranchLines>) -> Result<Self> {
        Self::open_armed(inner, &[]).await
    }

    /// Open the store over `inner` as a read-only follower and return the
    /// view of `main`: it reads what the store's writer (another process,
    /// or another machine on object storage) published, as of this open or
    /// the last [`refresh`](Self::refresh), and never writes: no lock, no
    /// recovery, every change fails with [`Error::ReadOnlyStore`].
    ///
    /// # Errors
    /// The store has no catalog yet (its writer never opened it);
    /// [`Error::UnsupportedStore`] for `memory://` (use a
    /// [`snapshot`](Self::snapshot)); the catalog cannot be read.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use std::sync::Arc;
    /// use lancebranch::{LanceDbBackend, StorageBackend, branched::BranchedBackend};
    /// let inner = Arc::new(LanceDbBackend::open("/data/store").await?);
    /// let follower = BranchedBackend::open_read_only(inner).await?;
    /// let before = follower.count_rows("people", None).await?;
    /// follower.refresh().await?; // see what the writer published since
    /// # Ok(()) }
    /// ```
    pub async fn open_read_only(inner: Arc<dyn BranchLines>) -> Result<Self> {
        let base_uri = inner.base_uri().to_string();
        let catalog = open_catalog(inner.as_ref(), false).await?;
        Ok(Self::main_of(Arc::new(Core::new(inner, catalog)), base_uri))
    }

    /// The view of `main` of a freshly opened store.
    fn main_of(core: Arc<Core>, base_uri: String) -> Self {
        Self {
            core,
            name: MAIN.to_string(),
            id: 0,
            pinned: None,
            base_uri,
        }
    }

    /// A read-only follower: read what the writer logged since this
    /// store's catalog state was read, so that every view of it sees the
    /// newest published state. Returns how many catalog records were
    /// applied (0: nothing new). A writer's own views are always current:
    /// for them this does nothing.
    ///
    /// # Errors
    /// The catalog cannot be read (the state stays as it was).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(follower: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
    /// if follower.refresh().await? > 0 {
    ///     println!("the writer published something");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self) -> Result<u64> {
        if !self.core.catalog.is_read_only() {
            return Ok(0);
        }
        let cat = self.core.catalog.clone();
        let applied = tokio::task::spawn_blocking(move || cat.refresh()).await??;
        if applied > 0 {
            // Cached handles and existence answers may predate the writer's
            // changes (a dataset dropped and created anew).
            for t in self.core.catalog.read().known_tables() {
                self.core.inner.invalidate_cache(&t);
            }
        }
        Ok(applied)
    }

    /// Whether this view belongs to a read-only follower
    /// ([`open_read_only`](Self::open_read_only)).
    pub fn is_read_only(&self) -> bool {
        self.core.catalog.is_read_only()
    }

    /// How many times the store's catalog log was synced since it was
    /// opened (every view of the store shares the log). Concurrent commits
    /// share a sync, so under load this grows slower than the commits;
    /// 0 for a log on object storage, whose appends are durable on their
    /// own.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(main: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
    /// let before = main.log_syncs();
    /// main.fork("what-if").await?;
    /// assert_eq!(main.log_syncs(), before + 1);
    /// # Ok(()) }
    /// ```
    pub fn log_syncs(&self) -> u64 {
        self.core.catalog.log_syncs()
    }

    /// [`open`](Self::open) with fail points armed before recovery runs, to
    /// crash recovery itself: each `(point, skip)` stops at hit `skip + 1`
    /// of fail point `point`.
    ///
    /// # Errors
    /// As [`open`](Self::open); [`Error::FailPoint`] when recovery is cut.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(inner: std::sync::Arc<lancebranch::LanceDbBackend>) -> anyhow::Result<()> {
    /// use lancebranch::branched::BranchedBackend;
    /// use lancebranch::failpoints::FailPoint;
    /// // Cut recovery after it removed a half-made Lance branch...
    /// let _ = BranchedBackend::open_with_failpoints(
    ///     inner.clone(),
    ///     &[(FailPoint::RecoveryAfterDropBeforeRecord, 0)],
    /// )
    /// .await;
    /// // ...and recover again.
    /// let main = BranchedBackend::open(inner).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "failpoints")]
    pub async fn open_with_failpoints(
        inner: Arc<dyn BranchLines>,
        points: &[(crate::failpoints::FailPoint, u64)],
    ) -> Result<Self> {
        Self::open_armed(inner, points).await
    }

    async fn open_armed(
        inner: Arc<dyn BranchLines>,
        points: &[(crate::failpoints::FailPoint, u64)],
    ) -> Result<Self> {
        let base_uri = inner.base_uri().to_string();
        let catalog = open_catalog(inner.as_ref(), true).await?;
        let mut core = Core::new(inner, catalog);
        #[cfg(feature = "failpoints")]
        for (point, skip) in points {
            core.fail.arm(*point, *skip);
        }
        #[cfg(not(feature = "failpoints"))]
        let _ = points;
        core.recovery = crate::branched::recovery::recover_pending(&core).await?;
        Ok(Self::main_of(Arc::new(core), base_uri))
    }

    /// What recovery did when this store was opened (every view of the
    /// store shares it): the operations a crash had interrupted, and
    /// whether each was finished or undone.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(inner: std::sync::Arc<lancebranch::LanceDbBackend>) -> anyhow::Result<()> {
    /// let main = lancebranch::branched::BranchedBackend::open(inner).await?;
    /// if main.last_recovery().operations.is_empty() {
    ///     println!("clean shutdown");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn last_recovery(&self) -> &crate::branched::RecoveryReport {
        &self.core.recovery
    }

    /// The name of the branch this view shows.
    pub fn branch_name(&self) -> &str {
        &self.name
    }

    /// Whether this view is a read-only snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.pinned.is_some()
    }

    fn view_of(&self, name: &str, id: u64) -> Self {
        Self {
            core: self.core.clone(),
            name: name.to_string(),
            id,
            pinned: None,
            base_uri: self.base_uri.clone(),
        }
    }

    /// A view of the existing branch `name`.
    ///
    /// # Errors
    /// [`Error::BranchNotFound`].
    pub fn branch(&self, name: &str) -> Result<Self> {
        let st = self.core.catalog.read();
        let b = st
            .branches
            .get(name)
            .ok_or_else(|| Error::BranchNotFound(name.to_string()))?;
        Ok(self.view_of(name, b.id))
    }

    /// Fork a new branch `name` from this view's branch, as it is now:
    /// one synced catalog record, no Lance call, whatever the data size.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::BranchExists`], or this branch is
    /// gone ([`Error::BranchNotFound`]).
    pub async fn fork(&self, name: &str) -> Result<Self> {
        validate_branch_name(name)?;
        self.writable()?;
        self.core.fail.check(FailPoint::ForkBeforeRecord)?;
        let id = self.core.catalog.fresh_id();
        let (parent, parent_id, new) = (self.name.clone(), self.id, name.to_string());
        self.core
            .commit_if(move |st| {
                match st.branches.get(&parent) {
                    Some(p) if p.id == parent_id => {}
                    _ => return Err(Error::BranchNotFound(parent).into()),
                }
                if st.branches.contains_key(&new) {
                    return Err(Error::BranchExists(new).into());
                }
                Ok(Record::Fork {
                    name: new,
                    parent,
                    id,
                })
            })
            .await?;
        Ok(self.view_of(name, id))
    }

    /// Fork a new branch `name` from what tag `tag` pins.
    ///
    /// # Errors
    /// As [`BranchedBackend::fork`], plus [`Error::TagNotFound`].
    pub async fn fork_at(&self, name: &str, tag: &str) -> Result<Self> {
        validate_branch_name(name)?;
        validate_tag_name(tag)?;
        self.store_writable()?;
        self.core.fail.check(FailPoint::ForkBeforeRecord)?;
        let id = self.core.catalog.fresh_id();
        let (tag, new) = (tag.to_string(), name.to_string());
        self.core
            .commit_if(move |st| {
                if !st.tags.contains_key(&tag) {
                    return Err(Error::TagNotFound(tag).into());
                }
                if st.branches.contains_key(&new) {
                    return Err(Error::BranchExists(new).into());
                }
                Ok(Record::ForkAt { name: new, tag, id })
            })
            .await?;
        Ok(self.view_of(name, id))
    }

    /// Every branch, `main` first.
    pub fn list_branches(&self) -> Vec<BranchInfo> {
        let st = self.core.catalog.read();
        let mut out: Vec<BranchInfo> = st
            .branches
            .iter()
            .map(|(name, b)| BranchInfo {
                name: name.clone(),
                parent: b.parent.clone(),
                from_tag: b.from_tag.clone(),
                tables: b.tables.keys().cloned().collect(),
                materialized: b
                    .tables
                    .values()
                    .filter(|r| b.owns(r.line.as_deref()))
                    .count(),
            })
            .collect();
        out.sort_by_key(|b| (b.name != MAIN, b.name.clone()));
        out
    }

    /// Delete branch `name` and its Lance branches. Refuses `main`, a
    /// branch with children (unless `cascade`, which deletes them too), and
    /// a branch a tag still pins. The branch disappears from view at once;
    /// its Lance branches are removed next (a crash in between is finished
    /// by recovery).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::BranchNotFound`],
    /// [`Error::BranchInUse`].
    pub async fn delete_branch(&self, name: &str, cascade: bool) -> Result<()> {
        validate_branch_name(name)?;
        self.store_writable()?;
        // Exclusive: no operation of this process is in flight, so none can
        // publish to, or make a line on, a branch being deleted.
        let _gate = self.core.gate.write().await;
        let op = self.core.catalog.fresh_id();
        let collect_op = self.core.catalog.fresh_id();
        let target = name.to_string();
        let check = move |st: &_, pins: &[_]| deletion(st, &target, cascade, op, pins);
        let logged = self.core.commit_collecting(check, collect_op).await?;
        self.core.fail.check(FailPoint::DeleteAfterBegin)?;
        let lines: &[(String, String)] = match logged.first() {
            Some(Record::BeginDelete { lines, .. }) => lines,
            _ => &[],
        };
        crate::branched::recovery::drop_lines(&self.core, lines).await?;
        self.core.fail.check(FailPoint::DeleteAfterDropBeforeEnd)?;
        self.core.end_delete(op, lines).await?;
        self.core.run_collects(&logged).await
    }

    /// Tag what this branch sees now (every table at its published
    /// version). Tagged versions are kept by `optimize_table`.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TagExists`], [`Error::BranchNotFound`].
    pub async fn tag(&self, name: &str) -> Result<()> {
        validate_tag_name(name)?;
        self.store_writable()?;
        self.core.fail.check(FailPoint::TagBeforeRecord)?;
        let (tag, branch, id) = (name.to_string(), self.name.clone(), self.id);
        self.core
            .commit_if(move |st| {
                if st.tags.contains_key(&tag) {
                    return Err(Error::TagExists(tag).into());
                }
                match st.branches.get(&branch) {
                    Some(b) if b.id == id => {}
                    _ => return Err(Error::BranchNotFound(branch).into()),
                }
                Ok(Record::Tag { name: tag, branch })
            })
            .await?;
        Ok(())
    }

    /// Every tag.
    pub fn list_tags(&self) -> Vec<TagInfo> {
        let st = self.core.catalog.read();
        st.tags
            .iter()
            .map(|(name, t)| TagInfo {
                name: name.clone(),
                branch: t.branch.clone(),
                versions: t
                    .tables
                    .iter()
                    .map(|(k, r)| (k.clone(), r.version))
                    .collect(),
            })
            .collect()
    }

    /// Remove a tag.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TagNotFound`].
    pub async fn delete_tag(&self, name: &str) -> Result<()> {
        validate_tag_name(name)?;
        self.store_writable()?;
        let tag = name.to_string();
        let op = self.core.catalog.fresh_id();
        let check = move |st: &CatalogState, _: &[_]| {
            let Some(t) = st.tags.get(&tag) else {
                return Err(Error::TagNotFound(tag).into());
            };
            let candidates = t.tables.keys().cloned().collect();
            Ok((vec![Record::DeleteTag { name: tag }], candidates))
        };
        let logged = self.core.commit_collecting(check, op).await?;
        self.core.run_collects(&logged).await
    }

    /// A read-only view of this branch as it is now: every read through it
    /// sees all tables at one consistent point, whatever is published
    /// meanwhile.
    ///
    /// # Errors
    /// [`Error::BranchNotFound`].
    pub fn snapshot(&self) -> Result<Self> {
        if self.pinned.is_some() {
            return Ok(self.clone());
        }
        let (name, id) = (self.name.clone(), self.id);
        self.pinned_view(|st| match st.branches.get(&name) {
            Some(b) if b.id == id => Ok((name.clone(), id, b.tables.clone())),
            _ => Err(Error::BranchNotFound(name.clone()).into()),
        })
    }

    /// A read-only view of the tables `pick` chooses from the catalog state
    /// (with the branch name and id the view answers to), pinned for as
    /// long as the view or a clone of it lives.
    fn pinned_view(
        &self,
        pick: impl FnOnce(&CatalogState) -> Result<(String, u64, BTreeMap<String, TableRef>)>,
    ) -> Result<Self> {
        let mut owner = (String::new(), u64::MAX);
        let (refs, guard) = self.core.catalog.pin(|st| {
            let (name, id, tables) = pick(st)?;
            owner = (name, id);
            Ok(tables.into_iter().collect())
        })?;
        Ok(Self {
            core: self.core.clone(),
            name: owner.0,
            id: owner.1,
            pinned: Some(Arc::new(Pinned {
                tables: refs.into_iter().collect(),
                _guard: guard,
            })),
            base_uri: self.base_uri.clone(),
        })
    }

    /// A read-only view of what tag `tag` pins: every table at the version
    /// it had when the tag was taken. Like a snapshot, it stays readable
    /// (retention keeps its versions) for as long as it lives.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TagNotFound`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(main: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
    /// use lancebranch::StorageBackend;
    /// main.tag("v1").await?;
    /// let v1 = main.at_tag("v1")?;
    /// println!("{:?}", v1.table_names().await?);
    /// # Ok(()) }
    /// ```
    pub fn at_tag(&self, tag: &str) -> Result<Self> {
        validate_tag_name(tag)?;
        self.pinned_view(|st| {
            let t = st
                .tags
                .get(tag)
                .ok_or_else(|| Error::TagNotFound(tag.to_string()))?;
            let id = st.branches.get(&t.branch).map_or(u64::MAX, |b| b.id);
            Ok((t.branch.clone(), id, t.tables.clone()))
        })
    }

    /// Arm a fail point of this store (see [`crate::failpoints`]): the next
    /// operation that reaches it stops there as if the process died. A
    /// name from a command line or a config parses with
    /// `"merge::after_begin".parse::<FailPoint>()`.
    #[cfg(feature = "failpoints")]
    pub fn arm_failpoint(&self, point: crate::failpoints::FailPoint) {
        self.core.fail.arm(point, 0)
    }

    /// Arm fail point `point` to stop at its hit number `skip + 1` from
    /// now (`merge::after_table_applied` with `skip = 2` cuts a merge after
    /// its third table).
    #[cfg(feature = "failpoints")]
    pub fn arm_failpoint_nth(&self, point: crate::failpoints::FailPoint, skip: u64) {
        self.core.fail.arm(point, skip)
    }

    /// Stop at whichever fail point the store reaches after `skip` more
    /// fail-point hits: a fuzzer picks `skip` in `0..` the number of hits a
    /// workload makes ([`failpoint_hits`](Self::failpoint_hits)) to crash it
    /// at every step in turn.
    #[cfg(feature = "failpoints")]
    pub fn arm_any_failpoint(&self, skip: u64) {
        self.core.fail.arm_any(skip)
    }

    /// Disarm every fail point of this store.
    #[cfg(feature = "failpoints")]
    pub fn disarm_failpoints(&self) {
        self.core.fail.disarm()
    }

    /// How many fail points this store's operations have passed so far.
    #[cfg(feature = "failpoints")]
    pub fn failpoint_hits(&self) -> u64 {
        self.core.fail.hits()
    }

    /// Write a checkpoint of the catalog and truncate its log.
    ///
    /// # Errors
    /// The checkpoint cannot be written.
    pub async fn checkpoint(&self) -> Result<()> {
        self.store_writable()?;
        let cat = self.core.catalog.clone();
        let fail = self.core.fail.clone();
        tokio::task::spawn_blocking(move || cat.checkpoint_with(&fail)).await?
    }

    // ---- helpers for the contract ----

    /// Whether this view may change the store: not a snapshot, not a
    /// follower's.
    ///
    /// # Errors
    /// [`Error::ReadOnlyView`], [`Error::ReadOnlyStore`].
    pub(crate) fn writable(&self) -> Result<()> {
        self.store_writable()?;
        if self.pinned.is_some() {
            return Err(Error::ReadOnlyView(self.name.clone()).into());
        }
        Ok(())
    }

    /// Run `read` of `table` through this view. In a follower, the data
    /// under its catalog state may change as the writer goes on: after the
    /// read, the log is checked, and if the writer removed a line or the
    /// dataset of `table` since the state read (what was read may be
    /// another dataset of the same name), or if the read failed after the
    /// writer published `table` anew (retention may have removed its
    /// version), the result is [`Error::StaleRead`] instead: never rows
    /// the state did not publish.
    ///
    /// `read` resolves the view's refs and makes the read; it is called
    /// after the state's LSN is taken (a refresh in between only makes the
    /// check stricter).
    pub(crate) async fn follow<T, F>(
        &self,
        table: &str,
        read: impl FnOnce() -> Result<F>,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        if !self.core.catalog.is_read_only() {
            return read()?.await;
        }
        let at = self.core.catalog.read().applied;
        let got = read()?.await;
        let cat = self.core.catalog.clone();
        check_followed(cat, at, table.to_string(), got.is_err()).await?;
        got
    }

    /// Whether the store may be changed through this view's core (a
    /// follower's may not, nor a writer that knows it was fenced: it makes
    /// no Lance commit any more).
    ///
    /// # Errors
    /// [`Error::ReadOnlyStore`], [`Error::Fenced`].
    pub(crate) fn store_writable(&self) -> Result<()> {
        if self.core.catalog.is_read_only() {
            return Err(Error::ReadOnlyStore {
                store: self.core.catalog.describe(),
            }
            .into());
        }
        self.core.catalog.check_live()
    }

    /// The tables this view sees in state `st`: a snapshot's pinned
    /// tables, or its branch's published ones (the branch must still be
    /// the one of this view's id). Every read of "what this view sees"
    /// goes through here.
    pub(crate) fn seen<'a>(
        &'a self,
        st: &'a CatalogState,
    ) -> Result<&'a BTreeMap<String, TableRef>> {
        if let Some(p) = &self.pinned {
            return Ok(&p.tables);
        }
        match st.branches.get(&self.name) {
            Some(b) if b.id == self.id => Ok(&b.tables),
            _ => Err(Error::BranchNotFound(self.name.clone()).into()),
        }
    }

    /// [`seen`](Self::seen), owned.
    pub(crate) fn tables_in(&self, st: &CatalogState) -> Result<BTreeMap<String, TableRef>> {
        self.seen(st).cloned()
    }

    /// The names of the tables this view sees now.
    pub(crate) fn seen_names(&self) -> Result<Vec<String>> {
        let st = self.core.catalog.read();
        Ok(self.seen(&st)?.keys().cloned().collect())
    }

    /// Where this view reads `table`.
    pub(crate) fn table_ref(&self, table: &str) -> Result<TableRef> {
        validate_table_name(table)?;
        let st = self.core.catalog.read();
        let found = self.seen(&st)?.get(table).cloned();
        found.ok_or_else(|| Error::TableNotFound(table.to_string()).into())
    }

    /// Where this view reads `table` at `version` (its published one when
    /// `None`): a newer version than the published one is never visible.
    pub(crate) fn table_ref_at(&self, table: &str, version: Option<u64>) -> Result<TableRef> {
        let r = self.table_ref(table)?;
        match version {
            None => Ok(r),
            Some(v) if v > r.version => Err(Error::VersionNotFound {
                table: table.to_string(),
                version: v,
            }
            .into()),
            Some(v) => {
                // Versions before this line began live on the fork point's line.
                let fork = self
                    .core
                    .catalog
                    .read()
                    .branches
                    .get(&self.name)
                    .and_then(|b| b.fork_point.get(table).cloned());
                match fork {
                    Some(f)
                        if f.line != r.line
                            && v <= f.version
                            && line_owner(r.line.as_deref()) == Some(self.id) =>
                    {
                        Ok(TableRef {
                            line: f.line,
                            version: v,
                        })
                    }
                    _ => Ok(TableRef {
                        line: r.line,
                        version: v,
                    }),
                }
            }
        }
    }

    /// Apply one change to `table` on this branch and publish its result.
    /// `f` gets the line to change and returns the new version (`None`:
    /// nothing committed, nothing to publish).
    pub(crate) async fn mutate<F, Fut>(&self, table: &str, f: F) -> Result<()>
    where
        F: FnOnce(Arc<dyn BranchLines>, Option<String>) -> Fut + Send,
        Fut: std::future::Future<Output = Result<Option<u64>>> + Send,
    {
        let point = FailPoint::WriteAfterCommitBeforePublish;
        self.mutate_at(table, point, f).await
    }

    /// [`mutate`](Self::mutate), naming the fail point between the commit
    /// and the publish.
    pub(crate) async fn mutate_at<F, Fut>(
        &self,
        table: &str,
        point: crate::failpoints::FailPoint,
        f: F,
    ) -> Result<()>
    where
        F: FnOnce(Arc<dyn BranchLines>, Option<String>) -> Fut + Send,
        Fut: std::future::Future<Output = Result<Option<u64>>> + Send,
    {
        self.writable()?;
        validate_table_name(table)?;
        let _gate = self.core.gate.read().await;
        let lock = self.core.op_lock(&self.name, table);
        let _g = lock.lock().await;
        let current = self.table_ref(table)?;
        let (line, _, fresh) = self
            .core
            .own_line(&self.name, self.id, table, &current)
            .await?;
        match f(self.core.inner.clone(), line.clone()).await {
            Ok(Some(version)) => {
                self.core.fail.check(point)?;
                let r = TableRef { line, version };
                self.core.publish(&self.name, self.id, table, Some(r)).await
            }
            Ok(None) => {
                if fresh {
                    self.core.abandon_parked(self.id, table).await;
                }
                Ok(())
            }
            Err(e) => {
                // A failed change leaves nothing: not even the line a first
                // write made (a crash leaves it to recovery).
                if fresh && !crate::branched::is_crash(&e) {
                    self.core.abandon_parked(self.id, table).await;
                }
                Err(e)
            }
        }
    }

    /// Create `table` on this branch with `batches` (may be empty) and
    /// `schema`. The table is visible only here until merged.
    pub(crate) async fn create(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<()> {
        self.create_then(table, batches, schema, None).await
    }

    /// [`create`](Self::create), then write every chunk of `more` to the
    /// new table before the one publish that makes it visible (a streamed
    /// import: a failure or a crash on the way leaves the branch as it was).
    pub(crate) async fn create_then(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
        more: Option<crate::branched::stream::Appending<'_>>,
    ) -> Result<()> {
        self.writable()?;
        validate_table_name(table)?;
        let _gate = self.core.gate.read().await;
        let lock = self.core.op_lock(&self.name, table);
        let _g = lock.lock().await;
        if self.exists_here(table)? {
            return Err(Error::TableExists(table.to_string()).into());
        }
        let inner = &self.core.inner;
        // Held to the publish: a collection cannot purge the dataset
        // between the check that it exists and the publish that reads it.
        let dlock = self.core.dataset_lock(table);
        let _d = dlock.lock().await;
        inner.invalidate_cache(table);
        let made = if self.id == 0 && !inner.table_exists(table).await? {
            self.create_on_main(table, batches.clone(), schema.clone())
                .await
        } else {
            Ok(None)
        };
        let made = match made {
            Ok(Some(r)) => Ok(r),
            Ok(None) => self.create_unpublished(table, batches, schema).await,
            Err(e) => Err(e),
        };
        let made = match (made, more) {
            (Ok(r), Some(more)) => {
                crate::branched::stream::append_chunks(inner, table, r, more).await
            }
            (made, _) => made,
        };
        let r = match made {
            Ok(r) => r,
            Err(e) => {
                if !crate::branched::is_crash(&e) {
                    self.core.abandon_parked(self.id, table).await;
                }
                return Err(e);
            }
        };
        self.core
            .fail
            .check(FailPoint::CreateAfterDatasetBeforePublish)?;
        let tables = vec![(table.to_string(), Some(r))];
        let no_garbage = std::collections::BTreeSet::new();
        let logged = self
            .core
            .publish_with(&self.name, self.id, tables, |_| Ok(vec![]), no_garbage)
            .await?;
        // A collection (one a dropped snapshot let go) takes dataset locks:
        // run it only once this one is released.
        drop(_d);
        self.core.run_collects(&logged).await
    }

    /// A new table on main: an ordinary create of the inner store, logged
    /// `BeginCreate` first. `None`: another branch created the dataset
    /// meanwhile (go on as for a branch). The caller holds the dataset lock.
    async fn create_on_main(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<Option<TableRef>> {
        let inner = &self.core.inner;
        self.core.begin_create(self.id, table).await?;
        let made = if batches.iter().any(|b| b.num_rows() > 0) {
            inner.create_table(table, batches).await
        } else {
            inner.create_empty_table(table, schema).await
        };
        match made {
            Ok(()) => {}
            Err(e) if matches!(Error::of(&e), Some(Error::TableExists(_))) => {
                self.core.abandon_parked(self.id, table).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let version = inner.latest_version(table, None).await?;
        Ok(Some(TableRef {
            line: None,
            version,
        }))
    }
}

/// The records that delete branch `target` (with its descendants when
/// `cascade`), checked on `st`: one `BeginDelete` naming the branches,
/// deepest first, and their lines nothing else reads (`pins`: live
/// snapshots); the tables to collect garbage of afterwards.
fn deletion(
    st: &CatalogState,
    target: &str,
    cascade: bool,
    op: u64,
    pins: &[(String, TableRef)],
) -> Result<(Vec<Record>, std::collections::BTreeSet<String>)> {
    let doomed = doomed_branches(st, target, cascade)?;
    let ids: Vec<u64> = doomed
        .iter()
        .filter_map(|b| st.branches.get(b))
        .map(|m| m.id)
        .collect();
    let owned =
        |line: Option<&str>| line.is_some() && line_owner(line).is_some_and(|o| ids.contains(&o));
    for (tag, t) in &st.tags {
        if doomed.contains(&t.branch) || t.tables.values().any(|r| owned(r.line.as_deref())) {
            return Err(Error::BranchInUse {
                branch: target.to_string(),
                detail: format!("tag {tag:?} pins it; delete the tag first"),
            }
            .into());
        }
    }
    let mut candidates = std::collections::BTreeSet::new();
    for b in doomed.iter().filter_map(|b| st.branches.get(b)) {
        candidates.extend(b.tables.keys().cloned());
        candidates.extend(b.fork_point.keys().cloned());
    }
    for ((t, s), m) in &st.merge_bases {
        if doomed.contains(t) || doomed.contains(s) {
            candidates.extend(m.target.keys().chain(m.source.keys()).cloned());
        }
    }
    // Lines of the doomed branches; one a live snapshot still reads stays
    // (for a later collection).
    let mut after = st.clone();
    let begin = Record::BeginDelete {
        op,
        branches: doomed.clone(),
        lines: vec![],
    };
    after.apply(st.applied, &begin);
    let needed = after.needed_lines(pins);
    let lines: Vec<(String, String)> = st
        .lines
        .iter()
        .filter(|(_, l)| owned(Some(l)))
        .filter(|l| !needed.contains(*l))
        .cloned()
        .collect();
    candidates.extend(lines.iter().map(|(t, _)| t.clone()));
    let mut lines = lines;
    lines.sort_by_key(|(t, l)| std::cmp::Reverse(st.line_depth(t, l)));
    Ok((
        vec![Record::BeginDelete {
            op,
            branches: doomed,
            lines,
        }],
        candidates,
    ))
}

/// Branch `target` and its descendants, deepest first; without `cascade`,
/// a branch with children is in use.
fn doomed_branches(st: &CatalogState, target: &str, cascade: bool) -> Result<Vec<String>> {
    if !st.branches.contains_key(target) {
        return Err(Error::BranchNotFound(target.to_string()).into());
    }
    let mut doomed = vec![target.to_string()];
    let mut i = 0;
    while i < doomed.len() {
        let kids: Vec<String> = st
            .branches
            .iter()
            .filter(|(_, b)| b.parent.as_deref() == Some(doomed[i].as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        if !kids.is_empty() && !cascade {
            return Err(Error::BranchInUse {
                branch: target.to_string(),
                detail: format!("it has child branches {kids:?}; delete them first or cascade"),
            }
            .into());
        }
        doomed.extend(kids);
        i += 1;
    }
    doomed.reverse();
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_live_beside_local_stores_only() {
        let local = |uri| catalog_dir(uri).unwrap().map(|p| p.display().to_string());
        assert_eq!(local("/data/s"), Some("/data/s/_lancebranch".into()));
        assert_eq!(local("file:///data/s"), Some("/data/s/_lancebranch".into()));
        assert_eq!(local("relative/s"), Some("relative/s/_lancebranch".into()));
        assert_eq!(local("memory://x"), None);
        // An object store's catalog is never a local directory.
        for uri in ["s3://bucket/s", "gs://b/s", "az://c/s", "s3+ddb://t/s"] {
            assert_eq!(catalog_dir(uri), Err(uri.to_string()));
        }
    }
}
