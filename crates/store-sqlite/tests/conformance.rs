//! The skiff-store conformance suite against SqliteStore.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use skiff_store::Store;
use skiff_store::conformance;
use skiff_store_sqlite::{SqliteOptions, SqliteStore};

fn store_with(options: SqliteOptions) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_with(&dir.path().join("skiff.db"), options).expect("open");
    (dir, Arc::new(store))
}

/// One test per check, each on its own fresh store.
macro_rules! checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() {
            let (_dir, store) = store_with(common::quiet_options());
            conformance::$check(store).await;
        }
    )*};
}

checks!(
    create_get,
    update_cas,
    missing_keys,
    unconditional_writes,
    revisions_increase,
    create_revision_kept,
    range_order_and_paging,
    sibling_prefix_isolation,
    watch_from_now,
    watch_replay_then_live,
    watch_prev_values,
    compaction,
    concurrent_writers,
    concurrent_cas_counter,
    slow_watcher_never_skips,
);

/// The whole suite on one store, as `run_all` is meant to be used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_store() {
    let (_dir, store) = store_with(common::quiet_options());
    conformance::run_all(store).await;
}

/// The whole suite with a watch buffer of 2 batches and 1-request
/// transactions: watchers lag constantly and must catch up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_with_lagging_watchers() {
    let (_dir, store) = store_with(SqliteOptions {
        watch_buffer: 2,
        max_batch: 1,
        ..common::quiet_options()
    });
    conformance::run_all(store).await;
}

/// The whole suite with progress notifications on (empty batches in the streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_with_progress_notifications() {
    let (_dir, store) = store_with(SqliteOptions {
        progress_interval: Some(std::time::Duration::from_millis(1)),
        ..common::quiet_options()
    });
    conformance::run_all(store).await;
}
