//! Fuzz harnesses (feature `fuzzing`), shared by the cargo-fuzz targets in
//! `fuzz/` and by `cargo test`, which replays `fuzz/corpus/branch_ops` and
//! `fuzz/regressions/branch_ops` through them.
//!
//! [`branch_ops`] decodes a sequence of [`BranchOp`]s, runs it on a real
//! store in a temporary directory, crashing it wherever the input arms a
//! [`CrashPlan`](crate::testing::CrashPlan), and checks every branch after
//! each step against an in-memory model of rows, versions and merge bases.
//! A disagreement panics (that is how a fuzzer sees it).
//!
//! [`lifecycle_ops`] drives the whole public surface (several tables,
//! create / drop / re-create, replace, rollback, optimize, tags, snapshots,
//! transactions, diff, merges in both directions, branch deletion,
//! checkpoints, crashes), one operation at a time and in concurrent groups
//! checked against every serial order.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use arbitrary::{Arbitrary, Unstructured};
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::branched::{BranchedBackend, MergeOptions, PRIMARY_KEY_METADATA};
use crate::lance::LanceDbOptions;
use crate::testing::{BranchOp, CrashableStore, Policy, is_crash};
use crate::{ScanRequest, StorageBackend, WriteMode};

mod lifecycle;
mod model;

pub use lifecycle::{
    LifecycleOp, MAX_STEPS, Step, concurrency, decode_steps, lifecycle_ops, run_steps, run_steps_at,
};

/// The longest operation sequence one input runs.
pub const MAX_OPS: usize = 24;

/// Decode `data` into operations and run them (see the module docs).
///
/// # Panics
/// When the store disagrees with the model, or an operation fails other
/// than by an armed crash: a bug, with `data` as its reproducer.
///
/// # Example
/// ```no_run
/// lancebranch::fuzzing::branch_ops(&[0, 1, 2, 3, 4, 5, 6, 7]);
/// ```
pub fn branch_ops(data: &[u8]) {
    let ops = decode(data);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a runtime: {e}"),
    };
    if let Err(e) = rt.block_on(run(&ops)) {
        panic!("branch_ops: {e:#}\nops: {ops:?}");
    }
}

/// The operations `data` encodes (at most [`MAX_OPS`]).
pub fn decode(data: &[u8]) -> Vec<BranchOp> {
    decode_all(data, MAX_OPS)
}

/// Decode items of `T` from `data` until it runs out (or one does not
/// decode), at most `max`.
fn decode_all<T: for<'a> Arbitrary<'a>>(data: &[u8], max: usize) -> Vec<T> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while out.len() < max && !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(x) => out.push(x),
            Err(_) => break,
        }
    }
    out
}

type Rows = BTreeMap<i64, i64>;

/// A branch's table as the catalog sees it: its rows and the identity of
/// its version (a token shared by a fork and its parent until either
/// changes, as Lance versions are).
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    rows: Rows,
    token: u64,
}

#[derive(Debug, Clone)]
struct Branch {
    snap: Snap,
    parent: Option<String>,
    fork_point: Snap,
}

#[derive(Debug, Clone, Default)]
struct Model {
    branches: BTreeMap<String, Branch>,
    /// (target, source) → (target base, source base) of the next merge.
    bases: BTreeMap<(String, String), (Snap, Snap)>,
    next_key: i64,
    next_branch: u32,
    next_token: u64,
}

impl Model {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn nth_branch(&self, i: u8, skip_main: bool) -> Option<String> {
        let names: Vec<&String> = self
            .branches
            .keys()
            .filter(|n| !skip_main || n.as_str() != "main")
            .collect();
        (!names.is_empty()).then(|| names[usize::from(i) % names.len()].clone())
    }

