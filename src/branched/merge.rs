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

use anyhow::Result;

use crate::backend::Error;
use crate::branched::catalog::{CatalogState, Record, TableRef};
pub use crate::branched::report::{
    Conflict, ConflictKind, ConflictPolicy, MERGE_BATCH_ROWS, MergeOptions, MergeOutcome,
    MergeReport, TableMergeStats,
};
use crate::branched::view::BranchedBackend;

impl BranchedBackend {
    /// The bases of a merge of `source` into this branch: (target side,
    /// source side).
    pub(crate) fn merge_bases(
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
    /// [`Error::ReadOnlyView`], [`Error::InvalidArgument`] (a merge into
    /// itself, or [`MergeOptions::batch_rows`] of 0); then I/O errors
    /// (nothing is published).
    pub async fn merge(&self, source: &BranchedBackend, opts: MergeOptions) -> Result<MergeReport> {
        self.writable()?;
        if source.name == self.name {
            return Err(
                Error::InvalidArgument("a branch cannot be merged into itself".into()).into(),
            );
        }
        if opts.batch_rows_of() == 0 {
            return Err(
                Error::InvalidArgument("a merge's batch_rows must be at least 1".into()).into(),
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
        if plans.iter().all(|p| p.is_empty()) {
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
    pub(crate) fn old_base_tables(
        &self,
        st: &CatalogState,
        source: &BranchedBackend,
    ) -> BTreeSet<String> {
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
    pub(crate) fn merge_end(
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
}
