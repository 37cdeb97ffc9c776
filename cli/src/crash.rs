//! The hidden `__crash-merge` command: a merge that dies mid-way.
//!
//! It arms the fail point `merge::after_apply_before_publish`, merges with
//! policy `theirs`, and when the merge stops there (its changes applied to
//! the target's Lance tables, nothing published) it exits at once with
//! [`CRASH_EXIT`], dropping no handle and flushing nothing, as a process
//! killed at that moment would.

use std::path::Path;

use anyhow::Result;
use lancebranch::Error;
use lancebranch::branched::{ConflictPolicy, MergeOptions};
use lancebranch::failpoints::FailPoint;

use crate::commands::open;

/// The fail point the crash is injected at.
pub const FAIL_POINT: FailPoint = FailPoint::MergeAfterApplyBeforePublish;

/// The exit code of a child that crashed as planned.
pub const CRASH_EXIT: i32 = 86;

/// Run the crashing merge of `source` into `into` in store `dir`.
pub async fn run(dir: &Path, source: &str, into: &str) -> Result<u8> {
    let main = open(dir).await?;
    let (src, target) = (main.branch(source)?, main.branch(into)?);
    target.arm_failpoint(FAIL_POINT);
    let opts = MergeOptions::default().default_policy(ConflictPolicy::Theirs);
    match target.merge(&src, opts).await {
        Err(e) if matches!(Error::of(&e), Some(Error::FailPoint(_))) => {
            outln!("crashing: merge of {source} into {into} stopped at {FAIL_POINT}");
            // No destructors, no flush of anything the library holds: the
            // store is left exactly as a killed process leaves it.
            std::process::exit(CRASH_EXIT);
        }
        Err(e) => Err(e),
        Ok(r) => anyhow::bail!(
            "the merge finished ({:?}) without reaching {FAIL_POINT}: nothing to crash",
            r.outcome
        ),
    }
}
