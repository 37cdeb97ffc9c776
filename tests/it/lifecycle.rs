//! Correctness under concurrency and over the whole lifecycle: one test per
//! bug of issue 12, each of which failed before its fix. Interleavings are
//! made exact with [`Pausing`], which stops an operation at a chosen call
//! of the store beneath it; each concurrent outcome must equal the outcome
//! of *some* serial order of the operations.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancebranch::backend::BranchLines;
use lancebranch::branched::{
    BranchedBackend, ConflictPolicy, MergeOptions, MergeOutcome, PRIMARY_KEY_METADATA,
};
use lancebranch::lance::LanceDbOptions;
use lancebranch::{Error, LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use crate::pausing::Pausing;
use lancebranch::conformance::data::*;

/// `id` (the key, in metadata) and `a`.
fn keyed() -> SchemaRef {
    let md = [(PRIMARY_KEY_METADATA.to_string(), "id".to_string())];
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("a", DataType::Int64, true),
        ])
        .with_metadata(md.into_iter().collect()),
    )
}

pub(crate) fn kv(rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        keyed(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

/// The table as `(id, a)` pairs, sorted, duplicates kept.
pub(crate) async fn pairs(v: &BranchedBackend, t: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let batches = v.scan(ScanRequest::table(t)).await;
    for b in batches.unwrap_or_else(|e| panic!("scanning {t} on {}: {e:#}", v.branch_name())) {
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (id, a) = (col("id"), col("a"));
        out.extend((0..b.num_rows()).map(|i| (id.value(i), a.value(i))));
    }
    out.sort_unstable();
    out
}

async fn ids(b: &BranchedBackend, t: &str) -> Vec<i64> {
    let mut v = ints(&b.scan(ScanRequest::table(t)).await.unwrap(), "id");
    v.sort_unstable();
    v
}

async fn clean(main: &BranchedBackend) {
    let r = main.fsck(false).await.unwrap();
    assert!(r.is_clean(), "fsck: {:#?}", r.problems);
}

/// A store over a [`Pausing`] wrapper, with `k` = {1: 10, 2: 20, 3: 30}
/// on main and branch `b` forked from it.
async fn paused_store(dir: &tempfile::TempDir) -> (Arc<Pausing>, BranchedBackend, BranchedBackend) {
    let path = dir.path().to_str().unwrap().to_string();
    let store = Pausing::new(Arc::new(LanceDbBackend::open(&path).await.unwrap()));
    let main = BranchedBackend::open(store.clone()).await.unwrap();
    main.create_table("k", vec![kv(&[(1, 10), (2, 20), (3, 30)])])
        .await
        .unwrap();
    let b = main.fork("b").await.unwrap();
    (store, main, b)
}

/// A spawned operation whose end can be waited for a moment, then for
/// good.
struct Task<T>(Option<tokio::task::JoinHandle<T>>, Option<T>);

impl<T: Send + 'static> Task<T> {
    fn spawn(f: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(f)), None)
    }

    /// Wait at most a moment: a task blocked behind a lock the paused
    /// operation holds is left running. Whether it ended.
    async fn settle(&mut self) -> bool {
        if let Some(h) = self.0.as_mut()
            && let Ok(r) = tokio::time::timeout(Duration::from_millis(500), h).await
        {
            self.1 = Some(r.unwrap());
            self.0 = None;
        }
        self.1.is_some()
    }

    async fn join(self) -> T {
        match (self.0, self.1) {
            (_, Some(v)) => v,
            (Some(h), None) => h.await.unwrap(),
            (None, None) => unreachable!("a task has a handle or a result"),
        }
    }
}

fn fail() -> MergeOptions {
    MergeOptions::default().default_policy(ConflictPolicy::Fail)
}

