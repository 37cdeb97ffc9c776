//! Reads, writes, versions, locks and maintenance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, FilterExpr, ScanRequest, WriteMode};
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;

use super::data::*;
use super::{Factory, typed};

/// Scans honour projection, filter, limit and offset.
pub async fn scan_projection_filter_limit(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..20), people(20..40)])
        .await
        .unwrap();
    let all = b.scan(ScanRequest::table("p")).await.unwrap();
    assert_eq!(ints(&all, "id"), (0..40).collect::<Vec<_>>());

    let proj = b
        .scan(ScanRequest::table("p").columns(["name", "id"]))
        .await
        .unwrap();
    let schema = proj[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["name", "id"]);

    let filtered = b
        .scan(ScanRequest::table("p").filter("id >= 10 AND id < 15"))
        .await
        .unwrap();
    assert_eq!(ints(&filtered, "id"), vec![10, 11, 12, 13, 14]);

    let typed_filter = b
        .scan(ScanRequest::table("p").filter_expr(&FilterExpr::eq("name", "p7")))
        .await
        .unwrap();
    assert_eq!(ints(&typed_filter, "id"), vec![7]);
    let quoted = b
        .scan(ScanRequest::table("p").filter_expr(&FilterExpr::eq("name", "x' OR '1'='1")))
        .await
        .unwrap();
    assert_eq!(rows(&quoted), 0, "a quoted literal must not inject SQL");

    let limited = b
        .scan(ScanRequest::table("p").filter("age > 30").limit(3))
        .await
        .unwrap();
    assert_eq!(rows(&limited), 3);
    assert_eq!(
        rows(&b.scan(ScanRequest::table("p").limit(0)).await.unwrap()),
        0
    );

    let err = b
        .scan(ScanRequest::table("p").columns(["nope"]))
        .await
        .unwrap_err();
    assert!(
        matches!(typed(&err), Error::InvalidColumn { .. }),
        "{err:#}"
    );
}

/// A streamed scan returns exactly the rows of the collecting scan.
pub async fn scan_stream_matches_scan(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..50)]).await.unwrap();
    let req = ScanRequest::table("p").filter("id % 2 = 0").columns(["id"]);
    let streamed: Vec<RecordBatch> = b
        .scan_stream(req.clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let scanned = b.scan(req).await.unwrap();
    assert_eq!(ints(&streamed, "id"), ints(&scanned, "id"));
    assert_eq!(rows(&scanned), 25);
    let err = b
        .scan_stream(ScanRequest::table("p").filter("nope = 1"))
        .await
        .err()
        .expect("bad filter refused");
    assert!(
        matches!(typed(&err), Error::InvalidFilter { .. }),
        "{err:#}"
    );
}

/// A scan of an empty table returns no rows and keeps the schema.
pub async fn scan_of_empty_table(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_empty_table("e", people_schema()).await.unwrap();
    assert_eq!(rows(&b.scan(ScanRequest::table("e")).await.unwrap()), 0);
    assert_eq!(
        rows(
            &b.scan(ScanRequest::table("e").filter("id = 1"))
                .await
                .unwrap()
        ),
        0
    );
    assert_eq!(b.count_rows("e", Some("id > 0")).await.unwrap(), 0);
}

/// `schema` and `count_rows` (with and without a filter) agree with the rows written.
pub async fn schema_and_count(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..30)]).await.unwrap();
    assert_eq!(
        b.get_table_schema("p").await.unwrap().unwrap(),
        people_schema()
    );
    assert_eq!(b.get_table_schema("none").await.unwrap(), None);
    assert_eq!(b.count_rows("p", None).await.unwrap(), 30);
    assert_eq!(b.count_rows("p", Some("id < 10")).await.unwrap(), 10);
    let err = b.count_rows("none", None).await.unwrap_err();
    assert!(matches!(typed(&err), Error::TableNotFound(_)), "{err:#}");
}

/// Malformed or trailing-text filters get a typed error and change nothing.
pub async fn bad_filters_are_typed_and_change_nothing(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..10)]).await.unwrap();
    let v0 = b.get_table_version("p").await.unwrap();
    for bad in [
        "",
        "   ",
        "id ===== 3",
        "missing_col = 1",
        "id = 'unterminated",
    ] {
        let e = b.delete_rows("p", bad).await.unwrap_err();
        assert!(
            matches!(typed(&e), Error::InvalidFilter { .. }),
            "{bad:?}: {e:#}"
        );
        let e = b.count_rows("p", Some(bad)).await.unwrap_err();
        assert!(
            matches!(typed(&e), Error::InvalidFilter { .. }),
            "{bad:?}: {e:#}"
        );
        let e = b
            .scan(ScanRequest::table("p").filter(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(typed(&e), Error::InvalidFilter { .. }),
            "{bad:?}: {e:#}"
        );
    }
    assert_eq!(b.count_rows("p", None).await.unwrap(), 10);
    assert_eq!(b.get_table_version("p").await.unwrap(), v0);
}

