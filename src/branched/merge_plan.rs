//! Planning a merge, table by table: read both sides' changes, ask the
//! decision functions of [`decide`](crate::branched::decide) what to do,
//! and collect the actions and conflicts. Reads only; nothing is logged or
//! written here.

use std::collections::BTreeMap;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::backend::ScanRequest;
use crate::branched::catalog::{CatalogState, TableRef};
use crate::branched::changes::{
    KeyCodec, RowChange, SideChanges, index_rows, key_filter, primary_key, schema_of, side_changes,
};
use crate::branched::decide::{
    Action, Counted, TableDecision, Target, decide_key, decide_table, schema_change,
};
use crate::branched::report::{Conflict, ConflictKind, MergeOptions, TableMergeStats, render};
use crate::branched::view::BranchedBackend;

/// What a merge does to one table of the target.
pub(crate) struct TablePlan {
    pub table: String,
    pub stats: TableMergeStats,
    pub actions: Vec<Action>,
    pub key: Vec<String>,
    /// Create the table on the target with these rows and schema.
    pub create: Option<(Vec<RecordBatch>, SchemaRef)>,
    pub drop: bool,
    /// Nullable columns the source added.
    pub add_columns: Option<SchemaRef>,
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
        }
    }

    /// Whether applying the plan changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.create.is_none() && !self.drop && self.add_columns.is_none()
    }

    fn push(&mut self, a: Action) {
        match a.counted() {
            Counted::Inserted => self.stats.inserted += 1,
            Counted::Updated => self.stats.updated += 1,
            Counted::Deleted => self.stats.deleted += 1,
        }
        self.actions.push(a);
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
                let rows = self.rows_at(t, sc, None).await?;
                plan.stats.inserted = rows.iter().map(RecordBatch::num_rows).sum();
                let schema = schema_of(self.core.inner.as_ref(), t, sc).await?;
                plan.create = Some((rows, schema));
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

    /// Plan the row changes of a table both sides hold.
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
        let codec = KeyCodec::new(&t, &tschema, &key)?;
        let scodec = KeyCodec::new(&t, &sschema, &key)?;
        let theirs = side_changes(inner, st, &t, &scodec, sb, Some(sc)).await?;
        let ours = side_changes(inner, st, &t, &codec, tb, Some(tc)).await?;
        plan.stats.full_compare = theirs.full_compare || ours.full_compare;
        plan.key = key.clone();
        // Whole-row replacement is exact only when the target row is the
        // source's base row and the source carries every target column.
        let same_base = tb == sb
            && tschema
                .fields()
                .iter()
                .all(|f| sschema.field_with_name(f.name()).is_ok());
        // Siblings with different fork points: a key the source changed and
        // this side did not holds this side's base row, not the source's.
        let target_rows = if tb == sb {
            None
        } else {
            let wanted = unchanged_here(&theirs, &ours);
            Some(self.rows_by_key(&t, tc, &key, &codec, &wanted).await?)
        };
        let policy = opts.policy_of(&t);
        for (k, th) in &theirs.rows {
            let target = match &target_rows {
                Some(rows) => Target::Read(rows.get(k)),
                None => Target::SourceBase {
                    whole: same_base,
                    base_id: theirs.base_ids.get(k).copied(),
                },
            };
            let ou = ours.rows.get(k);
            let d = decide_key(th, ou, target, policy);
            if let Some((kind, column)) = d.conflict {
                plan.stats.conflicts += 1;
                conflicts.push(row_conflict(&t, &key, kind, column, th, ou));
            }
            if let Some(a) = d.action {
                plan.push(a);
            }
        }
        Ok(())
    }

    /// The rows of `t` at `r`, filtered by `filter` if given.
    async fn rows_at(
        &self,
        t: &str,
        r: &TableRef,
        filter: Option<String>,
    ) -> Result<Vec<RecordBatch>> {
        let req = ScanRequest {
            table: t.to_string(),
            line: r.line.clone(),
            version: Some(r.version),
            filter,
            ..Default::default()
        };
        self.core.inner.scan(req).await
    }

    /// The target's current rows (at `tc`) with the keys of `wanted`, by
    /// encoded key.
    async fn rows_by_key(
        &self,
        t: &str,
        tc: &TableRef,
        key: &[String],
        codec: &KeyCodec,
        wanted: &[RecordBatch],
    ) -> Result<BTreeMap<Vec<u8>, RecordBatch>> {
        let mut out = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let rows = self
            .rows_at(t, tc, key_filter(key, wanted)?.to_sql())
            .await?;
        index_rows(codec, &rows, &mut out)?;
        Ok(out)
    }
}

/// A row (any version) of each key the source changed and the target did
/// not.
fn unchanged_here(theirs: &SideChanges, ours: &SideChanges) -> Vec<RecordBatch> {
    theirs
        .rows
        .iter()
        .filter(|(k, _)| !ours.rows.contains_key(*k))
        .filter_map(|(_, rc)| rc.cur.as_ref().or(rc.base.as_ref()).cloned())
        .collect()
}

/// A row-level conflict of table `t` as reported: the key and the base,
/// ours and theirs values (of `column`, or whole rows).
fn row_conflict(
    t: &str,
    key: &[String],
    kind: ConflictKind,
    column: Option<String>,
    th: &RowChange,
    ou: Option<&RowChange>,
) -> Conflict {
    let row = th.cur.as_ref().or(th.base.as_ref());
    let key_text = row
        .map(|r| {
            key.iter()
                .map(|k| format!("{k}={}", render(Some(r), Some(k)).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let col = column.as_deref();
    let ours_base = ou.and_then(|o| o.base.as_ref());
    Conflict {
        table: t.to_string(),
        key: key_text,
        kind,
        base: render(th.base.as_ref().or(ours_base), col),
        ours: render(ou.and_then(|o| o.cur.as_ref()), col),
        theirs: render(th.cur.as_ref(), col),
        column,
    }
}
