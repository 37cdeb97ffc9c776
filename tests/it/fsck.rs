//! `fsck`: finds orphan Lance branches, orphan datasets and unpublished
//! versions, repairs them, and leaves every acknowledged row in place.

use std::sync::Arc;

use lancebranch::branched::{BranchedBackend, FsckProblem};
use lancebranch::{Error, LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::*;

async fn ids(b: &BranchedBackend, t: &str) -> Vec<i64> {
    ints(&b.scan(ScanRequest::table(t)).await.unwrap(), "id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_then_repairs_what_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    // Created after the fork, so no fork point pins it.
    main.create_table("gone", vec![people(0..1)]).await.unwrap();
    b.write("p", vec![people(3..4)], WriteMode::Append)
        .await
        .unwrap();
    b.tag("t").await.unwrap();
    assert!(main.fsck(false).await.unwrap().is_clean());
    // Dropped on every branch: collected at once.
    main.drop_table("gone").await.unwrap();
    assert!(!inner.table_names().await.unwrap().contains(&"gone".into()));
    assert!(main.fsck(false).await.unwrap().is_clean());

    // A dataset the catalog never knew, a zombie Lance branch directory,
    // and a write that crashed between its commit and its publish.
    inner
        .create_table("gone", vec![people(0..1)])
        .await
        .unwrap();
    std::fs::create_dir_all(dir.path().join("p.lance/tree/zombie/_versions")).unwrap();
    main.arm_failpoint(lancebranch::failpoints::FailPoint::WriteAfterCommitBeforePublish);
    let e = b
        .write("p", vec![people(9..10)], WriteMode::Append)
        .await
        .unwrap_err();
    assert!(matches!(Error::of(&e), Some(Error::FailPoint(_))));

    let report = main.fsck(false).await.unwrap();
    let mut kinds: Vec<&str> = report
        .problems
        .iter()
        .map(|p| match p {
            FsckProblem::OrphanTable { .. } => "orphan table",
            FsckProblem::OrphanLine { .. } => "orphan line",
            FsckProblem::UnpublishedVersion { .. } => "unpublished",
            _ => "other",
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec!["orphan line", "orphan table", "unpublished"],
        "{:#?}",
        report.problems
    );
    assert!(report.problems.iter().all(FsckProblem::is_repairable));
    assert!(report.repaired.is_empty());
    // Reporting changed nothing.
    assert!(dir.path().join("p.lance/tree/zombie").exists());
    assert!(inner.table_names().await.unwrap().contains(&"gone".into()));

    let fixed = main.fsck(true).await.unwrap();
    assert!(fixed.is_clean(), "{:#?}", fixed.problems);
    assert_eq!(fixed.repaired.len(), 3);
    assert!(!dir.path().join("p.lance/tree/zombie").exists());
    assert!(!inner.table_names().await.unwrap().contains(&"gone".into()));
    assert!(main.fsck(false).await.unwrap().is_clean());

    // Every acknowledged row is still there, and the tag still reads.
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 3]);
    let at_tag = main.fork_at("from-tag", "t").await.unwrap();
    assert_eq!(ids(&at_tag, "p").await, vec![0, 1, 2, 3]);
    b.write("p", vec![people(5..6)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 3, 5]);

    // And after a restart.
    drop((main, b, at_tag));
    let main = BranchedBackend::open(inner).await.unwrap();
    assert!(main.last_recovery().operations.is_empty());
    assert!(main.fsck(false).await.unwrap().is_clean());
    assert_eq!(
        ids(&main.branch("b").unwrap(), "p").await,
        vec![0, 1, 2, 3, 5]
    );
}
