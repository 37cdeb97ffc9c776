//! The `wal_ops` harness: a random sequence of log operations, injected
//! faults, crashes and reopens on a [`SimStorage`], checked against a model.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};

use crate::{Lsn, Options, Recovered, RecoveryMode, SimStorage, SyncPolicy, Wal, read_log};

type Rec = Vec<u8>;

/// Most operations decoded from one input.
pub const MAX_OPS: usize = 64;
/// Most records in one [`Op::AppendBatch`] (more are cut off).
pub const MAX_BATCH: usize = 6;
/// Longest record payload (longer ones are cut).
pub const MAX_PAYLOAD: usize = 24;

/// A recovery mode to (re)open the log with.
///
/// # Example
///
/// ```
/// use lancebranch_wal::RecoveryMode;
/// use lancebranch_wal::fuzzing::Mode;
/// assert_eq!(Mode::PointInTime.recovery_mode(), RecoveryMode::PointInTime);
/// ```
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// [`RecoveryMode::TolerateCorruptedTail`].
    Tolerate,
    /// [`RecoveryMode::AbsoluteConsistency`]; after a crash with a torn tail
    /// the open fails, and the harness reopens with `Tolerate`.
    Absolute,
    /// [`RecoveryMode::PointInTime`].
    PointInTime,
    /// [`RecoveryMode::SkipAnyCorrupted`].
    SkipAny,
}

impl Mode {
    /// The recovery mode.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::RecoveryMode;
    /// use lancebranch_wal::fuzzing::Mode;
    /// assert_eq!(Mode::Tolerate.recovery_mode(), RecoveryMode::default());
    /// ```
    pub fn recovery_mode(self) -> RecoveryMode {
        match self {
            Mode::Tolerate => RecoveryMode::TolerateCorruptedTail,
            Mode::Absolute => RecoveryMode::AbsoluteConsistency,
            Mode::PointInTime => RecoveryMode::PointInTime,
            Mode::SkipAny => RecoveryMode::SkipAnyCorrupted,
        }
    }
}

/// How the log of a [`Scenario`] is opened.
///
/// # Example
///
/// ```
/// use lancebranch_wal::SyncPolicy;
/// use lancebranch_wal::fuzzing::{Mode, OpsConfig};
/// let c = OpsConfig { sync_always: false, segment_size: 100, mode: Mode::Tolerate };
/// assert_eq!(c.options().sync_policy(), SyncPolicy::Never);
/// assert_eq!(c.options().segment_size_bytes(), 140);
/// ```
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct OpsConfig {
    /// [`SyncPolicy::Always`] if true, else [`SyncPolicy::Never`].
    pub sync_always: bool,
    /// The segment size is `40 + segment_size % 600` bytes, so segments
    /// rotate every few records.
    pub segment_size: u16,
    /// The recovery mode of the first open.
    pub mode: Mode,
}

impl OpsConfig {
    /// The options of the first open (reopens change only the mode).
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::RecoveryMode;
    /// use lancebranch_wal::fuzzing::{Mode, OpsConfig};
    /// let c = OpsConfig { sync_always: true, segment_size: 1234, mode: Mode::SkipAny };
    /// assert_eq!(c.options().segment_size_bytes(), 40 + 1234 % 600);
    /// assert_eq!(c.options().recovery_mode(), RecoveryMode::SkipAnyCorrupted);
    /// ```
    pub fn options(&self) -> Options {
        Options::default()
            .sync(if self.sync_always {
                SyncPolicy::Always
            } else {
                SyncPolicy::Never
            })
            .segment_size(40 + u64::from(self.segment_size % 600))
            .recovery(self.mode.recovery_mode())
    }
}

