//! Crash injection: every fail point of the branched store is cut, the
//! process "dies" (every handle dropped), the store is reopened — first
//! with recovery itself cut, then again — and the cut operation must be
//! entirely applied or entirely absent, every earlier acknowledged write
//! present, `fsck` clean after recovery, and the store usable.

use std::sync::Arc;

use lancebranch::branched::BranchedBackend;
use lancebranch::failpoints::{ALL, FailPoint};
use lancebranch::{Error, LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::*;

use crate::shared::Place;

async fn open(dir: &Place) -> (Arc<LanceDbBackend>, BranchedBackend) {
    let inner = crate::shared::inner(&dir.uri()).await;
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    (inner, main)
}

async fn ids(b: &BranchedBackend, t: &str) -> Vec<i64> {
    ints(&b.scan(ScanRequest::table(t)).await.unwrap(), "id")
}

/// Reopen after a crash: first crash recovery itself where it can be cut
/// (if the crash left it work there), then recover for real and check the
/// store is consistent.
async fn reopen(dir: &Place) -> (Arc<LanceDbBackend>, BranchedBackend) {
    {
        let inner = crate::shared::inner(&dir.uri()).await;
        let cut = [(FailPoint::RecoveryAfterDropBeforeRecord, 0)];
        match BranchedBackend::open_with_failpoints(inner, &cut).await {
            Ok(_) => {}
            Err(e) => assert!(is_cut(&e), "recovery failed: {e:#}"),
        }
    }
    let (inner, main) = open(dir).await;
    assert_clean(&main).await;
    (inner, main)
}

/// Recover every table of every branch, then `fsck` finds nothing.
async fn assert_clean(main: &BranchedBackend) {
    lancebranch::testing::recover_and_check(main).await.unwrap();
}

fn is_cut(e: &anyhow::Error) -> bool {
    matches!(Error::of(e), Some(Error::FailPoint(_)))
}

/// Lance branches of `table` that exist in the store, whole or left over
/// (what is under `tree/`).
async fn line_dirs(dir: &Place, table: &str) -> Vec<String> {
    let inner = crate::shared::inner(&dir.uri()).await;
    lancebranch::backend::BranchLines::list_lines(inner.as_ref(), table)
        .await
        .unwrap()
}

async fn first_write_on_branch(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = b
            .write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap_err();
        assert!(is_cut(&e), "{point}: {e:#}");
    }
    let (inner, main) = reopen(&dir).await;
    let b = main.branch("b").unwrap();
    assert_eq!(
        ids(&b, "p").await,
        vec![0, 1, 2],
        "{point}: cut write absent"
    );
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    assert!(
        line_dirs(&dir, "p").await.is_empty(),
        "{point}: no zombie Lance branch"
    );
    assert!(
        inner
            .dataset("p")
            .await
            .unwrap()
            .list_branches()
            .await
            .unwrap()
            .is_empty()
    );
    b.write("p", vec![people(5..6)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(
        ids(&b, "p").await,
        vec![0, 1, 2, 5],
        "{point}: usable after recovery"
    );
    assert_clean(&main).await;
}

async fn write_before_publish(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("p", vec![people(10..11)], WriteMode::Append)
            .await
            .unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = main
            .write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap_err();
        assert!(is_cut(&e), "{e:#}");
        main.arm_failpoint(point.parse().unwrap());
        let e = b.delete_rows("p", "id = 0").await.unwrap_err();
        assert!(is_cut(&e), "{e:#}");
    }
    let (_, main) = reopen(&dir).await;
    let b = main.branch("b").unwrap();
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 10]);
    main.write("p", vec![people(5..6)], WriteMode::Append)
        .await
        .unwrap();
    b.write("p", vec![people(6..7)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2, 5]);
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 6, 10]);
    assert_clean(&main).await;
}

async fn txn_before_publish(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("a", vec![people(0..2)]).await.unwrap();
        main.create_table("b", vec![people(0..2)]).await.unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = main
            .transaction()
            .write("a", vec![people(2..3)], WriteMode::Append)
            .delete_rows("b", "id = 0")
            .commit()
            .await
            .unwrap_err();
        assert!(is_cut(&e), "{e:#}");
    }
    let (_, main) = reopen(&dir).await;
    assert_eq!(ids(&main, "a").await, vec![0, 1]);
    assert_eq!(ids(&main, "b").await, vec![0, 1]);
    main.transaction()
        .write("a", vec![people(7..8)], WriteMode::Append)
        .write("b", vec![people(7..8)], WriteMode::Append)
        .commit()
        .await
        .unwrap();
    assert_eq!(ids(&main, "a").await, vec![0, 1, 7]);
    assert_eq!(ids(&main, "b").await, vec![0, 1, 7]);
    assert_clean(&main).await;
}

