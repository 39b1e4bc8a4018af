//! Watch behaviour specific to this backend.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use skiff_store::{Store, StoreError};
use skiff_store_sqlite::SqliteOptions;

/// An idle watch sends progress notifications carrying the revision it has
/// seen up to. Timing logic: runs on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn progress_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        progress_interval: Some(Duration::from_secs(10)),
        ..common::quiet_options()
    };
    let store =
        skiff_store_sqlite::SqliteStore::open_with(&dir.path().join("db"), options).unwrap();
    let other = store.create("/other/x", b"x".to_vec()).await.unwrap();
    let mut watch = store.watch("/mine/", 0).await.unwrap();
    let batch = watch.next().await.unwrap().unwrap();
    assert!(batch.events.is_empty());
    assert_eq!(batch.revision, other.mod_revision);
    // A write outside the prefix moves the progress revision along.
    let other2 = store.update("/other/x", b"y".to_vec(), 0).await.unwrap();
    let mine = store.create("/mine/a", b"a".to_vec()).await.unwrap();
    // The paused clock runs ahead while the writer thread works, so
    // progress notifications may come first; they never go backwards.
    let mut progress = other.mod_revision;
    let batch = loop {
        let batch = watch.next().await.unwrap().unwrap();
        assert!(batch.revision >= progress);
        progress = batch.revision;
        if !batch.events.is_empty() {
            break batch;
        }
        assert!(batch.revision < mine.mod_revision);
    };
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.revision, mine.mod_revision);
    assert!(mine.mod_revision > other2.mod_revision);
    let batch = watch.next().await.unwrap().unwrap();
    assert!(batch.events.is_empty());
    assert_eq!(batch.revision, mine.mod_revision);
}

/// Closing the store ends its watches with Unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_store_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir.path().join("db"));
    let mut watch = store.watch("/", 0).await.unwrap();
    store.create("/a", Vec::new()).await.unwrap();
    drop(store);
    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(batch.events.len(), 1);
    assert!(matches!(
        watch.next().await,
        Some(Err(StoreError::Unavailable(_)))
    ));
    assert!(watch.next().await.is_none());
}

/// A watch that falls behind a compaction while catching up ends with
/// Compacted instead of skipping history. (If the scheduler let it keep up
/// anyway, it must have delivered everything.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_past_a_compaction_ends_with_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        watch_buffer: 1,
        max_batch: 1,
        ..common::quiet_options()
    };
    let store =
        skiff_store_sqlite::SqliteStore::open_with(&dir.path().join("db"), options).unwrap();
    let mut watch = store.watch("/k/", 0).await.unwrap();
    let mut last = 0;
    for i in 0..200 {
        last = store
            .create(&format!("/k/{i:03}"), Vec::new())
            .await
            .unwrap()
            .mod_revision;
    }
    store.compact(last).await.unwrap();
    let mut seen = Vec::new();
    let err = loop {
        if seen.len() == 200 {
            break None;
        }
        match watch.next().await {
            Some(Ok(batch)) => seen.extend(batch.events.iter().map(|e| e.revision())),
            Some(Err(e)) => break Some(e),
            None => panic!("stream ended without error after {} events", seen.len()),
        }
    };
    // What was delivered is a gapless prefix of the history.
    for (i, rev) in seen.iter().enumerate() {
        assert_eq!(*rev, i as i64 + 1);
    }
    if let Some(err) = err {
        assert!(matches!(err, StoreError::Compacted { .. }), "got {err}");
        assert!(watch.next().await.is_none());
    }
}
