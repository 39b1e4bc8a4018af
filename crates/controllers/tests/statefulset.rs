//! The StatefulSet controller against a real API server, with hollow nodes
//! and the default scheduler. A pod watch records the order of events so
//! the OrderedReady guarantees are checked on what clients saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

/// What the watch saw of one pod at one point.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    uid: String,
    ready: bool,
    terminating: bool,
    gone: bool,
}

/// Record every pod event in the namespace, in watch order.
fn record_pods(client: &Client) -> (Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sink = log.clone();
    let task = tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
        while let Some(ev) = stream.next().await {
            let (pod, gone) = match ev {
                Ok(Event::Apply(p) | Event::InitApply(p)) => (p, false),
                Ok(Event::Delete(p)) => (p, true),
                _ => continue,
            };
            let ready = pod.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            sink.lock().unwrap().push(Seen {
                name: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
                ready,
                terminating: pod.metadata.deletion_timestamp.is_some(),
                gone,
            });
        }
    });
    (log, task)
}

fn statefulset(name: &str, replicas: i32, extra: serde_json::Value) -> StatefulSet {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": "nginx",
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "default"}, "spec": spec})).unwrap()
}

async fn live_pods(client: &Client, prefix: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut list: Vec<Pod> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.name_any().starts_with(&format!("{prefix}-"))
        })
        .collect();
    list.sort_by_key(|p| p.name_any());
    list
}

fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

/// What `kubectl rollout status sts/<name>` waits for (↔ StatefulSetStatusViewer).
fn rollout_complete(sts: &StatefulSet) -> bool {
    let (Some(spec), Some(s)) = (sts.spec.as_ref(), sts.status.as_ref()) else {
        return false;
    };
    let replicas = spec.replicas.unwrap_or(1);
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if s.observed_generation.unwrap_or(0) < sts.metadata.generation.unwrap_or(0)
        || s.ready_replicas.unwrap_or(0) < replicas
    {
        return false;
    }
    if partition > 0 {
        return s.updated_replicas.unwrap_or(0) >= replicas - partition;
    }
    s.update_revision == s.current_revision
}

async fn start(client: &Client) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(skiff_sim::run(
            client.clone(),
            skiff_sim::SimConfig {
                nodes: 3,
                ..Default::default()
            },
        )),
        tokio::spawn(skiff_scheduler::run(client.clone(), Default::default())),
        tokio::spawn(skiff_controllers::statefulset::run(context(client))),
    ]
}

/// In the log, the first appearance of `name` (not terminating).
fn first_seen(log: &[Seen], name: &str) -> Option<usize> {
    log.iter()
        .position(|s| s.name == name && !s.terminating && !s.gone)
}