async fn delete_branch_cut(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = main.delete_branch("b", false).await.unwrap_err();
        assert!(is_cut(&e), "{e:#}");
        // Gone from view at once, whatever happens next.
        assert!(main.branch("b").is_err());
    }
    let (_, main) = reopen(&dir).await;
    assert!(main.branch("b").is_err(), "{point}: the delete completes");
    assert!(
        line_dirs(&dir, "p").await.is_empty(),
        "{point}: Lance branch removed"
    );
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(9..10)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 9]);
    assert_clean(&main).await;
}

async fn crash_inside_recovery(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        main.arm_failpoint(FailPoint::LineAfterCreateBeforeEnd);
        assert!(is_cut(
            &b.write("p", vec![people(3..4)], WriteMode::Append)
                .await
                .unwrap_err()
        ));
        // Recovery itself is cut after removing the line, before logging.
        main.arm_failpoint(point.parse().unwrap());
        let e = main.recover_staging("p").await.unwrap_err();
        assert!(is_cut(&e), "{e:#}");
    }
    // Recovering again converges.
    let (_, main) = reopen(&dir).await;
    let b = main.branch("b").unwrap();
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2]);
    assert!(line_dirs(&dir, "p").await.is_empty());
    b.write("p", vec![people(4..5)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 4]);
    // And a third open is a no-op.
    drop((main, b));
    let (_, main) = open(&dir).await;
    assert_eq!(ids(&main.branch("b").unwrap(), "p").await, vec![0, 1, 2, 4]);
    assert_clean(&main).await;
}

async fn checkpoint_cut(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap();
        b.tag("t").await.unwrap();
        main.arm_failpoint(point.parse().unwrap());
        assert!(is_cut(&main.checkpoint().await.unwrap_err()));
    }
    let (_, main) = reopen(&dir).await;
    assert_eq!(ids(&main.branch("b").unwrap(), "p").await, vec![0, 1, 2, 3]);
    assert_eq!(main.list_tags().len(), 1);
    main.checkpoint().await.unwrap();
    let c = main.fork("c").await.unwrap();
    drop((main, c));
    let (_, main) = open(&dir).await;
    let names: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    assert_eq!(names, vec!["main", "b", "c"]);
    assert_clean(&main).await;
}

async fn merge_cut_nth(point: &str, skip: u64, s3: bool) {
    use lancebranch::branched::{MergeOptions, MergeOutcome};
    let dir = Place::new(s3);
    let opts = || MergeOptions::default().key("p", &["id"]).key("q", &["id"]);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        main.create_table("q", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap();
        b.delete_rows("q", "id = 0").await.unwrap();
        main.write("q", vec![people(9..10)], WriteMode::Append)
            .await
            .unwrap();
        main.arm_failpoint_nth(point.parse().unwrap(), skip);
        let e = main.merge(&b, opts()).await.unwrap_err();
        assert!(is_cut(&e), "{point}: {e:#}");
    }
    let (_, main) = reopen(&dir).await;
    assert_eq!(
        ids(&main, "p").await,
        vec![0, 1, 2],
        "{point}: merge entirely absent"
    );
    assert_eq!(ids(&main, "q").await, vec![0, 1, 2, 9]);
    let b = main.branch("b").unwrap();
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 3]);
    let r = main.merge(&b, opts()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged);
    assert_eq!(
        ids(&main, "p").await,
        vec![0, 1, 2, 3],
        "{point}: merge again works"
    );
    assert_eq!(ids(&main, "q").await, vec![1, 2, 9]);
    drop((main, b));
    let (_, main) = open(&dir).await;
    assert_eq!(
        ids(&main, "q").await,
        vec![1, 2, 9],
        "{point}: merged state is durable"
    );
    assert_clean(&main).await;
}

