//! Vector, multi-vector and full-text search; vector, FTS and scalar indexes.

use crate::{
    DistanceMetric, Error, FilterExpr, IndexKind, ScalarIndexType, ScanRequest, VectorIndexKind,
    VectorIndexParams, VectorQueryOpts,
};

use super::data::*;
use super::{Factory, typed};

/// Vector search: metrics, filters, limits and options.
pub async fn vector_search_metric_filter_opts(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("v", vec![vectors(0..50)]).await.unwrap();
    let q = [10.2f32, 0.0, 0.0, 0.0];
    let got = b
        .vector_search(
            "v",
            "v",
            &q,
            3,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids_in_order(&got), vec![10, 11, 9]);
    let d = distances(&got);
    assert!(
        d.windows(2).all(|w| w[0] <= w[1]),
        "sorted by distance: {d:?}"
    );
    assert!((d[0] - 0.04).abs() < 1e-3, "squared L2: {d:?}");

    // Prefilter: k rows, all matching the filter.
    let odd = b
        .vector_search(
            "v",
            "v",
            &q,
            4,
            DistanceMetric::L2,
            FilterExpr::sql("id % 2 = 1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids_in_order(&odd), vec![11, 9, 13, 7]);

    // Dot metric changes the order: the largest x wins.
    let dot = b
        .vector_search(
            "v",
            "v",
            &[1.0, 0.0, 0.0, 0.0],
            2,
            DistanceMetric::Dot,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids_in_order(&dot), vec![49, 48]);

    // Projection and exhaustive search.
    let opts = VectorQueryOpts {
        columns: Some(vec!["id".into()]),
        bypass_index: true,
        ..Default::default()
    };
    let proj = b
        .vector_search("v", "v", &q, 2, DistanceMetric::L2, FilterExpr::All, opts)
        .await
        .unwrap();
    assert!(proj[0].column_by_name("text").is_none());
    assert_eq!(ids_in_order(&proj), vec![10, 11]);

    // Postfilter may return fewer rows, but only matching ones.
    let opts = VectorQueryOpts {
        postfilter: true,
        ..Default::default()
    };
    let post = b
        .vector_search(
            "v",
            "v",
            &q,
            5,
            DistanceMetric::L2,
            FilterExpr::gt("id", 10_i64),
            opts,
        )
        .await
        .unwrap();
    assert!(ids_in_order(&post).iter().all(|&i| i > 10));

    // Pinned version: a search at an older version ignores newer rows.
    let v1 = b.get_table_version("v").await.unwrap().unwrap();
    b.write("v", vec![vectors(1000..1001)], crate::WriteMode::Append)
        .await
        .unwrap();
    let q_far = [1000.0f32, 0.0, 0.0, 0.0];
    let old = b
        .vector_search(
            "v",
            "v",
            &q_far,
            1,
            DistanceMetric::L2,
            FilterExpr::All,
            VectorQueryOpts {
                version: Some(v1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids_in_order(&old), vec![49]);
    let new = b
        .vector_search(
            "v",
            "v",
            &q_far,
            1,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(ids_in_order(&new), vec![1000]);
}

/// Vector search with bad input (dimension, column, options) gets a typed error.
pub async fn vector_search_bad_input(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("v", vec![vectors(0..10)]).await.unwrap();
    let e = b
        .vector_search(
            "v",
            "v",
            &[1.0, 2.0],
            3,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            typed(&e),
            Error::DimensionMismatch {
                expected: 4,
                got: 2,
                ..
            }
        ),
        "{e:#}"
    );
    let e = b
        .vector_search(
            "v",
            "v",
            &[0.0; 4],
            0,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let e = b
        .vector_search(
            "v",
            "nope",
            &[0.0; 4],
            1,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let e = b
        .vector_search(
            "v",
            "text",
            &[0.0; 4],
            1,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let e = b
        .vector_search(
            "v",
            "v",
            &[0.0; 4],
            1,
            DistanceMetric::L2,
            FilterExpr::sql("zzz > 1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidFilter { .. }), "{e:#}");
    let e = b
        .vector_search(
            "none",
            "v",
            &[0.0; 4],
            1,
            DistanceMetric::L2,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
}

/// Vector indexes: create, list, search through, drop.
pub async fn vector_index_lifecycle(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("v", vec![vectors(0..300)]).await.unwrap();
    let q = [123.4f32, 0.0, 0.0, 0.0];
    for (name, params) in [
        ("flat_idx", VectorIndexParams::flat(DistanceMetric::L2)),
        (
            "ivf_idx",
            VectorIndexParams::new(VectorIndexKind::IvfFlat, DistanceMetric::L2).partitions(2),
        ),
    ] {
        b.create_vector_index("v", "v", name, params).await.unwrap();
        let idx = b.list_indexes("v").await.unwrap();
        let info = idx.iter().find(|i| i.name == name).expect("index listed");
        assert_eq!(info.kind, IndexKind::Vector);
        assert_eq!(info.columns, vec!["v".to_string()]);
        let got = b
            .vector_search(
                "v",
                "v",
                &q,
                2,
                DistanceMetric::L2,
                FilterExpr::All,
                VectorQueryOpts {
                    nprobes: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids_in_order(&got), vec![123, 124], "{name}");
        b.drop_index("v", name).await.unwrap();
        assert!(
            b.list_indexes("v")
                .await
                .unwrap()
                .iter()
                .all(|i| i.name != name)
        );
    }
    let pq = VectorIndexParams::ivf_pq(DistanceMetric::L2)
        .partitions(2)
        .sub_vectors(2);
    b.create_vector_index("v", "v", "pq_idx", pq).await.unwrap();
    let got = b
        .vector_search(
            "v",
            "v",
            &q,
            5,
            DistanceMetric::L2,
            FilterExpr::All,
            VectorQueryOpts {
                refine_factor: Some(10),
                nprobes: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids_in_order(&got)[0],
        123,
        "refined PQ search finds the exact nearest"
    );
    // Replacing an index of the same name works.
    b.create_vector_index("v", "v", "pq_idx", pq).await.unwrap();
    assert_eq!(
        b.list_indexes("v")
            .await
            .unwrap()
            .iter()
            .filter(|i| i.name == "pq_idx")
            .count(),
        1
    );
    // Bad input.
    let e = b
        .create_vector_index("v", "text", "t_idx", pq)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let e = b
        .create_vector_index("v", "v", "bad name", pq)
        .await
        .unwrap_err();
    assert!(
        matches!(typed(&e), Error::InvalidName { kind: "index", .. }),
        "{e:#}"
    );
    let e = b.drop_index("v", "no_such_index").await.unwrap_err();
    assert!(matches!(typed(&e), Error::IndexNotFound { .. }), "{e:#}");
    assert_eq!(b.count_rows("v", None).await.unwrap(), 300);
}

/// Multi-vector search ranks by MaxSim.
pub async fn multivector_maxsim(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    let data = multivectors(&[
        (1, vec![[1.0, 0.0], [0.0, 1.0]]),
        (2, vec![[1.0, 0.0], [1.0, 0.1]]),
        (3, vec![[-1.0, 0.0], [0.0, -1.0]]),
        (4, vec![[0.7, 0.7]]),
    ]);
    b.create_table("mv", vec![data]).await.unwrap();
    // Query tokens point along x and y: row 1 matches both exactly.
    let query = vec![vec![1.0f32, 0.0], vec![0.0, 1.0]];
    let got = b
        .multivector_search(
            "mv",
            "mv",
            &query,
            4,
            DistanceMetric::Cosine,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap();
    let order = ids_in_order(&got);
    assert_eq!(
        order[0], 1,
        "MaxSim ranks the row matching every token first: {order:?}"
    );
    assert_eq!(
        *order.last().unwrap(),
        3,
        "the opposite row ranks last: {order:?}"
    );
    let filtered = b
        .multivector_search(
            "mv",
            "mv",
            &query,
            4,
            DistanceMetric::Cosine,
            FilterExpr::ne("id", 1_i64),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(!ids_in_order(&filtered).contains(&1));
    let e = b
        .multivector_search(
            "mv",
            "mv",
            &[vec![1.0, 0.0, 0.0]],
            1,
            DistanceMetric::Cosine,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(typed(&e), Error::DimensionMismatch { .. }),
        "{e:#}"
    );
    let e = b
        .multivector_search(
            "mv",
            "mv",
            &[],
            1,
            DistanceMetric::Cosine,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let e = b
        .multivector_search(
            "mv",
            "id",
            &query,
            1,
            DistanceMetric::Cosine,
            FilterExpr::All,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
}

/// Full-text search with and without a full-text index.
pub async fn full_text_search_with_index(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("v", vec![vectors(0..40)]).await.unwrap();
    b.create_fts_index("v", &["text"], Some("text_fts"), true)
        .await
        .unwrap();
    let idx = b.list_indexes("v").await.unwrap();
    let info = idx
        .iter()
        .find(|i| i.name == "text_fts")
        .expect("fts index listed");
    assert_eq!(info.kind, IndexKind::FullText);
    let got = b
        .full_text_search("v", "text", "even", 100, FilterExpr::All)
        .await
        .unwrap();
    let mut ids = ids_in_order(&got);
    ids.sort_unstable();
    assert_eq!(ids, (0..40).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    assert!(got[0].column_by_name("_score").is_some());
    let k3 = b
        .full_text_search("v", "text", "odd", 3, FilterExpr::All)
        .await
        .unwrap();
    assert_eq!(rows(&k3), 3);
    let filtered = b
        .full_text_search("v", "text", "even", 100, FilterExpr::lt("id", 10_i64))
        .await
        .unwrap();
    let mut ids = ids_in_order(&filtered);
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 2, 4, 6, 8]);
    // New rows are searchable (the index covers old rows, new ones are scanned).
    b.write("v", vec![vectors(41..42)], crate::WriteMode::Append)
        .await
        .unwrap();
    let odd = b
        .full_text_search("v", "text", "odd", 100, FilterExpr::All)
        .await
        .unwrap();
    assert!(ids_in_order(&odd).contains(&41));

    let e = b
        .full_text_search("v", "text", "  ", 3, FilterExpr::All)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let e = b
        .full_text_search("v", "id", "x", 3, FilterExpr::All)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let e = b
        .create_fts_index("v", &["id"], None, false)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    b.drop_index("v", "text_fts").await.unwrap();
    assert!(b.list_indexes("v").await.unwrap().is_empty());
}

/// Scalar indexes: create, list and filter through them.
pub async fn scalar_indexes(f: &dyn Factory) {
    let s = f.make().await;
    let b = &s.backend;
    b.create_table("v", vec![vectors(0..60)]).await.unwrap();
    b.create_scalar_index("v", &["id"], ScalarIndexType::BTree, Some("id_btree"))
        .await
        .unwrap();
    b.create_scalar_index("v", &["text"], ScalarIndexType::Bitmap, None)
        .await
        .unwrap();
    b.create_scalar_index("v", &["tags"], ScalarIndexType::LabelList, Some("tags_ll"))
        .await
        .unwrap();
    let idx = b.list_indexes("v").await.unwrap();
    assert_eq!(idx.len(), 3, "{idx:?}");
    assert!(idx.iter().all(|i| i.kind == IndexKind::Scalar), "{idx:?}");
    let btree = idx.iter().find(|i| i.name == "id_btree").unwrap();
    assert_eq!(btree.columns, vec!["id".to_string()]);

    // Filters give the same answers with the indexes.
    assert_eq!(
        b.count_rows("v", Some("id >= 10 AND id < 20"))
            .await
            .unwrap(),
        10
    );
    let tagged = b
        .scan(ScanRequest::table("v").filter("array_has_any(tags, ['t0'])"))
        .await
        .unwrap();
    assert_eq!(rows(&tagged), 20);

    let e = b
        .create_scalar_index("v", &["id"], ScalarIndexType::LabelList, None)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    let e = b
        .create_scalar_index("v", &[], ScalarIndexType::BTree, None)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidArgument(_)), "{e:#}");
    let e = b
        .create_scalar_index("v", &["nope"], ScalarIndexType::BTree, None)
        .await
        .unwrap_err();
    assert!(matches!(typed(&e), Error::InvalidColumn { .. }), "{e:#}");
    b.drop_index("v", "id_btree").await.unwrap();
    assert_eq!(b.list_indexes("v").await.unwrap().len(), 2);
    let e = b.list_indexes("none").await.unwrap_err();
    assert!(matches!(typed(&e), Error::TableNotFound(_)), "{e:#}");
}
