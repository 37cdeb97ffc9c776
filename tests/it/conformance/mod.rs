//! The one conformance suite: behaviour tests every `StorageBackend` (and
//! every view of one) must pass.
//!
//! Each test is a generic `async fn(&dyn Factory)`; the [`conformance_suite!`]
//! macro instantiates all of them as `#[tokio::test]`s for one factory.

pub mod data;
pub mod lifecycle;
pub mod rw;
pub mod search;

use std::sync::Arc;

use async_trait::async_trait;
use lancebranch::{Error, StorageBackend};

/// A fresh, empty store for one test, and whatever keeps it alive.
pub struct Store {
    pub backend: Arc<dyn StorageBackend>,
    pub _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Makes fresh empty stores.
#[async_trait]
pub trait Factory: Send + Sync {
    async fn make(&self) -> Store;
}

/// The typed error inside `err`, or a panic naming what it was instead.
pub fn typed(err: &anyhow::Error) -> &Error {
    Error::of(err).unwrap_or_else(|| panic!("expected a typed lancebranch::Error, got: {err:#}"))
}

/// Instantiate every conformance test for `$factory` in a module `$name`.
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
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::conformance::$module::$test(&$factory).await;
            }
        )*
    };
}