/// Bug 1: a `merge_insert` acknowledged on the target while a merge plans
/// was overwritten by the merge, without a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_a_concurrent_write_of_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    b.merge_insert("k", &["id"], vec![kv(&[(2, 21)])])
        .await
        .unwrap();
    let pause = store.pause_next("row_changes", "k");
    let (m, src) = (main.clone(), b.clone());
    let merge = tokio::spawn(async move { m.merge(&src, fail()).await.unwrap() });
    pause.reached().await;
    let m = main.clone();
    let mut write = Task::spawn(async move {
        m.merge_insert("k", &["id"], vec![kv(&[(2, 99)])])
            .await
            .unwrap()
    });
    write.settle().await;
    pause.release();
    let report = merge.await.unwrap();
    write.join().await;
    // Merge first: fast-forward to 21, then the write makes it 99. Write
    // first: both sides changed row 2, a conflict under `Fail`, row 2 = 99.
    assert_eq!(pairs(&main, "k").await, vec![(1, 10), (2, 99), (3, 30)]);
    assert!(
        matches!(
            report.outcome,
            MergeOutcome::FastForward | MergeOutcome::Conflicted
        ),
        "{report:?}"
    );
    clean(&main).await;
}

/// Bug 1: two concurrent merges of the same source inserted its new rows
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_of_one_source_insert_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    b.write("k", vec![kv(&[(10, 100)])], WriteMode::Append)
        .await
        .unwrap();
    let pause = store.pause_next("row_changes", "k");
    let (m, src) = (main.clone(), b.clone());
    let first = tokio::spawn(async move { m.merge(&src, fail()).await.unwrap() });
    pause.reached().await;
    let (m, src) = (main.clone(), b.clone());
    let mut second = Task::spawn(async move { m.merge(&src, fail()).await.unwrap() });
    second.settle().await;
    pause.release();
    let (r1, r2) = (first.await.unwrap(), second.join().await);
    assert_eq!(
        pairs(&main, "k").await,
        vec![(1, 10), (2, 20), (3, 30), (10, 100)]
    );
    let outcomes = [r1.outcome, r2.outcome];
    assert!(
        outcomes.contains(&MergeOutcome::AlreadyUpToDate),
        "{outcomes:?}"
    );
    clean(&main).await;
}

/// Bug 1: a key inserted on the target while a merge that inserts the same
/// key plans gave two rows with one key instead of a `DivergentInsert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_insert_of_one_key_is_a_conflict_not_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    b.write("k", vec![kv(&[(10, 1)])], WriteMode::Append)
        .await
        .unwrap();
    let pause = store.pause_next("row_changes", "k");
    let (m, src) = (main.clone(), b.clone());
    let merge = tokio::spawn(async move { m.merge(&src, fail()).await.unwrap() });
    pause.reached().await;
    let m = main.clone();
    let mut upsert = Task::spawn(async move {
        m.merge_insert("k", &["id"], vec![kv(&[(10, 2)])])
            .await
            .unwrap()
    });
    upsert.settle().await;
    pause.release();
    let report = merge.await.unwrap();
    upsert.join().await;
    assert_ne!(report.outcome, MergeOutcome::Merged, "{report:?}");
    // Either order leaves exactly one row 10, holding the upsert's value.
    assert_eq!(
        pairs(&main, "k").await,
        vec![(1, 10), (2, 20), (3, 30), (10, 2)]
    );
    clean(&main).await;
}

/// Bug 2: re-creating a table on a branch reused and dropped the line a
/// child branch and a tag still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreating_a_table_keeps_what_children_and_tags_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let main = BranchedBackend::open(Arc::new(LanceDbBackend::open(&path).await.unwrap()))
        .await
        .unwrap();
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(3..4)], WriteMode::Append)
        .await
        .unwrap();
    let child = b.fork("child").await.unwrap();
    b.tag("before").await.unwrap();
    for round in 0..2 {
        b.drop_table("p").await.unwrap();
        if round == 0 {
            b.create_table("p", vec![people(50..52)]).await.unwrap();
        } else {
            b.replace_table_atomic("p", vec![people(60..61)], people_schema())
                .await
                .unwrap();
        }
        assert_eq!(ids(&child, "p").await, vec![0, 1, 2, 3], "round {round}");
        let at_tag = main
            .fork_at(&format!("at-tag-{round}"), "before")
            .await
            .unwrap();
        assert_eq!(ids(&at_tag, "p").await, vec![0, 1, 2, 3], "round {round}");
        clean(&main).await;
    }
    assert_eq!(ids(&b, "p").await, vec![60]);
    // After a restart too.
    drop((main, b, child));
    let main = BranchedBackend::open(Arc::new(LanceDbBackend::open(&path).await.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        ids(&main.branch("child").unwrap(), "p").await,
        vec![0, 1, 2, 3]
    );
    assert_eq!(ids(&main.branch("b").unwrap(), "p").await, vec![60]);
    clean(&main).await;
}

