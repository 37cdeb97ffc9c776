//! Diff and three-way merge between branches.
//! Every scenario runs on local disk and on the local S3 server.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::shared::Place;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancebranch::branched::{
    BranchedBackend, ConflictKind, ConflictPolicy, MergeOptions, MergeOutcome,
    PRIMARY_KEY_METADATA, TableChange,
};
use lancebranch::{Error, ScanRequest, StorageBackend, WriteMode};

use lancebranch::conformance::data::ints;
use lancebranch::conformance::typed;

/// `id` (key, in metadata), `a`, `b`.
fn schema() -> SchemaRef {
    let mut md = std::collections::HashMap::new();
    md.insert(PRIMARY_KEY_METADATA.to_string(), "id".to_string());
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ])
        .with_metadata(md),
    )
}

fn rows(r: &[(i64, i64, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(r.iter().map(|x| x.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(r.iter().map(|x| x.1).collect::<Vec<_>>())),
            Arc::new(StringArray::from(r.iter().map(|x| x.2).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// Only `id` and `a`, for partial updates.
fn set_a(id: i64, a: i64) -> RecordBatch {
    let s = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        s,
        vec![
            Arc::new(Int64Array::from(vec![id])),
            Arc::new(Int64Array::from(vec![a])),
        ],
    )
    .unwrap()
}

fn set_b(id: i64, b: &str) -> RecordBatch {
    let s = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("b", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        s,
        vec![
            Arc::new(Int64Array::from(vec![id])),
            Arc::new(StringArray::from(vec![b])),
        ],
    )
    .unwrap()
}

/// The table as `id -> (a, b)`.
async fn contents(v: &BranchedBackend, t: &str) -> BTreeMap<i64, (Option<i64>, Option<String>)> {
    let mut out = BTreeMap::new();
    for batch in v.scan(ScanRequest::table(t)).await.unwrap() {
        let id = batch
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let a = batch
            .column_by_name("a")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let b = batch
            .column_by_name("b")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for i in 0..batch.num_rows() {
            out.insert(
                id.value(i),
                (
                    (!arrow_array::Array::is_null(&a, i)).then(|| a.value(i)),
                    (!arrow_array::Array::is_null(&b, i)).then(|| b.value(i).to_string()),
                ),
            );
        }
    }
    out
}

/// A fresh store, on the local S3 server (`s3`) or on local disk.
async fn fresh(s3: bool) -> (Place, BranchedBackend) {
    let dir = Place::new(s3);
    let inner = crate::shared::inner(&dir.uri()).await;
    (dir, BranchedBackend::open(inner).await.unwrap())
}

async fn store(s3: bool) -> (Place, BranchedBackend) {
    let (dir, main) = fresh(s3).await;
    main.create_table("p", vec![rows(&[(1, 10, "x"), (2, 20, "y"), (3, 30, "z")])])
        .await
        .unwrap();
    (dir, main)
}

async fn fast_forward_then_up_to_date_and_child_still_readable(s3: bool) {
    let (_d, main) = store(s3).await;
    let b = main.fork("b").await.unwrap();
    b.write("p", vec![rows(&[(4, 40, "w")])], WriteMode::Append)
        .await
        .unwrap();
    b.merge_insert("p", &["id"], vec![set_a(2, 21)])
        .await
        .unwrap();
    b.delete_rows("p", "id = 3").await.unwrap();

    let diff = main.diff(&b).await.unwrap();
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0].change, TableChange::Modified);
    assert_eq!(diff[0].counts, (1, 1, 1));
    let kinds: Vec<String> = diff[0]
        .rows
        .iter()
        .flat_map(|r| {
            let c = r
                .column_by_name("_change")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..arrow_array::Array::len(&c)).map(move |i| c.value(i).to_string())
        })
        .collect();
    assert_eq!(kinds.len(), 3);

    let before_b = contents(&b, "p").await;
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::FastForward);
    assert!(r.conflicts.is_empty());
    assert_eq!(
        (
            r.tables["p"].inserted,
            r.tables["p"].updated,
            r.tables["p"].deleted
        ),
        (1, 1, 1)
    );
    assert_eq!(contents(&main, "p").await, before_b);
    // The child stays readable and unchanged (Omnigraph #683).
    assert_eq!(contents(&b, "p").await, before_b);
    let again = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(again.outcome, MergeOutcome::AlreadyUpToDate);
    assert!(main.diff(&b).await.unwrap().is_empty());
}

/// A merge deletes the target's rows by the stable row id of the source's
/// base row, checked by key; where the target rewrote a row with the same
/// values (a new row id), the row is found by key instead, and a row
/// never ends up twice.
async fn rows_rewritten_on_the_target_are_found_by_key(s3: bool) {
    let (_d, main) = store(s3).await;
    let b = main.fork("b").await.unwrap();
    b.merge_insert("p", &["id"], vec![set_a(2, 21)])
        .await
        .unwrap();
    b.delete_rows("p", "id = 3").await.unwrap();
    b.merge_insert("p", &["id"], vec![set_a(1, 11)])
        .await
        .unwrap();
    // Main deletes rows 2 and 3 and writes them back unchanged: same
    // contents, new row ids. Row 1 stays the base row.
    main.delete_rows("p", "id IN (2, 3)").await.unwrap();
    main.write(
        "p",
        vec![rows(&[(2, 20, "y"), (3, 30, "z")])],
        WriteMode::Append,
    )
    .await
    .unwrap();
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged);
    assert!(r.conflicts.is_empty());
    let want: BTreeMap<i64, (Option<i64>, Option<String>)> = [
        (1, (Some(11), Some("x".to_string()))),
        (2, (Some(21), Some("y".to_string()))),
    ]
    .into_iter()
    .collect();
    assert_eq!(contents(&main, "p").await, want);
    assert_eq!(main.count_rows("p", None).await.unwrap(), 2, "no row twice");
    assert_eq!(contents(&b, "p").await, want);
}