/// Appends add rows; an overwrite replaces them all.
pub async fn append_and_overwrite(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    b.write("p", vec![people(5..8), people(8..10)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 10);
    // Empty appends change nothing.
    let v = b.get_table_version("p").await.unwrap();
    b.write("p", vec![], WriteMode::Append).await.unwrap();
    b.write("p", vec![people(0..0)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(b.get_table_version("p").await.unwrap(), v);
    // Columns in another order are accepted and land in the right place.
    let reordered = people(10..12).project(&[2, 0, 1]).unwrap();
    b.write("p", vec![reordered], WriteMode::Append)
        .await
        .unwrap();
    let got = b
        .scan(ScanRequest::table("p").filter("id = 11"))
        .await
        .unwrap();
    assert_eq!(ints(&got, "age"), vec![31]);

    b.write("p", vec![people(100..103)], WriteMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        vec![100, 101, 102]
    );
    // Overwrite with nothing clears.
    b.write("p", vec![], WriteMode::Overwrite).await.unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 0);
    assert_eq!(
        b.get_table_schema("p").await.unwrap().unwrap(),
        people_schema()
    );
    let err = b
        .write("none", vec![people(0..1)], WriteMode::Append)
        .await
        .unwrap_err();
    assert!(matches!(typed(&err), Error::TableNotFound(_)), "{err:#}");
}

/// An overwrite may change the table's schema.
pub async fn overwrite_with_new_schema(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    b.write("p", vec![vectors(0..3)], WriteMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        b.get_table_schema("p").await.unwrap().unwrap(),
        vector_schema()
    );
    assert_eq!(b.count_rows("p", None).await.unwrap(), 3);
    // Appends now follow the new schema.
    b.write("p", vec![vectors(3..4)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 4);
}

/// An append with a mismatched schema is refused and changes nothing.
pub async fn append_schema_mismatch_changes_nothing(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    let v0 = b.get_table_version("p").await.unwrap();
    let wrong_type = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("age", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(StringArray::from(vec!["y"])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let extra_col = vectors(0..1);
    let missing_col = people(9..10).project(&[0, 1]).unwrap();
    let null_in_required = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("age", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![None])),
            Arc::new(StringArray::from(vec![Some("n")])),
            Arc::new(Int64Array::from(vec![Some(1)])),
        ],
    )
    .unwrap();
    for bad in [wrong_type, extra_col, missing_col, null_in_required] {
        // A good batch next to the bad one must not be written either.
        let err = b
            .write("p", vec![people(50..51), bad], WriteMode::Append)
            .await
            .unwrap_err();
        assert!(
            matches!(typed(&err), Error::SchemaMismatch { .. }),
            "{err:#}"
        );
    }
    assert_eq!(b.count_rows("p", None).await.unwrap(), 5);
    assert_eq!(b.get_table_version("p").await.unwrap(), v0);
}

fn name_age(ids: &[i64], names: &[&str]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names.to_vec())),
        ],
    )
    .unwrap()
}

/// `merge_insert` updates matching rows and inserts the others, as asked.
pub async fn merge_insert_updates_only_matches(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    // Partial source: only `id` and `name`; `age` must be preserved.
    b.merge_insert(
        "p",
        &["id"],
        vec![name_age(&[1, 3, 99], &["one", "three", "ghost"])],
    )
    .await
    .unwrap();
    let all = b.scan(ScanRequest::table("p")).await.unwrap();
    assert_eq!(
        ints(&all, "id"),
        vec![0, 1, 2, 3, 4],
        "unmatched row must be dropped"
    );
    let one = b
        .scan(ScanRequest::table("p").filter("id = 1"))
        .await
        .unwrap();
    assert_eq!(strings(&one, "name"), vec!["one"]);
    assert_eq!(
        ints(&one, "age"),
        vec![21],
        "columns missing from the source are kept"
    );
    let two = b
        .scan(ScanRequest::table("p").filter("id = 2"))
        .await
        .unwrap();
    assert_eq!(strings(&two, "name"), vec!["p2"]);
    // Full-width source works too.
    let mut full = people(4..5);
    full = RecordBatch::try_new(
        full.schema(),
        vec![
            full.column(0).clone(),
            Arc::new(StringArray::from(vec!["four"])),
            Arc::new(Int64Array::from(vec![99])),
        ],
    )
    .unwrap();
    b.merge_insert("p", &["id"], vec![full]).await.unwrap();
    let four = b
        .scan(ScanRequest::table("p").filter("id = 4"))
        .await
        .unwrap();
    assert_eq!(ints(&four, "age"), vec![99]);
    // Nothing to merge is a no-op.
    b.merge_insert("p", &["id"], vec![]).await.unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 5);
}

