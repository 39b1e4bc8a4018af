//! The Deployment controller (with the ReplicaSet controller) against a real API server.
//! No kubelet runs: a small loop marks pods Ready through the status subresource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

/// Start the ReplicaSet and Deployment controllers.
fn start_controllers(client: &Client) -> tokio::task::JoinHandle<()> {
    let ctx = context(client);
    tokio::spawn(async move {
        tokio::join!(
            skiff_controllers::replicaset::run(ctx.clone()),
            skiff_controllers::deployment::run(ctx)
        );
    })
}

/// A stand-in kubelet: marks every pod Running and Ready.
fn start_fake_kubelet(client: &Client) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    if !ready {
                        let now = jiff::Timestamp::now()
                            .strftime("%Y-%m-%dT%H:%M:%SZ")
                            .to_string();
                        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                        let _ = pods
                            .patch_status(
                                &p.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&status),
                            )
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn deployment(name: &str, replicas: i32, image: &str, extra_spec: Value) -> Deployment {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    )
    .unwrap()
}

fn cond<'a>(d: &'a Deployment, type_: &str) -> Option<&'a DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// What `kubectl rollout status` checks before printing "successfully rolled out".
fn rolled_out(d: &Deployment) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && cond(d, "Progressing")
            .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"))
        && cond(d, "Available").is_some_and(|c| c.status == "True")
}

async fn owned_replicasets(client: &Client, d: &Deployment) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let uid = d.uid().unwrap();
    let mut list: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|r| r.uid == uid))
        .collect();
    list.sort_by_key(|rs| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    });
    list
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn revision(obj: &impl ResourceExt) -> Option<String> {
    obj.annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

async fn wait_rolled_out(api: &Api<Deployment>, name: &str) -> Deployment {
    eventually(&format!("{name} rolled out"), || async {
        Some(api.get(name).await.unwrap()).filter(rolled_out)
    })
    .await
}

#[tokio::test]
async fn deployment_rolls_out_updates_and_rolls_back() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let kubelet = start_fake_kubelet(&client);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("web", 3, "nginx:1.26", json!({})),
    )
    .await
    .unwrap();

    let d = wait_rolled_out(&api, "web").await;
    let rss = owned_replicasets(&client, &d).await;
    assert_eq!(rss.len(), 1);
    let first = &rss[0];
    let hash = first.labels().get("pod-template-hash").cloned().unwrap();
    assert_eq!(first.name_any(), format!("web-{hash}"));
    assert_eq!(
        first
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()
            .get("pod-template-hash"),
        Some(&hash)
    );
    assert_eq!(revision(first).as_deref(), Some("1"));
    assert_eq!(revision(&d).as_deref(), Some("1"));
    assert_eq!(
        first
            .annotations()
            .get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        first
            .annotations()
            .get("deployment.kubernetes.io/max-replicas")
            .map(String::as_str),
        Some("4")
    );
    let status = d.status.clone().unwrap();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(status.unavailable_replicas.unwrap_or(0), 0);
    assert_eq!(
        cond(&d, "Available").unwrap().reason.as_deref(),
        Some("MinimumReplicasAvailable")
    );

    // A template change rolls out a new ReplicaSet.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let d = eventually("second rollout", || async {
        let d = api.get("web").await.unwrap();
        (rolled_out(&d) && revision(&d).as_deref() == Some("2")).then_some(d)
    })
    .await;
    let rss = eventually("old RS scaled to 0", || async {
        let rss = owned_replicasets(&client, &d).await;
        (rss.len() == 2 && rs_replicas(&rss[0]) == 0 && rs_replicas(&rss[1]) == 3).then_some(rss)
    })
    .await;
    assert_eq!(revision(&rss[1]).as_deref(), Some("2"));
    assert_ne!(rss[1].name_any(), first.name_any());

    // Rollback (what `kubectl rollout undo` does): the old template again reuses the old RS.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.26"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let d = eventually("rollback", || async {
        let d = api.get("web").await.unwrap();
        (rolled_out(&d) && revision(&d).as_deref() == Some("3")).then_some(d)
    })
    .await;
    let rss = owned_replicasets(&client, &d).await;
    assert_eq!(rss.len(), 2, "no new ReplicaSet for a known template");
    let back = rss
        .iter()
        .find(|rs| rs.name_any() == first.name_any())
        .unwrap();
    assert_eq!(revision(back).as_deref(), Some("3"));
    assert_eq!(
        back.annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );

    // `kubectl rollout restart`: a template annotation makes a new RS.
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let d = eventually("restart", || async {
        let d = api.get("web").await.unwrap();
        (rolled_out(&d) && revision(&d).as_deref() == Some("4")).then_some(d)
    })
    .await;
    assert_eq!(owned_replicasets(&client, &d).await.len(), 3);

    // Events.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap().items;
    let msg = format!("Scaled up replica set web-{hash} from 0 to 3");
    assert!(
        list.iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet")
                && e.message.as_deref() == Some(msg.as_str())),
        "{:?}",
        list.iter()
            .filter_map(|e| e.message.clone())
            .collect::<Vec<_>>()
    );
    assert!(list.iter().any(|e| {
        e.reason.as_deref() == Some("ScalingReplicaSet")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Scaled down replica set"))
    }));
    kubelet.abort();
    controllers.abort();
}

