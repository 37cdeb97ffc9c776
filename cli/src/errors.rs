//! Errors of the command line: the `error: ...` line, a hint of what to do,
//! and the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use lancebranch::Error;
use serde_json::json;

use crate::output::Out;

/// The store directory holds no lancebranch store.
#[derive(Debug, thiserror::Error)]
#[error("no lancebranch store at {}", .0.display())]
pub struct StoreNotFound(pub PathBuf);

/// What to tell the user to do about `err`, if anything useful.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    if let Some(StoreNotFound(p)) = err.downcast_ref::<StoreNotFound>() {
        return Some(format!(
            "create an empty one with `lancebranch --store {} init` (or a demo store with `lancebranch demo --dir {}`), or point --store (or LANCEBRANCH_STORE) at an existing store",
            p.display(),
            p.display()
        ));
    }
    match Error::of(err) {
        Some(Error::Fenced { .. }) => {
            return Some(
                "another process opened this store for writing after this one; run the command again to take it over"
                    .into(),
            );
        }
        Some(Error::ReadOnlyStore { .. }) => {
            return Some("this store is open read-only here; change it through its writer".into());
        }
        _ => {}
    }
    let locked = matches!(Error::of(err), Some(Error::StoreLocked { .. }))
        || err.chain().any(|e| {
            matches!(
                e.downcast_ref::<lancebranch_wal::Error>(),
                Some(lancebranch_wal::Error::Locked { .. })
            )
        });
    if locked {
        return Some(
            "another process has this store open; wait for it to finish (`wal dump` works meanwhile)"
                .into(),
        );
    }
    if let Some(b) = err.downcast_ref::<crate::formats::BadInput>() {
        let h = match b.line {
            None if b.detail == "no such file" => format!("check the path {}", b.file),
            Some(l) => format!(
                "fix line {l} of {} (nothing was imported); a column whose type was inferred \
                 from the first 1000 records can be declared first with `lancebranch create-table`",
                b.file
            ),
            None => format!(
                "check that {} is the format you named (nothing was imported)",
                b.file
            ),
        };
        return Some(h);
    }
    let h = match Error::of(err)? {
        Error::BranchNotFound(_) => "run `lancebranch branches` to list them",
        Error::BranchExists(_) => "pick another name, or `lancebranch delete-branch NAME` first",
        Error::TagNotFound(_) => "run `lancebranch tags` to list them",
        Error::TagExists(_) => "pick another tag name",
        Error::TableNotFound(_) => "run `lancebranch branches` to see the tables of each branch",
        Error::InvalidName { .. } => {
            "names use ASCII letters, digits, '-', '_' and '.', and do not start with '.'"
        }
        Error::InvalidFilter { .. } => {
            "a filter is a SQL WHERE clause without the keyword, e.g. --filter \"id > 3 AND label = 'person'\""
        }
        Error::InvalidColumn { .. } => {
            "run `lancebranch scan TABLE --limit 1` to see the table's columns"
        }
        Error::MissingMergeKey(_) => {
            "pass --key COL (or --key TABLE=COL), or set schema metadata \"lancebranch.primary_key\""
        }
        Error::NoMergeBase(..) => {
            "merge a branch with its parent or child, or two siblings; see `lancebranch branches`"
        }
        Error::BranchInUse { .. } => "see the reason above; `--cascade` deletes child branches",
        Error::SchemaMismatch { .. } => {
            "the rows do not fit the table: compare with `lancebranch scan TABLE --limit 1`, or import into a new table"
        }
        Error::TableExists(_) => {
            "the branch has that table: `import --mode append|overwrite|upsert` writes to it; or pick another name"
        }
        _ => return None,
    };
    Some(h.to_string())
}

/// Print `err` (and a hint) on stderr, and as a JSON document on stdout
/// with `--json`; return exit code 1.
pub fn report(err: &anyhow::Error, out: Out) -> ExitCode {
    let hint = hint(err);
    eprintln!("error: {err:#}");
    if let Some(h) = &hint {
        eprintln!("hint: {h}");
    }
    if out.json {
        let doc = json!({ "error": format!("{err:#}"), "hint": hint, "exit_code": 1 });
        let _ = out.doc(&doc);
    }
    ExitCode::FAILURE
}
