//! Lance-side faults: the object store under Lance stops accepting writes
//! after the k-th one, for every k an operation makes, as a process death or
//! a dead disk would mid-commit. After each, the store is reopened without
//! faults and must hold the operation entirely or not at all, every earlier
//! acknowledged write, a clean `fsck`, and accept the operation again.

use std::sync::Arc;

use lancebranch::branched::{BranchedBackend, MergeOptions};
use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    WriteMain,
    FirstWriteOnBranch,
    Merge,
    CreateOnBranch,
    ReplaceMain,
    DeleteBranch,
}

async fn ids(b: &BranchedBackend, t: &str) -> Vec<i64> {
    ints(&b.scan(ScanRequest::table(t)).await.unwrap(), "id")
}

async fn open(path: &str) -> (Arc<LanceDbBackend>, BranchedBackend) {
    let inner = Arc::new(LanceDbBackend::open(path).await.unwrap());
    let main = BranchedBackend::open(inner.clone()).await.unwrap();
    (inner, main)
}

async fn setup(main: &BranchedBackend) {
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![people(3..4)], WriteMode::Append)
        .await
        .unwrap();
    main.fork("c").await.unwrap();
}

async fn run(op: Op, main: &BranchedBackend) -> anyhow::Result<()> {
    match op {
        Op::WriteMain => {
            main.write("p", vec![people(10..11)], WriteMode::Append)
                .await
        }
        Op::FirstWriteOnBranch => {
            let c = main.branch("c")?;
            c.write("p", vec![people(20..21)], WriteMode::Append).await
        }
        Op::Merge => {
            let b = main.branch("b")?;
            main.merge(&b, MergeOptions::default().key("p", &["id"]))
                .await
                .map(|_| ())
        }
        Op::CreateOnBranch => {
            let b = main.branch("b")?;
            b.create_table("n", vec![people(0..2)]).await
        }
        Op::ReplaceMain => {
            main.replace_table_atomic("p", vec![people(7..9)], people_schema())
                .await
        }
        Op::DeleteBranch => main.delete_branch("b", false).await,
    }
}

/// Whether `op` is visible, checking that the state is exactly "before"
/// or exactly "after" and that earlier writes are all there.
async fn applied(op: Op, main: &BranchedBackend) -> bool {
    let m = ids(main, "p").await;
    let b = match main.branch("b") {
        Ok(b) => Some(ids(&b, "p").await),
        Err(_) => None,
    };
    let c = ids(&main.branch("c").unwrap(), "p").await;
    let untouched = m == [0, 1, 2] && b.as_deref() == Some(&[0, 1, 2, 3]) && c == [0, 1, 2];
    let done = match op {
        Op::WriteMain => m == [0, 1, 2, 10],
        Op::FirstWriteOnBranch => c == [0, 1, 2, 20] && m == [0, 1, 2],
        Op::Merge => m == [0, 1, 2, 3],
        Op::CreateOnBranch => {
            let b = main.branch("b").unwrap();
            b.table_exists("n").await.unwrap() && ids(&b, "n").await == [0, 1]
        }
        Op::ReplaceMain => m == [7, 8],
        Op::DeleteBranch => b.is_none() && m == [0, 1, 2] && c == [0, 1, 2],
    };
    let n_visible = match main.branch("b") {
        Ok(b) => b.table_exists("n").await.unwrap(),
        Err(_) => false,
    };
    assert!(
        done || (untouched && !n_visible),
        "{op:?}: half-applied: main {m:?}, b {b:?}, c {c:?}"
    );
    done
}

async fn assert_clean(main: &BranchedBackend) {
    lancebranch::testing::recover_and_check(main).await.unwrap();
}

/// Cut `op` after each of its object-store writes in turn.
async fn sweep(op: Op) -> u64 {
    for k in 0..500u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let result = {
            let (inner, main) = open(&path).await;
            setup(&main).await;
            let counter = inner.write_faults().unwrap().clone();
            counter.fail_writes_after(k);
            let r = run(op, &main).await;
            counter.heal();
            // Lance ignores the failure of some best-effort writes (hints),
            // so an operation can succeed past a fault.
            (r, counter.injected_faults())
        };
        let (result, faults) = result;
        let (_, main) = open(&path).await;
        let done = applied(op, &main).await;
        match &result {
            Ok(()) => assert!(done, "{op:?}: acknowledged but absent"),
            // A deletion hides the branch first; recovery finishes it.
            Err(_) if matches!(op, Op::DeleteBranch) => assert!(done, "{op:?} at {k}"),
            Err(e) => assert!(!done, "{op:?} at write {k}: failed ({e:#}) yet visible"),
        }
        assert_clean(&main).await;
        if result.is_ok() && faults == 0 {
            return k;
        }
        // The store takes the operation after the fault.
        if !done {
            run(op, &main).await.unwrap();
            assert!(applied(op, &main).await, "{op:?} after fault {k}");
        }
    }
    panic!("{op:?} never completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lance_write_of_an_operation_can_fail() {
    for op in [
        Op::WriteMain,
        Op::FirstWriteOnBranch,
        Op::Merge,
        Op::CreateOnBranch,
        Op::ReplaceMain,
        Op::DeleteBranch,
    ] {
        let writes = sweep(op).await;
        eprintln!("{op:?}: cut after each of its {writes} object-store writes");
        assert!(writes > 0, "{op:?} made no object-store write");
    }
}
