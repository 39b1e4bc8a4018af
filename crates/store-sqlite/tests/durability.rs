//! Restart: everything acknowledged is there after reopening, and revisions
//! keep increasing, also after compaction and when the last write was a delete.

#![allow(clippy::unwrap_used)]

mod common;

use futures::StreamExt;
use skiff_store::{Event, Store, StoreError};
use skiff_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_every_write_and_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    let mut expected = std::collections::BTreeMap::new();
    let last_rev;
    {
        let store = common::open(&path);
        for i in 0..50 {
            let key = format!("/registry/things/{i:02}");
            let kv = store
                .create(&key, format!("v{i}").into_bytes())
                .await
                .unwrap();
            expected.insert(key, kv);
        }
        for i in (0..50).step_by(3) {
            let key = format!("/registry/things/{i:02}");
            let kv = store
                .update(
                    &key,
                    format!("u{i}").into_bytes(),
                    expected[&key].mod_revision,
                )
                .await
                .unwrap();
            expected.insert(key, kv);
        }
        // The last write is a delete: the revision must survive it too.
        let (_, rev) = store.delete("/registry/things/49", 0).await.unwrap();
        expected.remove("/registry/things/49");
        last_rev = store.current_revision().await.unwrap();
        assert_eq!(last_rev, rev);
    }
    let store = common::open(&path);
    assert_eq!(store.current_revision().await.unwrap(), last_rev);
    let range = store.range("/registry/things/", None, 0).await.unwrap();
    assert_eq!(range.revision, last_rev);
    assert_eq!(range.kvs, expected.values().cloned().collect::<Vec<_>>());
    for (key, kv) in &expected {
        assert_eq!(store.get(key).await.unwrap().as_ref(), Some(kv));
    }
    // History is there too: the whole log replays.
    let mut watch = store.watch("/registry/", 1).await.unwrap();
    let mut seen = 0;
    while seen < last_rev {
        let batch = watch.next().await.unwrap().unwrap();
        for e in &batch.events {
            seen += 1;
            assert_eq!(e.revision(), seen);
        }
    }
    let next = store
        .create("/registry/things/new", b"n".to_vec())
        .await
        .unwrap();
    assert_eq!(next.mod_revision, last_rev + 1);
    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(batch.events[0].revision(), last_rev + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    let (a, compacted, last_rev);
    {
        let store = common::open(&path);
        let first = store.create("/k/a", b"a0".to_vec()).await.unwrap();
        let mut kv = first.clone();
        for i in 1..20 {
            kv = store
                .update("/k/a", format!("a{i}").into_bytes(), kv.mod_revision)
                .await
                .unwrap();
        }
        a = kv;
        store.create("/k/b", b"b".to_vec()).await.unwrap();
        let (_, del) = store.delete("/k/b", 0).await.unwrap();
        // Compact everything: only a's current row is left below the revision.
        store.compact(del).await.unwrap();
        compacted = del;
        last_rev = del;
    }
    let store = common::open(&path);
    assert_eq!(store.current_revision().await.unwrap(), last_rev);
    assert_eq!(store.compacted_revision().await.unwrap(), compacted);
    assert_eq!(store.get("/k/a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("/k/b").await.unwrap(), None);
    match store.watch("/k/", compacted - 1).await {
        Err(StoreError::Compacted {
            requested,
            compacted: c,
        }) => {
            assert_eq!((requested, c), (compacted - 1, compacted));
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut watch = store.watch("/k/", compacted).await.unwrap();
    let batch = watch.next().await.unwrap().unwrap();
    assert!(matches!(&batch.events[0], Event::Delete { revision, .. } if *revision == compacted));
    let next = store
        .update("/k/a", b"after".to_vec(), a.mod_revision)
        .await
        .unwrap();
    assert_eq!(next.mod_revision, last_rev + 1);
    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(
        batch.events,
        vec![Event::Put {
            kv: next,
            prev: Some(a)
        }]
    );

    // Compact to the very last revision, reopen once more.
    drop(watch);
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    drop(store);
    let store = common::open(&path);
    assert_eq!(store.current_revision().await.unwrap(), current);
    assert_eq!(store.compacted_revision().await.unwrap(), current);
    assert_eq!(
        store.create("/k/c", Vec::new()).await.unwrap().mod_revision,
        current + 1
    );
}

#[tokio::test]
async fn file_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    drop(common::open(&path));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let auto_vacuum: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "auto_vacuum must be INCREMENTAL");
}

#[tokio::test]
async fn refuses_a_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (x)").unwrap();
    drop(conn);
    assert!(SqliteStore::open(&path).is_err());
}

#[tokio::test]
async fn one_store_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    let store = common::open(&path);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(skiff_store_sqlite::SqliteError::Locked(_))
    ));
    drop(store);
    // Released with the store.
    let store = common::open(&path);
    store.create("/a", Vec::new()).await.unwrap();
}

/// The store file, its WAL, shared memory and lock files are readable by
/// their owner only, also when an older skiff left them world-readable
/// (security review S1).
#[tokio::test]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let names = ["state.db", "state.db-wal", "state.db-shm", "state.db.lock"];
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    {
        let store = common::open(&path);
        store
            .create("/registry/secrets/a", b"{}".to_vec())
            .await
            .unwrap();
        for name in names {
            assert_eq!(mode(name), 0o600, "{name}");
        }
    }
    for name in names {
        let p = dir.path().join(name);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = common::open(&path);
    store
        .create("/registry/secrets/b", b"{}".to_vec())
        .await
        .unwrap();
    for name in names {
        assert_eq!(mode(name), 0o600, "{name} after reopening");
    }
}
