//! The ReplicaSet and ReplicationController controllers against a real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ReplicationController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

/// Poll `f` until it returns Some (a generous bound keeps a broken test from hanging).

async fn pods_owned_by(client: &Client, uid: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect()
}

fn replicaset(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}
            }
        }
    }))
    .unwrap()
}

async fn set_ready(client: &Client, pod: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn replicaset_creates_replaces_and_scales_down() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(skiff_controllers::replicaset::run(context(&client)));
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = api
        .create(&PostParams::default(), &replicaset("web", 3))
        .await
        .unwrap();
    let uid = rs.uid().unwrap();

    let pods = eventually("3 pods", || async {
        Some(pods_owned_by(&client, &uid).await).filter(|p| p.len() == 3)
    })
    .await;
    for p in &pods {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let r = &p.owner_references()[0];
        assert_eq!((r.kind.as_str(), r.name.as_str()), ("ReplicaSet", "web"));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
    }
    let status = eventually("status replicas 3", || async {
        let rs = api.get("web").await.unwrap();
        rs.status.filter(|s| {
            s.replicas == 3
                && s.fully_labeled_replicas == Some(3)
                && s.observed_generation == rs.metadata.generation
        })
    })
    .await;
    assert_eq!(status.ready_replicas, Some(0));

    // A deleted pod is replaced.
    let victim = pods[0].name_any();
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let pods = eventually("a replacement", || async {
        let pods = pods_owned_by(&client, &uid).await;
        (pods.len() == 3 && pods.iter().all(|p| p.name_any() != victim)).then_some(pods)
    })
    .await;

    // Readiness shows in the status.
    for p in &pods {
        set_ready(&client, &p.name_any()).await;
    }
    eventually("3 ready and available", || async {
        let rs = api.get("web").await.unwrap();
        rs.status
            .filter(|s| s.ready_replicas == Some(3) && s.available_replicas == Some(3))
    })
    .await;

    // Scale down: the not-ready pod goes first.
    let unready = pods_owned_by(&client, &uid).await[0].name_any();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods_api
        .patch_status(&unready, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    eventually("ready count 2", || async {
        api.get("web")
            .await
            .unwrap()
            .status
            .filter(|s| s.ready_replicas == Some(2))
    })
    .await;
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let pods = eventually("2 pods", || async {
        Some(pods_owned_by(&client, &uid).await).filter(|p| p.len() == 2)
    })
    .await;
    assert!(
        pods.iter().all(|p| p.name_any() != unready),
        "the not-ready pod should be deleted first"
    );
    eventually("status replicas 2", || async {
        let rs = api.get("web").await.unwrap();
        rs.status
            .filter(|s| s.replicas == 2 && s.observed_generation == rs.metadata.generation)
    })
    .await;

    // Events were recorded.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert!(list.iter().any(|e| {
        e.reason.as_deref() == Some("SuccessfulCreate")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Created pod: web-"))
    }));
    assert!(
        list.iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
    );

    // Stable: no extra pods appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods_owned_by(&client, &uid).await.len(), 2);
    controller.abort();
}

#[tokio::test]
async fn replicaset_adopts_orphans_and_releases_pods_that_stop_matching() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let controller = tokio::spawn(skiff_controllers::replicaset::run(context(&client)));
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let uid = api
        .create(&PostParams::default(), &replicaset("api", 2))
        .await
        .unwrap()
        .uid()
        .unwrap();

    let owned = eventually("2 pods incl. the orphan", || async {
        Some(pods_owned_by(&client, &uid).await).filter(|p| p.len() == 2)
    })
    .await;
    assert!(
        owned.iter().any(|p| p.name_any() == "orphan"),
        "the orphan should be adopted"
    );

    // Relabel the orphan: it is released and replaced.
    pods.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    eventually("release and replacement", || async {
        let owned = pods_owned_by(&client, &uid).await;
        let released = pods
            .get("orphan")
            .await
            .unwrap()
            .owner_references()
            .is_empty();
        (released && owned.len() == 2 && owned.iter().all(|p| p.name_any() != "orphan"))
            .then_some(())
    })
    .await;
    controller.abort();
}

#[tokio::test]
async fn replicaset_min_ready_seconds_delays_availability() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(skiff_controllers::replicaset::run(context(&client)));
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut rs = replicaset("slow", 1);
    rs.spec.as_mut().unwrap().min_ready_seconds = Some(1);
    let uid = api
        .create(&PostParams::default(), &rs)
        .await
        .unwrap()
        .uid()
        .unwrap();
    let pods = eventually("1 pod", || async {
        Some(pods_owned_by(&client, &uid).await).filter(|p| p.len() == 1)
    })
    .await;
    set_ready(&client, &pods[0].name_any()).await;
    eventually("ready", || async {
        api.get("slow")
            .await
            .unwrap()
            .status
            .filter(|s| s.ready_replicas == Some(1))
    })
    .await;
    // Available only once ready for minReadySeconds; the controller requeues itself.
    eventually("available", || async {
        api.get("slow")
            .await
            .unwrap()
            .status
            .filter(|s| s.available_replicas == Some(1))
    })
    .await;
    controller.abort();
}

#[tokio::test]
async fn replication_controller_manages_pods() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(skiff_controllers::replicaset::run(context(&client)));
    let api: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 2,
            "selector": {"app": "legacy"},
            "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}
        }
    }))
    .unwrap();
    let uid = api
        .create(&PostParams::default(), &rc)
        .await
        .unwrap()
        .uid()
        .unwrap();
    let pods = eventually("2 pods", || async {
        Some(pods_owned_by(&client, &uid).await).filter(|p| p.len() == 2)
    })
    .await;
    assert!(
        pods.iter()
            .all(|p| p.owner_references()[0].kind == "ReplicationController")
    );
    let labels: BTreeMap<String, String> = pods[0].labels().clone();
    assert_eq!(labels.get("app").map(String::as_str), Some("legacy"));
    eventually("status", || async {
        let rc = api.get("legacy").await.unwrap();
        rc.status
            .filter(|s| s.replicas == 2 && s.observed_generation == rc.metadata.generation)
    })
    .await;
    api.patch(
        "legacy",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    eventually("0 pods", || async {
        Some(pods_owned_by(&client, &uid).await).filter(Vec::is_empty)
    })
    .await;
    controller.abort();
}
