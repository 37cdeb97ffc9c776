//! `BranchedBackend`: the conformance suite on the main view, a fresh branch
//! view and a depth-3 nested view; isolation, fork, tags, deletion,
//! restart and recovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use lancebranch::branched::BranchedBackend;
use lancebranch::lance::LanceDbOptions;
use lancebranch::{Error, LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::*;
use lancebranch::conformance::{Factory, Store, typed};

/// Views at a given fork depth (0 = main) over a fresh local store.
pub struct View(pub usize);

async fn fresh(dir: &tempfile::TempDir) -> (Arc<LanceDbBackend>, BranchedBackend) {
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    (inner, main)
}

#[async_trait]
impl Factory for View {
    async fn make(&self) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut view) = fresh(&dir).await;
        for depth in 0..self.0 {
            view = view.fork(&format!("b{depth}")).await.unwrap();
        }
        Store {
            backend: Arc::new(view),
            keep: vec![Box::new(dir)],
        }
    }
}

/// A branch of a store whose reads may be an hour stale with respect to
/// other handles' commits: the writer still reads its own writes.
pub struct StaleView;

#[async_trait]
impl Factory for StaleView {
    async fn make(&self) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let opts = lancebranch::lance::LanceDbOptions {
            read_consistency: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let path = dir.path().to_str().unwrap().to_string();
        let inner = Arc::new(LanceDbBackend::open_with(&path, opts).await.unwrap());
        let main = BranchedBackend::open(inner).await.unwrap();
        let view = main.fork("b").await.unwrap();
        Store {
            backend: Arc::new(view),
            keep: vec![Box::new(dir)],
        }
    }
}

lancebranch::conformance_suite!(branched_main, crate::branched::View(0));
lancebranch::conformance_suite!(branched_stale_an_hour, crate::branched::StaleView);
lancebranch::conformance_suite!(branched_fresh_branch, crate::branched::View(1));
lancebranch::conformance_suite!(branched_nested_3, crate::branched::View(3));

/// A fresh branch of a fresh store on the local S3 server: the catalog is
/// an object log beside the tables.
pub struct S3View;

#[async_trait]
impl Factory for S3View {
    async fn make(&self) -> Store {
        let uri = lancebranch::testing::s3::server().fresh_uri("branched");
        let inner = crate::shared::inner(&uri).await;
        let main = BranchedBackend::open(inner).await.unwrap();
        let dev = main.fork("dev").await.unwrap();
        Store {
            backend: Arc::new(dev),
            keep: vec![],
        }
    }
}

lancebranch::conformance_suite!(branched_s3_branch, crate::branched::S3View);

