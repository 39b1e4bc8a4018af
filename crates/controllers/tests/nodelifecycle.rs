//! The node lifecycle controller and taint manager against a real API
//! server, with a 2 s grace period. No kubelet runs: the test creates the
//! Nodes and Leases and renews (or does not renew) them itself.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, Event, Namespace, Node, NodeCondition, NodeStatus, Pod, PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::nodelifecycle::{self, TAINT_UNREACHABLE};
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

const NS: &str = "apps";

fn context(server: &TestServer) -> Context {
    let config = Config {
        node_monitor_grace_period: Duration::from_secs(2),
        ..Config::default()
    };
    Context {
        client: server.client.clone(),
        recorder: Arc::new(skiff_runtime::events::Recorder::new(
            server.client.clone(),
            "controller-manager",
            None,
        )),
        config: Arc::new(config),
        informers: skiff_controllers::shared::SharedInformers::new(server.client.clone()),
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

async fn create_node(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                last_heartbeat_time: Some(now()),
                last_transition_time: Some(now()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // Status may not be taken on create: post it as a kubelet would.
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.unwrap();
}

async fn renew(client: &kube::Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let patch = json!({"spec": {"renewTime": MicroTime(jiff::Timestamp::now())}});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn create_pod(client: &kube::Client, name: &str, node: &str, tolerations: Vec<Toleration>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            ..Default::default()
        }),
        status: None,
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": "10.42.0.5", "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn ready(node: &Node) -> Option<NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

fn taint_keys(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    v.sort();
    v
}

fn pod_ready(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

async fn has_event(client: &kube::Client, namespace: &str, object: &str, reason: &str) -> bool {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| {
            e.involved_object.name.as_deref() == Some(object) && e.reason.as_deref() == Some(reason)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_lease_makes_node_unknown_tainted_and_evicts_its_pods() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NS.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();

    create_node(&client, "dead").await;
    create_node(&client, "alive").await;
    // "alive"'s kubelet keeps renewing its lease.
    let renewer = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                renew(&client, "alive").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let short = Toleration {
        key: Some(TAINT_UNREACHABLE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(2),
        ..Default::default()
    };
    create_pod(&client, "short", "dead", vec![short]).await;
    // Gets the API server's default 300 s tolerations.
    create_pod(&client, "patient", "dead", vec![]).await;
    create_pod(&client, "bystander", "alive", vec![]).await;

    let controller = tokio::spawn(nodelifecycle::run(context(&server)));
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // The silent node goes Unknown and gets the unreachable taints.
    let dead = eventually("the dead node to become Unknown and tainted", || async {
        let n = nodes.get("dead").await.unwrap();
        let tainted = taint_keys(&n)
            == [
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
            ];
        (ready(&n).is_some_and(|c| c.status == "Unknown") && tainted).then_some(n)
    })
    .await;
    let cond = ready(&dead).unwrap();
    assert_eq!(cond.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        cond.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let no_execute: Vec<&Taint> = dead
        .spec
        .as_ref()
        .unwrap()
        .taints
        .as_ref()
        .unwrap()
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    assert!(
        no_execute[0].time_added.is_some(),
        "NoExecute taints carry timeAdded"
    );

    // Its pods stop being ready; the one tolerating 2 s is evicted (gracefully).
    eventually("the patient pod marked not ready", || async {
        (pod_ready(&pods.get("patient").await.unwrap()).as_deref() == Some("False")).then_some(())
    })
    .await;
    let evicted = eventually("the short-toleration pod evicted", || async {
        pods.get_opt("short")
            .await
            .unwrap()
            .map_or(Some(None), |p| {
                p.metadata.deletion_timestamp.is_some().then_some(Some(p))
            })
    })
    .await;
    if let Some(p) = evicted {
        assert_eq!(
            p.metadata.deletion_grace_period_seconds,
            Some(30),
            "a graceful delete"
        );
    }
    let patient = pods.get("patient").await.unwrap();
    assert!(
        patient.metadata.deletion_timestamp.is_none(),
        "300 s tolerations have not run out"
    );
    assert!(has_event(&client, NS, "short", "TaintManagerEviction").await);
    eventually("a NodeNotReady event", || async {
        has_event(&client, "default", "dead", "NodeNotReady")
            .await
            .then_some(())
    })
    .await;

    // The node whose lease is renewed is untouched.
    let alive = nodes.get("alive").await.unwrap();
    assert_eq!(ready(&alive).map(|c| c.status).as_deref(), Some("True"));
    assert!(taint_keys(&alive).is_empty());
    assert!(
        pods.get("bystander")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // The kubelet comes back: taints go.
    renew(&client, "dead").await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status", "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
    nodes
        .patch_status("dead", &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
    eventually("the recovered node's taints to go", || async {
        let n = nodes.get("dead").await.unwrap();
        (taint_keys(&n).is_empty() && ready(&n).is_some_and(|c| c.status == "True")).then_some(())
    })
    .await;
    assert!(
        pods.get("patient")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // A NoExecute taint nobody tolerates evicts at once.
    let mut alive = nodes.get("alive").await.unwrap();
    alive.spec.get_or_insert_with(Default::default).taints = Some(vec![Taint {
        key: "example.com/maintenance".into(),
        effect: "NoExecute".into(),
        ..Default::default()
    }]);
    nodes
        .replace("alive", &PostParams::default(), &alive)
        .await
        .unwrap();
    eventually("the bystander evicted by an untolerated taint", || async {
        pods.get_opt("bystander")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    let alive = nodes.get("alive").await.unwrap();
    assert_eq!(
        taint_keys(&alive),
        ["example.com/maintenance:NoExecute"],
        "other taints are kept, none added"
    );

    renewer.abort();
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_node_gets_not_ready_taints() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    create_node(&client, "sick").await;
    let renewer = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                renew(&client, "sick").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let controller = tokio::spawn(nodelifecycle::run(context(&server)));
    let nodes: Api<Node> = Api::all(client.clone());
    // The kubelet reports NotReady (while renewing its lease).
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
        "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
    nodes
        .patch_status("sick", &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
    eventually("not-ready taints", || async {
        let n = nodes.get("sick").await.unwrap();
        (taint_keys(&n)
            == [
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
            ])
        .then_some(())
    })
    .await;
    // Still False, not Unknown: the lease is fresh.
    assert_eq!(
        ready(&nodes.get("sick").await.unwrap())
            .map(|c| c.status)
            .as_deref(),
        Some("False")
    );
    // Cordoned too.
    nodes
        .patch(
            "sick",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    eventually("the unschedulable taint", || async {
        taint_keys(&nodes.get("sick").await.unwrap())
            .contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string())
            .then_some(())
    })
    .await;
    renewer.abort();
    controller.abort();
}
