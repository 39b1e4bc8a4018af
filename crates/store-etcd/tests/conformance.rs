//! The skiff-store conformance suite against EtcdStore on a local etcd
//! (Debian's etcd-server), started by the test and killed by PID after it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use skiff_store::conformance;
use skiff_store::{Store, StoreError};
use skiff_store_etcd::testing::{Cluster, unavailable};
use skiff_store_etcd::{EtcdConfig, EtcdStore};

async fn connect(cluster: &Cluster, prefix: &str) -> Arc<dyn Store> {
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.prefix = prefix.to_string();
    Arc::new(EtcdStore::connect(config).await.unwrap())
}

fn cluster() -> Option<Cluster> {
    if let Some(reason) = unavailable() {
        eprintln!("skipping: {reason}");
        return None;
    }
    Some(Cluster::start(1).unwrap())
}

/// One test per check, each on its own etcd.
macro_rules! checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() {
            let Some(etcd) = cluster() else { return };
            let store = connect(&etcd, "/registry/").await;
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
    let Some(etcd) = cluster() else { return };
    conformance::run_all(connect(&etcd, "/registry/").await).await;
}

/// Two stores with different prefixes on one etcd see none of each other's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_isolate_clusters() {
    let Some(etcd) = cluster() else { return };
    let a = connect(&etcd, "/a/").await;
    let b = connect(&etcd, "/b").await;
    a.create("/registry/pods/default/x", b"a".to_vec())
        .await
        .unwrap();
    b.create("/registry/pods/default/x", b"b".to_vec())
        .await
        .unwrap();
    assert_eq!(
        a.get("/registry/pods/default/x")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"a"
    );
    assert_eq!(b.range("/registry/", None, 0).await.unwrap().kvs.len(), 1);
    // Compaction is cluster-wide: both see it.
    let rev = a.current_revision().await.unwrap();
    a.compact(rev).await.unwrap();
    assert_eq!(b.compacted_revision().await.unwrap(), rev);
}

/// A consistent paged snapshot sees every key at one revision, even while
/// writes continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_pages_at_one_revision() {
    let Some(etcd) = cluster() else { return };
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.prefix = "/snap/".into();
    let store = Arc::new(EtcdStore::connect(config).await.unwrap());
    for i in 0..25 {
        store
            .create(&format!("/registry/cm/{i:02}"), vec![i])
            .await
            .unwrap();
    }
    let snap = store.snapshot("/registry/", 4).await.unwrap();
    let writer = store.clone();
    let more = tokio::spawn(async move {
        for i in 25..50 {
            writer
                .create(&format!("/registry/cm/{i:02}"), vec![i])
                .await
                .unwrap();
        }
    });
    assert_eq!(snap.kvs.len(), 25);
    assert!(snap.kvs.iter().all(|kv| kv.mod_revision <= snap.revision));
    more.await.unwrap();
    let again = store.snapshot("/registry/", 7).await.unwrap();
    assert_eq!(again.kvs.len(), 50);
    let keys: Vec<&str> = again.kvs.iter().map(|kv| kv.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

/// A dead etcd is Unavailable (retryable), not a backend failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_etcd_is_unavailable() {
    let Some(mut etcd) = cluster() else { return };
    let store = connect(&etcd, "/registry/").await;
    store.create("/registry/a", b"1".to_vec()).await.unwrap();
    etcd.members[0].kill();
    match store.get("/registry/a").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    etcd.members[0].restart().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match store.get("/registry/a").await {
            Ok(Some(kv)) => {
                assert_eq!(kv.value, b"1");
                break;
            }
            other if std::time::Instant::now() > deadline => panic!("no recovery: {other:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Two stores' compactors on one etcd compact its history, keeping at
/// least one interval of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_compaction() {
    let Some(etcd) = cluster() else { return };
    let connect_one = || async {
        Arc::new(
            EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
                .await
                .unwrap(),
        )
    };
    let (a, b) = (connect_one().await, connect_one().await);
    let interval = std::time::Duration::from_millis(300);
    let _ca = a.spawn_compactor(interval);
    let _cb = b.spawn_compactor(interval);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut i = 0;
    loop {
        i += 1;
        a.create(&format!("/registry/k/{i}"), vec![1])
            .await
            .unwrap();
        let compacted = b.compacted_revision().await.unwrap();
        if compacted > 0 {
            // Never the whole history: at least the writes of the last interval remain.
            let current = b.current_revision().await.unwrap();
            assert!(
                compacted < current,
                "compacted {compacted} up to the current revision {current}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