#[tokio::test]
async fn deployment_scales_and_cleans_up_history() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let kubelet = start_fake_kubelet(&client);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("app", 2, "app:1", json!({"revisionHistoryLimit": 1})),
    )
    .await
    .unwrap();
    wait_rolled_out(&api, "app").await;

    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let d = eventually("scaled to 5", || async {
        Some(api.get("app").await.unwrap())
            .filter(|d| rolled_out(d) && d.status.as_ref().unwrap().replicas == Some(5))
    })
    .await;
    let rss = owned_replicasets(&client, &d).await;
    assert_eq!(rs_replicas(&rss[0]), 5);
    assert_eq!(
        rss[0]
            .annotations()
            .get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("5")
    );

    for image in ["app:2", "app:3"] {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        api.patch("app", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
        let gen_ = api.get("app").await.unwrap().metadata.generation;
        eventually(image, || async {
            Some(api.get("app").await.unwrap())
                .filter(|d| rolled_out(d) && d.status.as_ref().unwrap().observed_generation == gen_)
        })
        .await;
    }
    // revisionHistoryLimit 1: the new RS and one old one.
    let d = api.get("app").await.unwrap();
    let rss = eventually("history cleaned up", || async {
        Some(owned_replicasets(&client, &d).await).filter(|r| r.len() == 2)
    })
    .await;
    assert_eq!(revision(&rss[1]).as_deref(), Some("3"));
    assert_eq!(revision(&rss[0]).as_deref(), Some("2"));
    kubelet.abort();
    controllers.abort();
}

#[tokio::test]
async fn deployment_recreate_and_pause() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let kubelet = start_fake_kubelet(&client);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("db", 2, "db:1", json!({"strategy": {"type": "Recreate"}})),
    )
    .await
    .unwrap();
    wait_rolled_out(&api, "db").await;

    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2"}]}}}});
    api.patch("db", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let d = eventually("recreated", || async {
        let d = api.get("db").await.unwrap();
        (rolled_out(&d) && revision(&d).as_deref() == Some("2")).then_some(d)
    })
    .await;
    let rss = owned_replicasets(&client, &d).await;
    assert_eq!(rss.iter().map(rs_replicas).collect::<Vec<_>>(), [0, 2]);

    // Paused: a template change makes no new ReplicaSet.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    eventually("paused condition", || async {
        Some(api.get("db").await.unwrap()).filter(|d| {
            cond(d, "Progressing").is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"))
        })
    })
    .await;
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:3"}]}}}});
    api.patch("db", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let gen_ = api.get("db").await.unwrap().metadata.generation;
    eventually("observed while paused", || async {
        Some(api.get("db").await.unwrap())
            .filter(|d| d.status.as_ref().unwrap().observed_generation == gen_)
    })
    .await;
    assert_eq!(owned_replicasets(&client, &d).await.len(), 2);

    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    eventually("resumed rollout", || async {
        let d = api.get("db").await.unwrap();
        (rolled_out(&d) && revision(&d).as_deref() == Some("3")).then_some(d)
    })
    .await;
    assert_eq!(owned_replicasets(&client, &d).await.len(), 3);
    kubelet.abort();
    controllers.abort();
}

#[tokio::test]
async fn deployment_rolling_update_respects_max_unavailable() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let strategy = json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    api.create(
        &PostParams::default(),
        &deployment("strict", 2, "s:1", strategy),
    )
    .await
    .unwrap();
    let kubelet = start_fake_kubelet(&client);
    wait_rolled_out(&api, "strict").await;
    kubelet.abort();

    // Without readiness the rollout must stop at one surge pod and keep the old ones.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "s:2"}]}}}});
    api.patch("strict", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let d = eventually("surge RS", || async {
        let d = api.get("strict").await.unwrap();
        let rss = owned_replicasets(&client, &d).await;
        (rss.len() == 2 && rs_replicas(&rss[1]) == 1).then_some(d)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = owned_replicasets(&client, &d).await;
    assert_eq!(
        rss.iter().map(rs_replicas).collect::<Vec<_>>(),
        [2, 1],
        "old pods stay while the new one is unavailable"
    );
    let d = api.get("strict").await.unwrap();
    assert_eq!(
        cond(&d, "Progressing").unwrap().reason.as_deref(),
        Some("ReplicaSetUpdated")
    );

    let kubelet = start_fake_kubelet(&client);
    let d = eventually("completes", || async {
        let d = api.get("strict").await.unwrap();
        (rolled_out(&d) && revision(&d).as_deref() == Some("2")).then_some(d)
    })
    .await;
    assert_eq!(
        owned_replicasets(&client, &d)
            .await
            .iter()
            .map(rs_replicas)
            .collect::<Vec<_>>(),
        [0, 2]
    );
    kubelet.abort();
    controllers.abort();
}

#[tokio::test]
async fn deployment_reports_progress_deadline_exceeded() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controllers = start_controllers(&client);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("stuck", 1, "x:1", json!({"progressDeadlineSeconds": 1})),
    )
    .await
    .unwrap();
    let d = eventually("deadline exceeded", || async {
        Some(api.get("stuck").await.unwrap()).filter(|d| {
            cond(d, "Progressing")
                .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        })
    })
    .await;
    let c = cond(&d, "Progressing").unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .contains("has timed out progressing")
    );
    assert_eq!(cond(&d, "Available").unwrap().status, "False");
    controllers.abort();
}