async fn disjoint_changes_merge_without_false_conflicts(s3: bool) {
    let (_d, main) = store(s3).await;
    let b = main.fork("b").await.unwrap();
    // Different rows on each side, and different columns of row 2.
    main.merge_insert("p", &["id"], vec![set_a(1, 11)])
        .await
        .unwrap();
    main.merge_insert("p", &["id"], vec![set_a(2, 22)])
        .await
        .unwrap();
    b.merge_insert("p", &["id"], vec![set_b(2, "Y")])
        .await
        .unwrap();
    b.merge_insert("p", &["id"], vec![set_b(3, "Z")])
        .await
        .unwrap();
    b.write("p", vec![rows(&[(5, 50, "v")])], WriteMode::Append)
        .await
        .unwrap();
    main.write("p", vec![rows(&[(6, 60, "u")])], WriteMode::Append)
        .await
        .unwrap();
    // The same change on both sides is no conflict either.
    main.delete_rows("p", "id = 1").await.unwrap();
    b.delete_rows("p", "id = 1").await.unwrap();

    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged, "{:?}", r.conflicts);
    assert!(r.conflicts.is_empty(), "false conflicts: {:?}", r.conflicts);
    let got = contents(&main, "p").await;
    let want: BTreeMap<i64, (Option<i64>, Option<String>)> = [
        (2, (Some(22), Some("Y".to_string()))),
        (3, (Some(30), Some("Z".to_string()))),
        (5, (Some(50), Some("v".to_string()))),
        (6, (Some(60), Some("u".to_string()))),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

async fn conflicting_pair(s3: bool) -> (Place, BranchedBackend, BranchedBackend) {
    let (d, main) = store(s3).await;
    let b = main.fork("b").await.unwrap();
    // DivergentInsert on 7, DivergentUpdate on 1.a, UpdateDelete on 2, DeleteUpdate on 3.
    main.write("p", vec![rows(&[(7, 70, "ours")])], WriteMode::Append)
        .await
        .unwrap();
    b.write("p", vec![rows(&[(7, 71, "theirs")])], WriteMode::Append)
        .await
        .unwrap();
    main.merge_insert("p", &["id"], vec![set_a(1, 100)])
        .await
        .unwrap();
    b.merge_insert("p", &["id"], vec![set_a(1, 200)])
        .await
        .unwrap();
    main.merge_insert("p", &["id"], vec![set_a(2, 2000)])
        .await
        .unwrap();
    b.delete_rows("p", "id = 2").await.unwrap();
    main.delete_rows("p", "id = 3").await.unwrap();
    b.merge_insert("p", &["id"], vec![set_b(3, "changed")])
        .await
        .unwrap();
    (d, main, b)
}

async fn every_conflict_kind_fails_atomically_by_default(s3: bool) {
    let (_d, main, b) = conflicting_pair(s3).await;
    let before = contents(&main, "p").await;
    let v = main.get_table_version("p").await.unwrap();
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::Conflicted);
    assert!(r.is_conflicted());
    let mut kinds: Vec<ConflictKind> = r.conflicts.iter().map(|c| c.kind).collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        vec![
            ConflictKind::DeleteUpdate,
            ConflictKind::DivergentInsert,
            ConflictKind::DivergentUpdate,
            ConflictKind::UpdateDelete
        ]
    );
    let du = r
        .conflicts
        .iter()
        .find(|c| c.kind == ConflictKind::DivergentUpdate)
        .unwrap();
    assert_eq!(du.column.as_deref(), Some("a"));
    assert_eq!(
        (du.base.as_deref(), du.ours.as_deref(), du.theirs.as_deref()),
        (Some("10"), Some("100"), Some("200"))
    );
    let batch = r.conflicts_batch().unwrap();
    assert_eq!(batch.num_rows(), 4);
    assert_eq!(contents(&main, "p").await, before, "nothing applied");
    assert_eq!(main.get_table_version("p").await.unwrap(), v);
}