    fn nth_key(&self, branch: &str, i: u8) -> Option<i64> {
        let keys: Vec<i64> = self.branches[branch].snap.rows.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[usize::from(i) % keys.len()])
    }

    fn set(&mut self, branch: &str, rows: Rows) {
        let token = self.token();
        if let Some(b) = self.branches.get_mut(branch) {
            b.snap = Snap { rows, token };
        }
    }

    /// The three-way merge of `source` into `target`, as the library does
    /// it: returns whether the target changed.
    fn merge(&mut self, target: &str, source: &str, child: &str, policy: Policy) {
        let key = (target.to_string(), source.to_string());
        let (tbase, sbase) = match self.bases.get(&key) {
            Some(b) => b.clone(),
            None => {
                let fp = self.branches[child].fork_point.clone();
                (fp.clone(), fp)
            }
        };
        let tcur = self.branches[target].snap.clone();
        let scur = self.branches[source].snap.clone();
        if sbase.token == scur.token {
            return; // nothing new on the source: no merge record at all
        }
        let mut keys: Vec<i64> = tbase
            .rows
            .keys()
            .chain(sbase.rows.keys())
            .chain(tcur.rows.keys())
            .chain(scur.rows.keys())
            .copied()
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut result = tcur.rows.clone();
        let mut conflict = false;
        for k in keys {
            let (tb, sb) = (tbase.rows.get(&k), sbase.rows.get(&k));
            let (o, t) = (tcur.rows.get(&k), scur.rows.get(&k));
            if sb == t {
                continue; // the source did not change k
            }
            let pick = if tb == o || o == t {
                t
            } else {
                conflict = true;
                match policy {
                    Policy::Theirs => t,
                    Policy::Ours | Policy::Fail => o,
                }
            };
            match pick {
                Some(v) => result.insert(k, *v),
                None => result.remove(&k),
            };
        }
        if conflict && policy == Policy::Fail {
            return;
        }
        if result != tcur.rows {
            self.set(target, result);
        }
        let after = self.branches[target].snap.clone();
        self.bases.insert(key, (after, scur.clone()));
        self.bases.insert(
            (source.to_string(), target.to_string()),
            (scur.clone(), scur),
        );
    }
}

fn schema() -> Arc<Schema> {
    let md = [(PRIMARY_KEY_METADATA.to_string(), "id".to_string())];
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ])
        .with_metadata(md.into_iter().collect()),
    )
}

fn batch(rows: &[(i64, i64)]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )?)
}

async fn contents(view: &BranchedBackend) -> Result<Rows> {
    let mut out = Rows::new();
    for b in view.scan(ScanRequest::table("t")).await? {
        let col = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| anyhow!("column {i} is not Int64"))
        };
        let (ids, vals) = (col(0)?, col(1)?);
        for i in 0..b.num_rows() {
            out.insert(ids.value(i), vals.value(i));
        }
    }
    Ok(out)
}

/// Check every branch (or just `only`) against the model.
async fn check(store: &CrashableStore, model: &Model, only: Option<&str>) -> Result<()> {
    let main = store.main();
    let mut names: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    names.sort();
    let want: Vec<String> = model.branches.keys().cloned().collect();
    if names != want {
        bail!("branches {names:?}, model {want:?}");
    }
    for (name, b) in &model.branches {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let got = contents(&main.branch(name)?).await?;
        if got != b.snap.rows {
            bail!("branch {name}: store {got:?}, model {:?}", b.snap.rows);
        }
    }
    Ok(())
}

/// Run `ops` on a fresh store in a temporary directory against the model.
///
/// # Errors
/// The first disagreement between the store and the model, or an
/// unexpected failure.
pub async fn run(ops: &[BranchOp]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir
        .path()
        .to_str()
        .ok_or_else(|| anyhow!("temporary path is not UTF-8"))?;
    let opts = LanceDbOptions {
        durable: false,
        ..LanceDbOptions::default()
    };
    let mut store = CrashableStore::open_with(path, opts).await?;
    let mut model = Model::default();
    let init: Vec<(i64, i64)> = (0..4).map(|k| (k, k * 10)).collect();
    store.main().create_table("t", vec![batch(&init)?]).await?;
    let token = model.token();
    let snap = Snap {
        rows: init.into_iter().collect(),
        token,
    };
    model.branches.insert(
        "main".into(),
        Branch {
            snap: snap.clone(),
            parent: None,
            fork_point: snap,
        },
    );
    model.next_key = 4;
    for (step, op) in ops.iter().enumerate() {
        let before = model.clone();
        let (result, touched) = apply(&store, &mut model, op).await;
        match result {
            Ok(()) => check(&store, &model, touched.as_deref()).await,
            Err(e) if is_crash(&e) => {
                // Cut: absent, except a branch deletion, which is visible
                // from its first record on and finished by recovery.
                if !matches!(op, BranchOp::DeleteBranch { .. }) {
                    model = before;
                }
                store
                    .crash()
                    .await
                    .map_err(|e| e.context(format!("step {step}: recovery after {op:?}")))?;
                check(&store, &model, None).await
            }
            Err(e) => Err(e.context("unexpected failure")),
        }
        .map_err(|e| e.context(format!("step {step}: {op:?}")))?;
    }
    store.main().disarm_failpoints();
    store
        .crash()
        .await
        .map_err(|e| e.context("final restart"))?;
    check(&store, &model, None)
        .await
        .map_err(|e| e.context("after the final restart"))
}

