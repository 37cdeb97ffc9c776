//! Real process kills: a child process (this test binary, re-run on
//! [`child_process_entry`]) runs a seeded random workload of forks, writes,
//! deletes, replaces and optimizes of table `t`, creates and drops of table
//! `u`, merges (child into parent, theirs wins), tags and tag deletions,
//! and branch deletions, printing `ACK i` after each acknowledged
//! operation; the parent SIGKILLs it at a random moment, reopens the store,
//! and checks it against a model of every branch's tables and every tag's
//! tables: the state must be exactly "every acknowledged operation" or that
//! plus the one in flight, never anything else. At least 20 kills per run.
//!
//! `LANCEBRANCH_KILL_SEED=<n>` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lancebranch::branched::{BranchedBackend, ConflictPolicy, MergeOptions};
use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::*;

const CHILD_ENV: &str = "LANCEBRANCH_KILL_CHILD";
const KILLS: usize = 20;
const OPS_PER_ROUND: usize = 40;
const MAX_BRANCHES: usize = 6;
const MAX_TAGS: usize = 3;

/// One operation of the workload, as sent to the child (one line each).
/// `CreateU` makes table `u` (absent on the branch) with ids
/// `start..start+n`, `DropU` drops it; `Replace` makes `t`'s rows exactly
/// `start..start+n`; `Optimize` compacts `t` (no content change).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Fork { new: String, from: String },
    Write { branch: String, start: i64, n: i64 },
    Delete { branch: String, id: i64 },
    Merge { child: String, parent: String },
    Drop { branch: String },
    CreateU { branch: String, start: i64, n: i64 },
    DropU { branch: String },
    Replace { branch: String, start: i64, n: i64 },
    Optimize { branch: String },
    Tag { branch: String, name: String },
    DeleteTag { name: String },
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Fork { new, from } => format!("fork {new} {from}"),
            Op::Write { branch, start, n } => format!("write {branch} {start} {n}"),
            Op::Delete { branch, id } => format!("del {branch} {id}"),
            Op::Merge { child, parent } => format!("merge {child} {parent}"),
            Op::Drop { branch } => format!("drop {branch}"),
            Op::CreateU { branch, start, n } => format!("createu {branch} {start} {n}"),
            Op::DropU { branch } => format!("dropu {branch}"),
            Op::Replace { branch, start, n } => format!("replace {branch} {start} {n}"),
            Op::Optimize { branch } => format!("optimize {branch}"),
            Op::Tag { branch, name } => format!("tag {branch} {name}"),
            Op::DeleteTag { name } => format!("deltag {name}"),
        }
    }

    fn parse(line: &str) -> Op {
        fn s(x: &str) -> String {
            x.to_string()
        }
        fn i(x: &str) -> i64 {
            x.parse().unwrap()
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["fork", new, from] => Op::Fork {
                new: s(new),
                from: s(from),
            },
            ["write", b, st, n] => Op::Write {
                branch: s(b),
                start: i(st),
                n: i(n),
            },
            ["del", b, id] => Op::Delete {
                branch: s(b),
                id: i(id),
            },
            ["merge", c, p] => Op::Merge {
                child: s(c),
                parent: s(p),
            },
            ["drop", b] => Op::Drop { branch: s(b) },
            ["createu", b, st, n] => Op::CreateU {
                branch: s(b),
                start: i(st),
                n: i(n),
            },
            ["dropu", b] => Op::DropU { branch: s(b) },
            ["replace", b, st, n] => Op::Replace {
                branch: s(b),
                start: i(st),
                n: i(n),
            },
            ["optimize", b] => Op::Optimize { branch: s(b) },
            ["tag", b, name] => Op::Tag {
                branch: s(b),
                name: s(name),
            },
            ["deltag", name] => Op::DeleteTag { name: s(name) },
            _ => panic!("bad op line {line:?}"),
        }
    }
}

/// A branch's (or tag's) tables: table name → ids.
type Tables = BTreeMap<String, BTreeSet<i64>>;

/// What a store shows, comparable with a [`Model`]: every branch's tables,
/// and every tag's branch and pinned tables.
#[derive(Debug, Clone, PartialEq, Default)]
struct State {
    branches: BTreeMap<String, Tables>,
    tags: BTreeMap<String, (String, Tables)>,
}

/// Every branch's tables, parents, merge bases, and tags.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    rows: BTreeMap<String, Tables>,
    parent: BTreeMap<String, String>,
    /// (parent, child) → the child's tables at the fork or the last merge.
    base: BTreeMap<(String, String), Tables>,
    /// Tag → the branch it was taken on and that branch's tables then.
    tags: BTreeMap<String, (String, Tables)>,
    next_id: i64,
    next_branch: u64,
    next_tag: u64,
}

