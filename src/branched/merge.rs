//! Three-way, row- and column-level merge between branches, published
//! atomically across tables.
//!
//! Bases: the first merge between a parent and a child (either way) uses the
//! child's fork point for both sides; siblings use each one's fork point;
//! after a merge, the next one between the same two branches starts from
//! what each side saw right after it (so only later changes count).
//!
//! Each side's changes are row changes since its base, matched by primary
//! key. Per key: a change on one side only is taken (theirs) or kept
//! (ours); the same change on both sides is no conflict; updates of
//! different columns of one row merge column by column. Everything else is
//! a typed [`ConflictKind`], resolved per table by [`ConflictPolicy`].
//!
//! Applying: a row the target still holds as the source's base row is
//! found by that row's stable row id through the fragments that hold it
//! and removed only if its key matches (row ids collide across branches,
//! keys do not); other rows are found by key. Updates of some columns go
//! through `merge_insert`, new rows in one append.
//!
//! Steps, logged: `BeginMerge` → changes applied as Lance commits on the
//! target's own lines → one log write with the publish of every table,
//! the new merge bases and `EndMerge`. A crash before that write leaves
//! the merge entirely absent (recovery logs `Abort`), after it entirely
//! present.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use arrow_array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Schema, SchemaRef};

use crate::backend::{Error, FilterExpr, Literal, WriteMode};
use crate::branched::catalog::{CatalogState, Record, TableRef, line_owner};
use crate::branched::diff::{
    KeyCodec, RowChange, SideChanges, TableChange, TableDiff, changed_columns, column_differs,
    index_rows, primary_key, same_row, schema_of, side_changes, to_table_diff,
};
use crate::branched::report::render;
pub use crate::branched::report::{
    Conflict, ConflictKind, ConflictPolicy, MergeOptions, MergeOutcome, MergeReport,
    TableMergeStats,
};
use crate::branched::view::BranchedBackend;
use crate::failpoints::FailPoint;

