//! The file stays bounded under churn once history is compacted (the k3s
//! failure mode this backend must not have: unbounded database and WAL).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use skiff_store::Store;
use skiff_store_sqlite::{SqliteOptions, SqliteStore};

const KEYS: usize = 100;
const UPDATES_PER_KEY: usize = 200; // 20,000 updates in all
const VALUE: usize = 1024;
const MIB: u64 = 1024 * 1024;
/// What the history of the churn alone weighs: never compacted, the file
/// would be at least this big.
const UNBOUNDED: u64 = (KEYS * UPDATES_PER_KEY * VALUE) as u64;

/// One task per key, each updating its key `rounds` times with CAS.
async fn churn(store: &Arc<SqliteStore>, round: usize, rounds: usize) {
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/registry/churn/{k:03}");
            let mut rev = match store.get(&key).await.unwrap() {
                Some(kv) => kv.mod_revision,
                None => {
                    store
                        .create(&key, vec![0; VALUE])
                        .await
                        .unwrap()
                        .mod_revision
                }
            };
            for i in 0..rounds {
                let value = vec![((round + i) % 251) as u8; VALUE];
                rev = store.update(&key, value, rev).await.unwrap().mod_revision;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_checkpoint_bound_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    let store = Arc::new(common::open(&path));
    churn(&store, 0, UPDATES_PER_KEY).await;
    let before = common::db_size(&path);
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    store.checkpoint().await.unwrap();
    let after = common::db_size(&path);
    println!(
        "20,000 updates of 100 keys x 1 KiB: {} before compaction, {} after",
        mib(before),
        mib(after)
    );
    assert!(
        before >= UNBOUNDED,
        "history should be on disk before compaction"
    );
    assert!(
        after < 2 * MIB,
        "file is {} after compaction and checkpoint",
        mib(after)
    );
    // Everything current is still there.
    let range = store.range("/registry/churn/", None, 0).await.unwrap();
    assert_eq!(range.kvs.len(), KEYS);
    assert!(range.kvs.iter().all(|kv| kv.value.len() == VALUE));
    drop(range);
    drop(store);
    // And survives a restart.
    let store = common::open(&path);
    assert_eq!(store.current_revision().await.unwrap(), current);
    assert_eq!(
        store
            .range("/registry/churn/", None, 0)
            .await
            .unwrap()
            .kvs
            .len(),
        KEYS
    );
}

/// With automatic compaction and checkpoints on short intervals, the file
/// stays bounded while the churn goes on, without anyone calling compact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_maintenance_bounds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    let options = SqliteOptions {
        compact_interval: Some(Duration::from_millis(100)),
        compact_keep_revisions: 1_000,
        checkpoint_interval: Some(Duration::from_millis(100)),
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open_with(&path, options).unwrap());
    let mut largest = 0;
    let rounds = 40;
    for round in 0..rounds {
        // The store keeps every revision of the last compaction interval
        // (for watchers that far behind), so the file's bound depends on
        // the revisions written per interval: pace the rounds to one
        // interval each, so that the bound does not depend on how fast
        // this machine writes.
        let paced = tokio::time::sleep(Duration::from_millis(100));
        churn(&store, round, UPDATES_PER_KEY / rounds * 2).await; // 40,000 updates in all
        paced.await;
        largest = largest.max(common::db_size(&path));
    }
    let current = store.current_revision().await.unwrap();
    // Wait (bounded) for the writer's timers to compact most of the history.
    let mut compacted = 0;
    for _ in 0..600 {
        compacted = store.compacted_revision().await.unwrap();
        if compacted >= current - 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "40,000 updates with automatic maintenance: largest file seen {}, {} at the end (revision {current}, compacted {compacted})",
        mib(largest),
        mib(common::db_size(&path))
    );
    assert!(compacted > 0, "automatic compaction never ran");
    assert!(
        compacted <= current - 1_000,
        "automatic compaction must keep the last 1,000 revisions"
    );
    // 40,000 updates are 40 MiB of values (57 MiB of file uncompacted);
    // the file stays far below: the history kept plus a WAL of a few MiB.
    assert!(
        largest < 2 * UNBOUNDED / 3,
        "file reached {} under churn",
        mib(largest)
    );
    // Watching from the compacted revision still works.
    let mut watch = store.watch("/registry/churn/", compacted).await.unwrap();
    let batch = futures::StreamExt::next(&mut watch).await.unwrap().unwrap();
    assert_eq!(batch.events[0].revision(), compacted);
}
