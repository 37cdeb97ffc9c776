//! The options and the report of a merge.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

/// What to do with the conflicts of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Apply nothing of the whole merge; report every conflict.
    #[default]
    Fail,
    /// Keep the target's version of conflicting rows.
    Ours,
    /// Take the source's version of conflicting rows.
    Theirs,
}

/// Options of [`BranchedBackend::merge`](crate::branched::BranchedBackend::merge).
///
/// # Example
/// ```
/// use lancebranch::branched::{ConflictPolicy, MergeOptions};
/// let opts = MergeOptions::default()
///     .key("people", &["id"])
///     .policy("people", ConflictPolicy::Theirs);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub(crate) keys: BTreeMap<String, Vec<String>>,
    policies: BTreeMap<String, ConflictPolicy>,
    default_policy: ConflictPolicy,
    batch_rows: usize,
}

/// Changed keys a merge decides and applies at a time, unless
/// [`MergeOptions::batch_rows`] says otherwise.
pub const MERGE_BATCH_ROWS: usize = 16_384;

impl Default for MergeOptions {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            policies: BTreeMap::new(),
            default_policy: ConflictPolicy::default(),
            batch_rows: MERGE_BATCH_ROWS,
        }
    }
}

impl MergeOptions {
    /// Match rows of `table` by these columns (overrides schema metadata).
    pub fn key(mut self, table: &str, columns: &[&str]) -> Self {
        self.keys.insert(
            table.to_string(),
            columns.iter().map(|c| c.to_string()).collect(),
        );
        self
    }

    /// The conflict policy for `table`.
    pub fn policy(mut self, table: &str, policy: ConflictPolicy) -> Self {
        self.policies.insert(table.to_string(), policy);
        self
    }

    /// The conflict policy for tables without their own.
    pub fn default_policy(mut self, policy: ConflictPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// How many changed keys of a table a merge holds at a time (default
    /// [`MERGE_BATCH_ROWS`]). A table whose source changed more keys is
    /// merged in batches: its changes are read once to find every conflict
    /// (nothing is applied if one blocks the merge), then again, a batch at
    /// a time, each batch applied as its own Lance commits before the next
    /// is read. The merge stays one atomic step: nothing is published
    /// before every batch is applied. Memory follows the batch, not the
    /// change. A merge whose sides start from different bases reads the
    /// target's rows by key once per batch. `0` is refused by
    /// [`merge`](crate::branched::BranchedBackend::merge) with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    ///
    /// # Example
    /// ```
    /// use lancebranch::branched::MergeOptions;
    /// let opts = MergeOptions::default().batch_rows(10_000);
    /// assert_eq!(opts.batch_rows_of(), 10_000);
    /// ```
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }

    /// The batch size set by [`batch_rows`](Self::batch_rows).
    pub fn batch_rows_of(&self) -> usize {
        self.batch_rows
    }

    pub(crate) fn policy_of(&self, table: &str) -> ConflictPolicy {
        self.policies
            .get(table)
            .copied()
            .unwrap_or(self.default_policy)
    }
}

/// The kind of a merge conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The same key was inserted on both sides with different values.
    DivergentInsert,
    /// The same column of a row was changed differently on both sides.
    DivergentUpdate,
    /// The target updated a row the source deleted.
    UpdateDelete,
    /// The target deleted a row the source updated.
    DeleteUpdate,
    /// The schemas changed incompatibly, or a table was dropped on one side
    /// and changed on the other.
    Schema,
}

impl ConflictKind {
    fn name(self) -> &'static str {
        match self {
            ConflictKind::DivergentInsert => "divergent_insert",
            ConflictKind::DivergentUpdate => "divergent_update",
            ConflictKind::UpdateDelete => "update_delete",
            ConflictKind::DeleteUpdate => "delete_update",
            ConflictKind::Schema => "schema",
        }
    }
}

/// One conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The table.
    pub table: String,
    /// The row's key, rendered (`col=value, ...`); empty for table-level.
    pub key: String,
    /// What conflicts.
    pub kind: ConflictKind,
    /// The column, for [`ConflictKind::DivergentUpdate`].
    pub column: Option<String>,
    /// The base value (rendered), if any.
    pub base: Option<String>,
    /// The target's value (rendered), if any.
    pub ours: Option<String>,
    /// The source's value (rendered), if any.
    pub theirs: Option<String>,
}

/// How a merge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The source had no changes to bring.
    AlreadyUpToDate,
    /// The target had not changed since the base: the source's changes were
    /// applied as they are.
    FastForward,
    /// Both sides had changed; the changes were combined.
    Merged,
    /// Conflicts under [`ConflictPolicy::Fail`]: nothing was applied.
    Conflicted,
}

/// Per-table figures of a merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableMergeStats {
    /// Rows inserted into the target.
    pub inserted: usize,
    /// Rows updated in the target.
    pub updated: usize,
    /// Rows deleted from the target.
    pub deleted: usize,
    /// Conflicting rows (resolved by policy, or blocking under `Fail`).
    pub conflicts: usize,
    /// The version published for the table, if it changed.
    pub version: Option<u64>,
    /// Rows were found by comparing full snapshots (no change set applied).
    pub full_compare: bool,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a merge can end in conflicts: check the outcome"]
pub struct MergeReport {
    /// How it ended.
    pub outcome: MergeOutcome,
    /// Per table.
    pub tables: BTreeMap<String, TableMergeStats>,
    /// Every conflict met (resolved or blocking).
    pub conflicts: Vec<Conflict>,
}

impl MergeReport {
    /// Whether the merge applied nothing because of conflicts.
    pub fn is_conflicted(&self) -> bool {
        self.outcome == MergeOutcome::Conflicted
    }

    /// The conflicts as one Arrow batch: `table, key, kind, column, base,
    /// ours, theirs` (all `Utf8`).
    ///
    /// # Errors
    /// Never in practice (the batch is built from strings).
    pub fn conflicts_batch(&self) -> Result<RecordBatch> {
        let c = &self.conflicts;
        let s = |f: &dyn Fn(&Conflict) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(c.iter().map(f).collect::<Vec<_>>()))
        };
        let schema = Arc::new(Schema::new(
            ["table", "key", "kind", "column", "base", "ours", "theirs"]
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                s(&|x| Some(x.table.clone())),
                s(&|x| Some(x.key.clone())),
                s(&|x| Some(x.kind.name().to_string())),
                s(&|x| x.column.clone()),
                s(&|x| x.base.clone()),
                s(&|x| x.ours.clone()),
                s(&|x| x.theirs.clone()),
            ],
        )?)
    }
}

/// Render a single-row batch (or one column of it) for a report.
pub(crate) fn render(row: Option<&RecordBatch>, column: Option<&str>) -> Option<String> {
    let row = row?;
    let cols: Vec<(String, ArrayRef)> = match column {
        Some(c) => vec![(c.to_string(), row.column_by_name(c)?.clone())],
        None => row
            .schema()
            .fields()
            .iter()
            .zip(row.columns())
            .map(|(f, a)| (f.name().clone(), a.clone()))
            .collect(),
    };
    let parts: Vec<String> = cols
        .iter()
        .map(|(n, a)| {
            let v = arrow::util::display::array_value_to_string(a, 0)
                .unwrap_or_else(|_| "?".to_string());
            if column.is_some() {
                v
            } else {
                format!("{n}={v}")
            }
        })
        .collect();
    Some(parts.join(", "))
}
