//! [`lifecycle_ops`]: the whole public surface of a branched store, one
//! operation at a time and in concurrent groups, against
//! [`model`](super::model).
//!
//! Each [`Step`] runs one [`LifecycleOp`] or a group of two to four at once
//! (on a multi-threaded runtime). A group is accepted only if the results
//! of its operations and the store afterwards equal the model after *some*
//! serial order of the group (a linearizability check over the
//! permutations). After every step every branch, tag and live snapshot
//! must equal the model and `fsck` must be clean; a crash (an armed
//! [`CrashPlan`] or a restart) is recovered and checked the same way.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow, bail};
use arbitrary::Arbitrary;
use arrow_array::Int64Array;

use super::model::{Action, DiffSummary, Model, Out, Res, Rows, Tables};
use super::{batch, schema};
use crate::branched::{BranchedBackend, MergeOptions, TableChange};
use crate::lance::LanceDbOptions;
use crate::testing::{CrashPlan, CrashableStore, Policy, is_crash};
use crate::{Error, ScanRequest, StorageBackend, WriteMode};

/// The longest step sequence one input runs.
pub const MAX_STEPS: usize = 16;
const TABLES: [&str; 3] = ["t0", "t1", "t2"];
const BRANCHES: [&str; 6] = ["x0", "x1", "x2", "x3", "x4", "x5"];
const TAGS: [&str; 3] = ["g0", "g1", "g2"];
const MAX_SNAPSHOTS: usize = 3;
/// A small key range fresh rows reuse, so that two branches insert the
/// same key (divergent inserts).
const SHARED_KEYS: std::ops::Range<i64> = 1000..1008;

/// One operation of the public surface, its arguments picked by index
/// among what exists when it runs.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum LifecycleOp {
    Fork {
        from: u8,
        name: u8,
    },
    ForkAt {
        tag: u8,
        name: u8,
    },
    Tag {
        branch: u8,
        name: u8,
    },
    DeleteTag {
        tag: u8,
    },
    Create {
        branch: u8,
        table: u8,
        n: u8,
    },
    Drop {
        branch: u8,
        table: u8,
    },
    Insert {
        branch: u8,
        table: u8,
        n: u8,
    },
    Update {
        branch: u8,
        table: u8,
        row: u8,
        value: u8,
    },
    Delete {
        branch: u8,
        table: u8,
        row: u8,
    },
    Replace {
        branch: u8,
        table: u8,
        n: u8,
    },
    Rollback {
        branch: u8,
        table: u8,
    },
    Optimize {
        branch: u8,
        table: u8,
    },
    Txn {
        branch: u8,
        a: u8,
        b: u8,
        n: u8,
    },
    Merge {
        target: u8,
        source: u8,
        policy: Policy,
    },
    Diff {
        target: u8,
        source: u8,
    },
    Snapshot {
        branch: u8,
    },
    DropSnapshot {
        i: u8,
    },
    DeleteBranch {
        branch: u8,
        cascade: bool,
    },
    Checkpoint,
    Arm(CrashPlan),
    Reopen,
}

/// One step: an operation alone, or a group run concurrently.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Step {
    One(LifecycleOp),
    Group(
        LifecycleOp,
        LifecycleOp,
        Option<LifecycleOp>,
        Option<LifecycleOp>,
    ),
}

/// Decode `data` into steps and run them (see the module docs).
///
/// # Panics
/// When the store disagrees with the model, or an operation fails in a
/// way no serial order explains: a bug, with `data` as its reproducer.
///
/// # Example
/// ```no_run
/// lancebranch::fuzzing::lifecycle_ops(&[3, 1, 4, 1, 5, 9, 2, 6]);
/// ```
pub fn lifecycle_ops(data: &[u8]) {
    let steps = decode_steps(data);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a runtime: {e}"),
    };
    if let Err(e) = rt.block_on(run_steps(&steps)) {
        panic!("lifecycle_ops: {e:#}\nsteps: {steps:?}");
    }
}

/// The steps `data` encodes (at most [`MAX_STEPS`]).
pub fn decode_steps(data: &[u8]) -> Vec<Step> {
    super::decode_all(data, MAX_STEPS)
}

/// The harness: the store, the model states that explain everything seen
/// so far (a concurrent group can leave several: serial orders that differ
/// only in what is not yet visible, like a merge base), the live snapshots
/// and what it knows of each table's versions (for rollback).
struct Harness {
    store: CrashableStore,
    /// Never empty; all agree on what the store shows.
    models: Vec<Model>,
    snapshots: Vec<(BranchedBackend, Tables)>,
    /// (branch, table) → the versions seen after its changes, with rows.
    history: BTreeMap<(String, String), Vec<(u64, Rows)>>,
    next_key: i64,
}

