//! Backward compatibility, tested forever: stores written by earlier
//! versions of lancebranch are committed under `tests/golden/<when>/<name>/`
//! (each beside an `expected.json` of what it held when it was written),
//! and every build must open them and read the same branches, rows, tags
//! and merge bases.
//!
//! The rule: a change that breaks one of these tests breaks users' stores.
//! Keep them passing, or add an explicit, tested migration.
//!
//! The generator runs in every test run too (on a fresh store, checked
//! against what it must hold); `LANCEBRANCH_WRITE_GOLDEN=<when>` also
//! writes its stores to `tests/golden/<when>/` to be committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use lancebranch::branched::{BranchedBackend, MergeOptions};
use lancebranch::{Error, LanceDbBackend, StorageBackend, WriteMode};
use serde::{Deserialize, Serialize};

use crate::lifecycle::pairs;

/// What a store holds, as a user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Observed {
    /// Operations a crash left pending, as the offline reader lists them
    /// before the store is opened (record kinds).
    pending: Vec<String>,
    /// Branch → its parent (`None` for main).
    parents: BTreeMap<String, Option<String>>,
    /// Branch → table → sorted `(id, a)` rows.
    branches: BTreeMap<String, BTreeMap<String, Vec<(i64, i64)>>>,
    /// Tag → table → rows.
    tags: BTreeMap<String, BTreeMap<String, Vec<(i64, i64)>>>,
    /// `"a<-b"` → what `a.diff(&b)` gives (which reads their merge base):
    /// per table its change and counts, or the error.
    diffs: BTreeMap<String, String>,
}

/// The variant name of an enum value, from its `Debug` form.
fn variant(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    s.split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn kv(rows: &[(i64, i64)]) -> Vec<RecordBatch> {
    vec![crate::lifecycle::kv(rows)]
}

async fn tables_of(v: &BranchedBackend) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut out = BTreeMap::new();
    for t in v.table_names().await.unwrap() {
        out.insert(t.clone(), pairs(v, &t).await);
    }
    out
}

async fn try_open(path: &Path) -> anyhow::Result<BranchedBackend> {
    let inner = LanceDbBackend::open(path.to_str().unwrap()).await?;
    BranchedBackend::open(Arc::new(inner)).await
}

async fn open(path: &Path) -> BranchedBackend {
    try_open(path).await.unwrap()
}

/// A small store in `path`: table `people` on main and a branch `dev`;
/// checkpointed when asked.
async fn small_store(path: &Path, checkpoint: bool) {
    let main = open(path).await;
    main.create_table("people", kv(&[(1, 10)])).await.unwrap();
    main.fork("dev").await.unwrap();
    if checkpoint {
        main.checkpoint().await.unwrap();
    }
}

/// Everything a user can read from the store in `path`: pending
/// operations first (offline, before opening), then through an open.
async fn observe(path: &Path) -> Observed {
    let offline = lancebranch::branched::read_catalog_offline(path).unwrap();
    let pending = offline.pending().values().map(variant).collect();
    let main = open(path).await;
    let report = main.fsck(false).await.unwrap();
    assert!(report.is_clean(), "fsck of {}: {report:#?}", path.display());
    let mut obs = Observed {
        pending,
        parents: BTreeMap::new(),
        branches: BTreeMap::new(),
        tags: BTreeMap::new(),
        diffs: BTreeMap::new(),
    };
    let infos = main.list_branches();
    for b in &infos {
        obs.parents.insert(b.name.clone(), b.parent.clone());
        let view = main.branch(&b.name).unwrap();
        obs.branches.insert(b.name.clone(), tables_of(&view).await);
    }
    for t in main.list_tags() {
        let view = main.at_tag(&t.name).unwrap();
        obs.tags.insert(t.name.clone(), tables_of(&view).await);
    }
    for a in &infos {
        for b in infos.iter().filter(|b| b.name != a.name) {
            let (va, vb) = (main.branch(&a.name).unwrap(), main.branch(&b.name).unwrap());
            let got = match va.diff(&vb).await {
                Ok(diffs) => diffs
                    .iter()
                    .map(|d| format!("{}: {:?} {:?}", d.table, d.change, d.counts))
                    .collect::<Vec<_>>()
                    .join("; "),
                // The variant only: messages may be reworded.
                Err(e) => match Error::of(&e) {
                    Some(e) => format!("error: {}", variant(e)),
                    None => panic!("diff {}<-{}: {e:#}", a.name, b.name),
                },
            };
            obs.diffs.insert(format!("{}<-{}", a.name, b.name), got);
        }
    }
    obs
}

