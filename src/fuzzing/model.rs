//! The reference model of a branched store for [`super::lifecycle`]: every
//! branch, tag and merge base as plain maps, and each operation applied to
//! them as the library documents it. Every table has the schema
//! `id: Int64` (the key), `v: Int64`.
//!
//! A table's `token` stands for the identity of the version a branch reads
//! (a fork shares its parent's tokens until either changes the table):
//! merge and diff compare those, as the library compares versions.

use std::collections::{BTreeMap, BTreeSet};

use crate::testing::Policy;

/// A table's rows: key → value.
pub(crate) type Rows = BTreeMap<i64, i64>;

/// A table as one branch reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tab {
    pub rows: Rows,
    pub token: u64,
}

/// Tables by name.
pub(crate) type Tables = BTreeMap<String, Tab>;

/// One branch.
#[derive(Debug, Clone)]
pub(crate) struct Br {
    pub tables: Tables,
    pub parent: Option<String>,
    pub fork_point: Tables,
}

/// The whole model.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    pub branches: BTreeMap<String, Br>,
    /// Tag → (branch, tables).
    pub tags: BTreeMap<String, (String, Tables)>,
    /// (target, source) → (target base, source base).
    pub bases: BTreeMap<(String, String), (Tables, Tables)>,
    pub next_token: u64,
}

/// One concrete operation, its names and keys already chosen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Nothing,
    Fork {
        from: String,
        name: String,
    },
    ForkAt {
        tag: String,
        name: String,
    },
    Tag {
        branch: String,
        name: String,
    },
    DeleteTag {
        name: String,
    },
    Create {
        branch: String,
        table: String,
        rows: Vec<(i64, i64)>,
    },
    Drop {
        branch: String,
        table: String,
    },
    Insert {
        branch: String,
        table: String,
        rows: Vec<(i64, i64)>,
    },
    Update {
        branch: String,
        table: String,
        key: i64,
        value: i64,
    },
    Delete {
        branch: String,
        table: String,
        key: i64,
    },
    Replace {
        branch: String,
        table: String,
        rows: Vec<(i64, i64)>,
    },
    Rollback {
        branch: String,
        table: String,
        version: u64,
        rows: Rows,
    },
    Optimize {
        branch: String,
        table: String,
    },
    Txn {
        branch: String,
        a: String,
        rows: Vec<(i64, i64)>,
        b: String,
        key: i64,
    },
    Merge {
        target: String,
        source: String,
        policy: Policy,
    },
    Diff {
        target: String,
        source: String,
    },
    Snapshot {
        branch: String,
    },
    DropSnapshot {
        i: usize,
    },
    DeleteBranch {
        branch: String,
        cascade: bool,
    },
    Checkpoint,
}

/// What a diff reports per table: change kind (0 created, 1 dropped,
/// 2 modified) and (inserted, updated, deleted).
pub(crate) type DiffSummary = BTreeMap<String, (u8, (usize, usize, usize))>;

/// What an operation returns when it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Done,
    Merge { conflicted: bool },
    Diff(DiffSummary),
}

/// An operation's result: success, or the name of its typed error.
pub(crate) type Res = Result<Out, &'static str>;

fn token_of(t: Option<&Tab>) -> Option<u64> {
    t.map(|t| t.token)
}

impl Model {
    pub fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A fresh model: `main` with table `t0` holding `rows`.
    pub fn new(rows: Rows) -> Self {
        let mut m = Model::default();
        let token = m.token();
        let tables: Tables = [("t0".to_string(), Tab { rows, token })].into();
        m.branches.insert(
            "main".into(),
            Br {
                tables: tables.clone(),
                parent: None,
                fork_point: tables,
            },
        );
        m
    }

