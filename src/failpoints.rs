//! Fail points: named boundaries between the steps of multi-step
//! operations, where a test can cut an operation short as a crash would.
//!
//! Compiled out unless the `failpoints` feature is on. With it, a branched
//! store can arm one point (`BranchedBackend::arm_failpoint`, a
//! [`FailPoint`]): the next time the operation reaches it, it stops there with
//! [`Error::FailPoint`](crate::Error::FailPoint), leaving the store exactly
//! as a process death at that step would (everything before it done and
//! durable, nothing after it). The test then drops every handle, reopens,
//! and checks that recovery converges.

/// A fail point: the boundary between two steps of an operation, named
/// `operation::where`. Points are only ever appended (a variant's position
/// in [`ALL`] is what a `lancebranch::testing::CrashPlan` of a fuzz
/// input refers to), so inputs keep their meaning when points are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailPoint {
    /// `line::after_begin`
    LineAfterBegin,
    /// `line::after_drop_old_before_create`
    LineAfterDropOldBeforeCreate,
    /// `line::after_create_before_end`
    LineAfterCreateBeforeEnd,
    /// `write::after_commit_before_publish`
    WriteAfterCommitBeforePublish,
    /// `txn::after_apply_before_publish`
    TxnAfterApplyBeforePublish,
    /// `delete::after_begin`
    DeleteAfterBegin,
    /// `delete::after_drop_before_end`
    DeleteAfterDropBeforeEnd,
    /// `recovery::after_drop_before_record`
    RecoveryAfterDropBeforeRecord,
    /// `checkpoint::after_write_before_truncate`
    CheckpointAfterWriteBeforeTruncate,
    /// `merge::after_begin`
    MergeAfterBegin,
    /// `merge::after_apply_before_publish`
    MergeAfterApplyBeforePublish,
    /// `fork::before_record`
    ForkBeforeRecord,
    /// `tag::before_record`
    TagBeforeRecord,
    /// `replace::after_commit_before_publish`
    ReplaceAfterCommitBeforePublish,
    /// `create::after_dataset_before_publish`
    CreateAfterDatasetBeforePublish,
    /// `merge::after_table_applied`
    MergeAfterTableApplied,
    /// `collect::after_begin`
    CollectAfterBegin,
    /// `collect::after_drop_before_end`
    CollectAfterDropBeforeEnd,
    /// `merge::after_batch_applied`: a batch of a table merged in batches
    /// ([`MergeOptions::batch_rows`](crate::branched::MergeOptions::batch_rows))
    /// is applied on the target's line, nothing is published.
    MergeAfterBatchApplied,
}

/// Every fail point, in the order they were added.
pub const ALL: &[FailPoint] = &[
    FailPoint::LineAfterBegin,
    FailPoint::LineAfterDropOldBeforeCreate,
    FailPoint::LineAfterCreateBeforeEnd,
    FailPoint::WriteAfterCommitBeforePublish,
    FailPoint::TxnAfterApplyBeforePublish,
    FailPoint::DeleteAfterBegin,
    FailPoint::DeleteAfterDropBeforeEnd,
    FailPoint::RecoveryAfterDropBeforeRecord,
    FailPoint::CheckpointAfterWriteBeforeTruncate,
    FailPoint::MergeAfterBegin,
    FailPoint::MergeAfterApplyBeforePublish,
    FailPoint::ForkBeforeRecord,
    FailPoint::TagBeforeRecord,
    FailPoint::ReplaceAfterCommitBeforePublish,
    FailPoint::CreateAfterDatasetBeforePublish,
    FailPoint::MergeAfterTableApplied,
    FailPoint::CollectAfterBegin,
    FailPoint::CollectAfterDropBeforeEnd,
    FailPoint::MergeAfterBatchApplied,
];

impl FailPoint {
    /// The point's name, `operation::where`.
    ///
    /// # Example
    /// ```
    /// use lancebranch::failpoints::FailPoint;
    /// assert_eq!(FailPoint::MergeAfterBegin.name(), "merge::after_begin");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Self::LineAfterBegin => "line::after_begin",
            Self::LineAfterDropOldBeforeCreate => "line::after_drop_old_before_create",
            Self::LineAfterCreateBeforeEnd => "line::after_create_before_end",
            Self::WriteAfterCommitBeforePublish => "write::after_commit_before_publish",
            Self::TxnAfterApplyBeforePublish => "txn::after_apply_before_publish",
            Self::DeleteAfterBegin => "delete::after_begin",
            Self::DeleteAfterDropBeforeEnd => "delete::after_drop_before_end",
            Self::RecoveryAfterDropBeforeRecord => "recovery::after_drop_before_record",
            Self::CheckpointAfterWriteBeforeTruncate => "checkpoint::after_write_before_truncate",
            Self::MergeAfterBegin => "merge::after_begin",
            Self::MergeAfterApplyBeforePublish => "merge::after_apply_before_publish",
            Self::ForkBeforeRecord => "fork::before_record",
            Self::TagBeforeRecord => "tag::before_record",
            Self::ReplaceAfterCommitBeforePublish => "replace::after_commit_before_publish",
            Self::CreateAfterDatasetBeforePublish => "create::after_dataset_before_publish",
            Self::MergeAfterTableApplied => "merge::after_table_applied",
            Self::CollectAfterBegin => "collect::after_begin",
            Self::CollectAfterDropBeforeEnd => "collect::after_drop_before_end",
            Self::MergeAfterBatchApplied => "merge::after_batch_applied",
        }
    }
}

impl std::fmt::Display for FailPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FailPoint {
    type Err = crate::Error;

    /// The point named `s`, or [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| crate::Error::InvalidArgument(format!("unknown fail point {s:?}")))
    }
}

#[cfg(feature = "failpoints")]
#[derive(Debug, Default)]
struct Armed {
    /// Point → how many of its hits to let pass before stopping.
    points: std::collections::HashMap<FailPoint, u64>,
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
    /// Stop here if `point` is armed (disarming it). A no-op without the
    /// `failpoints` feature.
    #[inline]
    pub(crate) fn check(&self, point: FailPoint) -> anyhow::Result<()> {
        #[cfg(not(feature = "failpoints"))]
        let _ = point;
        #[cfg(feature = "failpoints")]
        {
            let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
            armed.hits += 1;
            let mut stop = false;
            if let Some(n) = armed.points.get_mut(&point) {
                if *n == 0 {
                    armed.points.remove(&point);
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
                return Err(crate::Error::FailPoint(point.name().to_string()).into());
            }
        }
        Ok(())
    }

    /// Arm `point` to stop at its hit number `skip + 1` from now.
    #[cfg(feature = "failpoints")]
    pub(crate) fn arm(&self, point: FailPoint, skip: u64) {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .points
            .insert(point, skip);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz inputs name points by their position in [`ALL`]: points are
    /// only ever appended. This list is frozen; a new point goes at the
    /// end of both.
    #[test]
    fn points_keep_their_positions() {
        let frozen = [
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
            "merge::after_batch_applied",
        ];
        let names: Vec<&str> = ALL.iter().map(|p| p.name()).collect();
        assert!(names.len() >= frozen.len());
        assert_eq!(&names[..frozen.len()], &frozen[..]);
        for p in ALL {
            assert_eq!(p.name().parse::<FailPoint>().ok(), Some(*p));
            assert_eq!(p.to_string(), p.name());
        }
    }
}