/// At most this many candidate states are kept.
const MAX_MODELS: usize = 64;

/// A model with its tokens renumbered in order of appearance, so two
/// states that differ only in how their versions were numbered compare
/// equal.
fn canonical(m: &Model) -> String {
    let mut ids: BTreeMap<u64, usize> = BTreeMap::new();
    let mut out = String::new();
    let mut put = |t: &Tables, out: &mut String| {
        for (name, tab) in t {
            let n = ids.len();
            let id = *ids.entry(tab.token).or_insert(n);
            out.push_str(&format!("{name}#{id}{:?};", tab.rows));
        }
        out.push('|');
    };
    for (name, b) in &m.branches {
        out.push_str(&format!("B{name}<{:?}>", b.parent));
        put(&b.tables, &mut out);
        put(&b.fork_point, &mut out);
    }
    for (name, (b, t)) in &m.tags {
        out.push_str(&format!("T{name}<{b}>"));
        put(t, &mut out);
    }
    for ((t, s), (bt, bs)) in &m.bases {
        out.push_str(&format!("M{t}<{s}>"));
        put(bt, &mut out);
        put(bs, &mut out);
    }
    out
}

fn dedupe(models: Vec<Model>) -> Vec<Model> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<Model> = models
        .into_iter()
        .filter(|m| seen.insert(canonical(m)))
        .collect();
    out.truncate(MAX_MODELS);
    out
}

fn nth<T: Clone>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(i) % items.len()].clone())
}

impl Harness {
    /// The first candidate state (all agree on what is visible).
    fn model(&self) -> &Model {
        &self.models[0]
    }

    fn branch_names(&self) -> Vec<String> {
        self.model().branches.keys().cloned().collect()
    }

    /// A branch by index: mostly an existing one, sometimes (index ≥ 250)
    /// a name that may not exist.
    fn pick_branch(&self, i: u8) -> String {
        if i >= 250 {
            return BRANCHES[usize::from(i) % BRANCHES.len()].to_string();
        }
        nth(&self.branch_names(), i).unwrap_or_else(|| "main".into())
    }

    fn fresh_rows(&mut self, n: u8, shared: &mut BTreeSet<i64>, avoid: &Rows) -> Vec<(i64, i64)> {
        let n = usize::from(n % 3) + 1;
        let mut out = Vec::new();
        for j in 0..n {
            // Odd counts reuse a small shared key range (the same key on two
            // branches is what makes divergent inserts), never twice in one
            // table or one group.
            let k = if n % 2 == 1 && j == 0 {
                SHARED_KEYS
                    .clone()
                    .find(|k| !avoid.contains_key(k) && !shared.contains(k))
            } else {
                None
            };
            let k = k.unwrap_or_else(|| {
                self.next_key += 1;
                self.next_key
            });
            shared.insert(k);
            out.push((k, k % 89));
        }
        out
    }

    /// The keys of the shared range (see `fresh_rows`) in any table of any
    /// branch of any candidate state.
    fn shared_keys_held(&self) -> BTreeSet<i64> {
        let tables = self.models.iter().flat_map(|m| m.branches.values());
        let rows = tables.flat_map(|b| b.tables.values());
        rows.flat_map(|t| t.rows.range(SHARED_KEYS).map(|(k, _)| *k))
            .collect()
    }

    fn rows_of(&self, b: &str, t: &str) -> Rows {
        self.model()
            .branches
            .get(b)
            .and_then(|br| br.tables.get(t))
            .map(|t| t.rows.clone())
            .unwrap_or_default()
    }

