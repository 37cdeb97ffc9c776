//! `diff_stream` gives the rows `diff` gives (as sets: the stream has no
//! order), over more changes than one lookup chunk, with every kind of
//! change: updates, deletes, inserts, a delete and re-insert of a key
//! (changed, and the same again), tables created and dropped on the
//! branch, and a table compared in full.

use std::collections::BTreeSet;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use lancebranch::branched::{BranchedBackend, MergeOptions};
use lancebranch::lance::LanceDbOptions;
use lancebranch::{LanceDbBackend, StorageBackend, WriteMode};

use crate::lifecycle::kv;

type Row = (String, String, i64, i64, String);

fn rows_of(table: &str, b: &RecordBatch, out: &mut BTreeSet<Row>) {
    let int = |n: &str| {
        b.column_by_name(n)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    };
    let text = |n: &str| {
        b.column_by_name(n)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone()
    };
    let (id, a, change, cols) = (
        int("id"),
        int("a"),
        text("_change"),
        text("_changed_columns"),
    );
    for i in 0..b.num_rows() {
        let a = if a.is_null(i) { i64::MIN } else { a.value(i) };
        out.insert((
            table.to_string(),
            change.value(i).to_string(),
            id.value(i),
            a,
            cols.value(i).to_string(),
        ));
    }
}

async fn both(main: &BranchedBackend, b: &BranchedBackend) -> (BTreeSet<Row>, BTreeSet<Row>) {
    let mut collected = BTreeSet::new();
    for d in main.diff(b).await.unwrap() {
        for r in &d.rows {
            rows_of(&d.table, r, &mut collected);
        }
    }
    let mut streamed = BTreeSet::new();
    let mut s = main.diff_stream(b, &MergeOptions::default()).await.unwrap();
    while let Some(d) = s.try_next().await.unwrap() {
        rows_of(&d.table, &d.rows, &mut streamed);
    }
    (collected, streamed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_gives_the_rows_diff_gives() {
    let dir = tempfile::tempdir().unwrap();
    let inner = std::sync::Arc::new(
        LanceDbBackend::open_with(
            dir.path().to_str().unwrap(),
            LanceDbOptions {
                durable: false,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let main = BranchedBackend::open(inner).await.unwrap();
    let n = 20_000i64;
    let base: Vec<(i64, i64)> = (0..n).map(|i| (i, i)).collect();
    main.create_table("t", vec![kv(&base)]).await.unwrap();
    main.create_table("gone", vec![kv(&[(1, 1)])])
        .await
        .unwrap();
    let b = main.fork("b").await.unwrap();
    // 10 000 updates (more than one lookup chunk), 3 000 deletes, 2 000
    // inserts, 500 keys deleted and inserted again changed, 500 the same.
    let upd: Vec<(i64, i64)> = (0..10_000).map(|i| (i, -i)).collect();
    b.merge_insert("t", &["id"], vec![kv(&upd)]).await.unwrap();
    b.delete_rows("t", "id >= 10000 AND id < 14000")
        .await
        .unwrap();
    let back: Vec<(i64, i64)> = (13_000..13_500)
        .map(|i| (i, i + 1))
        .chain((13_500..14_000).map(|i| (i, i)))
        .collect();
    b.write("t", vec![kv(&back)], WriteMode::Append)
        .await
        .unwrap();
    let new: Vec<(i64, i64)> = (n..n + 2_000).map(|i| (i, 7)).collect();
    b.write("t", vec![kv(&new)], WriteMode::Append)
        .await
        .unwrap();
    b.create_table("fresh", vec![kv(&[(5, 5), (6, 6)])])
        .await
        .unwrap();
    b.drop_table("gone").await.unwrap();

    let (collected, streamed) = both(&main, &b).await;
    let mut by_kind = std::collections::BTreeMap::new();
    for r in &collected {
        *by_kind.entry((r.0.clone(), r.1.clone())).or_insert(0) += 1;
    }
    let want = [
        (("fresh", "insert"), 2),
        (("gone", "delete"), 1),
        (("t", "delete"), 3_000),
        (("t", "insert"), 2_000),
        // (0, -0) is the row it was: 9 999 updates, and 500 re-inserts.
        (("t", "update"), 10_499),
    ];
    let want = want
        .into_iter()
        .map(|((t, c), n)| ((t.to_string(), c.to_string()), n))
        .collect();
    assert_eq!(by_kind, want);
    assert_eq!(streamed, collected);

    // Compared in full (the branch's table was replaced: not a change set
    // of the base's line).
    let c = main.fork("c").await.unwrap();
    c.write("t", vec![kv(&[(1, 2), (n + 9, 9)])], WriteMode::Overwrite)
        .await
        .unwrap();
    let (collected, streamed) = both(&main, &c).await;
    assert!(!collected.is_empty());
    assert_eq!(streamed, collected);
}