/// Branches, nested forks, tags, merges in both directions, a fork at a
/// tag, a table created and one dropped on branches, a checkpoint and
/// records after it.
async fn write_lifecycle(path: &Path) {
    let main = open(path).await;
    main.create_table("people", kv(&[(1, 10), (2, 20), (3, 30)]))
        .await
        .unwrap();
    main.create_table("knows", kv(&[(1, 2)])).await.unwrap();
    let dev = main.fork("dev").await.unwrap();
    dev.write("people", kv(&[(4, 40)]), WriteMode::Append)
        .await
        .unwrap();
    dev.merge_insert("people", &["id"], kv(&[(2, 21)]))
        .await
        .unwrap();
    main.tag("v1").await.unwrap();
    let feature = dev.fork("feature").await.unwrap();
    feature
        .write("people", kv(&[(5, 50)]), WriteMode::Append)
        .await
        .unwrap();
    feature.create_table("notes", kv(&[(7, 70)])).await.unwrap();
    let _merged = dev.merge(&feature, MergeOptions::default()).await.unwrap();
    main.checkpoint().await.unwrap();
    // Records after the checkpoint.
    let _merged = main.merge(&dev, MergeOptions::default()).await.unwrap();
    main.write("people", kv(&[(6, 60)]), WriteMode::Append)
        .await
        .unwrap();
    let hotfix = main.fork_at("hotfix", "v1").await.unwrap();
    hotfix.delete_rows("people", "id = 3").await.unwrap();
    dev.drop_table("knows").await.unwrap();
    feature
        .write("notes", kv(&[(8, 80)]), WriteMode::Append)
        .await
        .unwrap();
    main.tag("v2").await.unwrap();
}

/// A store whose last operation, a merge, was cut by a crash after it
/// wrote the target's tables and before it published them.
async fn write_cut_merge(path: &Path) {
    {
        let main = open(path).await;
        main.create_table("people", kv(&[(1, 10), (2, 20)]))
            .await
            .unwrap();
        let dev = main.fork("dev").await.unwrap();
        dev.write("people", kv(&[(3, 30)]), WriteMode::Append)
            .await
            .unwrap();
        dev.delete_rows("people", "id = 1").await.unwrap();
    }
    let inner = LanceDbBackend::open(path.to_str().unwrap()).await.unwrap();
    let cut = [(
        lancebranch::failpoints::FailPoint::MergeAfterApplyBeforePublish,
        0,
    )];
    let main = BranchedBackend::open_with_failpoints(Arc::new(inner), &cut)
        .await
        .unwrap();
    let dev = main.branch("dev").unwrap();
    let err = main.merge(&dev, MergeOptions::default()).await.unwrap_err();
    assert!(
        matches!(Error::of(&err), Some(Error::FailPoint(_))),
        "{err:#}"
    );
}

/// The golden stores, by name.
const STORES: [&str; 2] = ["lifecycle", "cut-merge"];

