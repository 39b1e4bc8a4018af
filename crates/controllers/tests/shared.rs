//! Shared informers against a real API server: one watch per kind however
//! many controllers subscribe, every subscriber seeing every change.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use skiff_controllers::ctrlutil::informer::Change;
use skiff_controllers::shared::SharedInformers;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

/// The API server's `apiserver_registered_watchers` gauge.
async fn registered_watchers(client: &kube::Client) -> u64 {
    let req = kube::core::Request::new("/metrics")
        .list(&Default::default())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("apiserver_registered_watchers "))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn settle_watchers(client: &kube::Client, want: u64) {
    eventually(&format!("{want} registered watchers"), || async {
        (registered_watchers(client).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_per_kind_for_every_subscriber() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let before = registered_watchers(&client).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    configmaps
        .create(&PostParams::default(), &cm("first"))
        .await
        .unwrap();

    let informers = SharedInformers::new(client.clone());
    let changes = Arc::new(Mutex::new(Vec::<String>::new()));
    let c = changes.clone();
    let change_sub = informers.get::<ConfigMap>().run(move |ch| {
        if let Change::Apply { new, .. } = ch {
            c.lock()
                .unwrap()
                .push(new.metadata.name.clone().unwrap_or_default());
        }
    });
    let raw = Arc::new(Mutex::new(Vec::<String>::new()));
    let r = raw.clone();
    let (store, raw_sub) = informers.get::<ConfigMap>().informer(move |ev, _| {
        if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = ev {
            r.lock()
                .unwrap()
                .push(o.metadata.name.clone().unwrap_or_default());
        }
    });
    let subs = tokio::spawn(async move { tokio::join!(change_sub, raw_sub) });

    store.wait_synced().await;
    configmaps
        .create(&PostParams::default(), &cm("second"))
        .await
        .unwrap();
    for log in [&changes, &raw] {
        eventually("both subscribers to see both objects", || async {
            let mut seen = log.lock().unwrap().clone();
            seen.sort();
            seen.dedup();
            (seen.iter().any(|n| n == "first") && seen.iter().any(|n| n == "second")).then_some(())
        })
        .await;
    }
    assert_eq!(informers.watches(), 1);
    settle_watchers(&client, before + 1).await;

    // A subscriber joining late is replayed the objects listed before it came.
    let late = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = late.clone();
    let late_sub = informers.get::<ConfigMap>().run(move |ch| {
        if let Change::Apply { new, .. } = ch {
            l.lock()
                .unwrap()
                .push(new.metadata.name.clone().unwrap_or_default());
        }
    });
    let mut seen = late.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["first", "second"]);
    // Still one object per name for everyone: the caches are one.
    let a = informers
        .get::<ConfigMap>()
        .cache()
        .get(&skiff_controllers::ctrlutil::ObjKey::new(
            "default", "first",
        ))
        .unwrap();
    let b = store
        .get(&skiff_controllers::ctrlutil::ObjKey::new(
            "default", "first",
        ))
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));

    // A second kind is a second watch; dropping the informers stops both.
    let namespaces = informers.get::<Namespace>().cache();
    namespaces.wait_synced().await;
    assert_eq!(informers.watches(), 2);
    settle_watchers(&client, before + 2).await;
    subs.abort();
    drop(late_sub);
    drop(informers);
    settle_watchers(&client, before).await;
}

/// Every controller at once (`run_all`) opens each shared kind's watch once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_watch_count() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let before = registered_watchers(&client).await;
    let ctx = Context::new(client.clone(), Config::default());
    let manager = tokio::spawn(skiff_controllers::run_all(ctx));
    // Wait for the count to stop growing.
    let mut last = 0;
    let mut stable = 0;
    while stable < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = registered_watchers(&client).await - before;
        if now == last {
            stable += 1
        } else {
            stable = 0;
            last = now
        }
    }
    println!("controller-manager watches: {last}");
    manager.abort();
    let _ = manager.await;
    settle_watchers(&client, before).await;
}