async fn fork_or_tag_cut(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        main.tag("t0").await.unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = if point.starts_with("fork") {
            main.fork("b").await.unwrap_err()
        } else {
            main.tag("t1").await.unwrap_err()
        };
        assert!(is_cut(&e), "{point}: {e:#}");
        // fork_at is cut at the same point.
        if point.starts_with("fork") {
            main.arm_failpoint(point.parse().unwrap());
            assert!(is_cut(&main.fork_at("c", "t0").await.unwrap_err()));
        }
    }
    let (_, main) = reopen(&dir).await;
    let names: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    assert_eq!(names, vec!["main"], "{point}: no branch appeared");
    let tags: Vec<String> = main.list_tags().into_iter().map(|t| t.name).collect();
    assert_eq!(tags, vec!["t0"], "{point}: no tag appeared");
    main.fork("b").await.unwrap();
    main.fork_at("c", "t0").await.unwrap();
    main.tag("t1").await.unwrap();
    assert_eq!(ids(&main.branch("c").unwrap(), "p").await, vec![0, 1, 2]);
    assert_clean(&main).await;
}

async fn replace_cut(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        for view in [&main, &b] {
            main.arm_failpoint(point.parse().unwrap());
            let e = view
                .replace_table_atomic("p", vec![people(7..9)], people(0..1).schema())
                .await
                .unwrap_err();
            assert!(is_cut(&e), "{point}: {e:#}");
        }
    }
    let (_, main) = reopen(&dir).await;
    let b = main.branch("b").unwrap();
    assert_eq!(
        ids(&main, "p").await,
        vec![0, 1, 2],
        "{point}: replace absent"
    );
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2]);
    b.replace_table_atomic("p", vec![people(7..9)], people(0..1).schema())
        .await
        .unwrap();
    assert_eq!(ids(&b, "p").await, vec![7, 8]);
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    assert_clean(&main).await;
}

async fn create_cut(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = main
            .create_table("n", vec![people(0..2)])
            .await
            .unwrap_err();
        assert!(is_cut(&e), "{point}: {e:#}");
        main.arm_failpoint(point.parse().unwrap());
        let e = b.create_table("m", vec![people(0..2)]).await.unwrap_err();
        assert!(is_cut(&e), "{point}: {e:#}");
    }
    let (inner, main) = reopen(&dir).await;
    let undone = main
        .last_recovery()
        .operations
        .iter()
        .filter(|o| o.kind == "table creation" && o.action == "undone")
        .count();
    assert!(undone >= 1, "{:?}", main.last_recovery());
    let b = main.branch("b").unwrap();
    assert!(
        !main.table_exists("n").await.unwrap(),
        "{point}: create absent"
    );
    assert!(!b.table_exists("m").await.unwrap());
    let mut datasets = inner.table_names().await.unwrap();
    datasets.sort();
    assert_eq!(datasets, vec!["p"], "{point}: no dataset left behind");
    main.create_table("n", vec![people(0..2)]).await.unwrap();
    b.create_table("m", vec![people(4..5)]).await.unwrap();
    assert_eq!(ids(&main, "n").await, vec![0, 1]);
    assert_eq!(ids(&b, "m").await, vec![4]);
    assert!(!main.table_exists("m").await.unwrap());
    assert_clean(&main).await;
}

/// A merge of two tables cut after the first and after the second table.
async fn merge_table_cut(point: &str, s3: bool) {
    for skip in 0..2 {
        merge_cut_nth(point, skip, s3).await;
    }
}

/// A merge in batches of one key cut after its first and after its second
/// batch: nothing of it is published; merged again, every batch lands.
async fn merge_batch_cut(point: &str, s3: bool) {
    use lancebranch::branched::{MergeOptions, MergeOutcome};
    let opts = || MergeOptions::default().key("p", &["id"]).batch_rows(1);
    for skip in 0..2 {
        let dir = Place::new(s3);
        {
            let (_, main) = open(&dir).await;
            main.create_table("p", vec![people(0..3)]).await.unwrap();
            let b = main.fork("b").await.unwrap();
            b.write("p", vec![people(3..6)], WriteMode::Append)
                .await
                .unwrap();
            b.delete_rows("p", "id = 0").await.unwrap();
            main.arm_failpoint_nth(point.parse().unwrap(), skip);
            let e = main.merge(&b, opts()).await.unwrap_err();
            assert!(is_cut(&e), "{point}: {e:#}");
        }
        let (_, main) = reopen(&dir).await;
        assert_eq!(
            ids(&main, "p").await,
            vec![0, 1, 2],
            "{point} after {skip} batches: merge entirely absent"
        );
        let b = main.branch("b").unwrap();
        // Recovery may have published main's rolled-back line anew: a
        // fast-forward or a merge, never a conflict.
        let r = main.merge(&b, opts()).await.unwrap();
        assert_ne!(r.outcome, MergeOutcome::Conflicted);
        assert_eq!(ids(&main, "p").await, vec![1, 2, 3, 4, 5]);
        drop((main, b));
        let (_, main) = open(&dir).await;
        assert_eq!(
            ids(&main, "p").await,
            vec![1, 2, 3, 4, 5],
            "{point}: merged state is durable"
        );
        assert_clean(&main).await;
    }
}

