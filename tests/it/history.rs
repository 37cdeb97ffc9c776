//! The catalog history: records since the checkpoint, online and offline.

use std::sync::Arc;

use lancebranch::branched::{BranchedBackend, Record, read_catalog_offline};
use lancebranch::{LanceDbBackend, StorageBackend};

use lancebranch::conformance::data::people;

async fn open(uri: &str) -> BranchedBackend {
    let inner = Arc::new(LanceDbBackend::open(uri).await.unwrap());
    BranchedBackend::open(inner).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_records_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().to_str().unwrap();
    let checkpoint;
    {
        let main = open(uri).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        main.fork("a").await.unwrap();
        main.tag("t").await.unwrap();
        let h = main.history().await.unwrap();
        assert_eq!(h.checkpoint_lsn, 0);
        let lsns: Vec<u64> = h.entries.iter().map(|e| e.lsn).collect();
        let n = lsns.len() as u64;
        assert_eq!(lsns, (1..=n).collect::<Vec<_>>());
        let last: Vec<&Record> = h.entries.iter().rev().take(2).map(|e| &e.record).collect();
        assert!(
            matches!(last[1], Record::Fork { name, .. } if name == "a"),
            "{last:?}"
        );
        assert!(
            matches!(last[0], Record::Tag { name, .. } if name == "t"),
            "{last:?}"
        );

        main.checkpoint().await.unwrap();
        let h = main.history().await.unwrap();
        assert_eq!((h.checkpoint_lsn, h.entries.len()), (n, 0));
        main.fork("b").await.unwrap();
        let h = main.history().await.unwrap();
        assert_eq!(h.checkpoint_lsn, n);
        assert_eq!(h.entries.len(), 1);
        assert_eq!(h.entries[0].lsn, n + 1);
        checkpoint = n;
    }
    // Offline: the same history, and the state it gives.
    let cat = read_catalog_offline(dir.path()).unwrap();
    assert_eq!(cat.history.checkpoint_lsn, checkpoint);
    assert_eq!(cat.history.entries.len(), 1);
    assert_eq!(cat.branch_names(), vec!["a", "b", "main"]);
    assert_eq!(cat.tag_names(), vec!["t"]);
    assert!(cat.pending().is_empty());
    assert_eq!(cat.torn_tail_bytes, 0);
    // Reopened: the history is unchanged.
    let main = open(uri).await;
    let h = main.history().await.unwrap();
    assert_eq!((h.checkpoint_lsn, h.entries.len()), (checkpoint, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_a_memory_store_and_offline_errors() {
    let main = open("memory://history").await;
    main.create_table("p", vec![people(0..1)]).await.unwrap();
    let h = main.history().await.unwrap();
    assert_eq!(h.checkpoint_lsn, 0);
    assert!(
        matches!(&h.entries.last().unwrap().record, Record::Publish { branch, .. } if branch == "main")
    );
    let dir = tempfile::tempdir().unwrap();
    let e = read_catalog_offline(dir.path()).unwrap_err();
    assert!(e.to_string().contains("no lancebranch catalog"), "{e:#}");
    assert!(!dir.path().join("_lancebranch").exists());
}