/// `merge_insert` with bad keys or batches gets a typed error and changes nothing.
pub async fn merge_insert_bad_input(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    let v0 = b.get_table_version("p").await.unwrap();
    let e = b
        .merge_insert("p", &[], vec![people(0..1)])
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let e = b
        .merge_insert("p", &["nope"], vec![people(0..1)])
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let no_key = people(0..1).project(&[1, 2]).unwrap();
    let e = b
        .merge_insert("p", &["id"], vec![no_key])
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let e = b
        .merge_insert("p", &["id"], vec![vectors(0..1)])
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::SchemaMismatch { .. }), "{e:#}");
    let e = b
        .merge_insert("none", &["id"], vec![people(0..1)])
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
    assert_eq!(b.get_table_version("p").await.unwrap(), v0);
}

/// `delete_rows` removes exactly the rows its filter matches.
pub async fn delete_rows_by_filter(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..10)]).await.unwrap();
    b.delete_rows("p", "id < 3").await.unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        (3..10).collect::<Vec<_>>()
    );
    b.delete_rows("p", "id = 1000").await.unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 7);
    b.delete_rows("p", "true").await.unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 0);
    let e = b.delete_rows("none", "true").await.unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
}

/// `replace_table` swaps the contents whole, for new and existing tables.
pub async fn replace_table_atomic_cases(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..10)]).await.unwrap();
    b.replace_table_atomic("p", vec![people(50..53)], people_schema())
        .await
        .unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        vec![50, 51, 52]
    );
    b.replace_table_atomic("p", vec![], people_schema())
        .await
        .unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 0);
    assert!(b.table_exists("p").await.unwrap());
    // A missing table is created.
    b.replace_table_atomic("fresh", vec![people(1..3)], people_schema())
        .await
        .unwrap();
    assert_eq!(b.count_rows("fresh", None).await.unwrap(), 2);
    b.replace_table_atomic("fresh_empty", vec![], people_schema())
        .await
        .unwrap();
    assert_eq!(
        b.get_table_schema("fresh_empty").await.unwrap().unwrap(),
        people_schema()
    );
    // A batch that does not match the given schema is refused; nothing changes.
    let e = b
        .replace_table_atomic("fresh", vec![vectors(0..1)], people_schema())
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::SchemaMismatch { .. }), "{e:#}");
    assert_eq!(b.count_rows("fresh", None).await.unwrap(), 2);
}