    fn branch(&self, b: &str) -> Result<&Br, &'static str> {
        self.branches.get(b).ok_or("BranchNotFound")
    }

    fn table(&self, b: &str, t: &str) -> Result<&Tab, &'static str> {
        self.branch(b)?.tables.get(t).ok_or("TableNotFound")
    }

    /// Give a table of a branch a new version with the same rows (what a
    /// compaction that rewrote files publishes); nothing if it is absent.
    pub fn bump(&mut self, b: &str, t: &str) {
        let rows = match self.branches.get(b).and_then(|br| br.tables.get(t)) {
            Some(tab) => tab.rows.clone(),
            None => return,
        };
        self.set(b, t, rows);
    }

    /// Replace a table's rows on a branch with a new version.
    fn set(&mut self, b: &str, t: &str, rows: Rows) {
        let token = self.token();
        if let Some(br) = self.branches.get_mut(b) {
            br.tables.insert(t.to_string(), Tab { rows, token });
        }
    }

    /// Apply `a`; the result the library must give for it. (Long by
    /// design: the specification, one arm per operation.)
    pub fn apply(&mut self, a: &Action) -> Res {
        match a {
            Action::Nothing | Action::Checkpoint | Action::DropSnapshot { .. } => Ok(Out::Done),
            Action::Snapshot { branch } => self.branch(branch).map(|_| Out::Done),
            Action::Optimize { branch, table } => self.table(branch, table).map(|_| Out::Done),
            Action::Fork { from, name } => {
                let tables = self.branch(from)?.tables.clone();
                if self.branches.contains_key(name) {
                    return Err("BranchExists");
                }
                let br = Br {
                    fork_point: tables.clone(),
                    tables,
                    parent: Some(from.clone()),
                };
                self.branches.insert(name.clone(), br);
                Ok(Out::Done)
            }
            Action::ForkAt { tag, name } => {
                let (parent, tables) = self.tags.get(tag).cloned().ok_or("TagNotFound")?;
                if self.branches.contains_key(name) {
                    return Err("BranchExists");
                }
                let br = Br {
                    fork_point: tables.clone(),
                    tables,
                    parent: Some(parent),
                };
                self.branches.insert(name.clone(), br);
                Ok(Out::Done)
            }
            Action::Tag { branch, name } => {
                let tables = self.branch(branch)?.tables.clone();
                if self.tags.contains_key(name) {
                    return Err("TagExists");
                }
                self.tags.insert(name.clone(), (branch.clone(), tables));
                Ok(Out::Done)
            }
            Action::DeleteTag { name } => {
                self.tags.remove(name).ok_or("TagNotFound")?;
                Ok(Out::Done)
            }
            Action::Create {
                branch,
                table,
                rows,
            } => {
                if self.branch(branch)?.tables.contains_key(table) {
                    return Err("TableExists");
                }
                self.set(branch, table, rows.iter().copied().collect());
                Ok(Out::Done)
            }
            Action::Drop { branch, table } => {
                self.table(branch, table)?;
                if let Some(br) = self.branches.get_mut(branch) {
                    br.tables.remove(table);
                }
                Ok(Out::Done)
            }
            Action::Insert {
                branch,
                table,
                rows,
            } => {
                let mut all = self.table(branch, table)?.rows.clone();
                all.extend(rows.iter().copied());
                self.set(branch, table, all);
                Ok(Out::Done)
            }
            Action::Update {
                branch,
                table,
                key,
                value,
            } => {
                let mut all = self.table(branch, table)?.rows.clone();
                if let Some(v) = all.get_mut(key) {
                    *v = *value;
                }
                // Lance commits a version even when no row matched.
                self.set(branch, table, all);
                Ok(Out::Done)
            }
            Action::Delete { branch, table, key } => {
                let mut all = self.table(branch, table)?.rows.clone();
                all.remove(key);
                self.set(branch, table, all);
                Ok(Out::Done)
            }
            Action::Replace {
                branch,
                table,
                rows,
            } => {
                self.branch(branch)?;
                self.set(branch, table, rows.iter().copied().collect());
                Ok(Out::Done)
            }
            Action::Rollback {
                branch,
                table,
                rows,
                ..
            } => {
                self.table(branch, table)?;
                self.set(branch, table, rows.clone());
                Ok(Out::Done)
            }
            Action::Txn {
                branch,
                a,
                rows,
                b,
                key,
            } => {
                let mut names = [a, b];
                names.sort();
                for t in names {
                    self.table(branch, t)?;
                }
                let mut ra = self.table(branch, a)?.rows.clone();
                ra.extend(rows.iter().copied());
                self.set(branch, a, ra);
                let mut rb = self.table(branch, b)?.rows.clone();
                rb.remove(key);
                self.set(branch, b, rb);
                Ok(Out::Done)
            }
            Action::Merge {
                target,
                source,
                policy,
            } => self.merge(target, source, *policy),
            Action::Diff { target, source } => self.diff(target, source).map(Out::Diff),
            Action::DeleteBranch { branch, cascade } => self.delete_branch(branch, *cascade),
        }
    }

    /// The merge bases of `source` into `target` (target side, source side).
    fn bases_of(&self, target: &str, source: &str) -> Result<(Tables, Tables), &'static str> {
        if let Some(b) = self.bases.get(&(target.to_string(), source.to_string())) {
            return Ok(b.clone());
        }
        let (t, s) = (self.branch(target)?, self.branch(source)?);
        if s.parent.as_deref() == Some(target) {
            return Ok((s.fork_point.clone(), s.fork_point.clone()));
        }
        if t.parent.as_deref() == Some(source) {
            return Ok((t.fork_point.clone(), t.fork_point.clone()));
        }
        if t.parent.is_some() && t.parent == s.parent {
            return Ok((t.fork_point.clone(), s.fork_point.clone()));
        }
        Err("NoMergeBase")
    }

    fn diff(&self, target: &str, source: &str) -> Result<DiffSummary, &'static str> {
        let (_, sbase) = self.bases_of(target, source)?;
        let cur = &self.branch(source)?.tables;
        let names: BTreeSet<&String> = sbase.keys().chain(cur.keys()).collect();
        let mut out = DiffSummary::new();
        for t in names {
            let (b, c) = (sbase.get(t), cur.get(t));
            if token_of(b) == token_of(c) {
                continue;
            }
            let empty = Rows::new();
            let (br, cr) = (b.map_or(&empty, |x| &x.rows), c.map_or(&empty, |x| &x.rows));
            let mut counts = (0, 0, 0);
            for k in br.keys().chain(cr.keys()).collect::<BTreeSet<_>>() {
                match (br.get(k), cr.get(k)) {
                    (None, Some(_)) => counts.0 += 1,
                    (Some(x), Some(y)) if x != y => counts.1 += 1,
                    (Some(_), None) => counts.2 += 1,
                    _ => {}
                }
            }
            let kind = match (b, c) {
                (None, Some(_)) => 0,
                (Some(_), None) => 1,
                _ => 2,
            };
            if kind == 2 && counts == (0, 0, 0) {
                continue;
            }
            out.insert(t.clone(), (kind, counts));
        }
        Ok(out)
    }

    fn delete_branch(&mut self, branch: &str, cascade: bool) -> Res {
        if branch == "main" {
            return Err("InvalidName");
        }
        self.branch(branch)?;
        let mut doomed = vec![branch.to_string()];
        let mut i = 0;
        while i < doomed.len() {
            let kids: Vec<String> = self
                .branches
                .iter()
                .filter(|(_, b)| b.parent.as_deref() == Some(doomed[i].as_str()))
                .map(|(n, _)| n.clone())
                .collect();
            if !kids.is_empty() && !cascade {
                return Err("BranchInUse");
            }
            doomed.extend(kids);
            i += 1;
        }
        if self.tags.values().any(|(b, _)| doomed.contains(b)) {
            return Err("BranchInUse");
        }
        for d in &doomed {
            self.branches.remove(d);
        }
        self.bases
            .retain(|(t, s), _| !doomed.contains(t) && !doomed.contains(s));
        Ok(Out::Done)
    }

    /// The three-way merge of `source` into `target`, as the library does
    /// it (see `branched::merge`).
    fn merge(&mut self, target: &str, source: &str, policy: Policy) -> Res {
        if target == source {
            return Err("InvalidArgument");
        }
        let (tbase, sbase) = self.bases_of(target, source)?;
        let tcur = self.branch(target)?.tables.clone();
        let scur = self.branch(source)?.tables.clone();
        let touched: BTreeSet<String> = sbase
            .keys()
            .chain(scur.keys())
            .filter(|t| token_of(sbase.get(*t)) != token_of(scur.get(*t)))
            .cloned()
            .collect();
        if touched.is_empty() {
            return Ok(Out::Merge { conflicted: false });
        }
        let mut conflict = false;
        let mut changes: Vec<(String, Option<Rows>)> = Vec::new();
        for t in &touched {
            let (tb, tc) = (tbase.get(t), tcur.get(t));
            let sc = scur.get(t);
            let plan = plan_table(tb, tc, sbase.get(t), sc, policy, &mut conflict);
            if let Some(p) = plan {
                changes.push((t.clone(), p));
            }
        }
        if conflict && policy == Policy::Fail {
            return Ok(Out::Merge { conflicted: true });
        }
        let mut after = tcur;
        for (t, rows) in changes {
            match rows {
                Some(rows) => {
                    let token = self.token();
                    after.insert(t, Tab { rows, token });
                }
                None => {
                    after.remove(&t);
                }
            }
        }
        if let Some(b) = self.branches.get_mut(target) {
            b.tables = after.clone();
        }
        let key = (target.to_string(), source.to_string());
        self.bases.insert(key, (after, scur.clone()));
        let back = (source.to_string(), target.to_string());
        self.bases.insert(back, (scur.clone(), scur));
        Ok(Out::Merge {
            conflicted: conflict,
        })
    }
}

