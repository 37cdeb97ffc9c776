//! `lancebranch` command line: inspect and change a branched store, and a
//! demo that shows the library end to end.
//!
//! ```text
//! lancebranch [--store DIR] [--json] <command>
//!   demo [--dir DIR]              build a small property graph, branch, merge, crash, recover
//!   init                          create an empty store
//!   branches                      list branches
//!   fork NAME [--from B] [--at TAG]
//!   delete-branch NAME [--cascade]
//!   tag NAME [--branch B]         tags                        list tags
//!   diff A [B]  [--rows]          what merging A into B (default main) would bring
//!   merge SOURCE [--into T] [--policy fail|ours|theirs|TABLE=POLICY] [--key [TABLE=]COLS]
//!   log                           catalog records since the last checkpoint
//!   recover                       open the store (runs recovery) and report it
//!   fsck [--repair]               check the store's consistency
//!   wal dump                      every frame of the catalog log, read offline
//!   scan TABLE [--branch B] [--filter SQL] [--limit N] [--columns a,b]
//!   import TABLE FILE [--branch B] [--format csv|json|parquet]
//!          [--mode create|append|overwrite|upsert] [--key COLS]
//!   export TABLE [--branch B | --at TAG] [--filter SQL] [--columns a,b]
//!          [--format csv|json|parquet] [-o FILE|-] [--order-by COLS]
//!   delete-rows TABLE --filter SQL [--branch B]
//!   create-table TABLE --columns NAME:TYPE,.. [--key COLS] [--branch B]
//!   drop-table TABLE [--branch B]
//! ```
//!
//! Exit codes: 0 ok, 1 error, 2 usage error, 3 merge refused because of
//! conflicts, 4 fsck found problems it did not repair.

/// `println!` that ends the program quietly when stdout is closed (a
/// pipe into `head`), instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::output::stdout_failed(e);
        }
    }};
}

/// `print!` with the behaviour of [`outln!`].
macro_rules! outp {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::output::stdout_failed(e);
        }
    }};
}

mod commands;
mod crash;
mod data;
mod demo;
mod demo_data;
mod errors;
mod formats;
mod output;
mod tables;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Out;

/// Exit code: merge refused because of conflicts.
pub const EXIT_CONFLICTS: u8 = 3;
/// Exit code: fsck found problems it did not repair.
pub const EXIT_FSCK_PROBLEMS: u8 = 4;

