//! `LanceDbBackend`: the conformance suite on a durable local directory and
//! on `memory://`, plus what only this backend has (durability, the
//! existence cache, Lance dataset access).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::*;
use lancebranch::conformance::{Factory, Store};

pub struct LocalDurable;
pub struct Memory;

#[async_trait]
impl Factory for LocalDurable {
    async fn make(&self) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("utf-8 path").to_string();
        let backend = LanceDbBackend::open(&path).await.expect("open store");
        Store {
            backend: Arc::new(backend),
            keep: vec![Box::new(dir)],
        }
    }
}

#[async_trait]
impl Factory for Memory {
    async fn make(&self) -> Store {
        static N: AtomicUsize = AtomicUsize::new(0);
        let uri = format!("memory://conformance-{}", N.fetch_add(1, Ordering::Relaxed));
        let backend = LanceDbBackend::open(&uri).await.expect("open memory store");
        Store {
            backend: Arc::new(backend),
            keep: vec![],
        }
    }
}

/// A durable local store whose reads may be an hour stale with respect to
/// other handles' commits: its own writes must still show at once, also
/// when operations race.
pub struct LocalStale;

#[async_trait]
impl Factory for LocalStale {
    async fn make(&self) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("utf-8 path").to_string();
        let opts = LanceDbOptions {
            read_consistency: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let backend = LanceDbBackend::open_with(&path, opts)
            .await
            .expect("open store");
        Store {
            backend: Arc::new(backend),
            keep: vec![Box::new(dir)],
        }
    }
}

lancebranch::conformance_suite!(lance_local_durable, crate::lance_backend::LocalDurable);
lancebranch::conformance_suite!(lance_stale_an_hour, crate::lance_backend::LocalStale);
lancebranch::conformance_suite!(lance_memory, crate::lance_backend::Memory);

/// Stores on the local S3 server (see `tests/it/s3.rs`), a fresh prefix
/// each.
pub struct S3;

#[async_trait]
impl Factory for S3 {
    async fn make(&self) -> Store {
        let server = lancebranch::testing::s3::server();
        let opts = LanceDbOptions {
            storage_options: server.options(),
            ..Default::default()
        };
        let uri = server.fresh_uri("conformance");
        let backend = LanceDbBackend::open_with(&uri, opts)
            .await
            .expect("open an s3:// store");
        Store {
            backend: Arc::new(backend),
            keep: vec![],
        }
    }
}

lancebranch::conformance_suite!(lance_s3, crate::lance_backend::S3);

async fn local() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    (dir, path)
}

/// The bug `notify_table_created` exists for: a table made behind the
/// backend's back stays "missing" in its existence cache until notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_existence_cache_fixed_by_notify() {
    let (_dir, path) = local().await;
    let a = LanceDbBackend::open(&path).await.unwrap();
    let other = LanceDbBackend::open(&path).await.unwrap();
    assert!(!a.table_exists("t").await.unwrap(), "caches 'missing'");
    other.create_table("t", vec![people(0..3)]).await.unwrap();
    // The bug: `a` still answers from its cache.
    assert!(
        !a.table_exists("t").await.unwrap(),
        "the cached negative answer is stale, as expected without a notification"
    );
    a.notify_table_created("t").await;
    assert!(a.table_exists("t").await.unwrap());
    assert_eq!(a.count_rows("t", None).await.unwrap(), 3);

    // invalidate_cache is the other cure.
    assert!(!a.table_exists("u").await.unwrap());
    other
        .create_empty_table("u", people_schema())
        .await
        .unwrap();
    assert!(!a.table_exists("u").await.unwrap());
    a.invalidate_cache("u");
    assert!(a.table_exists("u").await.unwrap());

    // And clear_cache.
    assert!(!a.table_exists("w").await.unwrap());
    other
        .create_empty_table("w", people_schema())
        .await
        .unwrap();
    a.clear_cache();
    assert!(a.table_exists("w").await.unwrap());
}

