//! `BranchedBackend::write_stream`: many Lance commits, one publish. A
//! reader during the stream sees none of it, a stream that fails or a
//! crash between the commits and the publish leaves the branch as it was,
//! every mode does what it says, and `fsck` is clean after each.

use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::StreamExt;
use lancebranch::backend::BranchLines;
use lancebranch::branched::{BranchedBackend, PRIMARY_KEY_METADATA, StreamMode};
use lancebranch::{Error, LanceDbBackend, StorageBackend};

use lancebranch::conformance::data::*;

async fn open(dir: &tempfile::TempDir) -> BranchedBackend {
    let path = dir.path().to_str().unwrap().to_string();
    let inner = Arc::new(LanceDbBackend::open(&path).await.unwrap());
    BranchedBackend::open(inner).await.unwrap()
}

/// People `0..n` in batches of 10,000 rows.
fn many(n: i64) -> Vec<anyhow::Result<RecordBatch>> {
    (0..n)
        .step_by(10_000)
        .map(|s| Ok(people(s..(s + 10_000).min(n))))
        .collect()
}

async fn count(v: &BranchedBackend, t: &str) -> usize {
    v.count_rows(t, None).await.unwrap()
}

async fn clean(main: &BranchedBackend) {
    let r = main.fsck(false).await.unwrap();
    assert!(r.is_clean(), "fsck: {:#?}", r.problems);
}

fn keyed_schema() -> arrow_schema::SchemaRef {
    let s = people_schema().as_ref().clone();
    let md = [(PRIMARY_KEY_METADATA.to_string(), "id".to_string())].into();
    Arc::new(s.with_metadata(md))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_on_main_and_on_a_branch() {
    let dir = tempfile::tempdir().unwrap();
    let main = open(&dir).await;
    // 150,000 rows: three Lance commits, one publish, key kept.
    let s = main
        .write_stream(
            "p",
            keyed_schema(),
            futures::stream::iter(many(150_000)),
            StreamMode::Create,
        )
        .await
        .unwrap();
    assert_eq!((s.rows, s.inserted, s.created), (150_000, 150_000, true));
    assert_eq!(count(&main, "p").await, 150_000);
    let schema = main.get_table_schema("p").await.unwrap().unwrap();
    assert_eq!(
        schema
            .metadata()
            .get(PRIMARY_KEY_METADATA)
            .map(String::as_str),
        Some("id")
    );
    let again = main
        .write_stream(
            "p",
            keyed_schema(),
            futures::stream::iter(many(1)),
            StreamMode::Create,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(Error::of(&again), Some(Error::TableExists(_))),
        "{again:#}"
    );

    let b = main.fork("b").await.unwrap();
    // Upsert on the branch: 10 rows updated, 5 new.
    let mut changed = people(149_990..150_005);
    changed = changed.with_schema(keyed_schema()).unwrap();
    let on = vec!["id".to_string()];
    let s = b
        .write_stream(
            "p",
            keyed_schema(),
            futures::stream::iter(vec![Ok(changed)]),
            StreamMode::Upsert { on },
        )
        .await
        .unwrap();
    assert_eq!(
        (s.rows, s.inserted, s.updated, s.created),
        (15, 5, 10, false)
    );
    assert_eq!(count(&b, "p").await, 150_005);
    assert_eq!(count(&main, "p").await, 150_000);
    // Overwrite, then append, on the branch.
    b.write_stream(
        "p",
        keyed_schema(),
        futures::stream::iter(many(20_000)),
        StreamMode::Overwrite,
    )
    .await
    .unwrap();
    assert_eq!(count(&b, "p").await, 20_000);
    b.write_stream(
        "p",
        keyed_schema(),
        futures::stream::iter(many(5)),
        StreamMode::Append,
    )
    .await
    .unwrap();
    assert_eq!(count(&b, "p").await, 20_005);
    // A new table on the branch only, from an empty stream.
    let empty: Vec<anyhow::Result<RecordBatch>> = vec![];
    b.write_stream(
        "q",
        keyed_schema(),
        futures::stream::iter(empty),
        StreamMode::Append,
    )
    .await
    .unwrap();
    assert_eq!(count(&b, "q").await, 0);
    assert!(!main.table_exists("q").await.unwrap());
    // A batch of another schema is refused, and nothing changes.
    let other = vectors(0..3);
    let e = b
        .write_stream(
            "p",
            keyed_schema(),
            futures::stream::iter(vec![Ok(other)]),
            StreamMode::Append,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(Error::of(&e), Some(Error::SchemaMismatch { .. })),
        "{e:#}"
    );
    assert_eq!(count(&b, "p").await, 20_005);
    // A bad upsert key is typed.
    let e = b
        .write_stream(
            "p",
            keyed_schema(),
            futures::stream::iter(many(1)),
            StreamMode::Upsert {
                on: vec!["nope".into()],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(Error::of(&e), Some(Error::InvalidColumn { .. })),
        "{e:#}"
    );
    clean(&main).await;
}

/// The stream fails after two chunks were committed to Lance: nothing is
/// published, the table reads as before, and fsck is clean; the same for
/// a table the stream was creating (no dataset left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_half_way_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let main = open(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    for view in [&main, &b] {
        let mut input = many(200_000);
        input.push(Err(anyhow::anyhow!(
            "the file ends in the middle of a line"
        )));
        let e = view
            .write_stream(
                "p",
                people_schema(),
                futures::stream::iter(input),
                StreamMode::Append,
            )
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("middle of a line"), "{e:#}");
        assert_eq!(count(view, "p").await, 3);
        clean(&main).await;
    }
    let mut input = many(200_000);
    input.push(Err(anyhow::anyhow!("bad input")));
    main.write_stream(
        "fresh",
        people_schema(),
        futures::stream::iter(input),
        StreamMode::Create,
    )
    .await
    .unwrap_err();
    assert!(!main.table_exists("fresh").await.unwrap());
    clean(&main).await;
    let inner = LanceDbBackend::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    assert!(
        !inner
            .table_names()
            .await
            .unwrap()
            .contains(&"fresh".to_string())
    );
}