/// Apply one operation to the store and, when it succeeds, the model;
/// returns the branch to check (`None`: all). (Long by design: one arm
/// per operation, store and model side by side.)
async fn apply(
    store: &CrashableStore,
    model: &mut Model,
    op: &BranchOp,
) -> (Result<()>, Option<String>) {
    let main = store.main();
    match *op {
        BranchOp::Fork { from } => {
            let Some(from) = model.nth_branch(from, false) else {
                return (Ok(()), None);
            };
            if model.branches.len() >= 8 {
                return (Ok(()), None);
            }
            model.next_branch += 1;
            let name = format!("b{}", model.next_branch);
            let r = async { main.branch(&from)?.fork(&name).await.map(|_| ()) }.await;
            if r.is_ok() {
                let snap = model.branches[&from].snap.clone();
                model.branches.insert(
                    name.clone(),
                    Branch {
                        snap: snap.clone(),
                        parent: Some(from),
                        fork_point: snap,
                    },
                );
            }
            (r, Some(name))
        }
        BranchOp::Insert { branch, n } => {
            let Some(b) = model.nth_branch(branch, false) else {
                return (Ok(()), None);
            };
            let n = i64::from(n % 4) + 1;
            let rows: Vec<(i64, i64)> = (model.next_key..model.next_key + n)
                .map(|k| (k, k % 97))
                .collect();
            model.next_key += n;
            let r = async {
                main.branch(&b)?
                    .write("t", vec![batch(&rows)?], WriteMode::Append)
                    .await
            }
            .await;
            if r.is_ok() {
                let mut all = model.branches[&b].snap.rows.clone();
                all.extend(rows);
                model.set(&b, all);
            }
            (r, Some(b))
        }
        BranchOp::Update { branch, row, value } => {
            let Some(b) = model.nth_branch(branch, false) else {
                return (Ok(()), None);
            };
            let Some(k) = model.nth_key(&b, row) else {
                return (Ok(()), None);
            };
            let v = i64::from(value);
            let r = async {
                main.branch(&b)?
                    .merge_insert("t", &["id"], vec![batch(&[(k, v)])?])
                    .await
            }
            .await;
            if r.is_ok() {
                let mut all = model.branches[&b].snap.rows.clone();
                all.insert(k, v);
                model.set(&b, all);
            }
            (r, Some(b))
        }
        BranchOp::Delete { branch, row } => {
            let Some(b) = model.nth_branch(branch, false) else {
                return (Ok(()), None);
            };
            let Some(k) = model.nth_key(&b, row) else {
                return (Ok(()), None);
            };
            let r = async {
                main.branch(&b)?
                    .delete_rows("t", &format!("id = {k}"))
                    .await
            }
            .await;
            if r.is_ok() {
                let mut all = model.branches[&b].snap.rows.clone();
                all.remove(&k);
                model.set(&b, all);
            }
            (r, Some(b))
        }
        BranchOp::Merge {
            branch,
            down,
            policy,
        } => {
            let Some(child) = model.nth_branch(branch, true) else {
                return (Ok(()), None);
            };
            let Some(parent) = model.branches[&child].parent.clone() else {
                return (Ok(()), None);
            };
            let (target, source) = if down {
                (child.clone(), parent)
            } else {
                (parent, child.clone())
            };
            let opts = MergeOptions::default().default_policy(policy.into());
            let r = async {
                let (t, s) = (main.branch(&target)?, main.branch(&source)?);
                t.merge(&s, opts).await.map(|_| ())
            }
            .await;
            if r.is_ok() {
                model.merge(&target, &source, &child, policy);
            }
            (r, Some(target))
        }
        BranchOp::DeleteBranch { branch } => {
            let Some(b) = model.nth_branch(branch, true) else {
                return (Ok(()), None);
            };
            if model
                .branches
                .values()
                .any(|x| x.parent.as_deref() == Some(b.as_str()))
            {
                return (Ok(()), None);
            }
            let r = main.delete_branch(&b, false).await;
            // Applied from its first record on, even when cut.
            if r.is_ok() || r.as_ref().is_err_and(is_crash) {
                model.branches.remove(&b);
                model.bases.retain(|(t, s), _| *t != b && *s != b);
            }
            (r, None)
        }
        BranchOp::Checkpoint => (main.checkpoint().await, Some("main".into())),
        BranchOp::Arm(plan) => (store.arm(plan), Some("main".into())),
        BranchOp::Reopen => {
            main.disarm_failpoints();
            // A clean restart is a crash with nothing in flight.
            (Err(crate::Error::FailPoint("reopen".into()).into()), None)
        }
    }
}