    /// Choose the concrete action `op` stands for in the current model.
    /// (Long by design: one short arm per operation, side by side.)
    fn resolve(&mut self, op: &LifecycleOp, shared: &mut BTreeSet<i64>) -> Action {
        let table = |i: u8| TABLES[usize::from(i) % TABLES.len()].to_string();
        let key_of = |rows: &Rows, i: u8| nth(&rows.keys().copied().collect::<Vec<_>>(), i);
        match *op {
            LifecycleOp::Fork { from, name } => Action::Fork {
                from: self.pick_branch(from),
                name: BRANCHES[usize::from(name) % BRANCHES.len()].into(),
            },
            LifecycleOp::ForkAt { tag, name } => Action::ForkAt {
                tag: TAGS[usize::from(tag) % TAGS.len()].into(),
                name: BRANCHES[usize::from(name) % BRANCHES.len()].into(),
            },
            LifecycleOp::Tag { branch, name } => Action::Tag {
                branch: self.pick_branch(branch),
                name: TAGS[usize::from(name) % TAGS.len()].into(),
            },
            LifecycleOp::DeleteTag { tag } => Action::DeleteTag {
                name: TAGS[usize::from(tag) % TAGS.len()].into(),
            },
            LifecycleOp::Create {
                branch,
                table: t,
                n,
            } => {
                let (branch, table) = (self.pick_branch(branch), table(t));
                let avoid = self.rows_of(&branch, &table);
                let rows = self.fresh_rows(n, shared, &avoid);
                Action::Create {
                    branch,
                    table,
                    rows,
                }
            }
            LifecycleOp::Drop { branch, table: t } => Action::Drop {
                branch: self.pick_branch(branch),
                table: table(t),
            },
            LifecycleOp::Insert {
                branch,
                table: t,
                n,
            } => {
                let (branch, table) = (self.pick_branch(branch), table(t));
                let avoid = self.rows_of(&branch, &table);
                let rows = self.fresh_rows(n, shared, &avoid);
                Action::Insert {
                    branch,
                    table,
                    rows,
                }
            }
            LifecycleOp::Update {
                branch,
                table: t,
                row,
                value,
            } => {
                let (branch, table) = (self.pick_branch(branch), table(t));
                match key_of(&self.rows_of(&branch, &table), row) {
                    Some(key) => Action::Update {
                        branch,
                        table,
                        key,
                        value: i64::from(value),
                    },
                    None => Action::Nothing,
                }
            }
            LifecycleOp::Delete {
                branch,
                table: t,
                row,
            } => {
                let (branch, table) = (self.pick_branch(branch), table(t));
                match key_of(&self.rows_of(&branch, &table), row) {
                    Some(key) => Action::Delete { branch, table, key },
                    None => Action::Nothing,
                }
            }
            LifecycleOp::Replace {
                branch,
                table: t,
                n,
            } => {
                let rows = self.fresh_rows(n, shared, &Rows::new());
                Action::Replace {
                    branch: self.pick_branch(branch),
                    table: table(t),
                    rows,
                }
            }
            LifecycleOp::Rollback { branch, table: t } => {
                let (branch, table) = (self.pick_branch(branch), table(t));
                let hist = self.history.get(&(branch.clone(), table.clone()));
                match hist.and_then(|h| h.len().checked_sub(2).map(|i| h[i].clone())) {
                    Some((version, rows)) => Action::Rollback {
                        branch,
                        table,
                        version,
                        rows,
                    },
                    None => Action::Nothing,
                }
            }
            LifecycleOp::Optimize { branch, table: t } => Action::Optimize {
                branch: self.pick_branch(branch),
                table: table(t),
            },
            LifecycleOp::Txn { branch, a, b, n } => {
                let (branch, a, b) = (self.pick_branch(branch), table(a), table(b));
                let avoid = self.rows_of(&branch, &a);
                let rows = self.fresh_rows(n, shared, &avoid);
                let key = key_of(&self.rows_of(&branch, &b), n).unwrap_or(-1);
                Action::Txn {
                    branch,
                    a,
                    rows,
                    b,
                    key,
                }
            }
            LifecycleOp::Merge {
                target,
                source,
                policy,
            } => {
                let (target, source) = (self.pick_branch(target), self.pick_branch(source));
                if target == source {
                    return Action::Nothing;
                }
                Action::Merge {
                    target,
                    source,
                    policy,
                }
            }
            LifecycleOp::Diff { target, source } => {
                let (target, source) = (self.pick_branch(target), self.pick_branch(source));
                if target == source {
                    return Action::Nothing;
                }
                Action::Diff { target, source }
            }
            LifecycleOp::Snapshot { branch } => Action::Snapshot {
                branch: self.pick_branch(branch),
            },
            LifecycleOp::DropSnapshot { i } => Action::DropSnapshot { i: usize::from(i) },
            LifecycleOp::DeleteBranch { branch, cascade } => Action::DeleteBranch {
                branch: self.pick_branch(branch),
                cascade,
            },
            LifecycleOp::Checkpoint | LifecycleOp::Arm(_) | LifecycleOp::Reopen => {
                Action::Checkpoint
            }
        }
    }
}

/// The name of a typed error, for comparison with the model.
fn kind(e: &anyhow::Error) -> Result<&'static str> {
    Ok(match Error::of(e) {
        Some(Error::TableNotFound(_)) => "TableNotFound",
        Some(Error::TableExists(_)) => "TableExists",
        Some(Error::BranchNotFound(_)) => "BranchNotFound",
        Some(Error::BranchExists(_)) => "BranchExists",
        Some(Error::TagNotFound(_)) => "TagNotFound",
        Some(Error::TagExists(_)) => "TagExists",
        Some(Error::BranchInUse { .. }) => "BranchInUse",
        Some(Error::NoMergeBase(..)) => "NoMergeBase",
        Some(Error::InvalidName { .. }) => "InvalidName",
        Some(Error::InvalidArgument(_)) => "InvalidArgument",
        Some(Error::FailPoint(_)) => "FailPoint",
        _ => bail!("an untyped or unexpected error: {e:#}"),
    })
}

