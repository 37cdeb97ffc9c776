//! What only object stores have, on the local S3 server
//! ([`lancebranch::testing::s3`]).

use lancebranch::testing::s3::server;

use std::sync::Arc;

use lancebranch::backend::BranchLines;
use lancebranch::conformance::data::people;
use lancebranch::conformance::run;
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};

async fn open(uri: &str) -> LanceDbBackend {
    let opts = LanceDbOptions {
        storage_options: server().options(),
        ..Default::default()
    };
    LanceDbBackend::open_with(uri, opts).await.unwrap()
}

/// Put one object at `key` under `uri` (what a crash can leave behind).
async fn put_object(uri: &str, key: &str) {
    use lance_io::object_store::{ObjectStore, ObjectStoreParams, StorageOptionsAccessor};
    let params = ObjectStoreParams {
        storage_options_accessor: Some(Arc::new(StorageOptionsAccessor::with_static_options(
            server().options(),
        ))),
        ..Default::default()
    };
    let registry = Arc::new(lance_io::object_store::ObjectStoreRegistry::default());
    let (store, root) = ObjectStore::from_uri_and_params(registry, uri, &params)
        .await
        .unwrap();
    let path = key.split('/').fold(root, |p, s| p.join(s));
    store.put(&path, b"left behind").await.unwrap();
}

#[test]
fn two_handles_on_one_prefix_see_each_others_commits() {
    run(async {
        let uri = server().fresh_uri("shared");
        let (a, b) = (open(&uri).await, open(&uri).await);
        a.create_table("p", vec![people(0..3)]).await.unwrap();
        b.notify_table_created("p").await;
        assert_eq!(b.count_rows("p", None).await.unwrap(), 3);
        b.write("p", vec![people(3..5)], WriteMode::Append)
            .await
            .unwrap();
        assert_eq!(a.count_rows("p", None).await.unwrap(), 5);
    });
}

#[test]
fn lines_and_their_leftovers_are_found_and_removed() {
    run(async {
        let uri = server().fresh_uri("lines");
        let s = open(&uri).await;
        s.create_table("t", vec![people(0..3)]).await.unwrap();
        let v = s.latest_version("t", None).await.unwrap();
        s.create_line("t", "lb1", None, v).await.unwrap();
        // A branch cut half-way: objects under tree/ only.
        put_object(&uri, "t.lance/tree/zombie/_versions/x").await;
        assert_eq!(s.list_lines("t").await.unwrap(), vec!["lb1", "zombie"]);
        s.drop_line("t", "zombie").await.unwrap();
        s.drop_line("t", "lb1").await.unwrap();
        assert!(s.list_lines("t").await.unwrap().is_empty());
        assert_eq!(s.count_rows("t", None).await.unwrap(), 3);
    });
}

#[test]
fn purge_removes_a_table_whose_creation_was_cut() {
    run(async {
        let uri = server().fresh_uri("purge");
        let s = open(&uri).await;
        s.create_table("kept", vec![people(0..2)]).await.unwrap();
        put_object(&uri, "ghost.lance/_versions/x").await;
        s.purge_table("ghost").await.unwrap();
        assert_eq!(s.table_names().await.unwrap(), vec!["kept".to_string()]);
        s.purge_table("kept").await.unwrap();
        assert!(s.table_names().await.unwrap().is_empty());
    });
}
