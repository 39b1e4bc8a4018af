//! The garbage collector (with the Deployment and ReplicaSet controllers)
//! against a real API server: background, foreground and orphan deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

fn start_controllers(client: &Client) -> tokio::task::JoinHandle<()> {
    let ctx = context(client);
    tokio::spawn(async move {
        tokio::join!(
            skiff_controllers::replicaset::run(ctx.clone()),
            skiff_controllers::deployment::run(ctx.clone()),
            skiff_controllers::gc::run(ctx),
        );
    })
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}
        }
    }))
    .unwrap()
}

async fn counts(client: &Client, app: &str) -> (usize, usize) {
    let lp = ListParams::default().labels(&format!("app={app}"));
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .unwrap()
        .items
        .len();
    let pods = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .unwrap()
        .items
        .len();
    (rss, pods)
}

/// Create a deployment and wait for its ReplicaSet and pods.
async fn deploy(client: &Client, name: &str, replicas: usize) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = api
        .create(
            &PostParams::default(),
            &deployment(name, i32::try_from(replicas).unwrap()),
        )
        .await
        .unwrap();
    eventually("replica set and pods", || async {
        (counts(client, name).await == (1, replicas)).then_some(())
    })
    .await;
    d
}

#[tokio::test]
async fn gc_deletes_dependents_in_the_background() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    deploy(&client, "web", 2).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.delete("web", &DeleteParams::background())
        .await
        .unwrap();
    eventually("RS and pods gone", || async {
        (counts(&client, "web").await == (0, 0)).then_some(())
    })
    .await;
    assert!(api.get_opt("web").await.unwrap().is_none());
    controllers.abort();
}

#[tokio::test]
async fn gc_foreground_deletes_dependents_before_the_owner() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    deploy(&client, "fg", 2).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.delete("fg", &DeleteParams::foreground()).await.unwrap();
    // The owner stays (with the finalizer) while dependents exist...
    let d = api.get_opt("fg").await.unwrap();
    if let Some(d) = d {
        assert!(d.metadata.deletion_timestamp.is_some());
        assert!(d.finalizers().iter().any(|f| f == "foregroundDeletion"));
    }
    // ...and goes once they are gone.
    eventually("everything gone", || async {
        let gone = api.get_opt("fg").await.unwrap().is_none();
        (gone && counts(&client, "fg").await == (0, 0)).then_some(())
    })
    .await;
    controllers.abort();
}

#[tokio::test]
async fn gc_orphan_keeps_dependents_and_removes_owner_references() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let d = deploy(&client, "keep", 2).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.delete("keep", &DeleteParams::orphan()).await.unwrap();
    eventually("deployment gone", || async {
        api.get_opt("keep").await.unwrap().is_none().then_some(())
    })
    .await;
    let uid = d.uid().unwrap();
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = eventually("RS orphaned", || async {
        let list = rss
            .list(&ListParams::default().labels("app=keep"))
            .await
            .unwrap()
            .items;
        (list.len() == 1 && list[0].owner_references().iter().all(|r| r.uid != uid))
            .then(|| list[0].clone())
    })
    .await;
    // The ReplicaSet keeps its pods.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts(&client, "keep").await, (1, 2));
    let rs_uid = rs.uid().unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("app=keep"))
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter()
            .all(|p| p.owner_references().iter().any(|r| r.uid == rs_uid))
    );
    controllers.abort();
}

fn configmap(name: &str, owners: Vec<OwnerReference>) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(owners),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn owner_ref(cm: &ConfigMap, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: cm.name_any(),
        uid: cm.uid().unwrap(),
        controller: None,
        block_owner_deletion: Some(block),
    }
}

#[tokio::test]
async fn gc_handles_any_kind_dangling_owners_and_multiple_owners() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // A dependent whose owner never existed (present before the collector starts).
    let ghost = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "ghost".into(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &configmap("dangling", vec![ghost]))
        .await
        .unwrap();
    let controllers = start_controllers(&client);

    let a = cms
        .create(&PostParams::default(), &configmap("owner-a", vec![]))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &configmap("owner-b", vec![]))
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &configmap("child", vec![owner_ref(&a, false)]),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &configmap("shared", vec![owner_ref(&a, false), owner_ref(&b, false)]),
    )
    .await
    .unwrap();

    eventually("dangling dependent deleted", || async {
        cms.get_opt("dangling")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    cms.delete("owner-a", &DeleteParams::default())
        .await
        .unwrap();
    eventually("child deleted", || async {
        cms.get_opt("child").await.unwrap().is_none().then_some(())
    })
    .await;
    let shared = eventually("shared keeps its other owner", || async {
        let s = cms.get("shared").await.unwrap();
        (s.owner_references().len() == 1).then_some(s)
    })
    .await;
    assert_eq!(shared.owner_references()[0].uid, b.uid().unwrap());

    // Foreground on an owner without dependents just drops the finalizer.
    cms.delete("owner-b", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("owner-b gone", || async {
        cms.get_opt("owner-b")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually("shared gone with its last owner", || async {
        cms.get_opt("shared").await.unwrap().is_none().then_some(())
    })
    .await;
    controllers.abort();
}

#[tokio::test]
async fn gc_foreground_waits_for_blocking_dependents() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &configmap("parent", vec![]))
        .await
        .unwrap();
    // The dependent holds a finalizer, so it stays (being deleted) until released.
    let mut dep = configmap("held", vec![owner_ref(&owner, true)]);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("parent", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("dependent being deleted", || async {
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let parent = cms
        .get_opt("parent")
        .await
        .unwrap()
        .expect("the owner waits for its blocking dependent");
    assert!(
        parent
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    // Release the dependent: then the owner goes.
    let patch = json!({"metadata": {"finalizers": null}});
    cms.patch(
        "held",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually("owner gone", || async {
        cms.get_opt("parent").await.unwrap().is_none().then_some(())
    })
    .await;
    controllers.abort();
}