#[tokio::test]
async fn statefulset_orders_creation_updates_and_scale_down() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let (log, recorder) = record_pods(&client);
    let mut tasks = start(&client).await;
    tasks.push(recorder);
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &statefulset("web", 3, json!({})))
        .await
        .unwrap();

    let pods = eventually("web-0..2 running and ready", || async {
        let pods = live_pods(&client, "web").await;
        (pods.len() == 3 && pods.iter().all(is_ready)).then_some(pods)
    })
    .await;
    assert_eq!(names(&pods), ["web-0", "web-1", "web-2"]);
    // OrderedReady: web-N appeared only after web-(N-1) was seen Running and Ready.
    {
        let log = log.lock().unwrap();
        for n in 1..3 {
            let created = first_seen(&log, &format!("web-{n}")).unwrap();
            let prev_ready = log
                .iter()
                .position(|s| s.name == format!("web-{}", n - 1) && s.ready)
                .unwrap();
            assert!(
                prev_ready < created,
                "web-{n} created (event {created}) before web-{} was ready (event {prev_ready})",
                n - 1
            );
        }
    }
    for (i, p) in pods.iter().enumerate() {
        let labels = p.labels();
        assert_eq!(
            labels.get("statefulset.kubernetes.io/pod-name"),
            Some(&p.name_any())
        );
        assert_eq!(
            labels.get("apps.kubernetes.io/pod-index"),
            Some(&i.to_string())
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(p.name_any().as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "www")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .unwrap();
        assert_eq!(claim.claim_name, format!("www-web-{i}"));
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller),
            ("StatefulSet", "web", Some(true))
        );
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claims: Vec<String> = pvcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(claims, ["www-web-0", "www-web-1", "www-web-2"]);
    let sts = eventually("status", || async {
        let sts = api.get("web").await.unwrap();
        let s = sts.status.as_ref()?;
        (s.replicas == 3
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.current_replicas == Some(3)
            && s.updated_replicas == Some(3)
            && rollout_complete(&sts))
        .then_some(sts)
    })
    .await;
    let first_revision = sts
        .status
        .as_ref()
        .unwrap()
        .current_revision
        .clone()
        .unwrap();
    assert!(first_revision.starts_with("web-"));
    assert!(
        pods.iter()
            .all(|p| p.labels().get("controller-revision-hash") == Some(&first_revision))
    );

    // Rolling update: replaced from the highest ordinal down, one at a time.
    let uids: Vec<String> = pods.iter().map(|p| p.uid().unwrap()).collect();
    let mark = log.lock().unwrap().len();
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})))
        .await
        .unwrap();
    let sts = eventually("the rolling update to finish", || async {
        let sts = api.get("web").await.unwrap();
        let pods = live_pods(&client, "web").await;
        let done = pods.len() == 3
            && pods.iter().all(|p| {
                is_ready(p)
                    && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2")
            });
        (done && rollout_complete(&sts) && sts.status.as_ref()?.updated_replicas == Some(3))
            .then_some(sts)
    })
    .await;
    let s = sts.status.as_ref().unwrap();
    assert_ne!(s.current_revision.as_deref(), Some(first_revision.as_str()));
    assert_eq!(s.current_revision, s.update_revision);
    {
        let log = log.lock().unwrap();
        let order = |uid: &str| {
            log[mark..]
                .iter()
                .position(|s| s.uid == uid && (s.terminating || s.gone))
                .unwrap()
        };
        assert!(
            order(&uids[2]) < order(&uids[1]) && order(&uids[1]) < order(&uids[0]),
            "updated in reverse ordinal order"
        );
        // web-1 is replaced only once the new web-2 was ready.
        let new_web2_ready = log[mark..]
            .iter()
            .position(|s| s.name == "web-2" && s.uid != uids[2] && s.ready)
            .unwrap();
        assert!(new_web2_ready < order(&uids[1]));
    }
    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(client.clone(), "default");
    assert_eq!(
        revisions
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // Scale down to 1: web-2 goes before web-1, which waits for web-2 to be gone; claims stay.
    let mark = log.lock().unwrap().len();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("one pod left", || async {
        let pods = live_pods(&client, "web").await;
        let sts = api.get("web").await.unwrap();
        (names(&pods) == ["web-0"] && sts.status.as_ref()?.replicas == 1 && rollout_complete(&sts))
            .then_some(())
    })
    .await;
    {
        let log = log.lock().unwrap();
        let web2_gone = log[mark..]
            .iter()
            .position(|s| s.name == "web-2" && s.gone)
            .unwrap();
        let web1_terminating = log[mark..]
            .iter()
            .position(|s| s.name == "web-1" && (s.terminating || s.gone))
            .unwrap();
        assert!(
            web2_gone < web1_terminating,
            "web-1 deleted only after web-2 was gone"
        );
    }
    let claims = pvcs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(claims.len(), 3, "Retain keeps claims on scale-down");
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn statefulset_parallel_and_partition() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client).await;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let extra = json!({"podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
    api.create(&PostParams::default(), &statefulset("db", 3, extra))
        .await
        .unwrap();
    eventually("3 ready pods", || async {
        let pods = live_pods(&client, "db").await;
        (pods.len() == 3 && pods.iter().all(is_ready)).then_some(())
    })
    .await;

    // With partition 2 only db-2 moves to the new template.
    api.patch("db", &PatchParams::default(), &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})))
        .await
        .unwrap();
    let sts = eventually("partitioned rollout", || async {
        let sts = api.get("db").await.unwrap();
        let pods = live_pods(&client, "db").await;
        let images: Vec<String> = pods
            .iter()
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap()
            })
            .collect();
        (images == ["nginx:1", "nginx:1", "nginx:2"]
            && pods.iter().all(is_ready)
            && rollout_complete(&sts))
        .then_some(sts)
    })
    .await;
    let s = sts.status.as_ref().unwrap();
    assert_eq!((s.updated_replicas, s.current_replicas), (Some(1), Some(2)));
    assert_ne!(s.current_revision, s.update_revision);

    // Scale up: a new ordinal below the partition? No: db-3 is above it and gets the new template.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    eventually("db-3", || async {
        let pods = live_pods(&client, "db").await;
        let p = pods.iter().find(|p| p.name_any() == "db-3")?;
        (p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2")).then_some(())
    })
    .await;
    // Partition 0 finishes the rollout.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    eventually("rollout complete", || async {
        let sts = api.get("db").await.unwrap();
        let pods = live_pods(&client, "db").await;
        let all_new = pods.len() == 4
            && pods.iter().all(|p| {
                is_ready(p)
                    && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2")
            });
        (all_new && rollout_complete(&sts) && sts.status.as_ref()?.current_replicas == Some(4))
            .then_some(())
    })
    .await;

    // Parallel scale-down removes all condemned pods at once.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    eventually("no pods", || async {
        live_pods(&client, "db").await.is_empty().then_some(())
    })
    .await;
    for t in tasks {
        t.abort();
    }
}
