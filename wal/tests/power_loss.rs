//! Simulated power loss at every storage operation k of a workload (appends,
//! batches, segment rotations, a truncation after a checkpoint): after
//! recovery every acknowledged record is present, nothing is invented,
//! batches are all-or-nothing, and the log accepts new appends. A second
//! power loss during that recovery is survived too.

mod common;

use common::{Rec, expected, lsns, rec, seeds};
use lancebranch_wal::{Lsn, Options, SimStorage, SyncPolicy, Wal};

#[derive(Clone, Debug)]
enum Step {
    Append(Vec<u64>),
    Sync,
    TruncateBefore(u64),
}

fn workload(policy: SyncPolicy) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut next = 0u64;
    for n in 0..16 {
        let size = if n % 5 == 3 { 3 } else { 1 };
        steps.push(Step::Append((next..next + size).collect()));
        next += size;
        if policy == SyncPolicy::Never && n % 3 == 2 {
            steps.push(Step::Sync);
        }
        if n == 9 {
            // A checkpoint covering the records below LSN `next - 2`.
            steps.push(Step::TruncateBefore(next - 2));
        }
    }
    if policy == SyncPolicy::Never {
        steps.push(Step::Sync);
    }
    steps
}

fn options(policy: SyncPolicy) -> Options {
    Options::default().sync(policy).segment_size(150)
}

/// What the workload observed before the power went off.
#[derive(Debug, Default)]
struct Observed {
    /// Records 1..=acked were acknowledged durable.
    acked: u64,
    /// Records 1..=written were attempted (an upper bound on what may exist).
    written: u64,
    /// Largest `truncate_before` argument attempted.
    truncated: u64,
    /// Record counts at unit (batch) boundaries.
    boundaries: Vec<u64>,
}

fn run_workload(sim: &SimStorage, policy: SyncPolicy) -> Observed {
    let mut obs = Observed {
        boundaries: vec![0],
        ..Observed::default()
    };
    let Ok((wal, _)) = Wal::<Rec>::open_with_storage(sim.clone(), options(policy)) else {
        return obs;
    };
    for step in workload(policy) {
        match step {
            Step::Append(idx) => {
                let recs: Vec<Rec> = idx.iter().map(|&i| rec(i)).collect();
                obs.written += recs.len() as u64;
                obs.boundaries.push(obs.written);
                let res = if recs.len() == 1 {
                    wal.append(&recs[0]).map(|l| l..l.next())
                } else {
                    wal.append_batch(&recs)
                };
                match res {
                    Ok(range) => {
                        assert_eq!(range.end, Lsn(obs.written + 1));
                        if policy == SyncPolicy::Always {
                            obs.acked = obs.written;
                        }
                    }
                    Err(_) => break,
                }
            }
            Step::Sync => match wal.sync() {
                Ok(()) => obs.acked = obs.written,
                Err(_) => break,
            },
            Step::TruncateBefore(lsn) => {
                obs.truncated = obs.truncated.max(lsn);
                if wal.truncate_before(Lsn(lsn)).is_err() {
                    break;
                }
            }
        }
    }
    obs
}