async fn ours_and_theirs_policies_resolve(s3: bool) {
    let (_d, main, b) = conflicting_pair(s3).await;
    let ours_before = contents(&main, "p").await;
    let r = main
        .merge(
            &b,
            MergeOptions::default().policy("p", ConflictPolicy::Ours),
        )
        .await
        .unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged);
    assert_eq!(r.conflicts.len(), 4);
    assert_eq!(
        contents(&main, "p").await,
        ours_before,
        "ours keeps every conflicting row"
    );

    let (_d2, main2, b2) = conflicting_pair(s3).await;
    let r = main2
        .merge(
            &b2,
            MergeOptions::default().default_policy(ConflictPolicy::Theirs),
        )
        .await
        .unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged);
    let got = contents(&main2, "p").await;
    assert_eq!(got.get(&7), Some(&(Some(71), Some("theirs".to_string()))));
    assert_eq!(got.get(&1).unwrap().0, Some(200));
    assert!(!got.contains_key(&2), "theirs deleted 2");
    assert_eq!(
        got.get(&3),
        Some(&(Some(30), Some("changed".to_string()))),
        "theirs' update restores 3"
    );
}

async fn missing_key_is_refused_before_writing(s3: bool) {
    let (_dir, main) = fresh(s3).await;
    let nokey = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch =
        RecordBatch::try_new(nokey.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
    main.create_table("k", vec![batch.clone()]).await.unwrap();
    let b = main.fork("b").await.unwrap();
    b.delete_rows("k", "id = 1").await.unwrap();
    let v = main.get_table_version("k").await.unwrap();
    let e = main.merge(&b, MergeOptions::default()).await.unwrap_err();
    assert!(
        matches!(typed(&e), Error::MissingMergeKey(t) if t == "k"),
        "{e:#}"
    );
    assert_eq!(main.get_table_version("k").await.unwrap(), v);
    let r = main
        .merge(&b, MergeOptions::default().key("k", &["id"]))
        .await
        .unwrap();
    assert_eq!(r.outcome, MergeOutcome::FastForward);
    assert_eq!(
        ints(&main.scan(ScanRequest::table("k")).await.unwrap(), "id"),
        vec![2]
    );
    // Other bad input.
    let e = main
        .merge(&main, MergeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let e = main
        .merge(&main.snapshot().unwrap(), MergeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
}

async fn created_tables_nested_and_repeated_merges(s3: bool) {
    let (_d, main) = store(s3).await;
    let b = main.fork("b").await.unwrap();
    let c = b.fork("c").await.unwrap();
    c.create_table("extra", vec![rows(&[(1, 1, "e")])])
        .await
        .unwrap();
    c.write("p", vec![rows(&[(8, 80, "c")])], WriteMode::Append)
        .await
        .unwrap();
    // Nested into its parent, then into main.
    let r = b.merge(&c, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::FastForward);
    assert!(b.table_exists("extra").await.unwrap());
    assert!(!main.table_exists("extra").await.unwrap());
    main.write("p", vec![rows(&[(9, 90, "main")])], WriteMode::Append)
        .await
        .unwrap();
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged, "{:?}", r.conflicts);
    assert!(main.table_exists("extra").await.unwrap());
    assert_eq!(contents(&main, "extra").await.len(), 1);
    let ids: Vec<i64> = contents(&main, "p").await.keys().copied().collect();
    assert_eq!(ids, vec![1, 2, 3, 8, 9]);

    // Later changes on b merge again, from the previous merge as the base:
    // main's own change since is kept, b's old changes are not re-applied.
    main.merge_insert("p", &["id"], vec![set_a(8, 888)])
        .await
        .unwrap();
    b.merge_insert("p", &["id"], vec![set_b(8, "later")])
        .await
        .unwrap();
    b.write("p", vec![rows(&[(10, 100, "b2")])], WriteMode::Append)
        .await
        .unwrap();
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::Merged, "{:?}", r.conflicts);
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    let got = contents(&main, "p").await;
    assert_eq!(got.get(&8), Some(&(Some(888), Some("later".to_string()))));
    assert!(got.contains_key(&10));
    assert!(got.contains_key(&9), "main's own row survives");
    // Merging the parent into the child brings main's rows down.
    let r = b.merge(&main, MergeOptions::default()).await.unwrap();
    assert!(!r.is_conflicted(), "{:?}", r.conflicts);
    assert_eq!(contents(&b, "p").await, got);
}

async fn schema_additions_merge(s3: bool) {
    let (_d, main) = store(s3).await;
    let b = main.fork("b").await.unwrap();
    let mut fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("c", DataType::Int64, true));
    let wide = Arc::new(Schema::new(fields).with_metadata(schema().metadata().clone()));
    let batch = RecordBatch::try_new(
        wide.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Int64Array::from(vec![10, 20, 30])),
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
            Arc::new(Int64Array::from(vec![Some(7), None, None])),
        ],
    )
    .unwrap();
    b.replace_table_atomic("p", vec![batch], wide)
        .await
        .unwrap();
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert!(!r.is_conflicted(), "{:?}", r.conflicts);
    let s = main.get_table_schema("p").await.unwrap().unwrap();
    assert!(s.field_with_name("c").is_ok());
    let got = main
        .scan(ScanRequest::table("p").filter("c = 7"))
        .await
        .unwrap();
    assert_eq!(ints(&got, "id"), vec![1]);
    assert_eq!(main.count_rows("p", None).await.unwrap(), 3);
}

