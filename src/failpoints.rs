//! Fail points: named boundaries between the steps of multi-step
//! operations, where a test can cut an operation short as a crash would.
//!
//! Compiled out unless the `failpoints` feature is on. With it, a branched
//! store can [`arm`](crate::branched::BranchedBackend::arm_failpoint) one
//! point: the next time the operation reaches it, it stops there with
//! [`Error::FailPoint`](crate::Error::FailPoint), leaving the store exactly
//! as a process death at that step would (everything before it done and
//! durable, nothing after it). The test then drops every handle, reopens,
//! and checks that recovery converges.

/// Every fail point, named `operation::where`.
pub const ALL: &[&str] = &[
    "line::after_begin",
    "line::after_drop_old_before_create",
    "line::after_create_before_end",
    "write::after_commit_before_publish",
    "txn::after_apply_before_publish",
    "delete::after_begin",
    "delete::after_drop_before_end",
    "recovery::after_drop_before_record",
    "checkpoint::after_write_before_truncate",
    "merge::after_begin",
    "merge::after_apply_before_publish",
    "fork::before_record",
    "tag::before_record",
    "replace::after_commit_before_publish",
    "create::after_dataset_before_publish",
    "merge::after_table_applied",
    "collect::after_begin",
    "collect::after_drop_before_end",
];

#[cfg(feature = "failpoints")]
#[derive(Debug, Default)]
struct Armed {
    /// Point → how many of its hits to let pass before stopping.
    points: std::collections::HashMap<&'static str, u64>,
    /// Stop at whichever point is reached after this many more hits.
    any: Option<u64>,
    /// Every hit of every point so far.
    hits: u64,
}

/// The armed fail points of one store.
#[derive(Debug, Default)]
pub(crate) struct FailPoints {
    #[cfg(feature = "failpoints")]
    armed: std::sync::Mutex<Armed>,
}

impl FailPoints {
    /// Stop here if `name` is armed (disarming it). A no-op without the
    /// `failpoints` feature.
    #[inline]
    pub(crate) fn check(&self, name: &'static str) -> anyhow::Result<()> {
        debug_assert!(ALL.contains(&name), "unlisted fail point {name}");
        #[cfg(feature = "failpoints")]
        {
            let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
            armed.hits += 1;
            let mut stop = false;
            if let Some(n) = armed.points.get_mut(name) {
                if *n == 0 {
                    armed.points.remove(name);
                    stop = true;
                } else {
                    *n -= 1;
                }
            }
            match armed.any {
                Some(0) => {
                    armed.any = None;
                    stop = true;
                }
                Some(k) => armed.any = Some(k - 1),
                None => {}
            }
            if stop {
                return Err(crate::Error::FailPoint(name.to_string()).into());
            }
        }
        Ok(())
    }

    /// Arm `name` to stop at its hit number `skip + 1` from now.
    #[cfg(feature = "failpoints")]
    pub(crate) fn arm(&self, name: &str, skip: u64) -> anyhow::Result<()> {
        let Some(known) = ALL.iter().find(|n| **n == name) else {
            return Err(
                crate::Error::InvalidArgument(format!("unknown fail point {name:?}")).into(),
            );
        };
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .points
            .insert(known, skip);
        Ok(())
    }

    /// Stop at whichever fail point is reached after `skip` more hits.
    #[cfg(feature = "failpoints")]
    pub(crate) fn arm_any(&self, skip: u64) {
        self.armed.lock().unwrap_or_else(|p| p.into_inner()).any = Some(skip);
    }

    /// Disarm everything.
    #[cfg(feature = "failpoints")]
    pub(crate) fn disarm(&self) {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        armed.points.clear();
        armed.any = None;
    }

    /// How many fail-point hits happened so far.
    #[cfg(feature = "failpoints")]
    pub(crate) fn hits(&self) -> u64 {
        self.armed.lock().unwrap_or_else(|p| p.into_inner()).hits
    }
}