/// Another handle's commits are visible at once (read consistency zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_handles_writes_are_visible() {
    let (_dir, path) = local().await;
    let a = LanceDbBackend::open(&path).await.unwrap();
    let b = LanceDbBackend::open(&path).await.unwrap();
    a.create_table("t", vec![people(0..3)]).await.unwrap();
    assert_eq!(b.count_rows("t", None).await.unwrap(), 3);
    a.write("t", vec![people(3..5)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(b.count_rows("t", None).await.unwrap(), 5);
    b.delete_rows("t", "id = 0").await.unwrap();
    assert_eq!(a.count_rows("t", None).await.unwrap(), 4);
}

/// With durability on, every commit's files go through the syncing store;
/// with it off, none do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_are_synced() {
    let (_dir, path) = local().await;
    let store = LanceDbBackend::open(&path).await.unwrap();
    let counter = store.sync_counter().expect("durable by default").clone();
    assert_eq!(counter.synced_writes(), 0);
    store.create_table("t", vec![people(0..10)]).await.unwrap();
    // The manifest synced, after a barrier that synced the data file and
    // the transaction file (written first, their syncs deferred).
    let at = |c: &lancebranch::lance::SyncCounter| {
        (c.synced_writes(), c.deferred_writes(), c.barriers())
    };
    let after_create = at(&counter);
    assert!(
        after_create.0 >= 1 && after_create.1 >= 2 && after_create.2 >= 1,
        "after create: {after_create:?}"
    );
    store
        .write("t", vec![people(10..20)], WriteMode::Append)
        .await
        .unwrap();
    let after_append = at(&counter);
    assert!(
        after_append.0 > after_create.0
            && after_append.1 >= after_create.1 + 2
            && after_append.2 > after_create.2,
        "append: {after_append:?} after {after_create:?}"
    );
    store.delete_rows("t", "id < 5").await.unwrap();
    assert!(counter.synced_writes() > after_append.0);

    // Everything acknowledged is readable by a fresh process-like handle.
    let reopened = LanceDbBackend::open(&path).await.unwrap();
    assert_eq!(reopened.count_rows("t", None).await.unwrap(), 15);

    let (_dir2, path2) = local().await;
    let fast = LanceDbBackend::open_with(
        &path2,
        LanceDbOptions {
            durable: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(fast.sync_counter().is_none());
    fast.create_table("t", vec![people(0..10)]).await.unwrap();
    assert_eq!(fast.count_rows("t", None).await.unwrap(), 10);
}

/// Tables get stable row ids, and the Lance dataset is reachable for
/// branch primitives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_access_and_stable_row_ids() {
    let (_dir, path) = local().await;
    let store = LanceDbBackend::open(&path).await.unwrap();
    store.create_table("t", vec![people(0..5)]).await.unwrap();
    let ds = store.dataset("t").await.unwrap();
    assert!(
        ds.manifest().uses_stable_row_ids(),
        "stable row ids enabled"
    );
    let v = ds.version().version;
    store
        .write("t", vec![people(5..7)], WriteMode::Append)
        .await
        .unwrap();
    let ds = store.dataset("t").await.unwrap();
    assert_eq!(
        ds.version().version,
        v + 1,
        "dataset() sees the latest version"
    );
    assert_eq!(ds.count_rows(None).await.unwrap(), 7);
    assert!(store.table_uri("t").ends_with("/t.lance"));
}

/// optimize never deletes a tagged version, even with zero retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_keeps_tagged_versions() {
    let (_dir, path) = local().await;
    let store = LanceDbBackend::open_with(
        &path,
        LanceDbOptions {
            cleanup_older_than: std::time::Duration::ZERO,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    store.create_table("t", vec![people(0..5)]).await.unwrap();
    let v1 = store.get_table_version("t").await.unwrap().unwrap();
    let ds = store.dataset("t").await.unwrap();
    ds.tags().create("keep", v1).await.unwrap();
    store
        .write("t", vec![people(5..10)], WriteMode::Append)
        .await
        .unwrap();
    let v2 = store.get_table_version("t").await.unwrap().unwrap();
    store.delete_rows("t", "id = 6").await.unwrap();
    store.optimize_table("t").await.unwrap();

    let tagged = store
        .scan(ScanRequest::table("t").at_version(v1))
        .await
        .unwrap();
    assert_eq!(
        ints(&tagged, "id"),
        vec![0, 1, 2, 3, 4],
        "tagged version survives"
    );
    let err = store
        .scan(ScanRequest::table("t").at_version(v2))
        .await
        .expect_err("untagged old version was cleaned up");
    drop(err);
    assert_eq!(store.count_rows("t", None).await.unwrap(), 9);
}

/// recover_staging removes files no version references (what an
/// interrupted commit leaves) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_staging_removes_orphan_files() {
    let (_dir, path) = local().await;
    let store = LanceDbBackend::open(&path).await.unwrap();
    store.create_table("t", vec![people(0..5)]).await.unwrap();
    let data_dir = std::path::Path::new(&path).join("t.lance").join("data");
    let orphan = data_dir.join("00000000-orphan-of-a-crashed-replace.lance");
    std::fs::write(&orphan, b"half a data file").unwrap();
    let before: usize = std::fs::read_dir(&data_dir).unwrap().count();
    store.recover_staging("t").await.unwrap();
    assert!(!orphan.exists(), "orphan data file removed");
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), before - 1);
    assert_eq!(store.count_rows("t", None).await.unwrap(), 5);
    store.recover_staging("t").await.unwrap();
    assert_eq!(store.count_rows("t", None).await.unwrap(), 5);
}