/// A tiny deterministic PRNG for the model test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Model = BTreeMap<i64, i64>;

async fn random_edits(v: &BranchedBackend, model: &mut Model, rng: &mut Rng, fresh: i64) {
    for step in 0..6 {
        let id = rng.below(12) as i64;
        match rng.below(3) {
            0 => {
                let new = fresh + step;
                let val = rng.below(1000) as i64;
                v.write("m", vec![krows(&[(new, val)])], WriteMode::Append)
                    .await
                    .unwrap();
                model.insert(new, val);
            }
            1 if model.contains_key(&id) => {
                let val = rng.below(1000) as i64;
                v.merge_insert("m", &["id"], vec![krows(&[(id, val)])])
                    .await
                    .unwrap();
                model.insert(id, val);
            }
            _ if model.contains_key(&id) => {
                v.delete_rows("m", &format!("id = {id}")).await.unwrap();
                model.remove(&id);
            }
            _ => {}
        }
    }
}

fn kschema() -> SchemaRef {
    let mut md = std::collections::HashMap::new();
    md.insert(PRIMARY_KEY_METADATA.to_string(), "id".to_string());
    Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ])
        .with_metadata(md),
    )
}

fn krows(r: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        kschema(),
        vec![
            Arc::new(Int64Array::from(r.iter().map(|x| x.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(r.iter().map(|x| x.1).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

async fn contents_m(v: &BranchedBackend) -> Model {
    let mut out = Model::new();
    for b in v.scan(ScanRequest::table("m")).await.unwrap() {
        let id = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let val = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            out.insert(id.value(i), val.value(i));
        }
    }
    out
}

/// Random edits on two branches, merged with Theirs / Ours, equal a plain
/// model of the same edits.
async fn merge_matches_a_model_under_random_edits(s3: bool) {
    for seed in 1..=6u64 {
        for policy in [ConflictPolicy::Theirs, ConflictPolicy::Ours] {
            let (_dir, main) = fresh(s3).await;
            let base: Model = (0..8).map(|i| (i, i * 10)).collect();
            let init: Vec<(i64, i64)> = base.iter().map(|(k, v)| (*k, *v)).collect();
            main.create_table("m", vec![krows(&init)]).await.unwrap();
            let b = main.fork("b").await.unwrap();
            let mut rng = Rng(seed * 7919 + 1);
            let (mut ours, mut theirs) = (base.clone(), base.clone());
            random_edits(&main, &mut ours, &mut rng, 100).await;
            random_edits(&b, &mut theirs, &mut rng, 100).await;
            let r = main
                .merge(&b, MergeOptions::default().default_policy(policy))
                .await
                .unwrap();
            assert!(!r.is_conflicted());
            let mut keys: Vec<i64> = base
                .keys()
                .chain(ours.keys())
                .chain(theirs.keys())
                .copied()
                .collect();
            keys.sort();
            keys.dedup();
            let mut want = Model::new();
            for k in keys {
                let (bv, ov, tv) = (base.get(&k), ours.get(&k), theirs.get(&k));
                let theirs_changed = bv != tv;
                let ours_changed = bv != ov;
                let pick = if !theirs_changed {
                    ov
                } else if !ours_changed || ov == tv || policy == ConflictPolicy::Theirs {
                    tv
                } else {
                    ov
                };
                if let Some(v) = pick {
                    want.insert(k, *v);
                }
            }
            assert_eq!(
                contents_m(&main).await,
                want,
                "seed {seed} policy {policy:?}"
            );
        }
    }
}

/// Random edits of many keys of `m`: appends of new keys, updates and
/// deletes of `0..keys`, some several rows at once.
async fn many_edits(v: &BranchedBackend, rng: &mut Rng, steps: u64, keys: u64, fresh: i64) {
    for step in 0..steps as i64 {
        let id = rng.below(keys) as i64;
        let val = rng.below(1000) as i64;
        match rng.below(4) {
            0 => {
                let new: Vec<(i64, i64)> =
                    (0..3).map(|i| (fresh + step * 3 + i, val + i)).collect();
                v.write("m", vec![krows(&new)], WriteMode::Append)
                    .await
                    .unwrap();
            }
            1 => {
                let upd: Vec<(i64, i64)> =
                    (id..(id + 4).min(keys as i64)).map(|k| (k, val)).collect();
                v.merge_insert("m", &["id"], vec![krows(&upd)])
                    .await
                    .unwrap();
            }
            2 => {
                v.delete_rows("m", &format!("id = {id}")).await.unwrap();
            }
            _ => {
                // Deleted and written again: the same key, a new row.
                v.delete_rows("m", &format!("id = {id}")).await.unwrap();
                v.write("m", vec![krows(&[(id, val)])], WriteMode::Append)
                    .await
                    .unwrap();
            }
        }
    }
}

/// A report without the published versions (two targets publish
/// different ones).
fn unversioned(mut r: lancebranch::branched::MergeReport) -> lancebranch::branched::MergeReport {
    for s in r.tables.values_mut() {
        s.version = None;
    }
    r
}

/// A merge in batches (of 1 and of 7 keys) decides and applies what the
/// same merge does at once: the same report and the same rows, for every
/// policy, on sides with the same base (the first merge) and with
/// different bases (a merge again after more edits).
async fn merge_in_batches_equals_merge_at_once(s3: bool) {
    for (seed, batch) in [(3u64, 1usize), (5, 7), (11, 7)] {
        let (_dir, main) = fresh(s3).await;
        let init: Vec<(i64, i64)> = (0..40).map(|i| (i, i * 10)).collect();
        main.create_table("m", vec![krows(&init)]).await.unwrap();
        let b = main.fork("b").await.unwrap();
        let (whole, parts) = (
            main.fork("t1").await.unwrap(),
            main.fork("t2").await.unwrap(),
        );
        let mut rng = Rng(seed * 7919 + 1);
        for round in 0..2i64 {
            many_edits(&b, &mut rng, 12, 40, 1000 + round * 100).await;
            let target_seed = seed * 31 + round as u64;
            for t in [&whole, &parts] {
                let mut r = Rng(target_seed);
                many_edits(t, &mut r, 5, 40, 5000 + round * 100).await;
            }
            let second = if seed == 5 {
                ConflictPolicy::Theirs
            } else {
                ConflictPolicy::Ours
            };
            for policy in [ConflictPolicy::Fail, second] {
                let opts = MergeOptions::default().default_policy(policy);
                let a = whole.merge(&b, opts.clone()).await.unwrap();
                let c = parts.merge(&b, opts.batch_rows(batch)).await.unwrap();
                let what = format!("seed {seed} batch {batch} round {round} {policy:?}");
                assert_eq!(unversioned(a.clone()), unversioned(c), "{what}");
                assert_eq!(contents_m(&whole).await, contents_m(&parts).await, "{what}");
                if !a.is_conflicted() {
                    break;
                }
            }
        }
        assert!(whole.fsck(false).await.unwrap().is_clean());
        assert!(parts.fsck(false).await.unwrap().is_clean());
    }
    let (_dir, main) = fresh(s3).await;
    let e = main
        .merge(
            &main.fork("z").await.unwrap(),
            MergeOptions::default().batch_rows(0),
        )
        .await;
    assert!(matches!(
        Error::of(&e.unwrap_err()),
        Some(Error::InvalidArgument(_))
    ));
}

/// A table the source created, bigger than one streamed-write chunk, is
/// copied to the target a chunk at a time, whole, and published at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_table_is_merged_a_chunk_at_a_time() {
    let (_dir, main) = fresh(false).await;
    main.create_table("m", vec![krows(&[(0, 0)])])
        .await
        .unwrap();
    let b = main.fork("b").await.unwrap();
    let n = lancebranch::branched::ROWS_PER_COMMIT as i64 + 1000;
    let all: Vec<(i64, i64)> = (0..n).map(|i| (i, i * 2)).collect();
    b.create_table("big", vec![krows(&all)]).await.unwrap();
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::FastForward);
    assert_eq!(r.tables["big"].inserted, n as usize);
    assert_eq!(main.count_rows("big", None).await.unwrap(), n as usize);
    let sum: i64 = main
        .scan(ScanRequest::table("big"))
        .await
        .unwrap()
        .iter()
        .map(|b| {
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            v.values().iter().sum::<i64>()
        })
        .sum();
    assert_eq!(sum, (0..n).map(|i| i * 2).sum::<i64>());
    assert!(main.fsck(false).await.unwrap().is_clean());
}

/// A reader never sees half of a multi-table merge.
async fn merge_is_atomic_across_tables_for_readers(s3: bool) {
    let (_d, main) = store(s3).await;
    main.create_table("q", vec![rows(&[(1, 10, "x"), (2, 20, "y"), (3, 30, "z")])])
        .await
        .unwrap();
    let b = main.fork("b").await.unwrap();
    let extra: Vec<(i64, i64, &str)> = (100..150).map(|i| (i, i, "n")).collect();
    b.write("p", vec![rows(&extra)], WriteMode::Append)
        .await
        .unwrap();
    b.write("q", vec![rows(&extra)], WriteMode::Append)
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let m = main.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || seen < 3 {
                let s = m.snapshot().unwrap();
                let (p, q) = (
                    s.count_rows("p", None).await.unwrap(),
                    s.count_rows("q", None).await.unwrap(),
                );
                assert_eq!(p, q, "a snapshot saw one table merged and not the other");
                seen += 1;
                // Reads of cached versions never wait: let the runtime's
                // other tasks (the merge's S3 requests) run.
                tokio::task::yield_now().await;
            }
        })
    };
    let r = main.merge(&b, MergeOptions::default()).await.unwrap();
    assert_eq!(r.outcome, MergeOutcome::FastForward);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.await.unwrap();
    assert_eq!(main.count_rows("p", None).await.unwrap(), 53);
    assert_eq!(main.count_rows("q", None).await.unwrap(), 53);
}