/// Git-like, crash-safe branches for Arrow/Lance table stores.
#[derive(Debug, Parser)]
#[command(name = "lancebranch", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 ok, 1 error, 2 usage error, \
3 merge refused because of conflicts, 4 fsck found problems it did not repair.")]
pub struct Cli {
    /// The store: a directory, or `s3://bucket/prefix` on S3 or an
    /// S3-compatible server (endpoint, region and keys from
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY). On object storage, commands that only read
    /// follow the store read-only; commands that change it take it over
    /// (a writer elsewhere is fenced).
    #[arg(
        long,
        global = true,
        env = "LANCEBRANCH_STORE",
        default_value = "./lancebranch-demo"
    )]
    pub store: PathBuf,
    /// Print one JSON document on stdout instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a small property graph in a fresh store, query it, branch it,
    /// merge with a conflict, crash mid-merge on purpose and recover.
    Demo {
        /// Where to build the demo store (default: --store). An existing
        /// demo store there is replaced.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Create an empty store at --store (nothing happens to an existing
    /// one).
    Init,
    /// List branches: parent, fork tag, tables, tables materialized on the
    /// branch's own Lance lines.
    Branches,
    /// Fork a new branch (one catalog record, no data copied).
    Fork {
        /// The new branch.
        name: String,
        /// The branch to fork from.
        #[arg(long, default_value = "main", conflicts_with = "at")]
        from: String,
        /// Fork from what this tag pins instead.
        #[arg(long)]
        at: Option<String>,
    },
    /// Delete a branch and its Lance branches.
    DeleteBranch {
        /// The branch.
        name: String,
        /// Delete its child branches too.
        #[arg(long)]
        cascade: bool,
    },
    /// Tag what a branch sees now.
    Tag {
        /// The tag.
        name: String,
        /// The branch to tag.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// List tags.
    Tags,
    /// The changes branch A made since its merge base with B: what merging
    /// A into B would bring.
    Diff {
        /// The branch whose changes are shown.
        a: String,
        /// The branch compared against.
        #[arg(default_value = "main")]
        b: String,
        /// Print the changed rows too.
        #[arg(long)]
        rows: bool,
        /// Primary key: `COL[,COL..]` for every table or `TABLE=COL[,COL..]`
        /// (default: the schema's `lancebranch.primary_key`).
        #[arg(long = "key", value_name = "[TABLE=]COLS", value_parser = data::parse_key)]
        keys: Vec<data::KeyArg>,
    },
    /// Merge SOURCE into a branch. Exits 3 when conflicts refuse the merge.
    Merge {
        /// The branch merged from.
        source: String,
        /// The branch merged into.
        #[arg(long, default_value = "main")]
        into: String,
        /// Conflict policy: `fail` (apply nothing, report conflicts),
        /// `ours`, `theirs`, for every table or as `TABLE=POLICY`.
        #[arg(long = "policy", value_name = "[TABLE=]POLICY", value_parser = data::parse_policy)]
        policies: Vec<data::PolicyArg>,
        /// Primary key: `COL[,COL..]` for every table or `TABLE=COL[,COL..]`.
        #[arg(long = "key", value_name = "[TABLE=]COLS", value_parser = data::parse_key)]
        keys: Vec<data::KeyArg>,
    },
    /// The catalog's history: records since the last checkpoint, with LSNs.
    Log,
    /// Open the store, which runs recovery, and report what was pending and
    /// what recovery did.
    Recover,
    /// Check the store's consistency. Exits 4 when problems remain.
    Fsck {
        /// Repair what can be repaired.
        #[arg(long)]
        repair: bool,
    },
    /// The catalog's write-ahead log.
    Wal {
        /// What to do with it.
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Print rows of a table on a branch.
    Scan {
        /// The table.
        table: String,
        /// The branch.
        #[arg(long, default_value = "main")]
        branch: String,
        /// A SQL filter (a WHERE clause without the keyword).
        #[arg(long)]
        filter: Option<String>,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Only these columns.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
    },
    /// Import a CSV, JSON-lines or Parquet file into a table on a branch,
    /// streamed in batches and published once (a failed import changes
    /// nothing). Creates the table when missing (schema inferred from the
    /// file's first 1000 records, `--key` stored as its primary key).
    Import(transfer::Import),
    /// Export a table (on a branch or at a tag) to a file or stdout as CSV,
    /// JSON lines or Parquet, streamed.
    Export(transfer::Export),
    /// Delete the rows matching a SQL filter (a blank filter is refused);
    /// prints how many were removed.
    DeleteRows {
        /// The table.
        table: String,
        /// Which rows (a WHERE clause without the keyword).
        #[arg(long)]
        filter: String,
        /// The branch.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// Create an empty table from column declarations.
    CreateTable {
        /// The table.
        table: String,
        /// Columns as NAME:TYPE, comma-separated (int64, float64, utf8,
        /// bool, date, timestamp, vector(N), ...).
        #[arg(long, value_delimiter = ',', required = true, value_parser = tables::parse_column)]
        columns: Vec<(String, arrow_schema::DataType)>,
        /// Primary key columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        key: Option<Vec<String>>,
        /// The branch.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// Drop a table on a branch (other branches keep theirs).
    DropTable {
        /// The table.
        table: String,
        /// The branch.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// (internal) Start a merge that stops at a fail point and exit without
    /// cleaning up, as a crash would. Used by `demo`.
    #[command(name = "__crash-merge", hide = true)]
    CrashMerge {
        /// The store.
        #[arg(long)]
        dir: PathBuf,
        /// The branch merged from.
        #[arg(long)]
        source: String,
        /// The branch merged into.
        #[arg(long, default_value = "main")]
        into: String,
    },
}

/// `wal` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Every frame of the catalog log (LSN, record), read offline: works
    /// without opening the store, even while another process has it open.
    Dump,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli, out)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => errors::report(&e, out),
    }
}

/// Run one command; `Ok` carries the exit code.
async fn run(cli: Cli, out: Out) -> anyhow::Result<u8> {
    let store = cli.store;
    match cli.command {
        Command::Demo { dir } => demo::run(&dir.unwrap_or(store), out).await,
        Command::Init => commands::init(&store, out).await,
        Command::Branches => commands::branches(&store, out).await,
        Command::Fork { name, from, at } => {
            commands::fork(&store, out, &name, &from, at.as_deref()).await
        }
        Command::DeleteBranch { name, cascade } => {
            commands::delete_branch(&store, out, &name, cascade).await
        }
        Command::Tag { name, branch } => commands::tag(&store, out, &name, &branch).await,
        Command::Tags => commands::tags(&store, out).await,
        Command::Diff { a, b, rows, keys } => data::diff(&store, out, &a, &b, rows, &keys).await,
        Command::Merge {
            source,
            into,
            policies,
            keys,
        } => data::merge(&store, out, &source, &into, &policies, &keys).await,
        Command::Log => commands::log(&store, out).await,
        Command::Recover => commands::recover(&store, out).await,
        Command::Fsck { repair } => commands::fsck(&store, out, repair).await,
        Command::Wal {
            command: WalCommand::Dump,
        } => commands::wal_dump(&store, out),
        Command::Scan {
            table,
            branch,
            filter,
            limit,
            columns,
        } => data::scan(&store, out, &table, &branch, filter, limit, columns).await,
        Command::Import(args) => transfer::import(&store, out, args).await,
        Command::Export(args) => transfer::export(&store, out, args).await,
        Command::DeleteRows {
            table,
            filter,
            branch,
        } => tables::delete_rows(&store, out, &table, &branch, &filter).await,
        Command::CreateTable {
            table,
            columns,
            key,
            branch,
        } => tables::create_table(&store, out, &table, &branch, &columns, key.as_deref()).await,
        Command::DropTable { table, branch } => {
            tables::drop_table(&store, out, &table, &branch).await
        }
        Command::CrashMerge { dir, source, into } => crash::run(&dir, &source, &into).await,
    }
}