/// Recovers and checks the invariants; then appends one record, loses power
/// again and checks that record survived. `ctx` is printed on failure.
/// Returns the number of torn-tail bytes the first recovery cut off.
fn check_recovery(sim: &SimStorage, policy: SyncPolicy, obs: &Observed, ctx: &str) -> u64 {
    let (wal, got) = Wal::<Rec>::open_with_storage(sim.clone(), options(policy))
        .unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
    let l = lsns(&got);
    let last = l.last().copied().unwrap_or(0);
    if let Some(&first) = l.first() {
        assert_eq!(l, (first..=last).collect::<Vec<_>>(), "{ctx}: gap");
    }
    assert_eq!(got.records, expected(l.iter().copied()), "{ctx}: invented");
    assert!(
        last <= obs.written,
        "{ctx}: {last} > written {}",
        obs.written
    );
    assert!(
        last >= obs.acked,
        "{ctx}: lost acked: last {last} < {}",
        obs.acked
    );
    assert!(
        obs.boundaries.contains(&last),
        "{ctx}: torn batch, last {last}"
    );
    let floor = obs.truncated.max(1);
    if obs.acked >= floor {
        assert!(
            l.first().is_some_and(|&f| f <= floor),
            "{ctx}: lost {floor}: {l:?}"
        );
    }
    let next = wal.next_lsn();
    if !l.is_empty() {
        assert_eq!(next, Lsn(last + 1), "{ctx}");
    }
    let lsn = wal
        .append(&rec(next.0 - 1))
        .unwrap_or_else(|e| panic!("{ctx}: append after recovery: {e}"));
    assert_eq!(lsn, next, "{ctx}");
    if policy == SyncPolicy::Never {
        wal.sync().unwrap_or_else(|e| panic!("{ctx}: sync: {e}"));
    }
    drop(wal);
    sim.crash(0x5eed ^ next.0);
    let (_, again) = Wal::<Rec>::open_with_storage(sim.clone(), options(policy))
        .unwrap_or_else(|e| panic!("{ctx}: second recovery failed: {e}"));
    let l2 = lsns(&again);
    assert_eq!(
        l2.last().copied(),
        Some(next.0),
        "{ctx}: new record lost: {l2:?}"
    );
    assert!(l2.first().copied().unwrap_or(0) <= l.first().copied().unwrap_or(next.0));
    got.report.torn_tail_bytes
}

fn power_loss_at_every_op(policy: SyncPolicy) {
    let probe = SimStorage::new();
    let full = run_workload(&probe, policy);
    let total_ops = probe.stats().ops;
    assert_eq!(
        full.acked, full.written,
        "workload must succeed without faults"
    );
    assert!(total_ops > 50, "workload too small: {total_ops} ops");
    let (mut runs, mut torn, mut lost_unacked) = (0, 0, 0);
    for k in 1..=total_ops + 1 {
        for seed in seeds(0..10) {
            let sim = SimStorage::new();
            sim.power_off_at(Some(k));
            let obs = run_workload(&sim, policy);
            let crash = sim.crash(seed);
            let ctx = format!("{policy:?} k={k} seed={seed} ({crash}) {obs:?}");
            if check_recovery(&sim, policy, &obs, &ctx) > 0 {
                torn += 1;
            }
            if obs.written > obs.acked {
                lost_unacked += 1;
            }
            runs += 1;
        }
    }
    eprintln!(
        "{policy:?}: {total_ops} ops, {runs} crash runs, {torn} with a torn tail cut off, {lost_unacked} with unacknowledged writes"
    );
    assert!(runs > 100);
    assert!(
        torn > 10,
        "the crash model should produce torn tails: {torn}"
    );
}

/// Power loss at op k of the workload, then again at op j of the recovery.
fn power_loss_during_recovery(policy: SyncPolicy) {
    let probe = SimStorage::new();
    run_workload(&probe, policy);
    let total_ops = probe.stats().ops;
    let mut runs = 0;
    for k in 1..=total_ops + 1 {
        for j in 1..40 {
            runs += 1;
            let seed = k * 1000 + j;
            let sim = SimStorage::new();
            sim.power_off_at(Some(k));
            let obs = run_workload(&sim, policy);
            let crash1 = sim.crash(seed);
            let start = sim.stats().ops;
            sim.power_off_at(Some(start + j));
            let reopened = Wal::<Rec>::open_with_storage(sim.clone(), options(policy));
            let finished = reopened.is_ok();
            drop(reopened);
            let crash2 = sim.crash(seed + 1);
            let ctx = format!("{policy:?} k={k} j={j} seed={seed} ({crash1}) ({crash2}) {obs:?}");
            check_recovery(&sim, policy, &obs, &ctx);
            if finished {
                break;
            }
        }
    }
    eprintln!("{policy:?}: {runs} runs with a second power loss during recovery");
}

#[test]
fn power_loss_at_every_operation_sync_always() {
    power_loss_at_every_op(SyncPolicy::Always);
}

#[test]
fn power_loss_at_every_operation_sync_never_with_explicit_syncs() {
    power_loss_at_every_op(SyncPolicy::Never);
}

#[test]
fn power_loss_during_recovery_sync_always() {
    power_loss_during_recovery(SyncPolicy::Always);
}

#[test]
fn power_loss_during_recovery_sync_never() {
    power_loss_during_recovery(SyncPolicy::Never);
}