fn summarize(diffs: &[crate::branched::TableDiff]) -> DiffSummary {
    diffs
        .iter()
        .map(|d| {
            let k = match d.change {
                TableChange::Created => 0,
                TableChange::Dropped => 1,
                TableChange::Modified => 2,
            };
            (d.table.clone(), (k, d.counts))
        })
        .collect()
}

/// [`summarize`] of a diff read as a stream.
async fn summarize_stream(
    mut batches: futures::stream::BoxStream<'static, Result<crate::branched::DiffBatch>>,
) -> Result<DiffSummary> {
    use futures::TryStreamExt;
    let mut out = DiffSummary::new();
    while let Some(b) = batches.try_next().await? {
        let k = match b.change {
            TableChange::Created => 0,
            TableChange::Dropped => 1,
            TableChange::Modified => 2,
        };
        let entry = out.entry(b.table.clone()).or_insert((k, (0, 0, 0)));
        let kinds = b
            .rows
            .column_by_name("_change")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .cloned()
            })
            .ok_or_else(|| anyhow!("a diff batch without _change"))?;
        for kind in kinds.iter().flatten() {
            match kind {
                "insert" => entry.1.0 += 1,
                "update" => entry.1.1 += 1,
                _ => entry.1.2 += 1,
            }
        }
    }
    Ok(out)
}

/// Run `a` on the store. Snapshots are taken by the caller. (Long by
/// design: one arm per operation, side by side.)
async fn exec(main: BranchedBackend, a: Action) -> Result<Out> {
    let view = |b: &str| main.branch(b);
    match a {
        Action::Nothing | Action::DropSnapshot { .. } | Action::Rollback { .. } => Ok(Out::Done),
        Action::Snapshot { branch } => view(&branch)?.snapshot().map(|_| Out::Done),
        Action::Checkpoint => main.checkpoint().await.map(|_| Out::Done),
        Action::Fork { from, name } => view(&from)?.fork(&name).await.map(|_| Out::Done),
        Action::ForkAt { tag, name } => main.fork_at(&name, &tag).await.map(|_| Out::Done),
        Action::Tag { branch, name } => view(&branch)?.tag(&name).await.map(|_| Out::Done),
        Action::DeleteTag { name } => main.delete_tag(&name).await.map(|_| Out::Done),
        Action::Create {
            branch,
            table,
            rows,
        } => {
            let v = view(&branch)?;
            v.create_table(&table, vec![batch(&rows)?]).await?;
            Ok(Out::Done)
        }
        Action::Drop { branch, table } => {
            view(&branch)?.drop_table(&table).await?;
            Ok(Out::Done)
        }
        Action::Insert {
            branch,
            table,
            rows,
        } => {
            let v = view(&branch)?;
            v.write(&table, vec![batch(&rows)?], WriteMode::Append)
                .await?;
            Ok(Out::Done)
        }
        Action::Update {
            branch,
            table,
            key,
            value,
        } => {
            let v = view(&branch)?;
            v.merge_insert(&table, &["id"], vec![batch(&[(key, value)])?])
                .await?;
            Ok(Out::Done)
        }
        Action::Delete { branch, table, key } => {
            view(&branch)?
                .delete_rows(&table, &format!("id = {key}"))
                .await?;
            Ok(Out::Done)
        }
        Action::Replace {
            branch,
            table,
            rows,
        } => {
            let v = view(&branch)?;
            v.replace_table_atomic(&table, vec![batch(&rows)?], schema())
                .await?;
            Ok(Out::Done)
        }
        Action::Optimize { branch, table } => {
            view(&branch)?.optimize_table(&table).await?;
            Ok(Out::Done)
        }
        Action::Txn {
            branch,
            a,
            rows,
            b,
            key,
        } => {
            let v = view(&branch)?;
            v.transaction()
                .write(&a, vec![batch(&rows)?], WriteMode::Append)
                .delete_rows(&b, &format!("id = {key}"))
                .commit()
                .await?;
            Ok(Out::Done)
        }
        Action::Merge {
            target,
            source,
            policy,
        } => {
            let (t, s) = (view(&target)?, view(&source)?);
            let mut opts = MergeOptions::default().default_policy(policy.into());
            // Every other pair of names merges in batches of 1 or 2 keys:
            // both must give what the model says.
            if (target.len() + source.len()) % 2 == 1 {
                opts = opts.batch_rows(1 + target.len() % 2);
            }
            let r = t.merge(&s, opts).await?;
            Ok(Out::Merge {
                conflicted: !r.conflicts.is_empty(),
            })
        }
        Action::Diff { target, source } => {
            let (t, s) = (view(&target)?, view(&source)?);
            // Every other pair of names reads the diff as a stream: both
            // must give what the model says.
            if (target.len() + source.len()) % 2 == 0 {
                let batches = t.diff_stream(&s, &MergeOptions::default()).await?;
                Ok(Out::Diff(summarize_stream(batches).await?))
            } else {
                Ok(Out::Diff(summarize(&t.diff(&s).await?)))
            }
        }
        Action::DeleteBranch { branch, cascade } => {
            main.delete_branch(&branch, cascade).await?;
            Ok(Out::Done)
        }
    }
}