/// Bug 3: a first write that failed left its line parked under the branch
/// name; a branch re-created under that name adopted it, and it was never
/// removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_write_leaves_no_line_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    let wrong = kv(&[(1, 1)]);
    let e = b
        .write("p", vec![wrong], WriteMode::Append)
        .await
        .unwrap_err();
    assert!(Error::of(&e).is_some(), "typed: {e:#}");
    clean(&main).await;
    main.delete_branch("b", false).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(7..8)], WriteMode::Append)
        .await
        .unwrap();
    main.delete_branch("b", false).await.unwrap();
    assert_eq!(inner.list_lines("p").await.unwrap(), Vec::<String>::new());
    clean(&main).await;
}

/// Bug 3: a write in flight when its branch was deleted and re-created
/// published onto the new branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_never_lands_on_a_recreated_branch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    // Cut inside the branch's first write, as it makes its line.
    let pause = store.pause_next("create_line", "k");
    let bb = b.clone();
    let write =
        tokio::spawn(async move { bb.write("k", vec![kv(&[(5, 50)])], WriteMode::Append).await });
    pause.reached().await;
    let m = main.clone();
    let mut delete = Task::spawn(async move { m.delete_branch("b", false).await });
    let mut recreated = false;
    if delete.settle().await {
        main.fork("b").await.unwrap();
        recreated = true;
    }
    pause.release();
    let _ = write.await.unwrap();
    delete.join().await.unwrap_or(());
    if !recreated {
        main.fork("b").await.unwrap();
    }
    // The new branch is a fork of main, whatever the old one's write did.
    let new_b = main.branch("b").unwrap();
    assert_eq!(pairs(&new_b, "k").await, pairs(&main, "k").await);
    clean(&main).await;
}

/// Bug 4: optimize pruned the version the next merge of a branch starts
/// from, and the versions a snapshot reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_keeps_merge_bases_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let opts = LanceDbOptions {
        cleanup_older_than: Duration::ZERO,
        ..Default::default()
    };
    let inner = Arc::new(LanceDbBackend::open_with(&path, opts).await.unwrap());
    let main = BranchedBackend::open(inner).await.unwrap();
    main.create_table("k", vec![kv(&[(1, 10), (2, 20)])])
        .await
        .unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("k", vec![kv(&[(3, 30)])], WriteMode::Append)
        .await
        .unwrap();
    let first = main.merge(&b, fail()).await.unwrap();
    assert_eq!(first.outcome, MergeOutcome::FastForward);
    let snap = b.snapshot().unwrap();
    for i in 4..7 {
        b.write("k", vec![kv(&[(i, i * 10)])], WriteMode::Append)
            .await
            .unwrap();
    }
    b.optimize_table("k").await.unwrap();
    main.optimize_table("k").await.unwrap();
    assert_eq!(
        pairs(&snap, "k").await,
        vec![(1, 10), (2, 20), (3, 30)],
        "the snapshot still reads"
    );
    clean(&main).await;
    let diff = main.diff(&b).await.unwrap();
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0].counts, (3, 0, 0), "only what came after the merge");
    let r = main.merge(&b, fail()).await.unwrap();
    // Main's own compaction counts as a change of main: not a fast-forward.
    assert!(
        matches!(r.outcome, MergeOutcome::FastForward | MergeOutcome::Merged),
        "{r:?}"
    );
    assert_eq!(pairs(&main, "k").await, pairs(&b, "k").await);
    clean(&main).await;
}

/// Bug 5: deleting a branch that created its own tables left their
/// datasets, which fsck then called orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_branch_removes_what_only_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.create_table("own", vec![people(0..2)]).await.unwrap();
    b.write("p", vec![people(5..6)], WriteMode::Append)
        .await
        .unwrap();
    let c = b.fork("c").await.unwrap();
    c.create_table("deeper", vec![people(0..1)]).await.unwrap();
    main.create_table("later", vec![people(0..1)])
        .await
        .unwrap();
    main.drop_table("later").await.unwrap();
    clean(&main).await;
    main.delete_branch("b", true).await.unwrap();
    clean(&main).await;
    assert_eq!(inner.table_names().await.unwrap(), vec!["p".to_string()]);
    assert_eq!(inner.list_lines("p").await.unwrap(), Vec::<String>::new());
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
}