/// A reader while the stream runs sees none of it; once it returns, all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_all_of_a_stream_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let main = open(&dir).await;
    main.create_table("p", vec![people(0..3)]).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    // 140,000 rows (two commits), then wait for the test's word.
    let head = futures::stream::iter(many(140_000).into_iter().map(|b| {
        b.map(|b| {
            let ids: Vec<i64> = ints(std::slice::from_ref(&b), "id")
                .iter()
                .map(|i| i + 1_000)
                .collect();
            people(ids)
        })
    }));
    let gate = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await;
        None::<(anyhow::Result<RecordBatch>, _)>
    });
    let input = head.chain(gate);
    let writer = {
        let main = main.clone();
        tokio::spawn(async move {
            main.write_stream("p", people_schema(), input, StreamMode::Append)
                .await
        })
    };
    // Wait until both chunks are committed to Lance (the line moved on).
    let inner = LanceDbBackend::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let published = main.get_table_version("p").await.unwrap().unwrap();
    for _ in 0..600 {
        if inner.latest_version("p", None).await.unwrap() >= published + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(inner.latest_version("p", None).await.unwrap() >= published + 2);
    assert_eq!(count(&main, "p").await, 3);
    let snap = main.snapshot().unwrap();
    tx.send(()).await.unwrap();
    let s = writer.await.unwrap().unwrap();
    assert_eq!(s.rows, 140_000);
    assert_eq!(count(&main, "p").await, 140_003);
    assert_eq!(count(&snap, "p").await, 3);
    drop(snap);
    clean(&main).await;
}

/// A crash between the stream's commits and its publish: after reopening
/// (recovery) the table reads as before and the store checks clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_publish_loses_the_stream_entirely() {
    let dir = tempfile::tempdir().unwrap();
    {
        let main = open(&dir).await;
        main.create_table("p", vec![people(0..3)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        main.arm_failpoint(lancebranch::failpoints::FailPoint::WriteAfterCommitBeforePublish);
        let e = b
            .write_stream(
                "p",
                people_schema(),
                futures::stream::iter(many(150_000)),
                StreamMode::Append,
            )
            .await
            .unwrap_err();
        assert!(matches!(Error::of(&e), Some(Error::FailPoint(_))), "{e:#}");
    }
    let main = open(&dir).await;
    let b = main.branch("b").unwrap();
    assert_eq!(count(&b, "p").await, 3);
    lancebranch::testing::recover_and_check(&main)
        .await
        .unwrap();
    b.write_stream(
        "p",
        people_schema(),
        futures::stream::iter(many(10)),
        StreamMode::Append,
    )
    .await
    .unwrap();
    assert_eq!(count(&b, "p").await, 13);
    clean(&main).await;
}
