//! Crash testing for engines built on lancebranch (feature `testing`).
//!
//! A graph engine that stores its tables in a branched store wants to fuzz
//! its own crash recovery: run a workload, die at some step inside the
//! store, come back, and check its invariants. This module gives it the
//! pieces:
//!
//! - [`CrashPlan`] (with [`Arbitrary`]): where to die — at a named
//!   [fail point](crate::failpoints), at the k-th fail-point hit whatever it
//!   is, or at a seeded random one.
//! - [`CrashableStore`]: a store on a directory that can be
//!   [`crash`](CrashableStore::crash)ed: every handle dropped as a process
//!   death would, reopened with recovery itself cut once, reopened again,
//!   every table recovered, and [`fsck`](crate::branched::BranchedBackend::fsck)
//!   required clean.
//! - [`BranchOp`] (with [`Arbitrary`]): the branch operations (fork, write,
//!   update, delete, merge with a policy, delete a branch, checkpoint), to
//!   drive a store from fuzz input; [`crate::fuzzing`] replays them against
//!   an in-memory model of every branch.
//!
//! # Example: a cargo-fuzz target of your own
//! ```no_run
//! // fuzz/fuzz_targets/my_engine_crashes.rs
//! // #![no_main]
//! // libfuzzer_sys::fuzz_target!(|input: (Vec<u8>, CrashPlan)| run(input));
//! use lancebranch::testing::{CrashPlan, CrashableStore, is_crash};
//! use lancebranch::StorageBackend;
//!
//! fn run((edits, plan): (Vec<u8>, CrashPlan)) {
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//!     rt.block_on(async {
//!         let dir = tempfile::tempdir().unwrap();
//!         let mut store = CrashableStore::open(dir.path().to_str().unwrap()).await.unwrap();
//!         store.arm(plan).unwrap();
//!         for e in edits {
//!             // ... your engine's writes through store.main() ...
//!             # let r: anyhow::Result<()> = Ok(()); let _ = e;
//!             match r {
//!                 Err(err) if is_crash(&err) => {
//!                     store.crash().await.unwrap(); // recovered, fsck clean
//!                     // ... check your engine's invariants on store.main() ...
//!                 }
//!                 other => other.unwrap(),
//!             }
//!         }
//!     });
//! }
//! ```

pub mod s3;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use arbitrary::Arbitrary;

use crate::Error;
use crate::StorageBackend;
use crate::branched::{BranchedBackend, ConflictPolicy, RecoveryReport};
use crate::failpoints::{ALL, FailPoint};
use crate::lance::{LanceDbBackend, LanceDbOptions};

/// Timing the catalog's replay on open, step by step (the recovery bench).
pub use crate::branched::history::{CatalogReplay, time_catalog_replay};

/// Where a store should die.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum CrashPlan {
    /// Not at all.
    Never,
    /// At the fail point `ALL[i % ALL.len()]`, on its next hit.
    Point(u8),
    /// At whichever fail point is hit after this many more hits.
    Hit(u16),
    /// At a fail point chosen from the seed, on one of its next few hits.
    Seeded(u64),
}

impl CrashPlan {
    /// The fail point and skip count this plan arms, if it names one.
    ///
    /// # Example
    /// ```
    /// use lancebranch::testing::CrashPlan;
    /// use lancebranch::failpoints::FailPoint;
    /// assert_eq!(CrashPlan::Point(0).target(), Some((FailPoint::LineAfterBegin, 0)));
    /// assert_eq!(CrashPlan::Never.target(), None);
    /// ```
    pub fn target(&self) -> Option<(FailPoint, u64)> {
        match *self {
            CrashPlan::Point(i) => Some((ALL[usize::from(i) % ALL.len()], 0)),
            CrashPlan::Seeded(s) => {
                let i = (s % ALL.len() as u64) as usize;
                Some((ALL[i], (s >> 32) % 3))
            }
            CrashPlan::Never | CrashPlan::Hit(_) => None,
        }
    }

    /// Arm this plan on `store` (every view of the store shares it).
    ///
    /// # Errors
    /// Never for plans built by this type.
    pub fn arm(&self, store: &BranchedBackend) -> Result<()> {
        store.disarm_failpoints();
        match *self {
            CrashPlan::Never => Ok(()),
            CrashPlan::Hit(k) => {
                store.arm_any_failpoint(u64::from(k));
                Ok(())
            }
            _ => match self.target() {
                Some((point, skip)) => {
                    store.arm_failpoint_nth(point, skip);
                    Ok(())
                }
                None => Ok(()),
            },
        }
    }
}

/// Whether `e` is a crash a [`CrashPlan`] caused (the operation stopped at a
/// fail point, leaving the store as a process death there would).
///
/// # Example
/// ```
/// let e = anyhow::Error::new(lancebranch::Error::FailPoint("x".into()));
/// assert!(lancebranch::testing::is_crash(&e));
/// ```
pub fn is_crash(e: &anyhow::Error) -> bool {
    matches!(Error::of(e), Some(Error::FailPoint(_)))
}