/// Bug 6: a filter with text after its first expression deleted every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_filter_text_is_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("people", vec![people(0..5)])
        .await
        .unwrap();
    let b = main.fork("b").await.unwrap();
    let bad = "1=1; DROP TABLE people";
    let backends: [&dyn StorageBackend; 3] = [inner.as_ref(), &main, &b];
    for store in backends {
        let typed = |e: anyhow::Error| {
            assert!(
                matches!(Error::of(&e), Some(Error::InvalidFilter { .. })),
                "{e:#}"
            )
        };
        typed(store.delete_rows("people", bad).await.unwrap_err());
        typed(store.count_rows("people", Some(bad)).await.unwrap_err());
        typed(
            store
                .scan(ScanRequest::table("people").filter("id = 1 OR TRUE LIMIT 0"))
                .await
                .unwrap_err(),
        );
        assert_eq!(store.count_rows("people", None).await.unwrap(), 5);
    }
    let e = b
        .transaction()
        .delete_rows("people", bad)
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(Error::of(&e), Some(Error::InvalidFilter { .. })));
    assert_eq!(b.count_rows("people", None).await.unwrap(), 5);
    clean(&main).await;
}

/// Bug 7: a failed automatic checkpoint turned an applied, durable commit
/// into an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_does_not_fail_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let opts = LanceDbOptions {
        durable: false,
        ..Default::default()
    };
    let inner = Arc::new(
        LanceDbBackend::open_with(&path, opts.clone())
            .await
            .unwrap(),
    );
    let main = BranchedBackend::open(inner).await.unwrap();
    // The checkpoint's temporary file cannot be created.
    std::fs::create_dir_all(dir.path().join("_lancebranch/checkpoint.tmp/x")).unwrap();
    let mut failed = 0;
    for i in 0..1100 {
        let name = format!("b{i}");
        if main.fork(&name).await.is_err() {
            failed += 1;
            assert!(main.branch(&name).is_ok(), "an error, yet applied");
        }
    }
    assert_eq!(failed, 0);
    drop(main);
    let inner = Arc::new(LanceDbBackend::open_with(&path, opts).await.unwrap());
    let main = BranchedBackend::open(inner).await.unwrap();
    assert_eq!(main.list_branches().len(), 1101);
}

/// Bug 7: of two concurrent `replace_table_atomic` of a missing table, the
/// second got `TableExists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replaces_of_a_missing_table_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    for (view, creates) in [
        (main.clone(), "create_table"),
        (b.clone(), "create_empty_table"),
    ] {
        // Main creates the dataset with its rows; a branch creates it empty.
        let pause = store.pause_next(creates, "n");
        let v = view.clone();
        let first = tokio::spawn(async move {
            v.replace_table_atomic("n", vec![kv(&[(1, 1)])], keyed())
                .await
        });
        pause.reached().await;
        let v = view.clone();
        let mut second = Task::spawn(async move {
            v.replace_table_atomic("n", vec![kv(&[(2, 2)])], keyed())
                .await
        });
        second.settle().await;
        pause.release();
        first.await.unwrap().unwrap();
        second.join().await.unwrap();
        let got = pairs(&view, "n").await;
        assert!(got == [(1, 1)] || got == [(2, 2)], "{got:?}");
        view.drop_table("n").await.unwrap();
    }
    clean(&main).await;
}