/// A table's rows as the store returns them (duplicates are an error).
async fn contents(view: &BranchedBackend, table: &str) -> Result<Rows> {
    let mut out = Rows::new();
    for b in view.scan(ScanRequest::table(table)).await? {
        let col = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .ok_or_else(|| anyhow!("column {n} is not Int64"))
        };
        let (ids, vals) = (col("id")?, col("v")?);
        for i in 0..b.num_rows() {
            if out.insert(ids.value(i), vals.value(i)).is_some() {
                bail!("table {table}: key {} twice", ids.value(i));
            }
        }
    }
    Ok(out)
}

/// Every table a view reads, with its rows.
async fn read_all(view: &BranchedBackend) -> Result<BTreeMap<String, Rows>> {
    let mut out = BTreeMap::new();
    for t in view.table_names().await? {
        let rows = contents(view, &t).await?;
        out.insert(t, rows);
    }
    Ok(out)
}

fn rows_only(t: &Tables) -> BTreeMap<String, Rows> {
    t.iter().map(|(k, v)| (k.clone(), v.rows.clone())).collect()
}

/// The store's state: branch → table → rows, and tag → table → rows.
type Seen = (
    BTreeMap<String, BTreeMap<String, Rows>>,
    BTreeMap<String, BTreeMap<String, Rows>>,
);

async fn read_store(main: &BranchedBackend, only: Option<&BTreeSet<String>>) -> Result<Seen> {
    let mut branches = BTreeMap::new();
    for b in main.list_branches() {
        if only.is_some_and(|o| !o.contains(&b.name)) {
            continue;
        }
        branches.insert(b.name.clone(), read_all(&main.branch(&b.name)?).await?);
    }
    let mut tags = BTreeMap::new();
    for t in main.list_tags() {
        tags.insert(t.name.clone(), read_all(&main.at_tag(&t.name)?).await?);
    }
    Ok((branches, tags))
}

fn matches(model: &Model, seen: &Seen, only: Option<&BTreeSet<String>>) -> Result<()> {
    let (branches, tags) = seen;
    let want: BTreeMap<String, BTreeMap<String, Rows>> = model
        .tags
        .iter()
        .map(|(n, (_, t))| (n.clone(), rows_only(t)))
        .collect();
    if *tags != want {
        bail!("tags {tags:?}, model {want:?}");
    }
    let names: Vec<&String> = model
        .branches
        .keys()
        .filter(|n| only.is_none_or(|o| o.contains(*n)))
        .collect();
    if branches.keys().collect::<Vec<_>>() != names {
        bail!("branches {:?}, model {names:?}", branches.keys());
    }
    for (name, tables) in branches {
        let want = rows_only(&model.branches[name].tables);
        if *tables != want {
            bail!("branch {name}: store {tables:?}, model {want:?}");
        }
    }
    Ok(())
}

/// The branches an action changes or reads (for a cheaper check).
fn touched(a: &Action) -> Option<BTreeSet<String>> {
    let one = |b: &String| Some([b.clone(), "main".to_string()].into());
    match a {
        Action::Create { branch, .. }
        | Action::Drop { branch, .. }
        | Action::Insert { branch, .. }
        | Action::Update { branch, .. }
        | Action::Delete { branch, .. }
        | Action::Replace { branch, .. }
        | Action::Rollback { branch, .. }
        | Action::Optimize { branch, .. }
        | Action::Txn { branch, .. } => one(branch),
        Action::Merge { target, .. } => one(target),
        Action::Fork { name, .. } | Action::ForkAt { name, .. } => one(name),
        _ => None,
    }
}

