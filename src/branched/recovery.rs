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
//! | branch deletion | `BeginDelete` … `EndDelete` | remove the remaining Lance branches; log `EndDelete` |
//! | merge | `BeginMerge` … the publish (which carries `EndMerge`) | log `Abort`: the merge never happened |
//! | a write | Lance commit … `Publish` | nothing at open: the version is invisible (reads use the published one) and the next change of the table restores the published version first (see [`BranchedBackend::recover_staging`](crate::StorageBackend::recover_staging)) |
//!
//! Each recovery step is idempotent, so a crash during recovery is handled
//! by recovering again.

use anyhow::Result;

use crate::backend::Error;
use crate::branched::catalog::Record;
use crate::branched::core::Core;

/// Finish or undo every pending operation of the catalog.
pub(crate) async fn recover_pending(core: &Core) -> Result<()> {
    let pending: Vec<(u64, Record)> = core
        .catalog
        .read()
        .pending
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    for (op, rec) in pending {
        match rec {
            Record::BeginLine { table, line, .. } => {
                drop_lines(core, &[(table, line)]).await?;
                core.fail.check("recovery::after_drop_before_record")?;
                core.commit(Record::Abort { op }).await?;
            }
            Record::BeginDelete { lines, .. } => {
                drop_lines(core, &lines).await?;
                core.fail.check("recovery::after_drop_before_record")?;
                core.commit(Record::EndDelete { op }).await?;
            }
            Record::BeginMerge { .. } => {
                // Nothing of the merge was published: undo it. Its Lance
                // versions are unpublished and restored away before the
                // tables' next change.
                core.commit(Record::Abort { op }).await?;
            }
            _ => {}
        }
    }
    Ok(())
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
    if r.line != meta.own_line() {
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
