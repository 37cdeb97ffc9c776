//! Planning a merge, table by table: read both sides' changes, ask the
//! decision functions of [`decide`](crate::branched::decide) what to do,
//! and collect the actions and conflicts. Reads only; nothing is logged or
//! written here.

use anyhow::Result;
use arrow_schema::SchemaRef;

use crate::branched::catalog::{CatalogState, TableRef};
use crate::branched::changes::{KeyCodec, primary_key, schema_of};
use crate::branched::decide::{Action, TableDecision, decide_table, schema_change};
use crate::branched::merge_rows::{RowMerge, RowMergeOf, Sides, count};
use crate::branched::report::{Conflict, ConflictKind, MergeOptions, TableMergeStats};
use crate::branched::view::BranchedBackend;

/// What a merge does to one table of the target.
pub(crate) struct TablePlan {
    pub table: String,
    pub stats: TableMergeStats,
    pub actions: Vec<Action>,
    pub key: Vec<String>,
    /// Create the table on the target with the rows and schema of this
    /// table of the source.
    pub create: Option<(TableRef, SchemaRef)>,
    pub drop: bool,
    /// Nullable columns the source added.
    pub add_columns: Option<SchemaRef>,
    /// The row changes, when they are too many to hold as `actions`: they
    /// are decided again and applied a batch at a time.
    pub rows: Option<RowMerge>,
}

impl TablePlan {
    fn new(table: &str) -> Self {
        TablePlan {
            table: table.to_string(),
            stats: TableMergeStats::default(),
            actions: vec![],
            key: vec![],
            create: None,
            drop: false,
            add_columns: None,
            rows: None,
        }
    }

    /// Whether applying the plan changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.actions.is_empty()
            && self.rows.is_none()
            && self.create.is_none()
            && !self.drop
            && self.add_columns.is_none()
    }

    /// A table-level conflict (schema, or a drop against a change).
    fn table_conflict(&mut self, conflicts: &mut Vec<Conflict>, why: &str) {
        self.stats.conflicts += 1;
        conflicts.push(Conflict {
            table: self.table.clone(),
            key: String::new(),
            kind: ConflictKind::Schema,
            column: None,
            base: None,
            ours: Some(why.to_string()),
            theirs: None,
        });
    }
}

/// The refs of one side of a table: (base, current).
type Side<'a> = (Option<&'a TableRef>, Option<&'a TableRef>);

impl BranchedBackend {
    /// Plan the merge of table `t`: the target's side `(tb, tc)`, the
    /// source's `(sb, sc)`. Conflicts are appended to `conflicts`.
    pub(crate) async fn plan_table(
        &self,
        st: &CatalogState,
        t: &str,
        opts: &MergeOptions,
        target: Side<'_>,
        source: Side<'_>,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<TablePlan> {
        let mut plan = TablePlan::new(t);
        match decide_table(target, source, opts.policy_of(t)) {
            TableDecision::Keep => {}
            TableDecision::Drop => plan.drop = true,
            TableDecision::Conflict(why) => plan.table_conflict(conflicts, why),
            TableDecision::Create => {
                let sc = source.1.ok_or_else(|| anyhow::anyhow!("no source table"))?;
                let inner = self.core.inner.as_ref();
                let (line, v) = (sc.line.as_deref(), Some(sc.version));
                plan.stats.inserted = inner.count_rows_at(t, line, v, None).await?;
                let schema = schema_of(inner, t, sc).await?;
                plan.create = Some((sc.clone(), schema));
            }
            TableDecision::Rows => match (target, source) {
                ((tb, Some(tc)), (sb, Some(sc))) => {
                    self.plan_rows(st, opts, (tb, tc), (sb, sc), &mut plan, conflicts)
                        .await?;
                }
                _ => anyhow::bail!("a row merge of {t:?} without both tables"),
            },
        }
        Ok(plan)
    }

    /// Plan the row changes of a table both sides hold: decide every key
    /// the source changed, a batch at a time. The actions are kept when
    /// they came in one batch; else the plan keeps what deciding them again
    /// takes, and they are applied a batch at a time.
    async fn plan_rows(
        &self,
        st: &CatalogState,
        opts: &MergeOptions,
        (tb, tc): (Option<&TableRef>, &TableRef),
        (sb, sc): (Option<&TableRef>, &TableRef),
        plan: &mut TablePlan,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<()> {
        let (inner, t) = (self.core.inner.as_ref(), plan.table.clone());
        let sschema = schema_of(inner, &t, sc).await?;
        let tschema = schema_of(inner, &t, tc).await?;
        let key = primary_key(&t, &sschema, opts.keys.get(&t))
            .or_else(|_| primary_key(&t, &tschema, opts.keys.get(&t)))?;
        match schema_change(&tschema, &sschema) {
            Ok(added) => plan.add_columns = added,
            Err(why) => {
                plan.table_conflict(conflicts, &why);
                return Ok(());
            }
        }
        // Whole-row replacement is exact only when the target row is the
        // source's base row and the source carries every target column.
        let whole = tb == sb
            && tschema
                .fields()
                .iter()
                .all(|f| sschema.field_with_name(f.name()).is_ok());
        let of = RowMergeOf {
            codec: KeyCodec::new(&t, &tschema, &key)?,
            scodec: KeyCodec::new(&t, &sschema, &key)?,
            table: t.clone(),
            key: key.clone(),
            policy: opts.policy_of(&t),
            whole,
            batch: opts.batch_rows_of(),
        };
        let sides = Sides {
            st,
            target: (tb, tc),
            source: (sb, sc),
        };
        let rows = RowMerge::open(inner, of, sides).await?;
        plan.stats.full_compare = rows.full_compare;
        plan.key = key;
        let (mut keyed, mut kept, mut batches) = (Vec::new(), Vec::new(), 0);
        let mut read = rows.batches(inner).await?;
        while let Some(batch) = read.next().await? {
            let d = rows.decide(inner, batch).await?;
            batches += 1;
            if batches == 2 {
                // Too many to hold: applied a batch at a time instead.
                kept = Vec::new();
            }
            plan.stats.conflicts += d.conflicts.len();
            keyed.extend(d.conflicts);
            for a in d.actions {
                count(&mut plan.stats, &a);
                if batches == 1 {
                    kept.push(a);
                }
            }
        }
        drop(read);
        // In key order, whichever order the batches came in.
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        conflicts.extend(keyed.into_iter().map(|(_, c)| c));
        if batches == 1 {
            plan.actions = kept;
        } else if plan.stats.inserted + plan.stats.updated + plan.stats.deleted > 0 {
            plan.rows = Some(rows);
        }
        Ok(())
    }
}