/// Bug 7: recovery of an interrupted merge logged `Abort` before it
/// restored the target's tables; if restoring failed, nothing retried it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_recovery_restores_before_it_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    {
        let main = BranchedBackend::open(Arc::new(LanceDbBackend::open(&path).await.unwrap()))
            .await
            .unwrap();
        main.create_table("k", vec![kv(&[(1, 10)])]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("k", vec![kv(&[(2, 20)])], WriteMode::Append)
            .await
            .unwrap();
        main.write("k", vec![kv(&[(3, 30)])], WriteMode::Append)
            .await
            .unwrap();
        main.arm_failpoint(lancebranch::failpoints::FailPoint::MergeAfterApplyBeforePublish);
        let e = main.merge(&b, fail()).await.unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::FailPoint(_))));
    }
    {
        // Recovery cannot write to Lance: it fails, and must leave the
        // merge pending for the next open.
        let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
        inner.write_faults().unwrap().fail_writes_after(0);
        assert!(BranchedBackend::open(inner).await.is_err());
    }
    let main = BranchedBackend::open(Arc::new(LanceDbBackend::open(&path).await.unwrap()))
        .await
        .unwrap();
    clean(&main).await;
    assert_eq!(pairs(&main, "k").await, vec![(1, 10), (3, 30)]);
}

/// Found by `lifecycle_ops` (seeds 1001 and 30001): re-creating a table
/// whose collection a dropped snapshot had held back ran that collection
/// while the create still held the table's dataset lock, and hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreating_after_a_dropped_snapshot_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("k", vec![kv(&[(1, 10)])]).await.unwrap();
    let snap = main.snapshot().unwrap();
    main.drop_table("k").await.unwrap();
    // The snapshot still reads the dataset: its collection waits.
    assert_eq!(pairs(&snap, "k").await, vec![(1, 10)]);
    drop(snap);
    let recreate = main.replace_table_atomic("k", vec![kv(&[(2, 20)])], keyed());
    tokio::time::timeout(Duration::from_secs(60), recreate)
        .await
        .expect("re-creating the table hung")
        .unwrap();
    assert_eq!(pairs(&main, "k").await, vec![(2, 20)]);
    clean(&main).await;
}

/// Found by `lifecycle_ops` (seed 2000004): a branch deleted while a
/// snapshot read one of its lines left that line's collection waiting;
/// the table was then dropped on main, whose collection skipped the
/// dataset as busy, and nothing ever purged it (fsck: orphan dataset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_held_back_by_a_snapshot_purges_the_dataset_it_freed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("k", vec![kv(&[(1, 10)])]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("k", vec![kv(&[(2, 20)])], WriteMode::Append)
        .await
        .unwrap();
    let snap = b.snapshot().unwrap();
    main.delete_branch("b", false).await.unwrap();
    main.drop_table("k").await.unwrap();
    assert_eq!(pairs(&snap, "k").await, vec![(1, 10), (2, 20)]);
    drop((snap, b));
    clean(&main).await;
    assert_eq!(inner.table_names().await.unwrap(), Vec::<String>::new());
    // And when the process dies with the snapshot alive.
    main.create_table("k", vec![kv(&[(1, 10)])]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("k", vec![kv(&[(2, 20)])], WriteMode::Append)
        .await
        .unwrap();
    let snap = b.snapshot().unwrap();
    main.delete_branch("b", false).await.unwrap();
    main.drop_table("k").await.unwrap();
    drop((snap, b, main));
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    clean(&main).await;
    assert_eq!(inner.table_names().await.unwrap(), Vec::<String>::new());
}

/// Found by `lifecycle_ops` (seed 10000008): merging between siblings whose
/// fork points differ appended a row the target already had (its base had
/// it, the source's base did not): one key twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sibling_merge_does_not_duplicate_a_row_only_the_target_base_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let main = BranchedBackend::open(Arc::new(LanceDbBackend::open(&path).await.unwrap()))
        .await
        .unwrap();
    main.create_table("k", vec![kv(&[(1, 10)])]).await.unwrap();
    let x = main.fork("x").await.unwrap();
    main.create_table("n", vec![kv(&[(13, 13)])]).await.unwrap();
    let y = main.fork("y").await.unwrap(); // its fork point has n
    let r = x.merge(&main, fail()).await.unwrap(); // x gets n from main
    assert_ne!(r.outcome, MergeOutcome::Conflicted);
    let r = y.merge(&x, fail()).await.unwrap();
    assert_ne!(r.outcome, MergeOutcome::Conflicted);
    assert_eq!(pairs(&y, "n").await, vec![(13, 13)]);
    clean(&main).await;
}

