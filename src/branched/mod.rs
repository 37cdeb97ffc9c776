//! Branches: [`BranchedBackend`] views over a store with Lance branch lines,
//! a durable catalog of what each branch sees, fork, tags, deletion and
//! crash recovery.
//!
//! One concern per file: `catalog` (state machine over the WAL,
//! checkpoints), `core` (shared state, locks, line creation), `view` (a
//! branch view and the branch operations), `contract` (the
//! `StorageBackend` implementation of a view), `format` (the files beside
//! the log and the checks on open), `stream` (streamed writes: many
//! Lance commits, one publish), `changes` (row change sets by key), `diff`
//! (the public diff API), `diff_stream` (the same as a stream of
//! batches, in bounded memory), `merge` (a merge's locking, bases and report),
//! `merge_plan` and `merge_apply` (its two halves), `decide` (its
//! decisions per table and per key, pure), `report`, `recovery`,
//! `fsck`, `history`, `txn`, `names`.

mod catalog;
mod changes;
mod contract;
mod core;
mod decide;
mod diff;
mod diff_stream;
mod format;
mod fsck;
pub(crate) mod history;
mod key_changes;
mod log;
mod merge;
mod merge_apply;
mod merge_plan;
mod merge_rows;
mod names;
mod object_log;
mod recovery;
mod report;
mod stream;
mod txn;
mod view;

pub use catalog::{Record, TableRef};
pub use changes::PRIMARY_KEY_METADATA;
pub use diff::{TableChange, TableDiff};
pub use diff_stream::DiffBatch;
pub use format::CATALOG_FORMAT;
pub use fsck::{FsckProblem, FsckReport};
pub use history::{History, HistoryEntry, OfflineCatalog, read_catalog_offline};
pub use merge::{
    Conflict, ConflictKind, ConflictPolicy, MERGE_BATCH_ROWS, MergeOptions, MergeOutcome,
    MergeReport, TableMergeStats,
};
pub use names::{MAIN, validate_branch_name, validate_tag_name};
pub use recovery::{RecoveredOp, RecoveryReport};
pub use stream::{ROWS_PER_COMMIT, StreamMode, StreamStats};
pub use txn::Transaction;
pub use view::{BranchInfo, BranchedBackend, TagInfo};

/// Whether `e` is an armed fail point's stop (a simulated crash): after
/// one, an operation does no further work.
pub(crate) fn is_crash(e: &anyhow::Error) -> bool {
    matches!(
        crate::backend::Error::of(e),
        Some(crate::backend::Error::FailPoint(_))
    )
}