/// One table's merge: `None` = leave it; `Some(None)` = drop it;
/// `Some(Some(rows))` = its new rows (only when they differ).
fn plan_table(
    tb: Option<&Tab>,
    tc: Option<&Tab>,
    sb: Option<&Tab>,
    sc: Option<&Tab>,
    policy: Policy,
    conflict: &mut bool,
) -> Option<Option<Rows>> {
    let Some(sc) = sc else {
        // Dropped on the source.
        let tc = tc?;
        if token_of(tb) == Some(tc.token) || policy == Policy::Theirs {
            return Some(None);
        }
        *conflict |= policy == Policy::Fail;
        return None;
    };
    let Some(tc) = tc else {
        // Absent here.
        if tb.is_some() && policy != Policy::Theirs {
            *conflict |= policy == Policy::Fail;
            return None;
        }
        return Some(Some(sc.rows.clone()));
    };
    let empty = Rows::new();
    let (tbr, sbr) = (
        tb.map_or(&empty, |x| &x.rows),
        sb.map_or(&empty, |x| &x.rows),
    );
    let mut result = tc.rows.clone();
    let keys: BTreeSet<i64> = sbr.keys().chain(sc.rows.keys()).copied().collect();
    for k in keys {
        let (b, t) = (sbr.get(&k), sc.rows.get(&k));
        if b == t {
            continue; // the source did not change k
        }
        let (ob, o) = (tbr.get(&k), tc.rows.get(&k));
        let pick = if ob == o || o == t {
            t
        } else {
            *conflict = true;
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
    (result != tc.rows).then_some(Some(result))
}
