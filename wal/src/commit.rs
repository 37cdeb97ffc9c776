//! Group commit: concurrent appenders share one sync, and nobody is released
//! before a sync that started after its write has completed.
//!
//! The first waiter that finds no sync in progress becomes the *leader*.
//! Before syncing, a leader may *gather*: if recently more than one thread
//! was appending, it waits (at most the recent average sync time, at most
//! 1 ms) until as many appenders as were recently active are waiting. This
//! avoids the pattern where writers released by one sync always miss the
//! next one (which would split n writers into two alternating groups of
//! n/2). A lone appender never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest a leader waits for more appenders.
const MAX_GATHER: Duration = Duration::from_millis(1);

struct State {
    /// Every record with an LSN below this is durable.
    synced: u64,
    /// A leader is gathering or syncing.
    leader: bool,
    /// The leader is gathering and wants to hear about new waiters.
    gathering: bool,
    /// How many appenders were recently active at once.
    hint: u64,
    /// Moving average of the sync duration.
    sync_time: Duration,
    /// The `end` of every thread in `wait` (one entry per thread).
    ends: Vec<u64>,
}

impl State {
    /// Waiters whose records are not durable yet.
    fn uncovered(&self) -> u64 {
        self.ends.iter().filter(|&&e| e > self.synced).count() as u64
    }

    fn leave(&mut self, end: u64) {
        if let Some(i) = self.ends.iter().position(|&e| e == end) {
            self.ends.swap_remove(i);
        }
    }
}

pub(crate) struct GroupCommit {
    state: Mutex<State>,
    synced_cv: Condvar,
    arrived_cv: Condvar,
    /// Threads inside an append (from entry to return).
    appenders: AtomicU64,
}

/// Counts a thread as an active appender while alive.
pub(crate) struct Active<'a>(&'a AtomicU64);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn lock_error() -> Error {
    Error::Poisoned {
        cause: "a thread panicked while holding the log's lock".into(),
    }
}

impl GroupCommit {
    /// Everything below `synced` is durable.
    pub(crate) fn new(synced: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                synced,
                leader: false,
                gathering: false,
                hint: 1,
                sync_time: Duration::ZERO,
                ends: Vec::new(),
            }),
            synced_cv: Condvar::new(),
            arrived_cv: Condvar::new(),
            appenders: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| lock_error())
    }

    /// Marks the calling thread as appending until the guard drops.
    pub(crate) fn enter(&self) -> Active<'_> {
        self.appenders.fetch_add(1, Ordering::Relaxed);
        Active(&self.appenders)
    }

    /// Every record below the returned LSN is durable.
    pub(crate) fn synced(&self) -> u64 {
        self.state.lock().map(|s| s.synced).unwrap_or(0)
    }

    /// Records that everything below `lsn` became durable by other means
    /// (segment rotation syncs the full segment).
    pub(crate) fn advance(&self, lsn: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.synced = st.synced.max(lsn);
            self.synced_cv.notify_all();
        }
    }

    /// Returns once every record below `end` is durable. `check` is called
    /// before becoming leader or waiting (it fails on a poisoned log);
    /// `sync` performs one sync and returns the LSN below which everything
    /// is durable.
    pub(crate) fn wait(
        &self,
        end: u64,
        check: impl Fn() -> Result<()>,
        sync: impl Fn() -> Result<u64>,
    ) -> Result<()> {
        let mut st = self.lock()?;
        st.ends.push(end);
        if st.gathering && st.uncovered() >= st.hint {
            self.arrived_cv.notify_all();
        }
        loop {
            if st.synced >= end {
                st.leave(end);
                return Ok(());
            }
            if let Err(e) = check() {
                st.leave(end);
                return Err(e);
            }
            if st.leader {
                st = self.synced_cv.wait(st).map_err(|_| lock_error())?;
                continue;
            }
            st.leader = true;
            st = self.gather(st)?;
            drop(st);
            let started = Instant::now();
            let result = sync();
            let elapsed = started.elapsed();
            let mut relock = self.lock();
            if let Ok(state) = relock.as_mut() {
                state.leader = false;
                if let Ok(target) = result {
                    state.synced = state.synced.max(target);
                    state.sync_time = (state.sync_time * 3 + elapsed) / 4;
                }
            }
            self.synced_cv.notify_all();
            st = relock?;
            if let Err(e) = result {
                st.leave(end);
                return Err(e);
            }
        }
    }

    /// Waits, as leader, for the recently active appenders to join.
    fn gather<'g>(&'g self, mut st: MutexGuard<'g, State>) -> Result<MutexGuard<'g, State>> {
        let active = self.appenders.load(Ordering::Relaxed);
        st.hint = active.max(st.hint.saturating_sub(1)).max(1);
        if st.hint <= 1 {
            return Ok(st);
        }
        let deadline = Instant::now() + st.sync_time.min(MAX_GATHER);
        st.gathering = true;
        while st.uncovered() < st.hint {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let (guard, _) = self
                .arrived_cv
                .wait_timeout(st, deadline - now)
                .map_err(|_| lock_error())?;
            st = guard;
        }
        st.gathering = false;
        Ok(st)
    }
}
