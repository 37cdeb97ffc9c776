//! Typed errors of the storage contract.
//!
//! Every [`StorageBackend`](crate::StorageBackend) method returns
//! [`anyhow::Result`], as the contract prescribes. Errors caused by the
//! caller's input are always an [`Error`] inside that `anyhow::Error`, so a
//! caller can tell them apart with [`Error::of`] (or
//! `err.downcast_ref::<lancebranch::Error>()`).

use thiserror::Error as ThisError;

/// An error of lancebranch that a caller can match on.
///
/// # Example
/// ```
/// use lancebranch::Error;
/// let err: anyhow::Error = Error::TableNotFound("people".into()).into();
/// assert!(matches!(Error::of(&err), Some(Error::TableNotFound(name)) if name == "people"));
/// ```
#[derive(Debug, ThisError, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A table, branch, tag or index name breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named (`"table"`, `"branch"`, `"tag"`, `"index"`).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The table does not exist.
    #[error("table {0:?} does not exist")]
    TableNotFound(String),
    /// A table of that name exists already.
    #[error("table {0:?} already exists")]
    TableExists(String),
    /// The data's schema does not fit the table's.
    #[error("schema mismatch on table {table:?}: {detail}")]
    SchemaMismatch {
        /// The table written to.
        table: String,
        /// What does not fit.
        detail: String,
    },
    /// A filter expression is empty, does not parse, or names a missing column.
    #[error("invalid filter {filter:?}: {detail}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// Why it was refused.
        detail: String,
    },
    /// A query vector does not have the column's dimension.
    #[error("vector dimension mismatch on {column:?}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The vector column.
        column: String,
        /// The column's dimension.
        expected: usize,
        /// The query vector's dimension.
        got: usize,
    },
    /// The column does not exist or has the wrong type for the operation.
    #[error("column {column:?} of table {table:?}: {detail}")]
    InvalidColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong with it.
        detail: String,
    },
    /// No index of that name exists on the table.
    #[error("index {index:?} does not exist on table {table:?}")]
    IndexNotFound {
        /// The table.
        table: String,
        /// The index name.
        index: String,
    },
    /// The requested version does not exist.
    #[error("version {version} of table {table:?} does not exist")]
    VersionNotFound {
        /// The table.
        table: String,
        /// The version asked for.
        version: u64,
    },
    /// An argument is out of its range (e.g. `k == 0`, empty key list).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No branch of that name exists (or the view's branch was deleted).
    #[error("branch {0:?} does not exist")]
    BranchNotFound(String),
    /// A branch of that name exists already.
    #[error("branch {0:?} already exists")]
    BranchExists(String),
    /// No tag of that name exists.
    #[error("tag {0:?} does not exist")]
    TagNotFound(String),
    /// A tag of that name exists already.
    #[error("tag {0:?} already exists")]
    TagExists(String),
    /// The branch cannot be deleted or changed as asked.
    #[error("branch {branch:?}: {detail}")]
    BranchInUse {
        /// The branch.
        branch: String,
        /// Why, and what to do instead.
        detail: String,
    },
    /// An operation stopped at an armed fail point (tests only; see
    /// [`crate::failpoints`]).
    #[error("stopped at fail point {0} (simulated crash)")]
    FailPoint(String),
    /// A merge or diff needs a primary key for this table: declare one in
    /// the schema metadata (`lancebranch.primary_key`) or pass it in
    /// `MergeOptions::key`.
    #[error(
        "table {0:?} has no primary key to match rows by; set one with MergeOptions::key or schema metadata \"lancebranch.primary_key\""
    )]
    MissingMergeKey(String),
    /// No common base to merge or diff the two branches from.
    #[error(
        "branches {0:?} and {1:?} have no merge base (merge a parent and child, siblings, or branches merged before)"
    )]
    NoMergeBase(String, String),
    /// The view is a read-only snapshot.
    #[error("this view is a read-only snapshot of branch {0:?}")]
    ReadOnlyView(String),
    /// The store (or one of its files) was written in a newer format than
    /// this build reads: open it with a newer lancebranch. Nothing was
    /// changed.
    #[error(
        "{what} {path} has format {found}; this build reads formats up to {supported} (open it with a newer lancebranch)"
    )]
    UnsupportedFormat {
        /// Which file (`"catalog"`, `"checkpoint"`).
        what: &'static str,
        /// Where it is.
        path: String,
        /// The format found.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// The catalog on disk is damaged or incomplete (for example its log
    /// does not continue its checkpoint): opening it would lose or misread
    /// acknowledged operations, so it is refused and nothing is changed.
    #[error("the catalog in {path} is damaged: {detail}")]
    CorruptCatalog {
        /// The catalog directory.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A branched store cannot keep its catalog on this kind of store (an
    /// object-store URI such as `s3://`: its catalog would have to live on
    /// the same object store, which this build does not do). Nothing was
    /// opened or changed.
    #[error("branches are not supported on {uri}: {detail}")]
    UnsupportedStore {
        /// The store's base URI.
        uri: String,
        /// Why, and what to use instead.
        detail: String,
    },
    /// This writer was fenced: another process opened the store for
    /// writing after it (taking a newer writer epoch), so this one may not
    /// log, publish or undo anything any more. Nothing of the failed
    /// operation was published; reopen the store to write again (which
    /// fences the other writer in turn).
    #[error(
        "the store {store} was taken over by another writer: this writer (epoch {epoch}) is fenced and can no longer change it"
    )]
    Fenced {
        /// The store's catalog.
        store: String,
        /// This writer's epoch (the LSN of its writer record).
        epoch: u64,
    },
    /// The store was opened read-only (a follower): it cannot be written.
    /// Nothing was changed.
    #[error("the store {store} is open read-only: writes go through its writer")]
    ReadOnlyStore {
        /// The store's catalog.
        store: String,
    },
    /// Another process has this local store open for writing (a local
    /// store has one writer at a time, kept by a lock on its catalog log).
    /// Open it read-only to follow it, or open it once the writer closed
    /// it. Nothing was changed.
    #[error(
        "the store {path} is open for writing in another process (open it read-only to follow it)"
    )]
    StoreLocked {
        /// The catalog directory.
        path: String,
    },
    /// A read-only follower read a table whose data the writer removed or
    /// replaced since the follower's catalog state (a version retention
    /// removed, or a dataset dropped and created anew): the rows are not
    /// returned. Refresh the follower and read again.
    #[error(
        "table {table:?} changed under this read-only follower (its data at the followed state is gone): refresh and read again"
    )]
    StaleRead {
        /// The table.
        table: String,
    },
    /// Another process committed to this table's Lance line while this
    /// change ran (a writer fenced a moment ago, whose last commit landed
    /// under this one): the change was not published, so nothing of the
    /// other process's commit became visible. Retry the change.
    #[error(
        "another process committed to table {table:?} while this change ran (a fenced writer?): nothing was published; retry"
    )]
    ConcurrentCommit {
        /// The table.
        table: String,
    },
}

impl Error {
    /// The [`Error`] inside an [`anyhow::Error`], if it is one of ours.
    ///
    /// # Example
    /// ```
    /// use lancebranch::Error;
    /// let err = anyhow::anyhow!("some I/O failure");
    /// assert!(Error::of(&err).is_none());
    /// ```
    pub fn of(err: &anyhow::Error) -> Option<&Error> {
        err.downcast_ref::<Error>()
    }
}
