//! The conformance suite: the behaviour every [`StorageBackend`] must
//! show, exported so that other implementations run the same tests as ours
//! (like `object_store`'s `integration` module). Enabled by the
//! `conformance` feature.
//!
//! Each test is a public `async fn(&dyn Factory)` in [`lifecycle`], [`rw`]
//! or [`search`]: it makes a fresh store with the [`Factory`], drives it
//! and panics (like `assert!`) on the first behaviour that differs. A test
//! is one scenario read top to bottom, so some run past 80 lines.
//! [`conformance_suite!`](crate::conformance_suite) turns all of them into
//! `#[test]`s for one factory; call single tests from your own harness to
//! pick some.
//!
//! Our own runs: [`LanceDbBackend`](crate::LanceDbBackend) on a durable
//! local directory and on `memory://`, and
//! [`BranchedBackend`](crate::branched::BranchedBackend) views on main, on
//! a fresh branch and on a branch forked three deep — the last two are how
//! a [`BranchLines`](crate::backend::BranchLines) implementation is tested:
//! wrap it in a `BranchedBackend` and run the suite on its views.
//!
//! # Example
//! A third-party store runs the whole suite from its own tests (in
//! `Cargo.toml`: `lancebranch = { version = "…", features = ["conformance"] }`
//! under `[dev-dependencies]`):
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use lancebranch::LanceDbBackend;
//! use lancebranch::conformance::{Factory, Store};
//!
//! /// Fresh, empty stores of the implementation under test.
//! struct MyStores;
//!
//! #[lancebranch::conformance::async_trait]
//! impl Factory for MyStores {
//!     async fn make(&self) -> Store {
//!         static N: AtomicUsize = AtomicUsize::new(0);
//!         let uri = format!("memory://doc-{}", N.fetch_add(1, Ordering::Relaxed));
//!         let backend = LanceDbBackend::open(&uri).await.expect("open");
//!         Store { backend: Arc::new(backend), keep: vec![] }
//!     }
//! }
//!
//! // In a test file: one `#[test]` per conformance test, in `mod my_store`.
//! lancebranch::conformance_suite!(my_store, MyStores);
//!
//! // Or one test, from any async context:
//! # fn main() {
//! lancebranch::conformance::run(async {
//!     lancebranch::conformance::rw::append_and_overwrite(&MyStores).await;
//! });
//! # }
//! ```

pub mod data;
pub mod lifecycle;
pub mod rw;
pub mod search;

use std::sync::Arc;

use crate::{Error, StorageBackend};
/// The attribute [`Factory`] implementations use (re-exported, so a user of
/// the suite needs no `async-trait` dependency of their own).
pub use async_trait::async_trait;

/// A fresh, empty store for one test, and whatever keeps it alive.
pub struct Store {
    /// The store under test.
    pub backend: Arc<dyn StorageBackend>,
    /// Whatever must live as long as the store (a temporary directory, a
    /// server handle); dropped with it.
    pub keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Makes fresh empty stores.
#[async_trait]
pub trait Factory: Send + Sync {
    /// A fresh store with no tables. Panics if it cannot make one.
    async fn make(&self) -> Store;
}

/// The typed error inside `err`, or a panic naming what it was instead.
pub fn typed(err: &anyhow::Error) -> &Error {
    Error::of(err).unwrap_or_else(|| panic!("expected a typed crate::Error, got: {err:#}"))
}

/// Run `test` to completion on a fresh two-worker multi-thread runtime
/// (several tests start concurrent tasks), as `#[tokio::test(flavor =
/// "multi_thread")]` would.
///
/// # Panics
/// If the runtime cannot be built, or when `test` panics.
///
/// # Example
/// ```
/// lancebranch::conformance::run(async { assert_eq!(1 + 1, 2) });
/// ```
pub fn run<F: std::future::Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for a conformance test")
        .block_on(test)
}

/// Every conformance test as a `#[test]` for one [`Factory`]: in a module
/// `$name`, `$factory` an expression of a type implementing [`Factory`]
/// (resolved from the module that invokes the macro).
///
/// # Example
/// See [the module](crate::conformance).
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@tests $factory;
                lifecycle::table_lifecycle,
                lifecycle::open_or_create_and_drop,
                lifecycle::invalid_names_refused_everywhere,
                lifecycle::cache_calls_keep_answers_right,
                lifecycle::capabilities_and_base_uri,
                rw::scan_projection_filter_limit,
                rw::scan_stream_matches_scan,
                rw::scan_of_empty_table,
                rw::schema_and_count,
                rw::bad_filters_are_typed_and_change_nothing,
                rw::append_and_overwrite,
                rw::overwrite_with_new_schema,
                rw::append_schema_mismatch_changes_nothing,
                rw::merge_insert_updates_only_matches,
                rw::merge_insert_bad_input,
                rw::delete_rows_by_filter,
                rw::replace_table_atomic_cases,
                rw::replace_is_atomic_for_concurrent_readers,
                rw::lock_serializes_read_modify_write,
                rw::concurrent_appends_lose_nothing,
                rw::versions_and_rollback,
                rw::optimize_keeps_contents,
                rw::recover_staging_is_idempotent,
                search::vector_search_metric_filter_opts,
                search::vector_search_bad_input,
                search::vector_index_lifecycle,
                search::multivector_maxsim,
                search::full_text_search_with_index,
                search::scalar_indexes,
            );
        }
    };
    (@tests $factory:expr; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::conformance::run($crate::conformance::$module::$test(&$factory));
            }
        )*
    };
}