/// Found by `lifecycle_ops` (seed 120000002, input 2876): an optimize of a
/// table pruned its old versions while another branch's line of the same
/// table was dropped (a concurrent `drop_table` on that branch); Lance's
/// cleanup reads the manifests of every branch and failed on the one that
/// vanished ("pruning old versions: Not found: .../tree/lb2/_versions/...").
/// Here the race is run directly, many times over, on the store beneath.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_while_lines_of_the_table_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let opts = LanceDbOptions {
        cleanup_older_than: Duration::ZERO,
        durable: false,
        ..Default::default()
    };
    let inner = Arc::new(LanceDbBackend::open_with(&path, opts).await.unwrap());
    inner.create_table("k", vec![kv(&[(1, 10)])]).await.unwrap();
    for round in 0..30 {
        let lines: Vec<String> = (0..8).map(|i| format!("r{round}l{i}")).collect();
        let v = inner.latest_version("k", None).await.unwrap();
        for l in &lines {
            inner.create_line("k", l, None, v).await.unwrap();
        }
        inner
            .write("k", vec![kv(&[(round + 2, 0)])], WriteMode::Append)
            .await
            .unwrap();
        let latest = inner.latest_version("k", None).await.unwrap();
        let (a, b) = (inner.clone(), inner.clone());
        let optimize = tokio::spawn(async move { a.optimize_line("k", None, Some(latest)).await });
        let drops = tokio::spawn(async move {
            for l in &lines {
                b.drop_line("k", l).await?;
            }
            anyhow::Ok(())
        });
        optimize.await.unwrap().expect("optimize during line drops");
        drops.await.unwrap().expect("line drops during optimize");
    }
    assert_eq!(inner.list_lines("k").await.unwrap(), Vec::<String>::new());
}

/// A dataset read only by a tag and by the lines of a branch being
/// deleted: the tag deleted while the branch's lines are dropped left the
/// dataset behind (the tag's collection found the lines still there, and
/// the deletion's end named nothing), and fsck called it an orphan. Found
/// by `lifecycle_ops` (seed 190000002, input 508).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tag_while_a_branch_is_deleted_leaves_no_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    b.write("k", vec![kv(&[(4, 40)])], WriteMode::Append)
        .await
        .unwrap();
    main.tag("before-drop").await.unwrap();
    main.drop_table("k").await.unwrap();
    clean(&main).await;
    // Pause the deletion at its drop of b's line, after `BeginDelete`.
    let pause = store.pause_next("drop_line", "k");
    let deleting = {
        let main = main.clone();
        Task::spawn(async move { main.delete_branch("b", false).await })
    };
    pause.reached().await;
    main.delete_tag("before-drop").await.unwrap();
    pause.release();
    deleting.join().await.unwrap();
    clean(&main).await;
    assert_eq!(store.table_names().await.unwrap(), Vec::<String>::new());
}

/// A collection whose line lived on a dataset that, by the time it ran,
/// only a live snapshot read: `collect` held it back for the snapshot,
/// but fsck's view of "held back" only looked at the datasets it named,
/// not those of its lines, and called it an operation that never ended.
/// Found by `lifecycle_ops` (seed 210000002, input 6501).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_held_back_by_the_dataset_of_its_line_is_not_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (store, main, b) = paused_store(&dir).await;
    // b creates table n (its dataset and b's line), then main creates its
    // own n on the same dataset: no fork point reads n.
    b.create_table("n", vec![kv(&[(1, 1)])]).await.unwrap();
    main.create_table("n", vec![kv(&[(2, 2)])]).await.unwrap();
    b.tag("g").await.unwrap();
    b.drop_table("n").await.unwrap();
    let snap = main.snapshot().unwrap();
    // The tag's collection (b's line of n) waits at its drop of the line,
    // while main still reads n; main then drops n.
    let pause = store.pause_next("drop_line", "n");
    let untag = {
        let main = main.clone();
        Task::spawn(async move { main.delete_tag("g").await })
    };
    pause.reached().await;
    main.drop_table("n").await.unwrap();
    pause.release();
    untag.join().await.unwrap();
    // Both collections wait for the snapshot, which still reads n.
    assert_eq!(ids(&snap, "n").await, vec![2]);
    clean(&main).await;
    drop(snap);
    clean(&main).await;
    assert_eq!(store.table_names().await.unwrap(), vec!["k".to_string()]);
}
