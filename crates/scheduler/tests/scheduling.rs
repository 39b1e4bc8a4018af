//! The scheduler against a real in-process API server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_scheduler::Config;
use skiff_testsupport::TestServer;

const CP_TAINT_MSG: &str =
    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }";

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn create_node(client: &kube::Client, name: &str, cpu: &str, extra: serde_json::Value) {
    let mut node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
        }
    });
    if let Some(spec) = extra.get("spec") {
        node["spec"] = spec.clone();
    }
    if let Some(labels) = extra
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
    {
        for (k, v) in labels {
            node["metadata"]["labels"][k] = v.clone();
        }
    }
    let node: Node = serde_json::from_value(node).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

fn control_plane_taint() -> serde_json::Value {
    json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}, "metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}})
}

async fn create_pod(
    client: &kube::Client,
    name: &str,
    cpu: &str,
    spec_extra: serde_json::Value,
) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    });
    if let Some(m) = spec_extra.as_object() {
        for (k, v) in m {
            pod["spec"][k] = v.clone();
        }
    }
    let pod: Pod = serde_json::from_value(pod).unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

async fn node_of(client: &kube::Client, name: &str) -> Option<String> {
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .ok()?;
    pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty())
}

async fn wait_bound(client: &kube::Client, name: &str) -> String {
    eventually(&format!("{name} to be bound"), || node_of(client, name)).await
}

async fn events_for(client: &kube::Client, pod: &str, reason: &str) -> Vec<Event> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod},reason={reason}"));
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn start(client: &kube::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(skiff_scheduler::run(client.clone(), Config::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_on_fitting_nodes_and_taints_are_respected() {
    let ts = TestServer::start().await;
    let c = &ts.client;
    create_node(c, "small", "1", json!({})).await;
    create_node(c, "big", "8", json!({})).await;
    create_node(c, "cp", "16", control_plane_taint()).await;
    let sched = start(c);

    create_pod(c, "needs-2", "2", json!({})).await;
    assert_eq!(
        wait_bound(c, "needs-2").await,
        "big",
        "only big fits 2 cpu without tolerating the taint"
    );

    // Tolerating the taint and selecting the control plane lands there.
    create_pod(
        c,
        "on-cp",
        "1",
        json!({
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}
        }),
    )
    .await;
    assert_eq!(wait_bound(c, "on-cp").await, "cp");

    // Many small pods never go to the tainted node.
    for i in 0..6 {
        create_pod(c, &format!("small-{i}"), "100m", json!({})).await;
    }
    for i in 0..6 {
        let node = wait_bound(c, &format!("small-{i}")).await;
        assert_ne!(node, "cp");
    }

    // Scheduled event and PodScheduled condition.
    let ev = eventually("Scheduled event", || async {
        events_for(c, "needs-2", "Scheduled")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Successfully assigned default/needs-2 to big")
    );
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    let pod = Api::<Pod>::namespaced(c.clone(), "default")
        .get("needs-2")
        .await
        .unwrap();
    let cond = pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(cond.status, "True");

    // Another scheduler's pods are left alone.
    create_pod(
        c,
        "other-sched",
        "100m",
        json!({"schedulerName": "my-scheduler"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node_of(c, "other-sched").await, None);
    assert!(
        events_for(c, "other-sched", "FailedScheduling")
            .await
            .is_empty()
    );
    sched.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_gets_the_event_and_is_scheduled_once_a_node_appears() {
    let ts = TestServer::start().await;
    let c = &ts.client;
    create_node(c, "node-1", "1", json!({})).await;
    create_node(c, "cp-1", "16", control_plane_taint()).await;
    create_node(c, "cp-2", "16", control_plane_taint()).await;
    let sched = start(c);

    create_pod(c, "web-1", "2", json!({})).await;
    let ev = eventually("FailedScheduling event", || async {
        events_for(c, "web-1", "FailedScheduling")
            .await
            .into_iter()
            .next()
    })
    .await;
    let msg = ev.message.unwrap();
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(
        msg.starts_with(&format!("0/3 nodes are available: 1 Insufficient cpu, 2 {CP_TAINT_MSG}. preemption: 0/3 nodes are available: ")),
        "{msg}"
    );
    // 2 cpu exceed node-1's whole allocatable: preemption cannot help anywhere.
    assert_eq!(
        msg,
        format!(
            "0/3 nodes are available: 1 Insufficient cpu, 2 {CP_TAINT_MSG}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        )
    );
    let cond = eventually("PodScheduled=False", || async {
        let pod = Api::<Pod>::namespaced(c.clone(), "default")
            .get("web-1")
            .await
            .ok()?;
        pod.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message.as_deref(), Some(msg.as_str()));

    // A node with room appears: the pod is scheduled there.
    create_node(c, "node-2", "4", json!({})).await;
    assert_eq!(wait_bound(c, "web-1").await, "node-2");
    let ev = eventually("Scheduled event", || async {
        events_for(c, "web-1", "Scheduled").await.into_iter().next()
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Successfully assigned default/web-1 to node-2")
    );
    sched.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_frees_room_for_a_pending_one() {
    let ts = TestServer::start().await;
    let c = &ts.client;
    create_node(c, "n1", "2", json!({})).await;
    let sched = start(c);
    create_pod(c, "first", "1500m", json!({})).await;
    assert_eq!(wait_bound(c, "first").await, "n1");
    create_pod(c, "second", "1500m", json!({})).await;
    eventually("FailedScheduling for second", || async {
        events_for(c, "second", "FailedScheduling")
            .await
            .into_iter()
            .next()
    })
    .await;
    Api::<Pod>::namespaced(c.clone(), "default")
        .delete(
            "first",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(wait_bound(c, "second").await, "n1");
    sched.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pod_preempts_a_lower_one() {
    let ts = TestServer::start().await;
    let c = &ts.client;
    let pc: PriorityClass = serde_json::from_value(json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000})).unwrap();
    Api::<PriorityClass>::all(c.clone())
        .create(&PostParams::default(), &pc)
        .await
        .unwrap();
    create_node(c, "n1", "2", json!({})).await;
    let sched = start(c);
    create_pod(c, "low", "1500m", json!({})).await;
    assert_eq!(wait_bound(c, "low").await, "n1");
    let high = create_pod(c, "high", "1500m", json!({"priorityClassName": "high"})).await;
    assert_eq!(high.spec.unwrap().priority, Some(1000));

    // The victim is deleted gracefully and the preemptor nominated to its node.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    eventually("low to be terminating", || async {
        pods.get("low").await.ok()?.metadata.deletion_timestamp
    })
    .await;
    let nominated = eventually("nominatedNodeName", || async {
        pods.get("high").await.ok()?.status?.nominated_node_name
    })
    .await;
    assert_eq!(nominated, "n1");
    let preempted = eventually("Preempted event", || async {
        events_for(c, "low", "Preempted").await.into_iter().next()
    })
    .await;
    assert!(preempted.message.unwrap().starts_with("Preempted by pod "));
    let low = pods.get("low").await.unwrap();
    assert!(
        low.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "DisruptionTarget"
                && c.reason.as_deref() == Some("PreemptionByScheduler"))
    );

    // What a kubelet does once the containers stopped: the pod goes; the preemptor lands.
    pods.delete(
        "low",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(wait_bound(c, "high").await, "n1");
    sched.abort();
}