fn pick(rng: &mut Rng, v: &[String]) -> String {
    v[rng.below(v.len() as u64) as usize].clone()
}

impl Model {
    fn new() -> Self {
        let mut main = Tables::new();
        main.insert("t".to_string(), (0..5).collect());
        let mut rows = BTreeMap::new();
        rows.insert("main".to_string(), main);
        Self {
            rows,
            parent: BTreeMap::new(),
            base: BTreeMap::new(),
            tags: BTreeMap::new(),
            next_id: 5,
            next_branch: 0,
            next_tag: 0,
        }
    }

    /// The comparable state the store should show.
    fn state(&self) -> State {
        State {
            branches: self.rows.clone(),
            tags: self.tags.clone(),
        }
    }

    fn tables_mut(&mut self, branch: &str) -> &mut Tables {
        self.rows.get_mut(branch).unwrap()
    }

    fn table_mut(&mut self, branch: &str, table: &str) -> &mut BTreeSet<i64> {
        self.tables_mut(branch).get_mut(table).unwrap()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Fork { new, from } => {
                let r = self.rows[from].clone();
                self.base.insert((from.clone(), new.clone()), r.clone());
                self.rows.insert(new.clone(), r);
                self.parent.insert(new.clone(), from.clone());
            }
            Op::Write { branch, start, n } => {
                self.table_mut(branch, "t").extend(*start..start + n);
                self.next_id = self.next_id.max(start + n);
            }
            Op::Delete { branch, id } => {
                self.table_mut(branch, "t").remove(id);
            }
            Op::Merge { child, parent } => self.merge(child, parent),
            Op::Drop { branch } => {
                self.rows.remove(branch);
                self.parent.remove(branch);
                self.base.retain(|(p, c), _| p != branch && c != branch);
            }
            Op::CreateU { branch, start, n } => {
                let ids: BTreeSet<i64> = (*start..start + n).collect();
                self.tables_mut(branch).insert("u".to_string(), ids);
                self.next_id = self.next_id.max(start + n);
            }
            Op::DropU { branch } => {
                self.tables_mut(branch).remove("u");
            }
            Op::Replace { branch, start, n } => {
                *self.table_mut(branch, "t") = (*start..start + n).collect();
                self.next_id = self.next_id.max(start + n);
            }
            Op::Optimize { .. } => {}
            Op::Tag { branch, name } => {
                let tables = self.rows[branch].clone();
                self.tags.insert(name.clone(), (branch.clone(), tables));
            }
            Op::DeleteTag { name } => {
                self.tags.remove(name);
            }
        }
    }

    /// Merge `child` into `parent`, theirs wins, table by table as the
    /// library does: a table the child left as it was at the base is
    /// skipped; one it dropped is dropped; one the parent lacks is copied;
    /// otherwise every key the child changed since the base takes the
    /// child's presence.
    fn merge(&mut self, child: &str, parent: &str) {
        let key = (parent.to_string(), child.to_string());
        let base = self.base[&key].clone();
        let theirs = self.rows[child].clone();
        let ours = self.tables_mut(parent);
        let names: BTreeSet<&String> = base.keys().chain(theirs.keys()).collect();
        let empty = BTreeSet::new();
        for t in names {
            let (sb, sc) = (base.get(t), theirs.get(t));
            if sb == sc {
                continue;
            }
            let Some(sc) = sc else {
                ours.remove(t);
                continue;
            };
            if !ours.contains_key(t) {
                ours.insert(t.clone(), sc.clone());
                continue;
            }
            let mine = ours.get_mut(t).unwrap();
            for k in sb.unwrap_or(&empty).symmetric_difference(sc) {
                if sc.contains(k) {
                    mine.insert(*k);
                } else {
                    mine.remove(k);
                }
            }
        }
        self.base.insert(key, theirs);
    }

    fn branches(&self) -> Vec<String> {
        self.rows.keys().cloned().collect()
    }

    /// A random valid next operation.
    fn next_op(&mut self, rng: &mut Rng) -> Op {
        loop {
            let roll = rng.below(100);
            let op = match roll {
                0..25 => Some(self.plan_write(rng)),
                25..35 => self.plan_delete(rng),
                35..50 => self.plan_fork(rng),
                50..65 => self.plan_merge(rng),
                65..73 => Some(self.plan_u(rng)),
                73..80 => Some(self.plan_replace(rng)),
                80..85 => Some(Op::Optimize {
                    branch: pick(rng, &self.branches()),
                }),
                85..92 => Some(self.plan_tag(rng)),
                _ => self.plan_drop(rng),
            };
            if let Some(op) = op {
                return op;
            }
        }
    }

    fn plan_write(&mut self, rng: &mut Rng) -> Op {
        let branch = pick(rng, &self.branches());
        let n = 1 + rng.below(3) as i64;
        let start = self.next_id;
        self.next_id += n;
        Op::Write { branch, start, n }
    }

    fn plan_delete(&self, rng: &mut Rng) -> Option<Op> {
        let branch = pick(rng, &self.branches());
        let ids: Vec<i64> = self.rows[&branch]["t"].iter().copied().collect();
        if ids.is_empty() {
            return None;
        }
        let id = ids[rng.below(ids.len() as u64) as usize];
        Some(Op::Delete { branch, id })
    }

    fn plan_fork(&mut self, rng: &mut Rng) -> Option<Op> {
        if self.rows.len() >= MAX_BRANCHES {
            return None;
        }
        let from = pick(rng, &self.branches());
        self.next_branch += 1;
        let new = format!("k{}", self.next_branch);
        Some(Op::Fork { new, from })
    }

    fn plan_merge(&self, rng: &mut Rng) -> Option<Op> {
        let children: Vec<String> = self.parent.keys().cloned().collect();
        if children.is_empty() {
            return None;
        }
        let child = pick(rng, &children);
        let parent = self.parent[&child].clone();
        Some(Op::Merge { child, parent })
    }

    /// Drop `u` where it exists, else create it with fresh ids.
    fn plan_u(&mut self, rng: &mut Rng) -> Op {
        let branch = pick(rng, &self.branches());
        if self.rows[&branch].contains_key("u") {
            return Op::DropU { branch };
        }
        let n = 1 + rng.below(3) as i64;
        let start = self.next_id;
        self.next_id += n;
        Op::CreateU { branch, start, n }
    }

    /// Replace `t` with a run of ids that may overlap the newest ones.
    fn plan_replace(&mut self, rng: &mut Rng) -> Op {
        let branch = pick(rng, &self.branches());
        let n = 1 + rng.below(4) as i64;
        let start = (self.next_id - rng.below(4) as i64).max(0);
        self.next_id = self.next_id.max(start + n);
        Op::Replace { branch, start, n }
    }

    /// Delete a tag (always when there are [`MAX_TAGS`]), else take one
    /// under a fresh name.
    fn plan_tag(&mut self, rng: &mut Rng) -> Op {
        let tags: Vec<String> = self.tags.keys().cloned().collect();
        if !tags.is_empty() && (tags.len() >= MAX_TAGS || rng.below(2) == 0) {
            return Op::DeleteTag {
                name: pick(rng, &tags),
            };
        }
        let branch = pick(rng, &self.branches());
        self.next_tag += 1;
        let mut name = format!("g{}", self.next_tag);
        while self.tags.contains_key(&name) {
            self.next_tag += 1;
            name = format!("g{}", self.next_tag);
        }
        Op::Tag { branch, name }
    }

    /// Delete a leaf branch no tag was taken on (the library refuses to
    /// delete a branch a tag pins).
    fn plan_drop(&self, rng: &mut Rng) -> Option<Op> {
        let leaves: Vec<String> = self
            .parent
            .keys()
            .filter(|b| !self.parent.values().any(|p| p == *b))
            .filter(|b| !self.tags.values().any(|(tb, _)| tb == *b))
            .cloned()
            .collect();
        if leaves.is_empty() {
            return None;
        }
        Some(Op::Drop {
            branch: pick(rng, &leaves),
        })
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn open(dir: &str) -> BranchedBackend {
    let inner = Arc::new(LanceDbBackend::open(dir).await.unwrap());
    BranchedBackend::open(inner).await.unwrap()
}

fn merge_options() -> MergeOptions {
    MergeOptions::default()
        .key("t", &["id"])
        .key("u", &["id"])
        .policy("t", ConflictPolicy::Theirs)
        .policy("u", ConflictPolicy::Theirs)
}

async fn execute(main: &BranchedBackend, op: &Op) -> anyhow::Result<()> {
    match op {
        Op::Fork { new, from } => main.branch(from)?.fork(new).await.map(|_| ()),
        Op::Write { branch, start, n } => {
            main.branch(branch)?
                .write("t", vec![people(*start..start + n)], WriteMode::Append)
                .await
        }
        Op::Delete { branch, id } => {
            main.branch(branch)?
                .delete_rows("t", &format!("id = {id}"))
                .await
        }
        Op::Merge { child, parent } => {
            let (c, p) = (main.branch(child)?, main.branch(parent)?);
            p.merge(&c, merge_options()).await.map(|_| ())
        }
        Op::Drop { branch } => main.delete_branch(branch, false).await,
        Op::CreateU { branch, start, n } => {
            main.branch(branch)?
                .create_table("u", vec![people(*start..start + n)])
                .await
        }
        Op::DropU { branch } => main.branch(branch)?.drop_table("u").await,
        Op::Replace { branch, start, n } => {
            main.branch(branch)?
                .replace_table_atomic("t", vec![people(*start..start + n)], people_schema())
                .await
        }
        Op::Optimize { branch } => main.branch(branch)?.optimize_table("t").await,
        Op::Tag { branch, name } => main.branch(branch)?.tag(name).await,
        Op::DeleteTag { name } => main.delete_tag(name).await,
    }
}

/// Every table of `view`, with its ids.
async fn tables_of(view: &BranchedBackend) -> Tables {
    let mut out = Tables::new();
    for t in view.table_names().await.unwrap() {
        let batches = view.scan(ScanRequest::table(t.as_str())).await.unwrap();
        out.insert(t, ints(&batches, "id").into_iter().collect());
    }
    out
}

/// The store as the model sees it: every branch's tables and every tag's
/// branch and tables.
async fn observe(main: &BranchedBackend) -> State {
    let mut out = State::default();
    for b in main.list_branches() {
        let view = main.branch(&b.name).unwrap();
        out.branches.insert(b.name, tables_of(&view).await);
    }
    for tag in main.list_tags() {
        let view = main.at_tag(&tag.name).unwrap();
        let tables = tables_of(&view).await;
        out.tags.insert(tag.name, (tag.branch, tables));
    }
    out
}

/// Not a test on its own: the child process of
/// [`kill_recovery_loop`], run only when `LANCEBRANCH_KILL_CHILD` names a
/// store. Reads operations from stdin and acknowledges each on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let main = open(&dir).await;
    println!("READY");
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    for (i, line) in input.lines().enumerate() {
        execute(&main, &Op::parse(line)).await.unwrap();
        println!("ACK {i}");
        std::io::stdout().flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_recovery_loop() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = std::env::var("LANCEBRANCH_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    eprintln!("kill_recovery seed {seed} (LANCEBRANCH_KILL_SEED to replay)");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    {
        let main = open(&path).await;
        main.create_table("t", vec![people(0..5)]).await.unwrap();
    }
    let mut model = Model::new();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let (mut kills, mut in_flight_applied, mut acked_total) = (0, 0, 0);
    while kills < KILLS {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "kill loop took too long ({kills} kills)"
        );
        // Plan a round, with the model after each of its operations.
        let mut planner = model.clone();
        let mut plan = Vec::new();
        let mut after = Vec::new();
        for _ in 0..OPS_PER_ROUND {
            let op = planner.next_op(&mut rng);
            planner.apply(&op);
            plan.push(op);
            after.push(planner.clone());
        }
        let mut child = Command::new(&exe)
            .args([
                "kill_recovery::child_process_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for op in &plan {
            writeln!(stdin, "{}", op.line()).unwrap();
        }
        drop(stdin);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment after the child has opened the store.
        let mut acked: Option<usize> = None;
        let mut ready = false;
        while !ready {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child died before opening the store");
            // libtest prints the test name first, on the same line.
            ready = line.ends_with("READY");
        }
        let deadline = Instant::now() + Duration::from_millis(20 + rng.below(1200));
        let mut finished = false;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(line) => {
                    if let Some(i) = line.strip_prefix("ACK ") {
                        acked = Some(i.parse().unwrap());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    finished = true;
                    break;
                }
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        for line in rx.try_iter() {
            if let Some(i) = line.strip_prefix("ACK ") {
                acked = Some(i.parse().unwrap());
            }
        }
        if !finished {
            kills += 1;
        }
        let done = acked.map_or(0, |i| i + 1);
        assert!(
            finished || !status.success() || done == plan.len(),
            "child failed: {status}"
        );
        acked_total += done;

        // Exactly the acknowledged operations, or those plus the one in flight.
        let main = open(&path).await;
        let seen = observe(&main).await;
        let acked_model = if done == 0 {
            model.clone()
        } else {
            after[done - 1].clone()
        };
        let next = after.get(done).cloned();
        model = if seen == acked_model.state() {
            acked_model
        } else if let Some(next) = next.filter(|n| n.state() == seen) {
            in_flight_applied += 1;
            next
        } else {
            panic!(
                "kill {kills}: store {seen:?}\nacknowledged {:?}\nin flight {:?}\n\
                 after it {:?}",
                acked_model.state(),
                plan.get(done),
                after.get(done).map(Model::state)
            );
        };
        if let Err(e) = lancebranch::testing::recover_and_check(&main).await {
            panic!("kill {kills}: {e:#}");
        }
        model.next_id = model.next_id.max(planner.next_id);
        model.next_branch = model.next_branch.max(planner.next_branch);
        model.next_tag = model.next_tag.max(planner.next_tag);
    }
    eprintln!(
        "kill_recovery: {kills} kills, {acked_total} acknowledged operations verified, \
         {in_flight_applied} in-flight operations found applied, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