/// Readers running during `replace_table` see the old or the new contents, never a mix.
pub async fn replace_is_atomic_for_concurrent_readers(f: &dyn Factory) {
    let s = f.make().await;
    let b = s.backend.clone();
    b.create_table("p", vec![people(0..100)]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let b = b.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0usize;
            while !stop.load(Ordering::SeqCst) || reads < 5 {
                let got = b.scan(ScanRequest::table("p")).await.unwrap();
                let ids = ints(&got, "id");
                // Either the old generation (0..100) or a new one (g*1000 .. g*1000+100).
                assert_eq!(ids.len(), 100, "reader saw a partial or empty table");
                let base = ids[0];
                assert_eq!(
                    ids,
                    (base..base + 100).collect::<Vec<_>>(),
                    "mixed generations"
                );
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    for g in 1..=8i64 {
        b.replace_table_atomic("p", vec![people(g * 1000..g * 1000 + 100)], people_schema())
            .await
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.await.unwrap();
    assert!(reads >= 5);
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id")[0],
        8000
    );
}

/// The table write guard serializes concurrent read-modify-write tasks.
pub async fn lock_serializes_read_modify_write(f: &dyn Factory) {
    let s = f.make().await;
    let b = s.backend.clone();
    b.create_table("p", vec![people(0..3)]).await.unwrap();
    let guard = b.lock_table_for_write("p").await;
    // An append issued while the lock is held must wait for it.
    let appender = {
        let b = b.clone();
        tokio::spawn(async move { b.write("p", vec![people(10..11)], WriteMode::Append).await })
    };
    // Read-modify-write under the lock: double every id.
    let got = b.scan(ScanRequest::table("p")).await.unwrap();
    let doubled: Vec<i64> = ints(&got, "id").iter().map(|i| i * 2 + 100).collect();
    b.replace_table_atomic("p", vec![people(doubled)], people_schema())
        .await
        .unwrap();
    drop(guard);
    appender.await.unwrap().unwrap();
    // The append landed after the replace, so it survives it.
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        vec![10, 100, 102, 104]
    );
}

/// Concurrent appends from many tasks lose no row.
pub async fn concurrent_appends_lose_nothing(f: &dyn Factory) {
    let s = f.make().await;
    let b = s.backend.clone();
    b.create_empty_table("p", people_schema()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..6i64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..3i64 {
                let start = t * 100 + k * 10;
                b.write("p", vec![people(start..start + 10)], WriteMode::Append)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ids = ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id");
    let mut want: Vec<i64> = (0..6)
        .flat_map(|t| (0..30).map(move |i| t * 100 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(ids, want);
}

/// Versions advance with each write; reads at a version and rollback return that version's rows.
pub async fn versions_and_rollback(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    assert_eq!(b.get_table_version("p").await.unwrap(), None);
    b.create_table("p", vec![people(0..3)]).await.unwrap();
    let v1 = b.get_table_version("p").await.unwrap().unwrap();
    b.write("p", vec![people(3..6)], WriteMode::Append)
        .await
        .unwrap();
    let v2 = b.get_table_version("p").await.unwrap().unwrap();
    assert!(v2 > v1);
    b.delete_rows("p", "id = 0").await.unwrap();
    let v3 = b.get_table_version("p").await.unwrap().unwrap();
    assert!(v3 > v2);

    b.rollback_table("p", v1).await.unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        vec![0, 1, 2]
    );
    let v4 = b.get_table_version("p").await.unwrap().unwrap();
    assert!(v4 > v3, "a rollback commits a new version");
    // Writing after a rollback continues from the restored contents.
    b.write("p", vec![people(7..8)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        vec![0, 1, 2, 7]
    );
    // Pinned reads still see old versions, the restored one included.
    let at_v1 = b
        .scan(ScanRequest::table("p").at_version(v1))
        .await
        .unwrap();
    assert_eq!(ints(&at_v1, "id"), vec![0, 1, 2]);
    let at_v2 = b
        .scan(ScanRequest::table("p").at_version(v2))
        .await
        .unwrap();
    assert_eq!(ints(&at_v2, "id"), (0..6).collect::<Vec<_>>());

    let e = b.rollback_table("p", 9999).await.unwrap_err();
    assert!(matches!(typed(&e), Error::VersionNotFound { .. }), "{e:#}");
    let e = b.rollback_table("none", 1).await.unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
    assert_eq!(b.count_rows("p", None).await.unwrap(), 4);
}

/// `optimize` compacts without changing the rows.
pub async fn optimize_keeps_contents(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    for i in 1..6i64 {
        b.write("p", vec![people(i * 10..i * 10 + 5)], WriteMode::Append)
            .await
            .unwrap();
    }
    b.delete_rows("p", "id % 2 = 1").await.unwrap();
    let before = ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id");
    b.optimize_table("p").await.unwrap();
    assert_eq!(
        ints(&b.scan(ScanRequest::table("p")).await.unwrap(), "id"),
        before
    );
    b.write("p", vec![people(99..100)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), before.len() + 1);
    let e = b.optimize_table("none").await.unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
}

/// `recover_staging` can run any number of times, on missing tables too, and changes
/// nothing visible.
pub async fn recover_staging_is_idempotent(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.recover_staging("never_created").await.unwrap();
    b.create_table("p", vec![people(0..5)]).await.unwrap();
    b.write("p", vec![people(5..9)], WriteMode::Append)
        .await
        .unwrap();
    let v = b.get_table_version("p").await.unwrap();
    b.recover_staging("p").await.unwrap();
    b.recover_staging("p").await.unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 9);
    assert_eq!(b.get_table_version("p").await.unwrap(), v);
    b.write("p", vec![people(9..10)], WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(b.count_rows("p", None).await.unwrap(), 10);
}
