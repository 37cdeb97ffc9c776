//! Multi-table transactions: several changes, one publish.

use std::collections::BTreeMap;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::backend::{WriteMode, validate_table_name};
use crate::branched::catalog::TableRef;
use crate::branched::view::BranchedBackend;
use crate::failpoints::FailPoint;

enum Op {
    Write(Vec<RecordBatch>, WriteMode),
    MergeInsert(Vec<String>, Vec<RecordBatch>),
    Delete(String),
    Replace(Vec<RecordBatch>, SchemaRef),
}

/// Changes to several tables of one branch that become visible together.
///
/// Built with [`BranchedBackend::transaction`]. [`Transaction::commit`]
/// applies every change as Lance commits on the branch's own lines, then
/// publishes all the new versions in **one** synced catalog record: a reader
/// (a [`snapshot`](BranchedBackend::snapshot), a fork) sees all of the
/// changes or none. If any change fails, or the process dies before the
/// publish, none is visible (the unpublished Lance versions are undone
/// before the tables' next change).
///
/// Tables must exist on the branch. The transaction takes the tables'
/// internal change locks (in name order), not the user-visible
/// [`lock_table_for_write`](crate::StorageBackend::lock_table_for_write)
/// locks.
///
/// # Example
/// ```no_run
/// use lancebranch::{WriteMode, branched::BranchedBackend};
/// # async fn demo(main: BranchedBackend, v: arrow_array::RecordBatch, e: arrow_array::RecordBatch)
/// # -> anyhow::Result<()> {
/// main.transaction()
///     .write("vertices", vec![v], WriteMode::Append)
///     .write("edges", vec![e], WriteMode::Append)
///     .delete_rows("edges", "weight < 0")
///     .commit()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a transaction does nothing until committed"]
pub struct Transaction {
    view: BranchedBackend,
    ops: Vec<(String, Op)>,
}

impl BranchedBackend {
    /// Start a transaction on this branch.
    pub fn transaction(&self) -> Transaction {
        Transaction {
            view: self.clone(),
            ops: Vec::new(),
        }
    }
}

impl Transaction {
    /// Append or overwrite rows of `table`.
    pub fn write(mut self, table: &str, batches: Vec<RecordBatch>, mode: WriteMode) -> Self {
        self.ops.push((table.to_string(), Op::Write(batches, mode)));
        self
    }

    /// Update matched rows of `table` (as [`crate::StorageBackend::merge_insert`]).
    pub fn merge_insert(mut self, table: &str, on: &[&str], batches: Vec<RecordBatch>) -> Self {
        let on = on.iter().map(|s| s.to_string()).collect();
        self.ops
            .push((table.to_string(), Op::MergeInsert(on, batches)));
        self
    }

    /// Delete rows of `table` matching `filter`.
    pub fn delete_rows(mut self, table: &str, filter: &str) -> Self {
        self.ops
            .push((table.to_string(), Op::Delete(filter.to_string())));
        self
    }

    /// Replace the contents (and schema) of `table`.
    pub fn replace(mut self, table: &str, batches: Vec<RecordBatch>, schema: SchemaRef) -> Self {
        self.ops
            .push((table.to_string(), Op::Replace(batches, schema)));
        self
    }

    /// Apply every change, then publish them all in one record.
    ///
    /// # Errors
    /// The first failing change's error (typed for bad input); nothing is
    /// visible then.
    pub async fn commit(self) -> Result<()> {
        let view = self.view;
        view.writable()?;
        let mut names: Vec<String> = self.ops.iter().map(|(t, _)| t.clone()).collect();
        names.sort();
        names.dedup();
        for t in &names {
            validate_table_name(t)?;
            view.table_ref(t)?;
        }
        if names.is_empty() {
            return Ok(());
        }
        let _gate = view.core.gate.read().await;
        let keys = names
            .iter()
            .map(|t| (view.name.clone(), t.clone()))
            .collect();
        let guards = view.core.lock_all(&keys).await;
        let mut lines: BTreeMap<String, (Option<String>, Option<u64>)> = BTreeMap::new();
        let mut fresh = Vec::new();
        let applied = async {
            for t in &names {
                let current = view.table_ref(t)?;
                let (line, _, new) = view.core.own_line(&view.name, view.id, t, &current).await?;
                if new {
                    fresh.push(t.clone());
                }
                lines.insert(t.clone(), (line, None));
            }
            apply_ops(&view, self.ops, &mut lines).await
        }
        .await;
        if let Err(e) = applied {
            if !crate::branched::is_crash(&e) {
                // Nothing is visible; a table's unpublished versions are
                // restored away at its next change, its new line removed now.
                for t in &fresh {
                    view.core.abandon_parked(view.id, t).await;
                }
            }
            return Err(e);
        }
        for t in &fresh {
            if lines.get(t).is_some_and(|(_, v)| v.is_none()) {
                // Nothing committed on the new line: it is not needed.
                view.core.abandon_parked(view.id, t).await;
            }
        }
        let tables: Vec<(String, Option<TableRef>)> = lines
            .into_iter()
            .filter_map(|(t, (line, v))| v.map(|version| (t, Some(TableRef { line, version }))))
            .collect();
        view.core
            .fail
            .check(FailPoint::TxnAfterApplyBeforePublish)?;
        if !tables.is_empty() {
            view.core.publish_many(&view.name, view.id, tables).await?;
        }
        drop(guards);
        Ok(())
    }
}

/// Apply each change on its table's line, noting the newest version.
async fn apply_ops(
    view: &BranchedBackend,
    ops: Vec<(String, Op)>,
    lines: &mut BTreeMap<String, (Option<String>, Option<u64>)>,
) -> Result<()> {
    let inner = view.core.inner.clone();
    for (t, op) in ops {
        let Some((line, latest)) = lines.get_mut(&t) else {
            continue;
        };
        let l = line.as_deref();
        let v = match op {
            Op::Write(b, mode) => inner.write_line(&t, l, b, mode).await?,
            Op::MergeInsert(on, b) => {
                let on: Vec<&str> = on.iter().map(String::as_str).collect();
                inner.merge_insert_line(&t, l, &on, b).await?
            }
            Op::Delete(f) => {
                crate::backend::check_raw_filter(&f)?;
                Some(inner.delete_rows_line(&t, l, &f).await?)
            }
            Op::Replace(b, s) => Some(inner.overwrite_line(&t, l, b, s).await?),
        };
        if v.is_some() {
            *latest = v;
        }
    }
    Ok(())
}