async fn ids(b: &BranchedBackend, t: &str) -> Vec<i64> {
    ints(&b.scan(ScanRequest::table(t)).await.unwrap(), "id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_isolates_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..5)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    let c = main.fork("c").await.unwrap();
    main.write("p", vec![people(100..101)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(
        ids(&b, "p").await,
        vec![0, 1, 2, 3, 4],
        "main's write invisible on the branch"
    );
    b.write("p", vec![people(200..201)], WriteMode::Append)
        .await
        .unwrap();
    b.delete_rows("p", "id = 0").await.unwrap();
    assert_eq!(ids(&b, "p").await, vec![1, 2, 3, 4, 200]);
    assert_eq!(
        ids(&main, "p").await,
        vec![0, 1, 2, 3, 4, 100],
        "branch writes invisible on main"
    );
    assert_eq!(ids(&c, "p").await, vec![0, 1, 2, 3, 4], "and on a sibling");
    // A table created on a branch is invisible elsewhere until merged.
    b.create_table("only_b", vec![people(7..9)]).await.unwrap();
    assert!(b.table_exists("only_b").await.unwrap());
    assert!(!main.table_exists("only_b").await.unwrap());
    assert!(!c.table_exists("only_b").await.unwrap());
    // A drop on a branch hides the table only there.
    c.drop_table("p").await.unwrap();
    assert!(!c.table_exists("p").await.unwrap());
    assert!(main.table_exists("p").await.unwrap());
    assert_eq!(ids(&b, "p").await, vec![1, 2, 3, 4, 200]);
    // Versions are the branch's own.
    assert!(b.get_table_version("p").await.unwrap() != main.get_table_version("p").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_is_one_record_and_no_lance_call() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, main) = fresh(&dir).await;
    for t in 0..5 {
        main.create_table(&format!("t{t}"), vec![people(0..10)])
            .await
            .unwrap();
    }
    let versions: Vec<u64> = {
        let mut v = vec![];
        for t in 0..5 {
            v.push(
                inner
                    .get_table_version(&format!("t{t}"))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        v
    };
    let synced = inner.sync_counter().unwrap().synced_writes();
    let b = main.fork("b").await.unwrap();
    assert_eq!(
        inner.sync_counter().unwrap().synced_writes(),
        synced,
        "fork wrote nothing to Lance"
    );
    for (t, version) in versions.iter().enumerate() {
        let name = format!("t{t}");
        assert_eq!(
            inner.get_table_version(&name).await.unwrap().unwrap(),
            *version
        );
        let ds = inner.dataset(&name).await.unwrap();
        assert!(
            ds.list_branches().await.unwrap().is_empty(),
            "no Lance branch yet"
        );
    }
    // First write materializes exactly that table's Lance branch.
    b.write("t3", vec![people(50..51)], WriteMode::Append)
        .await
        .unwrap();
    let ds = inner.dataset("t3").await.unwrap();
    assert_eq!(ds.list_branches().await.unwrap().len(), 1);
    let ds = inner.dataset("t2").await.unwrap();
    assert!(ds.list_branches().await.unwrap().is_empty());
    let info = main.list_branches();
    let bi = info.iter().find(|i| i.name == "b").unwrap();
    assert_eq!(bi.materialized, 1);
    assert_eq!(bi.parent.as_deref(), Some("main"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_notification_reaches_the_inner_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, main) = fresh(&dir).await;
    // The inner backend caches "missing" for a table nobody created yet.
    assert!(!inner.table_exists("fresh").await.unwrap());
    let b = main.fork("b").await.unwrap();
    b.create_table("fresh", vec![people(0..3)]).await.unwrap();
    // The dataset was made behind the inner cache's back; the notification
    // corrected it.
    assert!(inner.table_exists("fresh").await.unwrap());
    assert_eq!(b.count_rows("fresh", None).await.unwrap(), 3);
    assert!(!main.table_exists("fresh").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_forks_read_flat() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    main.create_scalar_index("p", &["id"], lancebranch::ScalarIndexType::BTree, None)
        .await
        .unwrap();
    let mut view = main.clone();
    let mut want = vec![0, 1, 2];
    for depth in 0..10i64 {
        view = view.fork(&format!("d{depth}")).await.unwrap();
        view.write("p", vec![people(10 + depth..11 + depth)], WriteMode::Append)
            .await
            .unwrap();
        want.push(10 + depth);
        assert_eq!(ids(&view, "p").await, want, "depth {depth}");
        // Filtered reads use the scalar index inherited up the chain.
        let hit = view
            .scan(ScanRequest::table("p").filter("id = 1"))
            .await
            .unwrap();
        assert_eq!(rows(&hit), 1, "indexed lookup at depth {depth}");
        assert_eq!(
            view.count_rows("p", Some("id >= 10")).await.unwrap(),
            depth as usize + 1
        );
    }
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_finds_branches_tags_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (b_ids, b_version) = {
        let (_, main) = fresh(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        b.write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap();
        b.tag("t1").await.unwrap();
        b.write("p", vec![people(4..5)], WriteMode::Append)
            .await
            .unwrap();
        main.fork("c").await.unwrap();
        (ids(&b, "p").await, b.get_table_version("p").await.unwrap())
    };
    // Everything is dropped: the store is reopened from disk.
    let (_, main) = fresh(&dir).await;
    let names: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    assert_eq!(names, vec!["main", "b", "c"]);
    let b = main.branch("b").unwrap();
    assert_eq!(ids(&b, "p").await, b_ids);
    assert_eq!(b.get_table_version("p").await.unwrap(), b_version);
    let tags = main.list_tags();
    assert_eq!(tags.len(), 1);
    let from_tag = main.fork_at("from-tag", "t1").await.unwrap();
    assert_eq!(ids(&from_tag, "p").await, vec![0, 1, 2, 3]);
    // And again after a checkpoint.
    main.checkpoint().await.unwrap();
    drop((main, b, from_tag));
    let (_, main) = fresh(&dir).await;
    assert_eq!(
        ids(&main.branch("from-tag").unwrap(), "p").await,
        vec![0, 1, 2, 3]
    );
    assert_eq!(ids(&main.branch("b").unwrap(), "p").await, b_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_branch_rules_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(3..4)], WriteMode::Append)
        .await
        .unwrap();
    let c = b.fork("c").await.unwrap();
    c.write("p", vec![people(4..5)], WriteMode::Append)
        .await
        .unwrap();
    let sib = main.fork("sib").await.unwrap();
    sib.write("p", vec![people(9..10)], WriteMode::Append)
        .await
        .unwrap();

    let e = main.delete_branch("main", false).await.unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidName { .. }), "{e:#}");
    let e = main.delete_branch("nope", false).await.unwrap_err();
    assert!(matches!(typed(&e), Error::BranchNotFound(_)), "{e:#}");
    let e = main.delete_branch("b", false).await.unwrap_err();
    assert!(matches!(typed(&e), Error::BranchInUse { .. }), "{e:#}");
    c.tag("pin").await.unwrap();
    let e = main.delete_branch("b", true).await.unwrap_err();
    assert!(
        matches!(typed(&e), Error::BranchInUse { .. }),
        "tag pins c: {e:#}"
    );
    main.delete_tag("pin").await.unwrap();

    main.delete_branch("b", true).await.unwrap();
    let names: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    assert_eq!(names, vec!["main", "sib"]);
    let tree = dir.path().join("p.lance").join("tree");
    let left: Vec<String> = std::fs::read_dir(&tree)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        left.len(),
        1,
        "only the sibling's Lance branch is left: {left:?}"
    );
    let ds = inner.dataset("p").await.unwrap();
    assert_eq!(ds.list_branches().await.unwrap().len(), 1);
    // Views of deleted branches refuse to work.
    let e = b
        .write("p", vec![people(7..8)], WriteMode::Append)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::BranchNotFound(_)), "{e:#}");
    let e = c.scan(ScanRequest::table("p")).await.unwrap_err();
    assert!(matches!(typed(&e), Error::BranchNotFound(_)), "{e:#}");
    // The rest still reads.
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
    assert_eq!(ids(&sib, "p").await, vec![0, 1, 2, 9]);
    // The name can be used again, for a fresh branch.
    let b2 = main.fork("b").await.unwrap();
    assert_eq!(ids(&b2, "p").await, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_with_zero_retention_keeps_branches_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(
        LanceDbBackend::open_with(
            &path,
            LanceDbOptions {
                cleanup_older_than: std::time::Duration::ZERO,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let lazy = main.fork("lazy").await.unwrap(); // never written: pins main's version
    let eager = main.fork("eager").await.unwrap();
    eager
        .write("p", vec![people(50..51)], WriteMode::Append)
        .await
        .unwrap();
    for i in 3..8 {
        main.write("p", vec![people(i..i + 1)], WriteMode::Append)
            .await
            .unwrap();
    }
    main.delete_rows("p", "id = 4").await.unwrap();
    main.optimize_table("p").await.unwrap();
    eager.optimize_table("p").await.unwrap();
    assert_eq!(ids(&lazy, "p").await, vec![0, 1, 2]);
    assert_eq!(ids(&eager, "p").await, vec![0, 1, 2, 50]);
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2, 3, 5, 6, 7]);
    // Without pins, the old main versions are gone.
    main.delete_branch("lazy", false).await.unwrap();
    main.optimize_table("p").await.unwrap();
    assert_eq!(ids(&eager, "p").await, vec![0, 1, 2, 50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_branch_input_is_typed_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    for bad in [
        "",
        "main",
        "a/b",
        "has space",
        ".hidden",
        "x.lock",
        &"l".repeat(101),
    ] {
        let e = main.fork(bad).await.unwrap_err();
        assert!(
            matches!(typed(&e), Error::InvalidName { .. }),
            "{bad:?}: {e:#}"
        );
    }
    main.fork("b").await.unwrap();
    let e = main.fork("b").await.unwrap_err();
    assert!(matches!(typed(&e), Error::BranchExists(_)), "{e:#}");
    let e = main.branch("zzz").unwrap_err();
    assert!(matches!(typed(&e), Error::BranchNotFound(_)), "{e:#}");
    let e = main.fork_at("x", "no-tag").await.unwrap_err();
    assert!(matches!(typed(&e), Error::TagNotFound(_)), "{e:#}");
    main.tag("t").await.unwrap();
    let e = main.tag("t").await.unwrap_err();
    assert!(matches!(typed(&e), Error::TagExists(_)), "{e:#}");
    let e = main.delete_tag("nope").await.unwrap_err();
    assert!(matches!(typed(&e), Error::TagNotFound(_)), "{e:#}");
    let e = main
        .scan(ScanRequest::table("p").on_line("lb1"))
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let names: Vec<String> = main.list_branches().into_iter().map(|b| b.name).collect();
    assert_eq!(names, vec!["main", "b"]);
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forks_with_one_name_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let m = main.clone();
        tasks.push(tokio::spawn(
            async move { m.fork("same").await.map(|_| ()) },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert!(matches!(typed(&e), Error::BranchExists(_)), "{e:#}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_sees_one_point_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("a", vec![people(0..1)]).await.unwrap();
    main.create_table("b", vec![people(0..1)]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let m = main.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 1i64;
            while !stop.load(Ordering::SeqCst) {
                m.write("a", vec![people(i..i + 1)], WriteMode::Append)
                    .await
                    .unwrap();
                i += 1;
            }
        })
    };
    for _ in 0..5 {
        let snap = main.snapshot().unwrap();
        let n1 = snap.count_rows("a", None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let n2 = snap.count_rows("a", None).await.unwrap();
        assert_eq!(n1, n2, "a snapshot does not move");
        let e = snap
            .write("a", vec![people(0..1)], WriteMode::Append)
            .await
            .unwrap_err();
        assert!(matches!(typed(&e), Error::ReadOnlyView(_)), "{e:#}");
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_lance_version_is_invisible_and_healed() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(3..4)], WriteMode::Append)
        .await
        .unwrap();
    // A crash between a Lance commit and its publish leaves a version the
    // catalog never published: simulate it by writing below the view.
    inner
        .write("p", vec![people(666..667)], WriteMode::Append)
        .await
        .unwrap();
    let line = main.list_branches();
    assert!(line.iter().any(|i| i.name == "b"));
    assert_eq!(
        ids(&main, "p").await,
        vec![0, 1, 2],
        "unpublished main version invisible"
    );
    // The next write restores the published contents first.
    main.write("p", vec![people(5..6)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2, 5]);
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 3]);
    // recover_staging heals without a write.
    inner
        .write("p", vec![people(777..778)], WriteMode::Append)
        .await
        .unwrap();
    main.recover_staging("p").await.unwrap();
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2, 5]);
    let latest = inner.get_table_version("p").await.unwrap();
    assert_eq!(
        main.get_table_version("p").await.unwrap(),
        latest,
        "healed: latest is published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_publish_tables_together() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("a", vec![people(0..1)]).await.unwrap();
    main.create_table("b", vec![people(0..1)]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let m = main.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 1i64;
            while !stop.load(Ordering::SeqCst) || i < 6 {
                m.transaction()
                    .write("a", vec![people(i..i + 1)], WriteMode::Append)
                    .write("b", vec![people(i..i + 1)], WriteMode::Append)
                    .commit()
                    .await
                    .unwrap();
                i += 1;
            }
            i
        })
    };
    let mut forks = 0;
    for round in 0..6 {
        let snap = main.snapshot().unwrap();
        let (na, nb) = (
            snap.count_rows("a", None).await.unwrap(),
            snap.count_rows("b", None).await.unwrap(),
        );
        assert_eq!(
            na, nb,
            "a snapshot never sees one table changed without the other"
        );
        // A fork taken meanwhile sees both tables at one point, too.
        let f = main.fork(&format!("f{round}")).await.unwrap();
        let (fa, fb) = (
            f.count_rows("a", None).await.unwrap(),
            f.count_rows("b", None).await.unwrap(),
        );
        assert_eq!(fa, fb);
        forks += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let n = writer.await.unwrap();
    assert_eq!(forks, 6);
    assert_eq!(main.count_rows("a", None).await.unwrap(), n as usize);
    assert_eq!(main.count_rows("b", None).await.unwrap(), n as usize);

    // A failing change publishes nothing.
    let before = (
        main.count_rows("a", None).await.unwrap(),
        main.count_rows("b", None).await.unwrap(),
    );
    let e = main
        .transaction()
        .write("a", vec![people(900..901)], WriteMode::Append)
        .write("b", vec![vectors(0..1)], WriteMode::Append)
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::SchemaMismatch { .. }), "{e:#}");
    assert_eq!(main.count_rows("a", None).await.unwrap(), before.0);
    assert_eq!(main.count_rows("b", None).await.unwrap(), before.1);
    // And the next change of `a` does not resurrect the unpublished row.
    main.write("a", vec![people(901..902)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(main.count_rows("a", Some("id = 900")).await.unwrap(), 0);
    assert_eq!(main.count_rows("a", None).await.unwrap(), before.0 + 1);
    // A transaction on a branch stays on the branch.
    let br = main.fork("txn-branch").await.unwrap();
    br.transaction()
        .delete_rows("a", "true")
        .replace("b", vec![people(5..6)], people_schema())
        .commit()
        .await
        .unwrap();
    assert_eq!(br.count_rows("a", None).await.unwrap(), 0);
    assert_eq!(ids(&br, "b").await, vec![5]);
    assert_eq!(main.count_rows("a", None).await.unwrap(), before.0 + 1);
    let e = br
        .transaction()
        .write("missing", vec![people(0..1)], WriteMode::Append)
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_first_write_then_success_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_, main) = fresh(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        // The line is created, then the write is refused: nothing published.
        let e = b
            .write("p", vec![vectors(0..1)], WriteMode::Append)
            .await
            .unwrap_err();
        assert!(matches!(typed(&e), Error::SchemaMismatch { .. }), "{e:#}");
        assert_eq!(ids(&b, "p").await, vec![0, 1, 2]);
        b.write("p", vec![people(3..4)], WriteMode::Append)
            .await
            .unwrap();
        let e = b.delete_rows("p", "nope = 1").await.unwrap_err();
        assert!(matches!(typed(&e), Error::InvalidFilter { .. }), "{e:#}");
    }
    // Recovery must not remove the line the acknowledged write lives on.
    let (_, main) = fresh(&dir).await;
    assert_eq!(ids(&main.branch("b").unwrap(), "p").await, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_table_on_a_branch_reads_its_new_contents() {
    let dir = tempfile::tempdir().unwrap();
    let (_, main) = fresh(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(3..4)], WriteMode::Append)
        .await
        .unwrap();
    let v_old = b.get_table_version("p").await.unwrap().unwrap();
    assert_eq!(ids(&b, "p").await, vec![0, 1, 2, 3]);
    b.drop_table("p").await.unwrap();
    // Its Lance branch is re-created; version numbers start over, so no
    // cached snapshot of the old line may answer for the new one.
    b.create_table("p", vec![people(50..52)]).await.unwrap();
    assert_eq!(ids(&b, "p").await, vec![50, 51]);
    let v_new = b.get_table_version("p").await.unwrap().unwrap();
    if v_new <= v_old {
        let e = b
            .scan(ScanRequest::table("p").at_version(v_new))
            .await
            .unwrap();
        assert_eq!(ints(&e, "id"), vec![50, 51]);
    }
    assert_eq!(ids(&main, "p").await, vec![0, 1, 2]);
}