/// One step of a [`Scenario`].
///
/// # Example
///
/// ```
/// use lancebranch_wal::fuzzing::{Mode, Op, OpsConfig, Scenario, run_scenario};
///
/// let config = OpsConfig { sync_always: true, segment_size: 0, mode: Mode::Tolerate };
/// let ops = vec![
///     Op::Append(b"a".to_vec()),
///     Op::AppendBatch(vec![b"b".to_vec(), b"c".to_vec()]),
///     Op::PowerOff(1),
///     Op::Append(b"d".to_vec()),
///     Op::Crash { seed: 7, mode: Mode::PointInTime },
/// ];
/// run_scenario(&Scenario { config, ops });
/// ```
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `append` one record (cut to [`MAX_PAYLOAD`] bytes).
    Append(Vec<u8>),
    /// `append_batch` (cut to [`MAX_BATCH`] records; may be empty).
    AppendBatch(Vec<Vec<u8>>),
    /// `sync`.
    Sync,
    /// `truncate_before` an LSN chosen by the byte around the live range.
    TruncateBefore(u8),
    /// `iter_from` an LSN chosen by the byte: must return what was written.
    Iter(u8),
    /// Reads a snapshot of only the durable state (what any crash keeps):
    /// every acknowledged record must be in it.
    CheckDurable,
    /// Makes the `1 + n % 3`-th next `sync_data` fail with EIO.
    FailSync(u8),
    /// Cuts the power `1 + n % 8` storage operations from now.
    PowerOff(u8),
    /// Drops the log and reopens it without a crash (a crash if the power
    /// is off).
    Reopen(Mode),
    /// Drops the log, simulates a power loss with the seed, and reopens.
    Crash {
        /// Seed of [`SimStorage::crash`].
        seed: u64,
        /// Mode of the reopen.
        mode: Mode,
    },
}

/// A configuration and a sequence of at most [`MAX_OPS`] operations.
///
/// # Example
///
/// ```
/// use lancebranch_wal::fuzzing::{MAX_OPS, Scenario};
/// let s = Scenario::from_bytes(&[7; 300]);
/// assert!(s.ops.len() <= MAX_OPS);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// How the log is opened.
    pub config: OpsConfig,
    /// What is done to it.
    pub ops: Vec<Op>,
}