/// Recover every table of every branch of the store (`recover_staging`),
/// then require `fsck` to find nothing: what a store must look like after
/// recovery.
///
/// # Errors
/// Recovery fails, or `fsck` finds problems (listed in the error).
///
/// # Example
/// ```no_run
/// # async fn demo(main: lancebranch::branched::BranchedBackend) -> anyhow::Result<()> {
/// lancebranch::testing::recover_and_check(&main).await?;
/// # Ok(()) }
/// ```
pub async fn recover_and_check(main: &BranchedBackend) -> Result<()> {
    for b in main.list_branches() {
        let view = main.branch(&b.name)?;
        for t in &b.tables {
            view.recover_staging(t).await?;
        }
    }
    let report = main.fsck(false).await?;
    if !report.is_clean() {
        let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        return Err(anyhow!("fsck after recovery: {}", problems.join("; ")));
    }
    Ok(())
}

/// A branched store on a directory that can be crashed and recovered.
///
/// Views of it ([`main`](Self::main), and what `branch` / `fork` on it
/// return) must all be dropped before [`crash`](Self::crash): a process
/// death takes them all, and a live view would keep the store's lock.
pub struct CrashableStore {
    path: String,
    opts: LanceDbOptions,
    main: Option<BranchedBackend>,
}

impl std::fmt::Debug for CrashableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashableStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl CrashableStore {
    /// Open (creating) a durable store in the directory `path`.
    ///
    /// # Errors
    /// The store cannot be opened.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let s = lancebranch::testing::CrashableStore::open("/tmp/crashable").await?;
    /// assert_eq!(s.main().branch_name(), "main");
    /// # Ok(()) }
    /// ```
    pub async fn open(path: &str) -> Result<Self> {
        Self::open_with(path, LanceDbOptions::default()).await
    }

    /// [`open`](Self::open) with backend options (`durable: false` is much
    /// faster and loses nothing here: crashes are simulated in-process, not
    /// power cuts).
    ///
    /// # Errors
    /// The store cannot be opened.
    pub async fn open_with(path: &str, opts: LanceDbOptions) -> Result<Self> {
        let inner = Arc::new(LanceDbBackend::open_with(path, opts.clone()).await?);
        let main = BranchedBackend::open(inner).await?;
        Ok(Self {
            path: path.to_string(),
            opts,
            main: Some(main),
        })
    }

    /// The view of `main`.
    ///
    /// # Panics
    /// Never after a successful open or crash (the store is always open
    /// between them).
    pub fn main(&self) -> &BranchedBackend {
        self.main.as_ref().expect("store is open")
    }

    /// Arm `plan`: the store dies where it says.
    ///
    /// # Errors
    /// As [`CrashPlan::arm`].
    pub fn arm(&self, plan: CrashPlan) -> Result<()> {
        plan.arm(self.main())
    }

    /// Die and come back: drop every handle, reopen with recovery cut once
    /// (if it has work there), reopen, recover every table of every
    /// branch, and check `fsck` is clean. Returns what the final recovery
    /// did.
    ///
    /// # Errors
    /// Recovery fails, or `fsck` finds a problem after recovery (a bug of
    /// lancebranch: please report it with the input that caused it).
    pub async fn crash(&mut self) -> Result<RecoveryReport> {
        self.main = None;
        {
            let inner = Arc::new(LanceDbBackend::open_with(&self.path, self.opts.clone()).await?);
            let cut = [(FailPoint::RecoveryAfterDropBeforeRecord, 0)];
            match BranchedBackend::open_with_failpoints(inner, &cut).await {
                Ok(_) => {}
                Err(e) if is_crash(&e) => {}
                Err(e) => return Err(e.context("recovery (first attempt)")),
            }
        }
        let inner = Arc::new(LanceDbBackend::open_with(&self.path, self.opts.clone()).await?);
        let main = BranchedBackend::open(inner).await?;
        recover_and_check(&main).await?;
        let recovery = main.last_recovery().clone();
        self.main = Some(main);
        Ok(recovery)
    }
}

/// A conflict policy, for fuzz input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Policy {
    /// Refuse the merge on any conflict.
    Fail,
    /// Keep the target's side of a conflict.
    Ours,
    /// Take the source's side of a conflict.
    Theirs,
}

impl From<Policy> for ConflictPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Fail => ConflictPolicy::Fail,
            Policy::Ours => ConflictPolicy::Ours,
            Policy::Theirs => ConflictPolicy::Theirs,
        }
    }
}

/// One branch operation, for fuzz input. Branches and rows are picked by
/// index (modulo what exists), so every input is a valid workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum BranchOp {
    /// Fork a new branch from branch `from`.
    Fork {
        /// Which branch to fork.
        from: u8,
    },
    /// Insert `n % 4 + 1` new rows on a branch.
    Insert {
        /// Which branch.
        branch: u8,
        /// How many rows.
        n: u8,
    },
    /// Set the value of an existing row (or of a key never used: an insert).
    Update {
        /// Which branch.
        branch: u8,
        /// Which row.
        row: u8,
        /// The new value.
        value: u8,
    },
    /// Delete an existing row.
    Delete {
        /// Which branch.
        branch: u8,
        /// Which row.
        row: u8,
    },
    /// Merge a branch into its parent, or the parent into it.
    Merge {
        /// Which (non-main) branch.
        branch: u8,
        /// Merge the parent into the branch instead.
        down: bool,
        /// How conflicts are resolved.
        policy: Policy,
    },
    /// Delete a branch that has no children.
    DeleteBranch {
        /// Which (non-main) branch.
        branch: u8,
    },
    /// Checkpoint the catalog.
    Checkpoint,
    /// Arm a crash for the operations that follow.
    Arm(CrashPlan),
    /// Close and reopen the store cleanly.
    Reopen,
}
