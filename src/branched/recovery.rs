//! Recovery: finish or undo what a crash interrupted, driven by the
//! catalog log.
//!
//! Every multi-step operation logs a `Begin*` record before its first step
//! and an `End*` record after its last one. On open, every begun and not
//! ended operation is handled:
//!
//! | operation | interrupted between | recovery |
//! |---|---|---|
//! | line creation (first write on a branch) | `BeginLine` … `EndLine` | remove the Lance branch, whole or "zombie"; log `Abort` |
//! | branch deletion | `BeginDelete` … `EndDelete` | remove the remaining Lance branches; log `EndDelete` with a collection of what that left unreachable, and run it |
//! | merge | `BeginMerge` … the publish (which carries `EndMerge`) | log `Abort`: the merge never happened; restore the target's tables to their published versions |
//! | creating a table's dataset | `BeginCreate` … the publish (which carries `EndCreate`) | drop the dataset unless a branch reads it; log `Abort` |
//! | garbage collection | `BeginCollect` (logged with the change that made things unreachable) … `EndCollect` | remove the remaining lines, purge each listed dataset nothing reads; log `EndCollect` |
//! | a write | Lance commit … `Publish` | nothing at open: the version is invisible (reads use the published one) and the next change of the table restores the published version first (see [`BranchedBackend::recover_staging`](crate::StorageBackend::recover_staging)) |
//!
//! Each recovery step is idempotent, so a crash during recovery is handled
//! by recovering again.

use anyhow::Result;
use serde::Serialize;

use crate::backend::Error;
use crate::branched::catalog::Record;
use crate::branched::core::Core;
use crate::failpoints::FailPoint;

/// What recovery did when a store was opened: one entry per operation a
/// crash had interrupted. Empty after a clean shutdown.
///
/// # Example
/// ```no_run
/// # async fn demo(main: lancebranch::branched::BranchedBackend) {
/// for op in &main.last_recovery().operations {
///     println!("{op}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The interrupted operations, in the order they were handled.
    pub operations: Vec<RecoveredOp>,
}

/// One interrupted operation and what recovery did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveredOp {
    /// The operation id in the catalog log.
    pub op: u64,
    /// What it was: `"line creation"`, `"branch deletion"`, `"merge"`,
    /// `"table creation"` or `"garbage collection"`.
    pub kind: String,
    /// `"undone"` (as if it never began) or `"finished"`.
    pub action: String,
    /// Details: the table and Lance branch, the branches deleted, or the
    /// merge's source and target.
    pub detail: String,
}

impl std::fmt::Display for RecoveredOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "op {}: {} {} ({})",
            self.op, self.kind, self.action, self.detail
        )
    }
}

/// Finish or undo every pending operation of the catalog.
pub(crate) async fn recover_pending(core: &Core) -> Result<RecoveryReport> {
    let mut pending: Vec<(u64, Record)> = core
        .catalog
        .read()
        .pending
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    // Dataset creations and collections last: whether a dataset is still
    // read is known once the half-made lines on it are gone.
    pending.sort_by_key(|(op, r)| {
        let last = matches!(r, Record::BeginCreate { .. } | Record::BeginCollect { .. });
        (last, *op)
    });
    let mut report = RecoveryReport::default();
    for (op, rec) in pending {
        let done = |kind: &str, action: &str, detail: String| RecoveredOp {
            op,
            kind: kind.to_string(),
            action: action.to_string(),
            detail,
        };
        let recovered = match rec {
            Record::BeginLine { table, line, .. } => {
                drop_lines(core, &[(table.clone(), line.clone())]).await?;
                core.fail.check(FailPoint::RecoveryAfterDropBeforeRecord)?;
                core.commit(Record::Abort { op }).await?;
                let detail = format!("Lance branch {line:?} of table {table:?} removed");
                done("line creation", "undone", detail)
            }
            Record::BeginDelete {
                lines, branches, ..
            } => {
                drop_lines(core, &lines).await?;
                core.fail.check(FailPoint::RecoveryAfterDropBeforeRecord)?;
                core.end_delete(op, &lines).await?;
                let detail = format!("branches {branches:?}, {} Lance branches", lines.len());
                done("branch deletion", "finished", detail)
            }
            Record::BeginMerge { target, source, .. } => {
                undo_merge(core, op, &target).await?;
                done("merge", "undone", format!("{source:?} into {target:?}"))
            }
            Record::BeginCreate { table, .. } => {
                let action = end_create(core, op, &table).await?;
                done(
                    "table creation",
                    action,
                    format!("dataset of table {table:?}"),
                )
            }
            Record::BeginCollect { lines, tables, .. } => {
                core.collect(op, &lines, &tables).await?;
                let detail = format!("{} Lance branches, {} datasets", lines.len(), tables.len());
                done("garbage collection", "finished", detail)
            }
            _ => continue,
        };
        report.operations.push(recovered);
    }
    Ok(report)
}

/// Undo merge `op` into `target`: nothing of it was published. First
/// restore the versions it committed away (so the store is clean right
/// after recovery), then log `Abort`: a crash in between finds the merge
/// pending and heals again.
async fn undo_merge(core: &Core, op: u64, target: &str) -> Result<()> {
    let meta = core.catalog.read().branches.get(target).cloned();
    if let Some(meta) = meta {
        for table in meta.tables.keys() {
            heal_table(core, target, meta.id, table).await?;
        }
    }
    core.commit(Record::Abort { op }).await?;
    Ok(())
}

/// End the dataset creation `op` of `table`: the dataset is dropped unless
/// a branch reads it (another branch may have created its table on the
/// same dataset). Whether it was "finished" or "undone".
async fn end_create(core: &Core, op: u64, table: &str) -> Result<&'static str> {
    let referenced = core.catalog.read().referenced_tables().contains(table);
    let action = if referenced {
        "finished"
    } else {
        core.inner.purge_table(table).await?;
        core.fail.check(FailPoint::RecoveryAfterDropBeforeRecord)?;
        "undone"
    };
    core.commit(Record::Abort { op }).await?;
    Ok(action)
}

/// Remove Lance lines, in order; a table that no longer exists has none.
pub(crate) async fn drop_lines(core: &Core, lines: &[(String, String)]) -> Result<()> {
    for (table, line) in lines {
        core.inner.invalidate_cache(table);
        match core.inner.drop_line(table, line).await {
            Ok(()) => {}
            Err(e) if matches!(Error::of(&e), Some(Error::TableNotFound(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Make the newest version of this branch's own line of `table` the
/// published one again, if a write crashed before publishing.
pub(crate) async fn heal_table(core: &Core, branch: &str, id: u64, table: &str) -> Result<()> {
    let Ok(meta) = core.branch(branch, id) else {
        return Ok(());
    };
    let Some(r) = meta.tables.get(table) else {
        return Ok(());
    };
    if !meta.owns(r.line.as_deref()) {
        return Ok(());
    }
    let lock = core.op_lock(branch, table);
    let _g = lock.lock().await;
    let r = core.branch(branch, id)?.tables.get(table).cloned();
    if let Some(r) = r {
        core.own_line(branch, id, table, &r).await?;
    }
    Ok(())
}
