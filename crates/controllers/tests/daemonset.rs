//! The DaemonSet controller against a real API server, with hollow nodes
//! and the default scheduler binding the daemon pods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

fn daemonset(name: &str, extra_spec: serde_json::Value) -> DaemonSet {
    let mut template_spec = json!({"containers": [{"name": "c", "image": "agent:1"}]});
    if let Some(m) = extra_spec.as_object() {
        for (k, v) in m {
            template_spec[k] = v.clone();
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": template_spec}
        }
    }))
    .unwrap()
}

/// Live (not terminating) pods of a DaemonSet.
async fn pods_of(client: &Client, uid: &str) -> Vec<Pod> {
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

fn running_nodes(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect()
}

fn nodes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// What `kubectl rollout status ds/<name>` waits for (↔ DaemonSetStatusViewer).
fn rollout_complete(ds: &DaemonSet) -> bool {
    let Some(s) = ds.status.as_ref() else {
        return false;
    };
    s.observed_generation >= ds.metadata.generation
        && s.updated_number_scheduled.unwrap_or(0) >= s.desired_number_scheduled
        && s.number_available.unwrap_or(0) >= s.desired_number_scheduled
}

async fn start_cluster(nodes: usize) -> (TestServer, Vec<tokio::task::JoinHandle<()>>) {
    let server = TestServer::start().await;
    let client = server.client.clone();
    // A node tainted before the hollow node takes it over (the sim keeps the spec).
    let tainted: Node = serde_json::from_value(json!({
        "metadata": {"name": format!("sim-node-{}", nodes - 1)},
        "spec": {"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &tainted)
        .await
        .unwrap();
    let sim = skiff_sim::SimConfig {
        nodes,
        ..Default::default()
    };
    let tasks = vec![
        tokio::spawn(skiff_sim::run(client.clone(), sim)),
        tokio::spawn(skiff_scheduler::run(client.clone(), Default::default())),
        tokio::spawn(skiff_controllers::daemonset::run(context(&client))),
    ];
    let node_api: Api<Node> = Api::all(client.clone());
    eventually("nodes registered", || async {
        let list = node_api.list(&ListParams::default()).await.unwrap().items;
        (list.len() == nodes
            && list.iter().all(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .is_some()
            }))
        .then_some(())
    })
    .await;
    (server, tasks)
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_eligible_node_and_rolls_out() {
    let (server, tasks) = start_cluster(4).await;
    let client = server.client.clone();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds = api
        .create(&PostParams::default(), &daemonset("agent", json!({})))
        .await
        .unwrap();
    let uid = ds.uid().unwrap();

    // One running pod on each untainted node, none on the tainted one.
    let pods = eventually("3 running daemon pods", || async {
        let pods = pods_of(&client, &uid).await;
        (pods.len() == 3
            && running_nodes(&pods) == nodes(&["sim-node-0", "sim-node-1", "sim-node-2"]))
        .then_some(pods)
    })
    .await;
    for p in &pods {
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        let spec = p.spec.as_ref().unwrap();
        let term = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let field = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(
            (field.key.as_str(), field.operator.as_str()),
            ("metadata.name", "In")
        );
        assert_eq!(
            field.values.as_deref(),
            Some(&[spec.node_name.clone().unwrap()][..]),
            "bound where the affinity says"
        );
        let tolerations: BTreeSet<String> = spec
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.clone())
            .collect();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/disk-pressure",
        ] {
            assert!(tolerations.contains(key), "{key} in {tolerations:?}");
        }
    }
    let ds = eventually("status and rollout complete", || async {
        let ds = api.get("agent").await.unwrap();
        let s = ds.status.clone()?;
        (s.desired_number_scheduled == 3
            && s.current_number_scheduled == 3
            && s.number_ready == 3
            && s.number_misscheduled == 0
            && rollout_complete(&ds))
        .then_some(ds)
    })
    .await;
    assert_eq!(ds.status.as_ref().unwrap().number_available, Some(3));

    // The template is recorded as a ControllerRevision whose hash the pods carry.
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let list = revs.list(&ListParams::default()).await.unwrap().items;
    let owned: Vec<&ControllerRevision> = list
        .iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    assert_eq!(owned.len(), 1);
    let hash = owned[0]
        .labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap();
    assert_eq!(owned[0].name_any(), format!("agent-{hash}"));
    assert_eq!(owned[0].revision, 1);
    assert!(
        pods.iter()
            .all(|p| p.labels().get("controller-revision-hash") == Some(&hash))
    );

    // A new template rolls out node by node (maxUnavailable 1) until all pods carry the new hash.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}});
    api.patch("agent", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let new_hash = eventually("a second revision", || async {
        let list = revs.list(&ListParams::default()).await.unwrap().items;
        list.into_iter()
            .find(|r| r.revision == 2 && r.owner_references().iter().any(|o| o.uid == uid))
            .and_then(|r| r.labels().get("controller-revision-hash").cloned())
    })
    .await;
    assert_ne!(new_hash, hash);
    eventually("the rollout to finish", || async {
        let ds = api.get("agent").await.unwrap();
        let pods = pods_of(&client, &uid).await;
        let all_new = pods.len() == 3
            && pods
                .iter()
                .all(|p| p.labels().get("controller-revision-hash") == Some(&new_hash))
            && running_nodes(&pods).len() == 3;
        (all_new
            && rollout_complete(&ds)
            && ds.status.as_ref()?.updated_number_scheduled == Some(3))
        .then_some(())
    })
    .await;
    let pods = pods_of(&client, &uid).await;
    assert!(
        pods.iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:2"))
    );

    // A DaemonSet tolerating the taint also runs on the tainted node.
    let tolerant = daemonset(
        "tolerant",
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}),
    );
    let tuid = api
        .create(&PostParams::default(), &tolerant)
        .await
        .unwrap()
        .uid()
        .unwrap();
    eventually("4 running tolerant pods", || async {
        let pods = pods_of(&client, &tuid).await;
        (pods.len() == 4 && running_nodes(&pods).len() == 4).then_some(())
    })
    .await;
    eventually("tolerant status", || async {
        let ds = api.get("tolerant").await.unwrap();
        (ds.status.as_ref()?.desired_number_scheduled == 4 && rollout_complete(&ds)).then_some(())
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn daemonset_follows_node_labels() {
    let (server, tasks) = start_cluster(3).await;
    let client = server.client.clone();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds = api
        .create(
            &PostParams::default(),
            &daemonset("edge", json!({"nodeSelector": {"role": "edge"}})),
        )
        .await
        .unwrap();
    let uid = ds.uid().unwrap();
    eventually("no nodes desired", || async {
        let ds = api.get("edge").await.unwrap();
        (ds.status.as_ref()?.desired_number_scheduled == 0
            && ds.status.as_ref()?.observed_generation == ds.metadata.generation)
            .then_some(())
    })
    .await;
    assert!(pods_of(&client, &uid).await.is_empty());

    let node_api: Api<Node> = Api::all(client.clone());
    let label = |v: serde_json::Value| json!({"metadata": {"labels": {"role": v}}});
    node_api
        .patch(
            "sim-node-1",
            &PatchParams::default(),
            &Patch::Merge(&label(json!("edge"))),
        )
        .await
        .unwrap();
    eventually("a pod on the labelled node", || async {
        let pods = pods_of(&client, &uid).await;
        (running_nodes(&pods) == nodes(&["sim-node-1"]) && pods.len() == 1).then_some(())
    })
    .await;
    eventually("desired 1", || async {
        let ds = api.get("edge").await.unwrap();
        (ds.status.as_ref()?.desired_number_scheduled == 1 && rollout_complete(&ds)).then_some(())
    })
    .await;

    // The label goes: so does the pod.
    node_api
        .patch(
            "sim-node-1",
            &PatchParams::default(),
            &Patch::Merge(&label(json!(null))),
        )
        .await
        .unwrap();
    eventually("the pod removed", || async {
        pods_of(&client, &uid).await.is_empty().then_some(())
    })
    .await;

    // A deleted daemon pod is replaced; OnDelete leaves old pods alone.
    node_api
        .patch(
            "sim-node-0",
            &PatchParams::default(),
            &Patch::Merge(&label(json!("edge"))),
        )
        .await
        .unwrap();
    let first = eventually("a pod on node 0", || async {
        let pods = pods_of(&client, &uid).await;
        (pods.len() == 1 && running_nodes(&pods).len() == 1).then(|| pods[0].clone())
    })
    .await;
    let patch = json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
        "template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}});
    api.patch("edge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("observed, not updated", || async {
        let ds = api.get("edge").await.unwrap();
        let s = ds.status.as_ref()?;
        (s.observed_generation == ds.metadata.generation && s.updated_number_scheduled == Some(0))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pods_of(&client, &uid).await[0].name_any(),
        first.name_any(),
        "OnDelete does not replace pods"
    );
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete(&first.name_any(), &Default::default())
        .await
        .unwrap();
    let replacement = eventually("a replacement", || async {
        let pods = pods_of(&client, &uid).await;
        (pods.len() == 1 && pods[0].name_any() != first.name_any()).then(|| pods[0].clone())
    })
    .await;
    assert_eq!(
        replacement.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("agent:2")
    );
    for t in tasks {
        t.abort();
    }
}