impl Scenario {
    /// Decodes a scenario with [`arbitrary`]. Every input decodes (missing
    /// bytes read as zeros); the ops stop at [`MAX_OPS`] or the end of the
    /// input.
    ///
    /// # Example
    ///
    /// ```
    /// use lancebranch_wal::fuzzing::{Scenario, run_scenario};
    /// let s = Scenario::from_bytes(b"");
    /// assert!(s.ops.is_empty());
    /// run_scenario(&s); // opens, then crashes and recovers an empty log
    /// ```
    pub fn from_bytes(data: &[u8]) -> Scenario {
        let mut u = Unstructured::new(data);
        let config = OpsConfig::arbitrary(&mut u).unwrap_or(OpsConfig {
            sync_always: false,
            segment_size: 0,
            mode: Mode::Tolerate,
        });
        let mut ops = Vec::new();
        while ops.len() < MAX_OPS && !u.is_empty() {
            match Op::arbitrary(&mut u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        Scenario { config, ops }
    }
}

/// What the model knows about the log.
#[derive(Debug)]
struct Model {
    /// Every record that may be in the log: what was recovered at the last
    /// open plus what was written since (whether acknowledged or not), with
    /// the id of the append call that wrote it.
    records: BTreeMap<u64, (Rec, u64)>,
    /// Records below this LSN (and at or above `floor`) were acknowledged
    /// durable: by an `Ok` append under `SyncPolicy::Always`, an `Ok` sync,
    /// `durable_lsn()`, or recovery.
    durable: u64,
    /// Largest `truncate_before` argument: records below it may be gone.
    floor: u64,
    /// The LSN the next record gets.
    next: u64,
    /// Id of the next append call.
    unit: u64,
    /// A fault was injected since the last open, so operations may fail.
    faults: bool,
}

impl Model {
    fn new() -> Model {
        Model {
            records: BTreeMap::new(),
            durable: 1,
            floor: 0,
            next: 1,
            unit: 0,
            faults: false,
        }
    }

    /// An LSN around the live range, chosen by `n`.
    fn pick(&self, n: u8) -> u64 {
        let lo = self.records.keys().next().copied().unwrap_or(self.next);
        let span = self.next.saturating_sub(lo).saturating_add(2);
        lo.saturating_add(u64::from(n) % span)
    }

    /// Records that must survive any crash.
    fn required(&self) -> impl Iterator<Item = (&u64, &(Rec, u64))> {
        let lo = self.floor.min(self.durable);
        self.records.range(lo..self.durable)
    }
}

fn clip(p: &[u8]) -> Rec {
    p[..p.len().min(MAX_PAYLOAD)].to_vec()
}

struct Runner {
    sim: SimStorage,
    config: OpsConfig,
    wal: Option<Wal<Rec>>,
    m: Model,
}

impl Runner {
    fn wal(&self) -> &Wal<Rec> {
        self.wal.as_ref().expect("the log is open between steps")
    }

    fn options(&self, mode: Mode) -> Options {
        self.config.options().recovery(mode.recovery_mode())
    }

    fn append(&mut self, recs: Vec<Rec>, ctx: &str) {
        let wal = self.wal.as_ref().expect("the log is open between steps");
        let before = wal.next_lsn().0;
        assert_eq!(before, self.m.next, "{ctx}: next lsn before append");
        let n = recs.len() as u64;
        let res = if recs.len() == 1 {
            wal.append(&recs[0]).map(|l| l.0..l.0 + 1)
        } else {
            wal.append_batch(&recs).map(|r| r.start.0..r.end.0)
        };
        let after = wal.next_lsn().0;
        match res {
            Ok(range) => {
                assert_eq!(range, before..before + n, "{ctx}: lsns");
                assert_eq!(after, before + n, "{ctx}: next lsn after append");
                if self.config.sync_always && n > 0 {
                    self.m.durable = self.m.durable.max(range.end);
                    assert!(wal.durable_lsn().0 >= range.end, "{ctx}: durable_lsn");
                }
            }
            Err(e) => {
                assert!(
                    self.m.faults || wal.is_poisoned(),
                    "{ctx}: append failed without a fault: {e}"
                );
                assert!(
                    after == before || after == before + n,
                    "{ctx}: next lsn {after} after a failed append at {before}"
                );
            }
        }
        if after != before {
            for (i, r) in recs.into_iter().enumerate() {
                self.m.records.insert(before + i as u64, (r, self.m.unit));
            }
        }
        self.m.unit += 1;
        self.m.next = after;
    }

    fn iter(&self, n: u8, ctx: &str) {
        let wal = self.wal();
        let from = self.m.pick(n);
        let it = wal
            .iter_from(Lsn(from))
            .unwrap_or_else(|e| panic!("{ctx}: iter_from: {e}"));
        match it.collect::<Result<Vec<_>, _>>() {
            Ok(got) => {
                let start = from.max(wal.first_lsn().0);
                let want: Vec<(Lsn, Rec)> = self
                    .m
                    .records
                    .range(start..)
                    .map(|(l, (r, _))| (Lsn(*l), r.clone()))
                    .collect();
                assert_eq!(got, want, "{ctx}: iter_from({from})");
            }
            Err(e) => assert!(
                self.sim.is_powered_off(),
                "{ctx}: iter_from failed with the power on: {e}"
            ),
        }
    }

    /// Checks recovered records against what may and must be there.
    fn check_recovered(&self, rec: &Recovered<Rec>, next: u64, ctx: &str) {
        let m = &self.m;
        let lsns: Vec<u64> = rec.records.iter().map(|(l, _)| l.0).collect();
        assert!(
            lsns.windows(2).all(|w| w[0] + 1 == w[1]),
            "{ctx}: recovered lsns not contiguous: {lsns:?}"
        );
        for (lsn, r) in &rec.records {
            match m.records.get(&lsn.0) {
                Some((want, _)) => assert_eq!(r, want, "{ctx}: record {lsn} changed"),
                None => panic!("{ctx}: record {lsn} {r:?} was never written"),
            }
        }
        let got: BTreeMap<u64, &Rec> = rec.records.iter().map(|(l, r)| (l.0, r)).collect();
        for (lsn, _) in m.required() {
            assert!(
                got.contains_key(lsn),
                "{ctx}: acknowledged record {lsn} lost (durable below {}, floor {}): {lsns:?}",
                m.durable,
                m.floor
            );
        }
        let mut units: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
        for (lsn, (_, unit)) in &m.records {
            let e = units.entry(*unit).or_default();
            e.0 += 1;
            e.1 += usize::from(got.contains_key(lsn));
        }
        for (unit, (size, found)) in units {
            assert!(
                found == 0 || found == size,
                "{ctx}: batch #{unit} torn: {found} of {size} records recovered"
            );
        }
        if let Some(last) = lsns.last() {
            assert_eq!(next, last + 1, "{ctx}: next lsn after recovery");
        }
        assert!(
            next >= m.durable,
            "{ctx}: next lsn {next} reuses acknowledged lsns below {}",
            m.durable
        );
    }

    /// Opens after a drop (clean) or a crash and checks the recovery.
    fn reopen(&mut self, mode: Mode, crash: Option<u64>, ctx: &str) {
        let first = self.wal().first_lsn().0;
        self.wal = None;
        let crash = crash.or_else(|| self.sim.is_powered_off().then_some(first));
        let what = match crash {
            Some(seed) => self.sim.crash(seed),
            None => {
                // Disarm faults that have not fired yet.
                self.sim.power_off_at(None);
                self.sim.fail_sync(u64::MAX);
                "no crash".to_owned()
            }
        };
        let ctx = format!("{ctx} ({what})");
        let mut opened = Wal::<Rec>::open_with_storage(self.sim.clone(), self.options(mode));
        if mode == Mode::Absolute && crash.is_some() && opened.is_err() {
            // A torn tail is an error in this mode; recover normally.
            opened = Wal::open_with_storage(self.sim.clone(), self.options(Mode::Tolerate));
        }
        let (wal, rec) = opened.unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        let next = wal.next_lsn().0;
        assert_eq!(rec.report.next_lsn.0, next, "{ctx}: report");
        if crash.is_none() {
            let want: Vec<(Lsn, Rec)> = self
                .m
                .records
                .range(first..)
                .map(|(l, (r, _))| (Lsn(*l), r.clone()))
                .collect();
            assert_eq!(rec.records, want, "{ctx}: clean reopen");
        }
        self.check_recovered(&rec, next, &ctx);
        let records = rec
            .records
            .into_iter()
            .map(|(l, r)| {
                let unit = self.m.records.get(&l.0).map_or(0, |(_, u)| *u);
                (l.0, (r, unit))
            })
            .collect();
        self.m.records = records;
        self.m.durable = next;
        self.m.next = next;
        self.m.faults = false;
        self.wal = Some(wal);
    }

    fn check_durable(&self, ctx: &str) {
        let snap = self.sim.durable_snapshot();
        let rec = read_log::<Rec>(&snap, RecoveryMode::TolerateCorruptedTail, Lsn::ZERO)
            .unwrap_or_else(|e| panic!("{ctx}: durable snapshot does not read: {e}"));
        let got: BTreeMap<u64, &Rec> = rec.records.iter().map(|(l, r)| (l.0, r)).collect();
        for (lsn, (r, _)) in self.m.required() {
            assert_eq!(
                got.get(lsn),
                Some(&r),
                "{ctx}: acknowledged record {lsn} is not durable"
            );
        }
        for (lsn, r) in &rec.records {
            assert_eq!(
                self.m.records.get(&lsn.0).map(|(r, _)| r),
                Some(r),
                "{ctx}: durable record {lsn} was never written"
            );
        }
    }

    fn step(&mut self, step: usize, op: &Op) {
        let ctx = format!("step {step} {op:?}");
        match op {
            Op::Append(p) => self.append(vec![clip(p)], &ctx),
            Op::AppendBatch(v) => {
                let recs: Vec<Rec> = v.iter().take(MAX_BATCH).map(|p| clip(p)).collect();
                self.append(recs, &ctx);
            }
            Op::Sync => {
                let wal = self.wal.as_ref().expect("the log is open between steps");
                match wal.sync() {
                    Ok(()) => self.m.durable = self.m.durable.max(self.m.next),
                    Err(e) => assert!(
                        self.m.faults || wal.is_poisoned(),
                        "{ctx}: sync failed without a fault: {e}"
                    ),
                }
            }
            Op::TruncateBefore(n) => {
                let lsn = self.m.pick(*n);
                self.m.floor = self.m.floor.max(lsn);
                let wal = self.wal.as_ref().expect("the log is open between steps");
                let before = wal.first_lsn();
                match wal.truncate_before(Lsn(lsn)) {
                    Ok(_) => {
                        let after = wal.first_lsn();
                        assert!(
                            after >= before && (after.0 <= lsn || after == before),
                            "{ctx}: first lsn {before} -> {after} by truncate_before({lsn})"
                        );
                    }
                    Err(e) => assert!(self.m.faults, "{ctx}: truncate failed without a fault: {e}"),
                }
            }
            Op::Iter(n) => self.iter(*n, &ctx),
            Op::CheckDurable => self.check_durable(&ctx),
            Op::FailSync(n) => {
                self.sim.fail_sync(1 + u64::from(n % 3));
                self.m.faults = true;
            }
            Op::PowerOff(n) => {
                let at = self.sim.stats().ops + 1 + u64::from(n % 8);
                self.sim.power_off_at(Some(at));
                self.m.faults = true;
            }
            Op::Reopen(mode) => self.reopen(*mode, None, &ctx),
            Op::Crash { seed, mode } => self.reopen(*mode, Some(*seed), &ctx),
        }
        let wal = self.wal.as_ref().expect("the log is open between steps");
        assert_eq!(wal.next_lsn().0, self.m.next, "{ctx}: next lsn");
        self.m.durable = self.m.durable.max(wal.durable_lsn().0);
    }
}

/// Runs a scenario on a fresh [`SimStorage`] against a model and panics on
/// any violation. The model keeps every record that may exist (recovered at
/// the last open or written since, acknowledged or not) and the LSN below
/// which records were acknowledged durable (an `Ok` append with
/// `SyncPolicy::Always`, an `Ok` `sync`, `durable_lsn()`). Checked:
///
/// * appends return the next LSNs, fail only after an injected fault or on a
///   poisoned log, and a failed one consumes its LSNs only if it was written;
/// * `iter_from` returns exactly the written records from there (from the
///   oldest retained segment), unless the power is off;
/// * the durable snapshot holds every acknowledged record;
/// * a clean reopen recovers exactly the retained records;
/// * after a crash, the recovered records are contiguous, each is one that
///   was written with that LSN, every acknowledged one at or above the
///   largest `truncate_before` argument is there, batches are all or
///   nothing, and the next LSN follows the last record and reuses no
///   acknowledged LSN.
///
/// Every run ends with a crash and a recovery.
///
/// # Example
///
/// ```
/// use lancebranch_wal::fuzzing::{Mode, Op, OpsConfig, Scenario, run_scenario};
///
/// let config = OpsConfig { sync_always: false, segment_size: 20, mode: Mode::SkipAny };
/// let ops = vec![
///     Op::Append(b"x".to_vec()),
///     Op::Sync,
///     Op::FailSync(0),
///     Op::Append(b"y".to_vec()),
///     Op::Sync, // fails: the log is poisoned
///     Op::Reopen(Mode::Tolerate),
///     Op::TruncateBefore(3),
///     Op::Iter(0),
/// ];
/// run_scenario(&Scenario { config, ops });
/// ```
pub fn run_scenario(scenario: &Scenario) {
    let sim = SimStorage::new();
    let (wal, rec) = Wal::<Rec>::open_with_storage(sim.clone(), scenario.config.options())
        .unwrap_or_else(|e| panic!("open of an empty log: {e}"));
    assert!(rec.records.is_empty());
    assert_eq!(wal.next_lsn(), Lsn(1));
    let mut runner = Runner {
        sim,
        config: scenario.config.clone(),
        wal: Some(wal),
        m: Model::new(),
    };
    for (i, op) in scenario.ops.iter().enumerate() {
        runner.step(i, op);
    }
    let last = Op::Crash {
        seed: scenario.ops.len() as u64,
        mode: Mode::Tolerate,
    };
    runner.step(scenario.ops.len(), &last);
}

/// Decodes `data` into a [`Scenario`] (see [`Scenario::from_bytes`]) and
/// runs it with [`run_scenario`]. Never panics unless the log (or the
/// harness) is wrong.
///
/// # Example
///
/// ```
/// use lancebranch_wal::fuzzing::wal_ops;
/// wal_ops(b"");
/// wal_ops(&[0x5a; 200]);
/// ```
pub fn wal_ops(data: &[u8]) {
    run_scenario(&Scenario::from_bytes(data));
}