/// A garbage collection cut: after a table dropped on every branch, and
/// after deleting a branch that created its own table. The change is
/// visible from its record on; recovery finishes the collection, so no
/// dataset or Lance branch nothing reads is left.
async fn collect_cut(point: &str, s3: bool) {
    let dir = Place::new(s3);
    {
        let (_, main) = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        // Created after the fork: only main reads it.
        main.create_table("gone", vec![people(0..1)]).await.unwrap();
        b.create_table("own", vec![people(5..6)]).await.unwrap();
        b.write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap();
        main.arm_failpoint(point.parse().unwrap());
        let e = main.drop_table("gone").await.unwrap_err();
        assert!(is_cut(&e), "{point}: {e:#}");
    }
    let (inner, main) = reopen(&dir).await;
    assert!(!main.table_exists("gone").await.unwrap(), "{point}");
    let mut datasets = inner.table_names().await.unwrap();
    datasets.sort();
    assert_eq!(
        datasets,
        vec!["own", "p"],
        "{point}: dropped dataset purged"
    );
    {
        main.arm_failpoint(point.parse().unwrap());
        let e = main.delete_branch("b", false).await.unwrap_err();
        assert!(is_cut(&e), "{point}: {e:#}");
    }
    drop(main);
    let (inner, main) = reopen(&dir).await;
    assert!(main.branch("b").is_err(), "{point}: deletion finished");
    assert_eq!(inner.table_names().await.unwrap(), vec!["p"], "{point}");
    assert!(
        line_dirs(&dir, "p").await.is_empty(),
        "{point}: lines removed"
    );
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    assert_clean(&main).await;
}

/// Cut fail point `point` in its scenario, on a local store or (`s3`) on
/// one on the local S3 server.
async fn cut(point: &str, s3: bool) {
    match point {
        "line::after_begin"
        | "line::after_drop_old_before_create"
        | "line::after_create_before_end" => first_write_on_branch(point, s3).await,
        "write::after_commit_before_publish" => write_before_publish(point, s3).await,
        "txn::after_apply_before_publish" => txn_before_publish(point, s3).await,
        "delete::after_begin" | "delete::after_drop_before_end" => {
            delete_branch_cut(point, s3).await
        }
        "recovery::after_drop_before_record" => crash_inside_recovery(point, s3).await,
        "checkpoint::after_write_before_truncate" => checkpoint_cut(point, s3).await,
        "merge::after_begin" | "merge::after_apply_before_publish" => {
            merge_cut_nth(point, 0, s3).await
        }
        "merge::after_table_applied" => merge_table_cut(point, s3).await,
        "merge::after_batch_applied" => merge_batch_cut(point, s3).await,
        "fork::before_record" | "tag::before_record" => fork_or_tag_cut(point, s3).await,
        "replace::after_commit_before_publish" => replace_cut(point, s3).await,
        "create::after_dataset_before_publish" => create_cut(point, s3).await,
        "collect::after_begin" | "collect::after_drop_before_end" => collect_cut(point, s3).await,
        other => panic!("fail point {other} has no crash scenario"),
    }
}

/// Every fail point the library lists is cut by a scenario here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fail_point_recovers() {
    for point in ALL.iter().map(|p| p.name()) {
        cut(point, false).await;
    }
}

/// The same cuts on a store on S3, whose catalog is an object log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fail_point_recovers_on_s3() {
    for point in ALL.iter().map(|p| p.name()) {
        cut(point, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fail_point_is_refused() {
    let dir = Place::new(false);
    let (_, main) = open(&dir).await;
    let _ = main;
    let e = "nope::nowhere".parse::<FailPoint>().unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert_eq!(
        "merge::after_begin".parse::<FailPoint>().unwrap(),
        FailPoint::MergeAfterBegin
    );
    for p in ALL {
        assert_eq!(p.name().parse::<FailPoint>().unwrap(), *p);
    }
}