impl Harness {
    /// Compare the store with the candidate states, keeping those that
    /// match; then snapshots and fsck.
    async fn check(&mut self, only: Option<&BTreeSet<String>>) -> Result<()> {
        let main = self.store.main().clone();
        let mut only = only.cloned();
        if let Some(o) = &mut only {
            o.retain(|b| self.model().branches.contains_key(b));
        }
        let seen = read_store(&main, only.as_ref()).await?;
        let first = matches(self.model(), &seen, only.as_ref());
        self.models
            .retain(|m| matches(m, &seen, only.as_ref()).is_ok());
        if self.models.is_empty() {
            return first;
        }
        for (i, (snap, tables)) in self.snapshots.iter().enumerate() {
            let got = read_all(snap).await?;
            if got != rows_only(tables) {
                bail!("snapshot {i}: store {got:?}, model {:?}", rows_only(tables));
            }
        }
        let report = main.fsck(false).await?;
        if !report.is_clean() {
            let p: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
            bail!("fsck: {}", p.join("; "));
        }
        Ok(())
    }

    /// Note the version each changed table now has, for rollback.
    async fn note_versions(&mut self, a: &Action) -> Result<()> {
        let main = self.store.main().clone();
        let (branch, tables): (String, Vec<String>) = match a {
            Action::Create { branch, table, .. }
            | Action::Insert { branch, table, .. }
            | Action::Update { branch, table, .. }
            | Action::Delete { branch, table, .. }
            | Action::Replace { branch, table, .. }
            | Action::Rollback { branch, table, .. } => (branch.clone(), vec![table.clone()]),
            Action::Txn { branch, a, b, .. } => (branch.clone(), vec![a.clone(), b.clone()]),
            Action::Drop { branch, table } => {
                self.history.remove(&(branch.clone(), table.clone()));
                return Ok(());
            }
            Action::Fork { from, name } => {
                let inherited: Vec<_> = self
                    .history
                    .iter()
                    .filter(|((b, _), _)| b == from)
                    .map(|((_, t), h)| ((name.clone(), t.clone()), h.clone()))
                    .collect();
                self.history.retain(|(b, _), _| b != name);
                self.history.extend(inherited);
                return Ok(());
            }
            // Versions may be pruned, lines replaced: start over.
            _ => {
                self.history.clear();
                return Ok(());
            }
        };
        let view = main.branch(&branch)?;
        for t in tables {
            if let Some(v) = view.get_table_version(&t).await? {
                let rows = self.rows_of(&branch, &t);
                let h = self.history.entry((branch.clone(), t)).or_default();
                if matches!(a, Action::Create { .. } | Action::Replace { .. }) {
                    h.clear();
                }
                h.push((v, rows));
            }
        }
        Ok(())
    }

