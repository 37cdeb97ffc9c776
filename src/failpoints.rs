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
];

/// The armed fail points of one store.
#[derive(Debug, Default)]
pub(crate) struct FailPoints {
    #[cfg(feature = "failpoints")]
    armed: std::sync::Mutex<std::collections::HashSet<&'static str>>,
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
            if armed.remove(name) {
                return Err(crate::Error::FailPoint(name.to_string()).into());
            }
        }
        Ok(())
    }

    /// Arm `name` for its next hit.
    #[cfg(feature = "failpoints")]
    pub(crate) fn arm(&self, name: &str) -> anyhow::Result<()> {
        let Some(known) = ALL.iter().find(|n| **n == name) else {
            return Err(
                crate::Error::InvalidArgument(format!("unknown fail point {name:?}")).into(),
            );
        };
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(known);
        Ok(())
    }
}