fn literal(a: &dyn Array, i: usize) -> Result<Literal> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    if a.is_null(i) {
        return Ok(Literal::Null);
    }
    Ok(match a.data_type() {
        DataType::Int8 => Literal::Int(a.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Literal::Int(a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Literal::Int(a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Literal::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Literal::Int(a.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Literal::Int(a.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Literal::Int(a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => Literal::Int(i64::try_from(a.as_primitive::<UInt64Type>().value(i))?),
        DataType::Utf8 => Literal::Str(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Literal::Str(a.as_string::<i64>().value(i).to_string()),
        DataType::Boolean => Literal::Bool(a.as_boolean().value(i)),
        other => {
            return Err(Error::InvalidArgument(format!(
                "primary-key columns of type {other} are not supported by merge"
            ))
            .into());
        }
    })
}

/// A filter matching exactly the rows with these keys.
fn key_filter(key_cols: &[String], rows: &[RecordBatch]) -> Result<FilterExpr> {
    if let [col] = key_cols {
        // One key column: a single IN list plans far faster than ORs.
        let values = rows
            .iter()
            .map(|r| {
                let a = r
                    .column_by_name(col)
                    .ok_or_else(|| Error::InvalidArgument(format!("key column {col:?} missing")))?;
                literal(a.as_ref(), 0)
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(FilterExpr::In {
            column: col.clone(),
            values,
        });
    }
    let mut any = Vec::new();
    for r in rows {
        let mut all = Vec::new();
        for c in key_cols {
            let a = r
                .column_by_name(c)
                .ok_or_else(|| Error::InvalidArgument(format!("key column {c:?} missing")))?;
            all.push(FilterExpr::eq(c, literal(a.as_ref(), 0)?));
        }
        any.push(FilterExpr::And(all));
    }
    Ok(FilterExpr::Or(any))
}

/// Give a single-row batch exactly `schema`'s columns (missing nullable
/// ones as nulls).
fn fit_row(row: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match row.column_by_name(f.name()) {
            Some(a) => Ok(a.clone()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), row.num_rows())),
            None => Err(anyhow::anyhow!(
                "column {:?} missing from a merged row",
                f.name()
            )),
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// What to do to the target for one key.
enum Action {
    Insert(RecordBatch),
    Update(RecordBatch, Vec<String>),
    /// Delete the target's row with this key; the stable row id of the
    /// source's base row, when the target row should be that row.
    Delete(RecordBatch, Option<u64>),
    /// The target row equals the source's base row: replace it whole
    /// (delete + append), which costs what changed even without Lance's
    /// indexed merge_insert path. The base row's stable row id, if known,
    /// finds the target row without a lookup by key.
    Replace(RecordBatch, Option<u64>),
}

struct TablePlan {
    table: String,
    stats: TableMergeStats,
    actions: Vec<Action>,
    key: Vec<String>,
    /// Create the table on the target with these rows and schema.
    create: Option<(Vec<RecordBatch>, SchemaRef)>,
    drop: bool,
    /// Nullable columns the source added.
    add_columns: Option<SchemaRef>,
}

impl BranchedBackend {
    /// The bases of a merge of `source` into this branch: (target side,
    /// source side).
    fn merge_bases(
        &self,
        st: &CatalogState,
        source: &BranchedBackend,
    ) -> Result<(BTreeMap<String, TableRef>, BTreeMap<String, TableRef>)> {
        let (t, s) = (&self.name, &source.name);
        if let Some(b) = st.merge_bases.get(&(t.clone(), s.clone())) {
            return Ok((b.target.clone(), b.source.clone()));
        }
        let tm = st
            .branches
            .get(t)
            .ok_or_else(|| Error::BranchNotFound(t.clone()))?;
        let sm = st
            .branches
            .get(s)
            .ok_or_else(|| Error::BranchNotFound(s.clone()))?;
        if sm.parent.as_ref() == Some(t) {
            return Ok((sm.fork_point.clone(), sm.fork_point.clone()));
        }
        if tm.parent.as_ref() == Some(s) {
            return Ok((tm.fork_point.clone(), tm.fork_point.clone()));
        }
        if tm.parent.is_some() && tm.parent == sm.parent {
            return Ok((tm.fork_point.clone(), sm.fork_point.clone()));
        }
        Err(Error::NoMergeBase(t.clone(), s.clone()).into())
    }

    /// The changes `other` made since the merge base of this branch and
    /// `other` (what [`merge`](Self::merge) would bring in), per table.
    ///
    /// # Errors
    /// [`Error::BranchNotFound`], [`Error::NoMergeBase`],
    /// [`Error::MissingMergeKey`] for a changed table without a key.
    pub async fn diff(&self, other: &BranchedBackend) -> Result<Vec<TableDiff>> {
        self.diff_with(other, &MergeOptions::default()).await
    }

    /// [`diff`](Self::diff) with primary keys given in `opts`.
    ///
    /// # Errors
    /// As [`diff`](Self::diff).
    pub async fn diff_with(
        &self,
        other: &BranchedBackend,
        opts: &MergeOptions,
    ) -> Result<Vec<TableDiff>> {
        let (st, (base, cur), _pin) = self.pinned_state(|st| {
            let (_, base) = self.merge_bases(st, other)?;
            Ok((base, other.tables_in(st)?))
        })?;
        self.diff_tables(&st, &base, &cur, opts).await
    }

    /// The changes this branch made since tag `tag` was taken (the tag may
    /// come from this branch or an ancestor).
    ///
    /// # Errors
    /// [`Error::TagNotFound`], [`Error::MissingMergeKey`].
    pub async fn diff_since_tag(&self, tag: &str, opts: &MergeOptions) -> Result<Vec<TableDiff>> {
        let (st, (base, cur), _pin) = self.pinned_state(|st| {
            let base = st
                .tags
                .get(tag)
                .ok_or_else(|| Error::TagNotFound(tag.to_string()))?
                .tables
                .clone();
            Ok((base, self.tables_in(st)?))
        })?;
        self.diff_tables(&st, &base, &cur, opts).await
    }

    /// A copy of the catalog state and the two table sets `f` picks from
    /// it, pinned (kept readable) until the guard is dropped.
    #[allow(clippy::type_complexity)]
    fn pinned_state(
        &self,
        f: impl FnOnce(
            &CatalogState,
        ) -> Result<(BTreeMap<String, TableRef>, BTreeMap<String, TableRef>)>,
    ) -> Result<(
        CatalogState,
        (BTreeMap<String, TableRef>, BTreeMap<String, TableRef>),
        crate::branched::catalog::PinGuard,
    )> {
        let mut out = None;
        let (_, guard) = self.core.catalog.pin(|st| {
            let (a, b) = f(st)?;
            let refs = a.iter().chain(b.iter());
            let refs = refs.map(|(t, r)| (t.clone(), r.clone())).collect();
            out = Some((st.clone(), (a, b)));
            Ok(refs)
        })?;
        let (st, sets) = out.ok_or_else(|| anyhow::anyhow!("no catalog state pinned"))?;
        Ok((st, sets, guard))
    }

    async fn diff_tables(
        &self,
        st: &CatalogState,
        base: &BTreeMap<String, TableRef>,
        cur: &BTreeMap<String, TableRef>,
        opts: &MergeOptions,
    ) -> Result<Vec<TableDiff>> {
        let names: BTreeSet<&String> = base.keys().chain(cur.keys()).collect();
        let inner = self.core.inner.clone();
        let mut out = Vec::new();
        for t in names {
            let (b, c) = (base.get(t), cur.get(t));
            let Some(either) = c.or(b) else { continue };
            if b == c {
                continue;
            }
            let schema = schema_of(inner.as_ref(), t, either).await?;
            let key = primary_key(t, &schema, opts.keys.get(t))?;
            let codec = KeyCodec::new(t, &schema, &key)?;
            let side = side_changes(inner.as_ref(), st, t, &codec, b, c).await?;
            let change = match (b, c) {
                (None, Some(_)) => TableChange::Created,
                (Some(_), None) => TableChange::Dropped,
                _ => TableChange::Modified,
            };
            if change == TableChange::Modified && side.rows.is_empty() {
                continue;
            }
            out.push(to_table_diff(t, change, &side)?);
        }
        Ok(out)
    }

    /// Merge `source` into this branch: three-way, row by row and column by
    /// column, rows matched by primary key, published atomically across
    /// tables.
    ///
    /// Returns a report; under [`ConflictPolicy::Fail`] a conflicting merge
    /// applies nothing and reports [`MergeOutcome::Conflicted`].
    ///
    /// # Errors
    /// Bad input before anything is written: [`Error::BranchNotFound`],
    /// [`Error::NoMergeBase`], [`Error::MissingMergeKey`],
    /// [`Error::ReadOnlyView`]; then I/O errors (nothing is published).
    pub async fn merge(&self, source: &BranchedBackend, opts: MergeOptions) -> Result<MergeReport> {
        self.writable()?;
        if source.name == self.name {
            return Err(
                Error::InvalidArgument("a branch cannot be merged into itself".into()).into(),
            );
        }
        let _gate = self.core.gate.read().await;
        // Plan and apply under the op locks of every table the merge can
        // touch, on both branches: no change of those tables (a write, a
        // merge the other way or of the same source) interleaves, so the
        // merge is one step in any serial order. Which tables that is
        // depends on the state; retry until it holds under the locks.
        let mut names = self.merge_touched(&self.core.catalog.read(), source)?;
        loop {
            let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
            for n in &names {
                keys.insert((self.name.clone(), n.clone()));
                if source.pinned.is_none() {
                    keys.insert((source.name.clone(), n.clone()));
                }
            }
            let guards = self.core.lock_all(&keys).await;
            let st = self.core.catalog.read().clone();
            let now = self.merge_touched(&st, source)?;
            if now.is_subset(&names) {
                let report = self.merge_locked(source, &opts, &st).await;
                drop(guards);
                return report;
            }
            drop(guards);
            names.extend(now);
        }
    }

    /// The tables the source changed since the merge base: those a merge
    /// of `source` into this branch may touch.
    fn merge_touched(
        &self,
        st: &CatalogState,
        source: &BranchedBackend,
    ) -> Result<BTreeSet<String>> {
        let (_, sbase) = self.merge_bases(st, source)?;
        let scur = source.tables_in(st)?;
        Ok(sbase
            .keys()
            .chain(scur.keys())
            .filter(|t| sbase.get(*t) != scur.get(*t))
            .cloned()
            .collect())
    }

    /// The tables this view reads in state `st` (a snapshot: its pins).
    pub(crate) fn tables_in(&self, st: &CatalogState) -> Result<BTreeMap<String, TableRef>> {
        if let Some(p) = &self.pinned {
            return Ok(p.tables.clone());
        }
        match st.branches.get(&self.name) {
            Some(b) if b.id == self.id => Ok(b.tables.clone()),
            _ => Err(Error::BranchNotFound(self.name.clone()).into()),
        }
    }

    /// The merge, with the op locks of the touched tables held and `st`
    /// read under them.
    async fn merge_locked(
        &self,
        source: &BranchedBackend,
        opts: &MergeOptions,
        st: &CatalogState,
    ) -> Result<MergeReport> {
        let (tbase, sbase) = self.merge_bases(st, source)?;
        let tcur = self.tables_in(st)?;
        let scur = source.tables_in(st)?;
        let ours_changed = tbase != tcur;
        let mut plans = Vec::new();
        let mut conflicts = Vec::new();
        let names: BTreeSet<String> = sbase.keys().chain(scur.keys()).cloned().collect();
        for t in names {
            let (sb, sc) = (sbase.get(&t), scur.get(&t));
            if sb == sc {
                continue;
            }
            let plan = self
                .plan_table(
                    st,
                    &t,
                    opts,
                    (tbase.get(&t), tcur.get(&t)),
                    (sb, sc),
                    &mut conflicts,
                )
                .await?;
            plans.push(plan);
        }
        let mut report = MergeReport {
            outcome: MergeOutcome::Merged,
            tables: plans
                .iter()
                .map(|p| (p.table.clone(), p.stats.clone()))
                .collect(),
            conflicts: conflicts.clone(),
        };
        let blocking = conflicts
            .iter()
            .any(|c| opts.policy_of(&c.table) == ConflictPolicy::Fail);
        if blocking {
            report.outcome = MergeOutcome::Conflicted;
            return Ok(report);
        }
        if plans.iter().all(|p| {
            p.actions.is_empty() && p.create.is_none() && !p.drop && p.add_columns.is_none()
        }) {
            report.outcome = if report.conflicts.is_empty() {
                MergeOutcome::AlreadyUpToDate
            } else {
                MergeOutcome::Merged
            };
            if !plans.is_empty() {
                // Record the bases anyway so later merges start here.
                self.record_bases_only(source, st, &scur).await?;
            }
            return Ok(report);
        }
        if !ours_changed {
            report.outcome = MergeOutcome::FastForward;
        }
        let published = self.apply_plans(source, st, plans, &scur).await?;
        for (t, v) in published {
            if let Some(s) = report.tables.get_mut(&t) {
                s.version = v;
            }
        }
        Ok(report)
    }

    /// The tables whose lines the old merge bases of this pair read: what
    /// replacing them may leave for garbage collection.
    fn old_base_tables(&self, st: &CatalogState, source: &BranchedBackend) -> BTreeSet<String> {
        let (t, s) = (self.name.clone(), source.name.clone());
        [(t.clone(), s.clone()), (s, t)]
            .iter()
            .filter_map(|k| st.merge_bases.get(k))
            .flat_map(|m| m.target.keys().chain(m.source.keys()).cloned())
            .collect()
    }

    /// The records that end a merge, made under the commit lock: the
    /// source must still be the branch of its id; the target's tables
    /// after the merge are its tables then with `refs` applied.
    fn merge_end(
        &self,
        source: &BranchedBackend,
        refs: &[(String, Option<TableRef>)],
        scur: &BTreeMap<String, TableRef>,
        op: Option<u64>,
    ) -> impl FnOnce(&CatalogState) -> Result<Vec<Record>> + Send + 'static {
        let (target, tid) = (self.name.clone(), self.id);
        let (src, sid) = (source.name.clone(), source.id);
        let (refs, scur) = (refs.to_vec(), scur.clone());
        move |st: &CatalogState| {
            let mut after = match st.branches.get(&target) {
                Some(b) if b.id == tid => b.tables.clone(),
                _ => return Err(Error::BranchNotFound(target).into()),
            };
            match st.branches.get(&src) {
                Some(b) if b.id == sid => {}
                _ => return Err(Error::BranchNotFound(src).into()),
            }
            for (t, r) in refs {
                match r {
                    Some(r) => after.insert(t, r),
                    None => after.remove(&t),
                };
            }
            let mut recs = vec![Record::MergeBase {
                target,
                source: src,
                target_tables: after,
                source_tables: scur,
            }];
            recs.extend(op.map(|op| Record::EndMerge { op }));
            Ok(recs)
        }
    }

    async fn record_bases_only(
        &self,
        source: &BranchedBackend,
        st: &CatalogState,
        scur: &BTreeMap<String, TableRef>,
    ) -> Result<()> {
        let end = self.merge_end(source, &[], scur, None);
        let candidates = self.old_base_tables(st, source);
        let op = self.core.catalog.fresh_id();
        let logged = self
            .core
            .commit_collecting(move |st, _| Ok((end(st)?, candidates)), op)
            .await?;
        self.core.run_collects(&logged).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_table(
        &self,
        st: &CatalogState,
        t: &str,
        opts: &MergeOptions,
        (tb, tc): (Option<&TableRef>, Option<&TableRef>),
        (sb, sc): (Option<&TableRef>, Option<&TableRef>),
        conflicts: &mut Vec<Conflict>,
    ) -> Result<TablePlan> {
        let inner = self.core.inner.clone();
        let policy = opts.policy_of(t);
        let mut plan = TablePlan {
            table: t.to_string(),
            stats: TableMergeStats::default(),
            actions: vec![],
            key: vec![],
            create: None,
            drop: false,
            add_columns: None,
        };
        let table_conflict =
            |conflicts: &mut Vec<Conflict>, stats: &mut TableMergeStats, why: &str| {
                stats.conflicts += 1;
                conflicts.push(Conflict {
                    table: t.to_string(),
                    key: String::new(),
                    kind: ConflictKind::Schema,
                    column: None,
                    base: None,
                    ours: Some(why.to_string()),
                    theirs: None,
                });
            };
        // Dropped on the source.
        let Some(sc) = sc else {
            if tc.is_none() {
                return Ok(plan);
            }
            if tb == tc || policy == ConflictPolicy::Theirs {
                plan.drop = true;
            } else if policy == ConflictPolicy::Fail {
                table_conflict(
                    conflicts,
                    &mut plan.stats,
                    "dropped on the source, changed here",
                );
            }
            return Ok(plan);
        };
        let sschema = schema_of(inner.as_ref(), t, sc).await?;
        // Created on the source, absent here: copy it over.
        let Some(tc) = tc else {
            if tb.is_some() && policy != ConflictPolicy::Theirs {
                // Dropped here, changed there.
                if policy == ConflictPolicy::Fail {
                    table_conflict(
                        conflicts,
                        &mut plan.stats,
                        "dropped here, changed on the source",
                    );
                }
                return Ok(plan);
            }
            let rows = inner
                .scan(crate::backend::ScanRequest {
                    table: t.to_string(),
                    line: sc.line.clone(),
                    version: Some(sc.version),
                    ..Default::default()
                })
                .await?;
            plan.stats.inserted = rows.iter().map(RecordBatch::num_rows).sum();
            plan.create = Some((rows, sschema));
            return Ok(plan);
        };
        let tschema = schema_of(inner.as_ref(), t, tc).await?;
        let key = primary_key(t, &sschema, opts.keys.get(t))
            .or_else(|_| primary_key(t, &tschema, opts.keys.get(t)))?;
        // Schema: the source may add nullable columns; nothing else.
        let mut added = Vec::new();
        for f in sschema.fields() {
            match tschema.field_with_name(f.name()) {
                Ok(tf) if tf.data_type().equals_datatype(f.data_type()) => {}
                Ok(_) => {
                    table_conflict(
                        conflicts,
                        &mut plan.stats,
                        &format!("column {:?} changed type", f.name()),
                    );
                    return Ok(plan);
                }
                Err(_) if f.is_nullable() => added.push(f.as_ref().clone()),
                Err(_) => {
                    table_conflict(
                        conflicts,
                        &mut plan.stats,
                        &format!("non-nullable column {:?} added", f.name()),
                    );
                    return Ok(plan);
                }
            }
        }
        if !added.is_empty() {
            plan.add_columns = Some(Arc::new(Schema::new(added)));
        }
        let codec = KeyCodec::new(t, &tschema, &key)?;
        let scodec = KeyCodec::new(t, &sschema, &key)?;
        let theirs = side_changes(inner.as_ref(), st, t, &scodec, sb, Some(sc)).await?;
        let ours = side_changes(inner.as_ref(), st, t, &codec, tb, Some(tc)).await?;
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
            Some(
                self.rows_by_key(t, tc, &key, &codec, &theirs, &ours)
                    .await?,
            )
        };
        resolve(
            t,
            &key,
            policy,
            (same_base, target_rows.as_ref()),
            &theirs,
            &ours,
            &mut plan,
            conflicts,
        );
        Ok(plan)
    }

    /// The target's current rows (at `tc`) of the keys the source changed
    /// and the target did not, by encoded key.
    async fn rows_by_key(
        &self,
        t: &str,
        tc: &TableRef,
        key: &[String],
        codec: &KeyCodec,
        theirs: &SideChanges,
        ours: &SideChanges,
    ) -> Result<BTreeMap<Vec<u8>, RecordBatch>> {
        let wanted: Vec<RecordBatch> = theirs
            .rows
            .iter()
            .filter(|(k, _)| !ours.rows.contains_key(*k))
            .filter_map(|(_, rc)| rc.cur.as_ref().or(rc.base.as_ref()).cloned())
            .collect();
        let mut out = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let req = crate::backend::ScanRequest {
            table: t.to_string(),
            line: tc.line.clone(),
            version: Some(tc.version),
            filter: key_filter(key, &wanted)?.to_sql(),
            ..Default::default()
        };
        let rows = self.core.inner.scan(req).await?;
        index_rows(codec, &rows, &mut out)?;
        Ok(out)
    }

    /// Apply planned changes on this branch's own lines and publish them,
    /// with the new merge bases, in one log write. The caller holds the op
    /// locks of every planned table. A failure (not a crash) undoes what
    /// was applied before it returns.
    async fn apply_plans(
        &self,
        source: &BranchedBackend,
        st: &CatalogState,
        plans: Vec<TablePlan>,
        scur: &BTreeMap<String, TableRef>,
    ) -> Result<Vec<(String, Option<u64>)>> {
        let op = self.core.catalog.fresh_id();
        self.core
            .commit(Record::BeginMerge {
                op,
                target: self.name.clone(),
                source: source.name.clone(),
            })
            .await?;
        self.core.fail.check(FailPoint::MergeAfterBegin)?;
        let names: Vec<String> = plans.iter().map(|p| p.table.clone()).collect();
        let mut candidates = self.old_base_tables(st, source);
        // Dataset locks of tables the merge creates, held to the publish.
        let mut datasets = Vec::new();
        let (refs, published) = match self.apply_each(plans, &mut candidates, &mut datasets).await {
            Ok(x) => x,
            Err(e) => {
                if !crate::branched::is_crash(&e) {
                    self.undo_merge(op, &names).await;
                }
                return Err(e);
            }
        };
        self.core
            .fail
            .check(FailPoint::MergeAfterApplyBeforePublish)?;
        let end = self.merge_end(source, &refs, scur, Some(op));
        let logged = self
            .core
            .publish_with(&self.name, self.id, refs, end, candidates)
            .await;
        let logged = match logged {
            Ok(l) => l,
            Err(e) => {
                self.undo_merge(op, &names).await;
                return Err(e);
            }
        };
        drop(datasets);
        self.core.run_collects(&logged).await?;
        Ok(published)
    }

    /// A merge that failed part-way: its lines and versions are undone
    /// (best effort; recovery finishes what is left) and it is aborted.
    async fn undo_merge(&self, op: u64, tables: &[String]) {
        for t in tables {
            self.core.abandon_parked(self.id, t).await;
            if let Ok(current) = self.table_ref(t)
                && line_owner(current.line.as_deref()) == Some(self.id)
            {
                let _ = self.core.own_line(&self.name, self.id, t, &current).await;
            }
        }
        let _ = self.core.commit(Record::Abort { op }).await;
    }

    /// Apply each plan as Lance commits; the refs to publish and the new
    /// version per table. Dropped tables join `candidates` (for garbage
    /// collection); created ones push their dataset lock on `datasets`.
    async fn apply_each(
        &self,
        plans: Vec<TablePlan>,
        candidates: &mut BTreeSet<String>,
        datasets: &mut Vec<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<(Vec<(String, Option<TableRef>)>, Vec<(String, Option<u64>)>)> {
        let inner = self.core.inner.clone();
        let mut refs: Vec<(String, Option<TableRef>)> = Vec::new();
        let mut published = Vec::new();
        for plan in plans {
            let t = plan.table.clone();
            if plan.drop {
                candidates.insert(t.clone());
                refs.push((t.clone(), None));
                published.push((t, None));
                continue;
            }
            if let Some((rows, schema)) = plan.create {
                datasets.push(self.core.dataset_lock(&t).lock_owned().await);
                let r = self.create_unpublished(&t, rows, schema).await?;
                published.push((t.clone(), Some(r.version)));
                refs.push((t, Some(r)));
                self.core.fail.check(FailPoint::MergeAfterTableApplied)?;
                continue;
            }
            if plan.actions.is_empty() && plan.add_columns.is_none() {
                continue;
            }
            let current = self.table_ref(&t)?;
            let (line, mut version, _) = self
                .core
                .own_line(&self.name, self.id, &t, &current)
                .await?;
            let l = line.as_deref();
            if let Some(fields) = plan.add_columns {
                version = inner.add_null_columns_line(&t, l, fields).await?;
            }
            let schema = inner.schema_at(&t, l, None).await?;
            let (mut inserts, mut deletes, mut by_id) = (Vec::new(), Vec::new(), Vec::new());
            let mut updates: BTreeMap<Vec<String>, Vec<RecordBatch>> = BTreeMap::new();
            for a in plan.actions {
                match a {
                    Action::Insert(r) => inserts.push(fit_row(&r, &schema)?),
                    Action::Delete(r, Some(id)) => by_id.push((id, r)),
                    Action::Delete(r, None) => deletes.push(r),
                    Action::Replace(r, id) => {
                        inserts.push(fit_row(&r, &schema)?);
                        match id {
                            Some(id) => by_id.push((id, r)),
                            None => deletes.push(r),
                        }
                    }
                    Action::Update(r, cols) => {
                        let mut keep = plan.key.clone();
                        keep.extend(cols.into_iter().filter(|c| !plan.key.contains(c)));
                        let idx: Vec<usize> = keep
                            .iter()
                            .filter_map(|c| r.schema().index_of(c).ok())
                            .collect();
                        let projected = r.project(&idx)?;
                        let names: Vec<String> = projected
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect();
                        updates.entry(names).or_default().push(projected);
                    }
                }
            }
            if !by_id.is_empty() {
                // Found by id and checked by key; the rows whose id does not
                // lead to a row with the same key go by key below.
                let (v, left) = inner
                    .delete_by_row_ids_line(&t, l, &plan.key, &by_id)
                    .await?;
                if let Some(v) = v {
                    version = v;
                }
                deletes.extend(left.into_iter().map(|i| by_id[i].1.clone()));
            }
            if !deletes.is_empty()
                && let Some(sql) = key_filter(&plan.key, &deletes)?.to_sql()
            {
                version = inner.delete_rows_line(&t, l, &sql).await?;
            }
            let on: Vec<&str> = plan.key.iter().map(String::as_str).collect();
            for (_, batches) in updates {
                let s = batches[0].schema();
                let merged = arrow_select::concat::concat_batches(&s, &batches)?;
                if let Some(v) = inner.merge_insert_line(&t, l, &on, vec![merged]).await? {
                    version = v;
                }
            }
            if inserts.len() > 1 {
                // One batch: Lance handles a thousand one-row batches
                // several times slower than the same rows at once.
                inserts = vec![arrow_select::concat::concat_batches(&schema, &inserts)?];
            }
            if !inserts.is_empty()
                && let Some(v) = inner.write_line(&t, l, inserts, WriteMode::Append).await?
            {
                version = v;
            }
            published.push((t.clone(), Some(version)));
            refs.push((t, Some(TableRef { line, version })));
            self.core.fail.check(FailPoint::MergeAfterTableApplied)?;
        }
        Ok((refs, published))
    }

    /// Create `table` on a new line of this branch (or main's line) with
    /// `rows`, without publishing it. The caller holds the op lock and the
    /// dataset lock of `table`.
    pub(crate) async fn create_unpublished(
        &self,
        table: &str,
        rows: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<TableRef> {
        let inner = &self.core.inner;
        inner.invalidate_cache(table);
        if !inner.table_exists(table).await? {
            self.core.begin_create(self.id, table).await?;
            match inner.create_empty_table(table, schema.clone()).await {
                Ok(()) => {}
                Err(e) if matches!(Error::of(&e), Some(Error::TableExists(_))) => {}
                Err(e) => return Err(e),
            }
            inner.notify_table_created(table).await;
        }
        let line = if self.id == 0 {
            None
        } else {
            let from = TableRef {
                line: None,
                version: inner.latest_version(table, None).await?,
            };
            Some(self.core.make_line(self.id, table, from).await?)
        };
        let version = inner
            .overwrite_line(table, line.as_deref(), rows, schema)
            .await?;
        Ok(TableRef { line, version })
    }
}

/// Decide, key by key, what to do with the source's changes.
#[allow(clippy::too_many_arguments)]
fn resolve(
    t: &str,
    key: &[String],
    policy: ConflictPolicy,
    (same_base, target_rows): (bool, Option<&BTreeMap<Vec<u8>, RecordBatch>>),
    theirs: &SideChanges,
    ours: &SideChanges,
    plan: &mut TablePlan,
    conflicts: &mut Vec<Conflict>,
) {
    let render_key = |rc: &RowChange| -> String {
        let row = rc.cur.as_ref().or(rc.base.as_ref());
        row.map(|r| {
            key.iter()
                .map(|k| format!("{k}={}", render(Some(r), Some(k)).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
    };
    let mut conflict = |plan: &mut TablePlan,
                        kind: ConflictKind,
                        th: &RowChange,
                        ou: &RowChange,
                        column: Option<&str>| {
        plan.stats.conflicts += 1;
        conflicts.push(Conflict {
            table: t.to_string(),
            key: render_key(th),
            kind,
            column: column.map(str::to_string),
            base: render(th.base.as_ref().or(ou.base.as_ref()), column),
            ours: render(ou.cur.as_ref(), column),
            theirs: render(th.cur.as_ref(), column),
        });
    };
    let take = |plan: &mut TablePlan,
                th: &RowChange,
                ours_cur: Option<&RecordBatch>,
                base_id: Option<u64>| match (&th.cur, ours_cur) {
        (Some(c), None) => {
            plan.stats.inserted += 1;
            plan.actions.push(Action::Insert(c.clone()));
        }
        (Some(c), Some(o)) => {
            let cols = changed_columns(o, c);
            if !cols.is_empty() {
                plan.stats.updated += 1;
                plan.actions.push(Action::Update(c.clone(), cols));
            }
        }
        (None, Some(o)) => {
            plan.stats.deleted += 1;
            plan.actions.push(Action::Delete(o.clone(), base_id));
        }
        (None, None) => {}
    };
    for (k, th) in &theirs.rows {
        let Some(ou) = ours.rows.get(k) else {
            // Only the source changed this row: take its change. With
            // different bases the target row was read by key.
            if let Some(rows) = target_rows {
                take(plan, th, rows.get(k), None);
                continue;
            }
            // Otherwise the row on the target is still the source's base row.
            match (&th.base, &th.cur) {
                (Some(_), Some(c)) if same_base => {
                    plan.stats.updated += 1;
                    plan.actions
                        .push(Action::Replace(c.clone(), theirs.base_ids.get(k).copied()));
                }
                (Some(b), Some(c)) => {
                    let cols = changed_columns(b, c);
                    plan.stats.updated += 1;
                    plan.actions.push(Action::Update(c.clone(), cols));
                }
                // The target row is the source's base row.
                _ => take(plan, th, th.base.as_ref(), theirs.base_ids.get(k).copied()),
            }
            continue;
        };
        // Both changed this key.
        match (&ou.cur, &th.cur) {
            (None, None) => {}                         // deleted on both sides
            (Some(o), Some(c)) if same_row(o, c) => {} // the same change
            (Some(o), Some(c)) => {
                let kind = if th.base.is_none() && ou.base.is_none() {
                    ConflictKind::DivergentInsert
                } else {
                    ConflictKind::DivergentUpdate
                };
                // Column by column: a column changed on both sides to
                // different values conflicts; others merge.
                let (ob, tb) = (ou.base.as_ref(), th.base.as_ref());
                let mut clash = None;
                let mut take_cols = Vec::new();
                let theirs_changed = match tb {
                    Some(b) => changed_columns(b, c),
                    None => changed_columns(o, c),
                };
                for col in theirs_changed {
                    let ours_changed = match ob {
                        Some(b) => column_differs(b, o, &col),
                        None => true,
                    };
                    if !column_differs(o, c, &col) {
                        continue;
                    }
                    if ours_changed || kind == ConflictKind::DivergentInsert {
                        clash.get_or_insert(col.clone());
                    }
                    take_cols.push(col);
                }
                match (clash, policy) {
                    (None, _) if !take_cols.is_empty() => {
                        plan.stats.updated += 1;
                        plan.actions.push(Action::Update(c.clone(), take_cols));
                    }
                    (None, _) => {}
                    (Some(col), ConflictPolicy::Theirs) => {
                        conflict(plan, kind, th, ou, Some(&col));
                        plan.stats.updated += 1;
                        plan.actions.push(Action::Update(c.clone(), take_cols));
                    }
                    (Some(col), _) => conflict(plan, kind, th, ou, Some(&col)),
                }
            }
            (Some(_), None) => {
                conflict(plan, ConflictKind::UpdateDelete, th, ou, None);
                if policy == ConflictPolicy::Theirs {
                    take(plan, th, ou.cur.as_ref(), None);
                }
            }
            (None, Some(_)) => {
                conflict(plan, ConflictKind::DeleteUpdate, th, ou, None);
                if policy == ConflictPolicy::Theirs {
                    take(plan, th, None, None);
                }
            }
        }
    }
}