    /// Run one action alone: its result must be the model's.
    async fn one(&mut self, a: Action) -> Result<()> {
        trace(&format!("start one {a:?}"));
        let main = self.store.main().clone();
        let before = match &a {
            Action::Optimize { branch, table } => match main.branch(branch) {
                Ok(v) => v.get_table_version(table).await.ok().flatten(),
                Err(_) => None,
            },
            _ => None,
        };
        let got = match &a {
            Action::Rollback {
                branch,
                table,
                version,
                ..
            } => {
                let r = async { main.branch(branch)?.rollback_table(table, *version).await };
                r.await.map(|_| Out::Done)
            }
            _ => exec(main.clone(), a.clone()).await,
        };
        drop(main); // a crash must find no handle of the store alive
        trace(&format!("one {a:?} -> {}", show(&got)));
        if let Err(e) = &got
            && is_crash(e)
        {
            return self.crashed(&a, e).await;
        }
        let mut first = None;
        let mut next = Vec::new();
        for m in &self.models {
            let mut m = m.clone();
            let want = m.apply(&a);
            match compare(&a, &got, &want) {
                Ok(()) => next.push(m),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if next.is_empty() {
            return Err(first.unwrap_or_else(|| anyhow!("no model")));
        }
        self.models = dedupe(next);
        let mut checked = Ok(());
        if got.is_ok() {
            checked = self.after_success(&a, before).await;
        }
        if checked.is_ok() {
            checked = self.check(touched(&a).as_ref()).await;
        }
        match checked {
            // A fail point armed for this step that the step did not reach
            // can fire in the checks (fsck and reads finish collections a
            // snapshot held back): a crash there, recovered like any other.
            Err(e) if is_crash(&e) => self.restart().await,
            other => other,
        }
    }

    async fn after_success(&mut self, a: &Action, before: Option<u64>) -> Result<()> {
        let main = self.store.main().clone();
        match a {
            Action::Snapshot { branch } if self.snapshots.len() < MAX_SNAPSHOTS => {
                let snap = main.branch(branch)?.snapshot()?;
                let tables = self.model().branches[branch].tables.clone();
                self.snapshots.push((snap, tables));
            }
            Action::DropSnapshot { i } if !self.snapshots.is_empty() => {
                let i = i % self.snapshots.len();
                self.snapshots.remove(i);
            }
            Action::Optimize { branch, table } => {
                let after = main.branch(branch)?.get_table_version(table).await?;
                if after != before {
                    // Compaction published a new version: a new identity.
                    for m in &mut self.models {
                        m.bump(branch, table);
                    }
                }
            }
            _ => {}
        }
        self.note_versions(a).await
    }

    /// `a` was cut by a crash: applied when cut after its record (a branch
    /// deletion, a garbage collection after the change), absent otherwise.
    async fn crashed(&mut self, a: &Action, e: &anyhow::Error) -> Result<()> {
        let point = match Error::of(e) {
            Some(Error::FailPoint(p)) => p.clone(),
            _ => String::new(),
        };
        if point.starts_with("delete::") || point.starts_with("collect::") {
            for m in &mut self.models {
                let want = m.apply(a);
                if want.is_err() {
                    bail!("{a:?} cut at {point} although the model refuses it: {want:?}");
                }
            }
        }
        self.restart().await
    }

    async fn restart(&mut self) -> Result<()> {
        self.snapshots.clear();
        self.history.clear();
        self.store
            .crash()
            .await
            .map_err(|e| e.context("recovery"))?;
        self.check(None).await
    }

    /// Run a group at once; accept it if some serial order explains it.
    async fn group(&mut self, actions: Vec<Action>) -> Result<()> {
        trace(&format!("start group {actions:?}"));
        let main = self.store.main().clone();
        main.disarm_failpoints();
        let tasks: Vec<_> = actions
            .iter()
            .map(|a| tokio::spawn(exec(main.clone(), a.clone())))
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await?);
        }
        for (a, g) in actions.iter().zip(&got) {
            trace(&format!("group {a:?} -> {}", show(g)));
        }
        let seen = read_store(&main, None).await?;
        drop(main);
        let mut tried = Vec::new();
        let mut next = Vec::new();
        for start in &self.models {
            for order in permutations(actions.len()) {
                for model in serial(start, &order, &actions, &got, &mut tried) {
                    match matches(&model, &seen, None) {
                        Ok(()) => next.push(model),
                        Err(e) if tried.len() < 24 => {
                            tried.push(format!("order {order:?}: {e:#}"));
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        if !next.is_empty() {
            self.models = dedupe(next);
            self.history.clear();
            return self.check(None).await;
        }
        let results: Vec<String> = got
            .iter()
            .map(|r| match r {
                Ok(o) => format!("{o:?}"),
                Err(e) => format!("{e:#}"),
            })
            .collect();
        bail!(
            "no serial order explains the group {actions:?} with results {results:?}:\n{}",
            tried.join("\n")
        )
    }
}

/// With `LANCEBRANCH_LIFECYCLE_TRACE` set, print each operation and result.
fn trace(line: &str) {
    if std::env::var_os("LANCEBRANCH_LIFECYCLE_TRACE").is_some() {
        eprintln!("lifecycle: {line}");
    }
}

fn show(r: &Result<Out>) -> String {
    match r {
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("error: {e:#}"),
    }
}

fn compare(a: &Action, got: &Result<Out>, want: &Res) -> Result<()> {
    match (got, want) {
        (Ok(g), Ok(w)) if g == w => Ok(()),
        (Err(e), Err(w)) if kind(e)? == *w => Ok(()),
        (Ok(g), w) => bail!("{a:?}: store {g:?}, model {w:?}"),
        (Err(e), w) => bail!("{a:?}: store failed ({e:#}), model {w:?}"),
    }
}

/// The states `start` reaches when `actions` run in `order` with the
/// results `got`. An optimize in a group may or may not have published a
/// new version (whether compaction found work is not in the model), so it
/// leads to both; an order whose results the model does not give is noted
/// in `tried` and leads nowhere.
fn serial(
    start: &Model,
    order: &[usize],
    actions: &[Action],
    got: &[Result<Out>],
    tried: &mut Vec<String>,
) -> Vec<Model> {
    let mut states = vec![start.clone()];
    for &i in order {
        let mut after = Vec::new();
        for mut m in states {
            let want = m.apply(&actions[i]);
            if let Err(e) = compare(&actions[i], &got[i], &want) {
                if tried.len() < 24 {
                    tried.push(format!("order {order:?}: {e:#}"));
                }
                continue;
            }
            if let (Action::Optimize { branch, table }, Ok(_)) = (&actions[i], &got[i]) {
                let mut bumped = m.clone();
                bumped.bump(branch, table);
                after.push(bumped);
            }
            after.push(m);
        }
        states = after;
    }
    states
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// How many operations `step` runs at once: 1 for a step alone, the
/// number of groupable operations for a group (the others are skipped).
///
/// # Example
/// ```
/// use lancebranch::fuzzing::{LifecycleOp, Step, concurrency};
/// let g = Step::Group(LifecycleOp::Checkpoint, LifecycleOp::Reopen, None, None);
/// assert_eq!(concurrency(&g), 1);
/// ```
pub fn concurrency(step: &Step) -> usize {
    match step {
        Step::One(_) => 1,
        Step::Group(..) => grouped(step).len(),
    }
}

/// The operations of a group step that run concurrently (the groupable
/// ones, in order); empty for a step alone.
fn grouped(step: &Step) -> Vec<LifecycleOp> {
    match step {
        Step::One(_) => Vec::new(),
        Step::Group(a, b, c, d) => [Some(*a), Some(*b), *c, *d]
            .into_iter()
            .flatten()
            .filter(groupable)
            .collect(),
    }
}

/// Whether an operation can run inside a concurrent group. Crashes and
/// restarts stop the whole store; a rollback names a version the harness
/// learnt from an earlier step, which a concurrent write makes ambiguous;
/// snapshots are held by the harness across steps. Everything else runs
/// in groups.
fn groupable(op: &LifecycleOp) -> bool {
    !matches!(
        op,
        LifecycleOp::Arm(_)
            | LifecycleOp::Reopen
            | LifecycleOp::Rollback { .. }
            | LifecycleOp::Snapshot { .. }
            | LifecycleOp::DropSnapshot { .. }
    )
}

/// Run `steps` on a fresh store in a temporary directory against the model.
///
/// # Errors
/// The first disagreement between the store and the model.
pub async fn run_steps(steps: &[Step]) -> Result<()> {
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)?
    } else {
        tempfile::tempdir()?
    };
    let path = dir
        .path()
        .to_str()
        .ok_or_else(|| anyhow!("temporary path is not UTF-8"))?;
    // Not durable (the store's own durability is tested elsewhere; a crash
    // here is a process death, which the page cache survives), and zero
    // retention, so optimize prunes all it may.
    let opts = LanceDbOptions {
        durable: false,
        cleanup_older_than: std::time::Duration::ZERO,
        ..LanceDbOptions::default()
    };
    run_steps_at(path, opts, steps).await
}

/// Run `steps` against the model on a fresh, empty store at `location` (a
/// directory or an object-store URI such as `s3://bucket/prefix`), opened
/// with `opts` (and reopened with them after every crash).
///
/// # Errors
/// The first disagreement between the store and the model.
///
/// # Example
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use lancebranch::fuzzing::{decode_steps, run_steps_at};
/// let opts = lancebranch::lance::LanceDbOptions::default();
/// run_steps_at("/tmp/lifecycle", opts, &decode_steps(&[3, 1, 4, 1, 5])).await?;
/// # Ok(()) }
/// ```
pub async fn run_steps_at(location: &str, opts: LanceDbOptions, steps: &[Step]) -> Result<()> {
    let store = CrashableStore::open_with(location, opts).await?;
    let init: Rows = (0..3).map(|k| (k, k * 10)).collect();
    let rows: Vec<(i64, i64)> = init.iter().map(|(k, v)| (*k, *v)).collect();
    store.main().create_table("t0", vec![batch(&rows)?]).await?;
    let mut h = Harness {
        store,
        models: vec![Model::new(init)],
        snapshots: Vec::new(),
        history: BTreeMap::new(),
        next_key: 10,
    };
    for (i, step) in steps.iter().enumerate() {
        run_step(&mut h, step)
            .await
            .map_err(|e| e.context(format!("step {i}: {step:?}")))?;
    }
    h.store.main().disarm_failpoints();
    h.restart().await.map_err(|e| e.context("final restart"))
}

async fn run_step(h: &mut Harness, step: &Step) -> Result<()> {
    match step {
        Step::One(LifecycleOp::Arm(plan)) => h.store.arm(*plan),
        Step::One(LifecycleOp::Reopen) => {
            h.store.main().disarm_failpoints();
            h.restart().await
        }
        Step::One(op) => {
            let a = h.resolve(op, &mut BTreeSet::new());
            h.one(a).await
        }
        Step::Group(..) => {
            let ops = grouped(step);
            // A concurrent merge can bring a key of the shared range into
            // the table another operation of the group appends to: an
            // append of an existing key is legal and leaves it twice, which
            // the model's maps cannot hold. So a group appends none of the
            // shared keys any branch holds.
            let mut shared = h.shared_keys_held();
            let actions: Vec<Action> = ops.iter().map(|o| h.resolve(o, &mut shared)).collect();
            match actions.len() {
                0 => Ok(()),
                1 => h.one(actions[0].clone()).await,
                _ => h.group(actions).await,
            }
        }
    }
}
