//! Real process kills: a child process (this test binary, re-run on
//! [`child_process_entry`]) runs a seeded random workload of forks, writes,
//! deletes, merges and branch deletions, printing `ACK i` after each
//! acknowledged operation; the parent SIGKILLs it at a random moment,
//! reopens the store, and checks it against a model of every branch: the
//! state must be exactly "every acknowledged operation" or that plus the
//! one in flight, never anything else. At least 20 kills per run.
//!
//! `LANCEBRANCH_KILL_SEED=<n>` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lancebranch::branched::{BranchedBackend, ConflictPolicy, MergeOptions};
use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use crate::conformance::data::*;

const CHILD_ENV: &str = "LANCEBRANCH_KILL_CHILD";
const KILLS: usize = 20;
const OPS_PER_ROUND: usize = 40;

/// One operation of the workload, as sent to the child (one line each).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Fork { new: String, from: String },
    Write { branch: String, start: i64, n: i64 },
    Delete { branch: String, id: i64 },
    Merge { child: String, parent: String },
    Drop { branch: String },
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Fork { new, from } => format!("fork {new} {from}"),
            Op::Write { branch, start, n } => format!("write {branch} {start} {n}"),
            Op::Delete { branch, id } => format!("del {branch} {id}"),
            Op::Merge { child, parent } => format!("merge {child} {parent}"),
            Op::Drop { branch } => format!("drop {branch}"),
        }
    }

    fn parse(line: &str) -> Op {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["fork", new, from] => Op::Fork {
                new: new.to_string(),
                from: from.to_string(),
            },
            ["write", b, s, n] => Op::Write {
                branch: b.to_string(),
                start: s.parse().unwrap(),
                n: n.parse().unwrap(),
            },
            ["del", b, id] => Op::Delete {
                branch: b.to_string(),
                id: id.parse().unwrap(),
            },
            ["merge", c, p] => Op::Merge {
                child: c.to_string(),
                parent: p.to_string(),
            },
            ["drop", b] => Op::Drop {
                branch: b.to_string(),
            },
            _ => panic!("bad op line {line:?}"),
        }
    }
}

/// Every branch's rows (ids of table `t`), parents, and merge bases.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    rows: BTreeMap<String, BTreeSet<i64>>,
    parent: BTreeMap<String, String>,
    /// (parent, child) → the child's rows at the fork or the last merge.
    base: BTreeMap<(String, String), BTreeSet<i64>>,
    next_id: i64,
    next_branch: u64,
}

impl Model {
    fn new() -> Self {
        let mut rows = BTreeMap::new();
        rows.insert("main".to_string(), (0..5).collect());
        Self {
            rows,
            parent: BTreeMap::new(),
            base: BTreeMap::new(),
            next_id: 5,
            next_branch: 0,
        }
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
                self.rows.get_mut(branch).unwrap().extend(*start..start + n);
                self.next_id = self.next_id.max(start + n);
            }
            Op::Delete { branch, id } => {
                self.rows.get_mut(branch).unwrap().remove(id);
            }
            Op::Merge { child, parent } => {
                // Three-way, theirs wins: every key the child changed since
                // the base takes the child's presence.
                let key = (parent.clone(), child.clone());
                let base = self.base[&key].clone();
                let theirs = self.rows[child].clone();
                let ours = self.rows.get_mut(parent).unwrap();
                for k in base.symmetric_difference(&theirs) {
                    if theirs.contains(k) {
                        ours.insert(*k);
                    } else {
                        ours.remove(k);
                    }
                }
                self.base.insert(key, theirs);
            }
            Op::Drop { branch } => {
                self.rows.remove(branch);
                self.parent.remove(branch);
                self.base.retain(|(p, c), _| p != branch && c != branch);
            }
        }
    }

    /// A random valid next operation.
    fn next_op(&mut self, rng: &mut Rng) -> Op {
        let branches: Vec<String> = self.rows.keys().cloned().collect();
        let pick = |rng: &mut Rng, v: &[String]| v[rng.below(v.len() as u64) as usize].clone();
        loop {
            let roll = rng.below(100);
            if roll < 35 {
                let branch = pick(rng, &branches);
                let n = 1 + rng.below(3) as i64;
                let start = self.next_id;
                self.next_id += n;
                return Op::Write { branch, start, n };
            } else if roll < 50 {
                let branch = pick(rng, &branches);
                let ids: Vec<i64> = self.rows[&branch].iter().copied().collect();
                if ids.is_empty() {
                    continue;
                }
                let id = ids[rng.below(ids.len() as u64) as usize];
                return Op::Delete { branch, id };
            } else if roll < 70 {
                if branches.len() >= 6 {
                    continue;
                }
                self.next_branch += 1;
                let new = format!("k{}", self.next_branch);
                return Op::Fork {
                    new,
                    from: pick(rng, &branches),
                };
            } else if roll < 90 {
                let children: Vec<String> = self.parent.keys().cloned().collect();
                if children.is_empty() {
                    continue;
                }
                let child = pick(rng, &children);
                let parent = self.parent[&child].clone();
                return Op::Merge { child, parent };
            } else {
                let leaves: Vec<String> = self
                    .parent
                    .keys()
                    .filter(|b| !self.parent.values().any(|p| p == *b))
                    .cloned()
                    .collect();
                if leaves.is_empty() {
                    continue;
                }
                return Op::Drop {
                    branch: pick(rng, &leaves),
                };
            }
        }
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
            let opts = MergeOptions::default()
                .key("t", &["id"])
                .policy("t", ConflictPolicy::Theirs);
            let (c, p) = (main.branch(child)?, main.branch(parent)?);
            p.merge(&c, opts).await.map(|_| ())
        }
        Op::Drop { branch } => main.delete_branch(branch, false).await,
    }
}

/// The store as the model sees it: every branch's ids.
async fn observe(main: &BranchedBackend) -> BTreeMap<String, BTreeSet<i64>> {
    let mut out = BTreeMap::new();
    for b in main.list_branches() {
        let view = main.branch(&b.name).unwrap();
        let batches = view.scan(ScanRequest::table("t")).await.unwrap();
        out.insert(b.name, ints(&batches, "id").into_iter().collect());
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
        model = if seen == acked_model.rows {
            acked_model
        } else if let Some(next) = next.filter(|n| n.rows == seen) {
            in_flight_applied += 1;
            next
        } else {
            panic!(
                "kill {kills}: store {seen:?}\nacknowledged {:?}\nin flight {:?}",
                acked_model.rows,
                plan.get(done)
            );
        };
        if let Err(e) = lancebranch::testing::recover_and_check(&main).await {
            panic!("kill {kills}: {e:#}");
        }
        model.next_id = model.next_id.max(planner.next_id);
        model.next_branch = model.next_branch.max(planner.next_branch);
    }
    eprintln!(
        "kill_recovery: {kills} kills, {acked_total} acknowledged operations verified, \
         {in_flight_applied} in-flight operations found applied, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