/// `take_rows_at` (which reads only the fragments that hold the wanted
/// ids) returns exactly what Lance's own `take_rows` returns, at every
/// version of a history with appends (several fragments), updates (a row
/// id with a deleted and a live copy), deletions and a compaction; ids
/// that do not exist or are not live are skipped by both (Lance repeats a
/// row whose id is asked for twice; ours returns it once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_rows_at_matches_lance_take_rows() {
    use arrow_array::{Int64Array, StringArray, UInt64Array};
    use lancebranch::backend::BranchLines;

    fn renamed(ids: std::ops::Range<i64>, tag: &str) -> arrow_array::RecordBatch {
        let ids: Vec<i64> = ids.collect();
        let names: Vec<String> = ids.iter().map(|i| format!("{tag}{i}")).collect();
        let ages: Vec<i64> = ids.iter().map(|i| 100 + i).collect();
        arrow_array::RecordBatch::try_new(
            people_schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from(ages)),
            ],
        )
        .unwrap()
    }
    /// (rowid, id, name, age), sorted by row id.
    fn rows_of(batches: &[arrow_array::RecordBatch]) -> Vec<(u64, i64, String, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("no {n}"));
            let rid = col("_rowid")
                .as_any()
                .downcast_ref::<UInt64Array>()
                .unwrap();
            let id = col("id").as_any().downcast_ref::<Int64Array>().unwrap();
            let name = col("name").as_any().downcast_ref::<StringArray>().unwrap();
            let age = col("age").as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push((
                    rid.value(i),
                    id.value(i),
                    name.value(i).to_string(),
                    age.value(i),
                ));
            }
        }
        out.sort();
        out
    }

    let (_dir, path) = local().await;
    let store = LanceDbBackend::open(&path).await.unwrap();
    store.create_table("t", vec![people(0..100)]).await.unwrap();
    for k in 1..3 {
        store
            .write("t", vec![people(k * 100..k * 100 + 100)], WriteMode::Append)
            .await
            .unwrap();
    }
    let mut versions = vec![store.dataset("t").await.unwrap().version().version];
    store
        .merge_insert(
            "t",
            &["id"],
            vec![renamed(50..60, "u"), renamed(120..125, "u")],
        )
        .await
        .unwrap();
    versions.push(store.dataset("t").await.unwrap().version().version);
    store
        .delete_rows("t", "id >= 150 AND id < 160")
        .await
        .unwrap();
    store
        .merge_insert("t", &["id"], vec![renamed(55..58, "w")])
        .await
        .unwrap();
    versions.push(store.dataset("t").await.unwrap().version().version);
    store.optimize_table("t").await.unwrap();
    versions.push(store.dataset("t").await.unwrap().version().version);

    // Every id ever assigned, some twice, plus ids that never existed.
    let mut ids: Vec<u64> = (0..320).collect();
    ids.extend([55, 56, 151, 10_000, u64::MAX >> 1]);
    let latest = store.dataset("t").await.unwrap();
    for v in versions {
        let ds = latest.checkout_version(v).await.unwrap();
        let mut columns: Vec<String> = ds.schema().fields.iter().map(|f| f.name.clone()).collect();
        columns.push("_rowid".to_string());
        let proj = lance::dataset::ProjectionRequest::from_columns(&columns, ds.schema());
        // Lance repeats a row asked for twice; ours returns it once.
        let mut expected = rows_of(&[ds.take_rows(&ids, proj).await.unwrap()]);
        expected.dedup();
        let got = rows_of(&store.take_rows_at("t", None, v, &ids).await.unwrap());
        assert!(!expected.is_empty());
        assert_eq!(got, expected, "version {v}");
        let none = store
            .take_rows_at("t", None, v, &[10_000, 20_000])
            .await
            .unwrap();
        assert!(rows_of(&none).is_empty(), "ids never assigned: no rows");
    }
}

/// Lance branch handles are cached per (table, branch): with reads allowed
/// to be an hour stale, a branch's own writes still show at once, and a
/// branch dropped and created again under the same name reads and writes
/// its new contents, not the old branch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_line_handles_follow_their_lines() {
    use lancebranch::backend::BranchLines;
    let (_dir, path) = local().await;
    let opts = LanceDbOptions {
        read_consistency: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let s = LanceDbBackend::open_with(&path, opts).await.unwrap();
    s.create_table("t", vec![people(0..3)]).await.unwrap();
    let v1 = s.latest_version("t", None).await.unwrap();
    async fn line_ids(s: &LanceDbBackend) -> Vec<i64> {
        let req = ScanRequest {
            line: Some("x".into()),
            ..ScanRequest::table("t")
        };
        let mut got = ints(&s.scan(req).await.unwrap(), "id");
        got.sort();
        got
    }
    s.create_line("t", "x", None, v1).await.unwrap();
    for round in 0..3i64 {
        let w = s
            .write_line("t", Some("x"), vec![people(10..12)], WriteMode::Append)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            s.latest_version("t", Some("x")).await.unwrap(),
            w,
            "{round}"
        );
        assert_eq!(line_ids(&s).await, vec![0, 1, 2, 10, 11], "{round}");
        s.drop_line("t", "x").await.unwrap();
        s.create_line("t", "x", None, v1).await.unwrap();
        assert_eq!(line_ids(&s).await, vec![0, 1, 2], "{round}: the new line");
    }
    assert_eq!(
        ints(&s.scan(ScanRequest::table("t")).await.unwrap(), "id"),
        vec![0, 1, 2]
    );
}