async fn diff_since_a_tag(s3: bool) {
    let (_d, main) = store(s3).await;
    main.tag("v1").await.unwrap();
    main.merge_insert("p", &["id"], vec![set_a(1, 99)])
        .await
        .unwrap();
    main.write("p", vec![rows(&[(4, 40, "w")])], WriteMode::Append)
        .await
        .unwrap();
    main.create_table("new_t", vec![rows(&[(1, 1, "n")])])
        .await
        .unwrap();
    let d = main
        .diff_since_tag("v1", &MergeOptions::default())
        .await
        .unwrap();
    let p = d.iter().find(|t| t.table == "p").unwrap();
    assert_eq!(p.counts, (1, 1, 0));
    let changed: Vec<String> = p
        .rows
        .iter()
        .flat_map(|r| {
            let c = r
                .column_by_name("_changed_columns")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..arrow_array::Array::len(&c)).map(move |i| c.value(i).to_string())
        })
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(changed, vec!["a".to_string()]);
    let created = d.iter().find(|t| t.table == "new_t").unwrap();
    assert_eq!(created.change, TableChange::Created);
    let e = main
        .diff_since_tag("nope", &MergeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::TagNotFound(_)), "{e:#}");
}

// ---- every scenario on local disk and on S3 ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_forward_then_up_to_date_and_child_still_readable_local() {
    fast_forward_then_up_to_date_and_child_still_readable(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_forward_then_up_to_date_and_child_still_readable_on_s3() {
    fast_forward_then_up_to_date_and_child_still_readable(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_rewritten_on_the_target_are_found_by_key_local() {
    rows_rewritten_on_the_target_are_found_by_key(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_rewritten_on_the_target_are_found_by_key_on_s3() {
    rows_rewritten_on_the_target_are_found_by_key(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_changes_merge_without_false_conflicts_local() {
    disjoint_changes_merge_without_false_conflicts(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_changes_merge_without_false_conflicts_on_s3() {
    disjoint_changes_merge_without_false_conflicts(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conflict_kind_fails_atomically_by_default_local() {
    every_conflict_kind_fails_atomically_by_default(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conflict_kind_fails_atomically_by_default_on_s3() {
    every_conflict_kind_fails_atomically_by_default(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_and_theirs_policies_resolve_local() {
    ours_and_theirs_policies_resolve(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_and_theirs_policies_resolve_on_s3() {
    ours_and_theirs_policies_resolve(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_refused_before_writing_local() {
    missing_key_is_refused_before_writing(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_refused_before_writing_on_s3() {
    missing_key_is_refused_before_writing(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tables_nested_and_repeated_merges_local() {
    created_tables_nested_and_repeated_merges(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tables_nested_and_repeated_merges_on_s3() {
    created_tables_nested_and_repeated_merges(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_additions_merge_local() {
    schema_additions_merge(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_additions_merge_on_s3() {
    schema_additions_merge(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_matches_a_model_under_random_edits_local() {
    merge_matches_a_model_under_random_edits(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_matches_a_model_under_random_edits_on_s3() {
    merge_matches_a_model_under_random_edits(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_is_atomic_across_tables_for_readers_local() {
    merge_is_atomic_across_tables_for_readers(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_is_atomic_across_tables_for_readers_on_s3() {
    merge_is_atomic_across_tables_for_readers(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_since_a_tag_local() {
    diff_since_a_tag(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_since_a_tag_on_s3() {
    diff_since_a_tag(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_in_batches_equals_merge_at_once_local() {
    merge_in_batches_equals_merge_at_once(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_in_batches_equals_merge_at_once_on_s3() {
    merge_in_batches_equals_merge_at_once(true).await
}