async fn write_store(name: &str, path: &Path) {
    match name {
        "lifecycle" => write_lifecycle(path).await,
        "cut-merge" => write_cut_merge(path).await,
        other => panic!("no golden store {other}"),
    }
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Where a golden store of `when` is written, and copied back to be
/// read: always the same absolute path, because Lance's branch manifests
/// record the absolute path of the dataset they branch from (a store
/// cannot be moved yet; see the README's limits).
fn fixed_path(when: &str, name: &str) -> PathBuf {
    Path::new("/tmp/lancebranch-golden").join(when).join(name)
}

/// Held while a test uses the fixed paths (test runs may overlap).
fn fixed_paths_lock() -> std::fs::File {
    std::fs::create_dir_all("/tmp/lancebranch-golden").unwrap();
    let f = std::fs::File::create("/tmp/lancebranch-golden/.lock").unwrap();
    f.lock().unwrap();
    f
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn fresh_dir(path: &Path) {
    if path.exists() {
        std::fs::remove_dir_all(path).unwrap();
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
}

/// What today's generator must produce (checked on every fresh store, so
/// a generator that stops exercising something is noticed).
fn check_fresh(name: &str, obs: &Observed) {
    let rows = |b: &str, t: &str| obs.branches[b].get(t).cloned();
    match name {
        "lifecycle" => {
            let all: Vec<(i64, i64)> = vec![(1, 10), (2, 21), (3, 30), (4, 40), (5, 50), (6, 60)];
            assert_eq!(rows("main", "people"), Some(all));
            assert_eq!(rows("main", "notes"), Some(vec![(7, 70)]));
            assert_eq!(rows("dev", "knows"), None);
            assert_eq!(rows("feature", "notes"), Some(vec![(7, 70), (8, 80)]));
            assert_eq!(rows("hotfix", "people"), Some(vec![(1, 10), (2, 20)]));
            assert_eq!(obs.parents["feature"].as_deref(), Some("dev"));
            assert_eq!(obs.tags["v1"]["people"], vec![(1, 10), (2, 20), (3, 30)]);
            assert_eq!(obs.tags.len(), 2);
            assert_eq!(obs.diffs["dev<-feature"], "notes: Modified (1, 0, 0)");
            assert!(obs.pending.is_empty());
        }
        "cut-merge" => {
            assert_eq!(obs.pending, vec!["BeginMerge".to_string()]);
            assert_eq!(rows("main", "people"), Some(vec![(1, 10), (2, 20)]));
            assert_eq!(rows("dev", "people"), Some(vec![(2, 20), (3, 30)]));
            assert_eq!(obs.diffs["main<-dev"], "people: Modified (1, 0, 1)");
        }
        other => panic!("no expectations for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_writes_what_it_promises() {
    let write_to = std::env::var("LANCEBRANCH_WRITE_GOLDEN").ok();
    let _lock = write_to.as_ref().map(|_| fixed_paths_lock());
    for name in STORES {
        let dir = tempfile::tempdir().unwrap();
        let store = match &write_to {
            Some(when) => fixed_path(when, name),
            None => dir.path().join(name),
        };
        fresh_dir(&store);
        write_store(name, &store).await;
        if let Some(when) = &write_to {
            copy_dir(&store, &golden_root().join(when).join(name));
        }
        // Observing opens the store (recovery writes): after the copy.
        let obs = observe(&store).await;
        check_fresh(name, &obs);
        if let Some(when) = &write_to {
            let json = serde_json::to_string_pretty(&obs).unwrap();
            let dest = golden_root()
                .join(when)
                .join(format!("{name}.expected.json"));
            std::fs::write(dest, json + "\n").unwrap();
            std::fs::remove_dir_all(&store).unwrap();
        }
    }
}

/// Every committed golden store opens with this build and reads exactly
/// what it held when it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_stores_open_and_read_the_same() {
    let _lock = fixed_paths_lock();
    let mut checked = 0;
    let mut whens: Vec<_> = std::fs::read_dir(golden_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    whens.sort();
    for when in whens {
        let when_name = when.file_name().unwrap().to_str().unwrap().to_string();
        for name in STORES {
            let golden = when.join(name);
            if !golden.is_dir() {
                continue;
            }
            let expected = when.join(format!("{name}.expected.json"));
            let want: Observed =
                serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap();
            let store = fixed_path(&when_name, name);
            fresh_dir(&store);
            copy_dir(&golden, &store);
            let got = observe(&store).await;
            assert_eq!(got, want, "golden store {}", golden.display());
            // And again, after this build has opened (and recovered) it.
            let again = observe(&store).await;
            assert_eq!(
                again.branches,
                want.branches,
                "reopened {}",
                golden.display()
            );
            std::fs::remove_dir_all(&store).unwrap();
            checked += 1;
        }
    }
    assert!(
        checked >= STORES.len(),
        "only {checked} golden stores found"
    );
}

fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_of(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// A store marked with a newer catalog format is refused with a typed
/// error before anything is read or repaired: no file changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), false).await;
    let marker = dir.path().join("_lancebranch/FORMAT");
    // A local store is marked format 1: its log never holds the records
    // of format 2 (writer epochs, object stores only), so older builds
    // still open it.
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "lancebranch catalog format 1\n"
    );
    assert_eq!(lancebranch::branched::CATALOG_FORMAT, 2);
    let newer = lancebranch::branched::CATALOG_FORMAT + 1;
    std::fs::write(&marker, format!("lancebranch catalog format {newer}\n")).unwrap();
    let before = files_of(dir.path());
    let err = try_open(dir.path()).await.unwrap_err();
    assert!(
        matches!(Error::of(&err), Some(Error::UnsupportedFormat { found, .. }) if *found == newer),
        "{err:#}"
    );
    let err = lancebranch::branched::read_catalog_offline(dir.path()).unwrap_err();
    assert!(matches!(
        Error::of(&err),
        Some(Error::UnsupportedFormat { .. })
    ));
    assert_eq!(files_of(dir.path()), before);
}

/// A log that does not continue the checkpoint (here: the log removed
/// after a checkpoint) is refused: replaying it would drop every record
/// written after the checkpoint at the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_does_not_continue_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), true).await;
    std::fs::remove_dir_all(dir.path().join("_lancebranch/wal")).unwrap();
    let err = try_open(dir.path()).await.unwrap_err();
    assert!(
        matches!(Error::of(&err), Some(Error::CorruptCatalog { .. })),
        "{err:#}"
    );
    assert!(!dir.path().join("_lancebranch/wal").exists());
    let err = lancebranch::branched::read_catalog_offline(dir.path()).unwrap_err();
    assert!(matches!(
        Error::of(&err),
        Some(Error::CorruptCatalog { .. })
    ));
}
