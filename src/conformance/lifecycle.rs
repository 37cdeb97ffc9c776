//! Table lifecycle, names, caches, capabilities.

use crate::{Error, ScanRequest, StorageBackend, WriteMode};

use super::data::*;
use super::{Factory, typed};

/// Create, list, open, drop and re-create tables; typed errors for missing and existing ones.
pub async fn table_lifecycle(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    assert!(b.table_names().await.unwrap().is_empty());
    assert!(!b.table_exists("people").await.unwrap());
    b.create_table("people", vec![people(0..10)]).await.unwrap();
    assert!(b.table_exists("people").await.unwrap());
    b.create_empty_table("empty", people_schema())
        .await
        .unwrap();
    assert!(b.table_exists("empty").await.unwrap());
    let mut names = b.table_names().await.unwrap();
    names.sort();
    assert_eq!(names, vec!["empty".to_string(), "people".to_string()]);
    assert_eq!(b.count_rows("people", None).await.unwrap(), 10);
    assert_eq!(b.count_rows("empty", None).await.unwrap(), 0);

    let err = b
        .create_table("people", vec![people(0..1)])
        .await
        .unwrap_err();
    assert!(matches!(typed(&err), Error::TableExists(_)), "{err:#}");
    assert_eq!(
        b.count_rows("people", None).await.unwrap(),
        10,
        "failed create changed data"
    );
    let err = b
        .create_empty_table("people", people_schema())
        .await
        .unwrap_err();
    assert!(matches!(typed(&err), Error::TableExists(_)), "{err:#}");

    let err = b.create_table("nobatches", vec![]).await.unwrap_err();
    assert!(matches!(typed(&err), Error::InvalidArgument(_)), "{err:#}");
    assert!(!b.table_exists("nobatches").await.unwrap());

    let err = b
        .create_table("mixed", vec![people(0..1), vectors(0..1)])
        .await
        .unwrap_err();
    assert!(
        matches!(typed(&err), Error::SchemaMismatch { .. }),
        "{err:#}"
    );
    assert!(!b.table_exists("mixed").await.unwrap());

    let err = b.scan(ScanRequest::table("missing")).await.unwrap_err();
    assert!(matches!(typed(&err), Error::TableNotFound(_)), "{err:#}");
}

/// `open_or_create_table` creates once and then opens; dropping a missing table is a typed error.
pub async fn open_or_create_and_drop(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.open_or_create_table("t", people_schema()).await.unwrap();
    assert!(b.table_exists("t").await.unwrap());
    b.write("t", vec![people(0..3)], WriteMode::Append)
        .await
        .unwrap();
    // Opening again keeps the data and ignores the schema argument.
    b.open_or_create_table("t", vector_schema()).await.unwrap();
    assert_eq!(b.count_rows("t", None).await.unwrap(), 3);
    assert_eq!(
        b.get_table_schema("t").await.unwrap().unwrap(),
        people_schema()
    );

    b.drop_table("t").await.unwrap();
    assert!(!b.table_exists("t").await.unwrap());
    assert!(b.get_table_schema("t").await.unwrap().is_none());
    assert!(b.get_table_version("t").await.unwrap().is_none());
    let err = b.drop_table("t").await.unwrap_err();
    assert!(matches!(typed(&err), Error::TableNotFound(_)), "{err:#}");

    // A dropped name can be created again, fresh.
    b.create_table("t", vec![people(5..6)]).await.unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("t")).await.unwrap(), "id"),
        vec![5]
    );
}

/// Every method refuses an invalid table name with a typed error and changes nothing.
pub async fn invalid_names_refused_everywhere(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("ok", vec![people(0..2)]).await.unwrap();
    for bad in [
        "",
        "a/b",
        "a\\b",
        "has space",
        "ctl\u{1}",
        "..",
        "_lancebranch_x",
    ] {
        let is_invalid = |e: anyhow::Error| {
            assert!(
                matches!(typed(&e), Error::InvalidName { kind: "table", .. }),
                "{bad:?}: {e:#}"
            )
        };
        is_invalid(b.create_table(bad, vec![people(0..1)]).await.unwrap_err());
        is_invalid(
            b.create_empty_table(bad, people_schema())
                .await
                .unwrap_err(),
        );
        is_invalid(
            b.open_or_create_table(bad, people_schema())
                .await
                .unwrap_err(),
        );
        is_invalid(b.table_exists(bad).await.unwrap_err());
        is_invalid(b.drop_table(bad).await.unwrap_err());
        is_invalid(b.scan(ScanRequest::table(bad)).await.unwrap_err());
        is_invalid(b.count_rows(bad, None).await.unwrap_err());
        is_invalid(
            b.write(bad, vec![people(0..1)], WriteMode::Append)
                .await
                .unwrap_err(),
        );
        is_invalid(
            b.replace_table_atomic(bad, vec![], people_schema())
                .await
                .unwrap_err(),
        );
        is_invalid(b.get_table_schema(bad).await.unwrap_err());
        is_invalid(b.get_table_version(bad).await.unwrap_err());
    }
    assert_eq!(b.table_names().await.unwrap(), vec!["ok".to_string()]);
    assert_eq!(b.count_rows("ok", None).await.unwrap(), 2);
}

/// The cache hooks (`invalidate_cache`, `clear_cache`, `notify_table_created`) never make
/// answers wrong.
pub async fn cache_calls_keep_answers_right(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    assert!(!b.table_exists("t").await.unwrap());
    b.create_table("t", vec![people(0..4)]).await.unwrap();
    // create_* corrects a cached "missing".
    assert!(b.table_exists("t").await.unwrap());
    b.invalidate_cache("t");
    assert!(b.table_exists("t").await.unwrap());
    assert_eq!(b.count_rows("t", None).await.unwrap(), 4);
    b.clear_cache();
    assert_eq!(b.count_rows("t", None).await.unwrap(), 4);
    b.notify_table_created("t").await;
    assert!(b.table_exists("t").await.unwrap());
    b.drop_table("t").await.unwrap();
    // drop_table corrects a cached "exists".
    assert!(!b.table_exists("t").await.unwrap());
    // Notifying an invalid name is ignored, not a panic.
    b.notify_table_created("a/b").await;
}

/// The backend supports vector, full-text and scalar-index search and names a base URI.
pub async fn capabilities_and_base_uri(f: &dyn Factory) {
    let s = f.make().await;
    let b: &dyn StorageBackend = s.backend.as_ref();
    assert!(b.supports_vector_search());
    assert!(b.supports_full_text_search());
    assert!(b.supports_scalar_index());
    assert!(!b.base_uri().is_empty());
}
