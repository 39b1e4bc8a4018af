//! Hollow nodes against a real in-process API server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;
use skiff_sim::SimConfig;
use skiff_testsupport::TestServer;

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn create_and_bind(
    client: &kube::Client,
    name: &str,
    node: &str,
    spec_extra: serde_json::Value,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    });
    if let Some(m) = spec_extra.as_object() {
        for (k, val) in m {
            v["spec"][k] = val.clone();
        }
    }
    let pod: Pod = serde_json::from_value(v).unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    let _: serde_json::Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .unwrap();
    created
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_run_pods_and_delete_them() {
    let ts = TestServer::start().await;
    let c = ts.client.clone();
    let config = SimConfig {
        nodes: 3,
        labels: [("zone".to_string(), "sim-a".to_string())].into(),
        ..Default::default()
    };
    let sim = tokio::spawn(skiff_sim::run(c.clone(), config));

    // Three Ready nodes with the simulated capacity, labels and nodeInfo.
    let nodes: Api<Node> = Api::all(c.clone());
    for i in 0..3 {
        let name = format!("sim-node-{i}");
        let node = eventually(&format!("{name} to be registered"), || async {
            nodes.get(&name).await.ok()
        })
        .await;
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("kubernetes.io/hostname"), Some(&name));
        assert_eq!(labels.get("type").map(String::as_str), Some("sim"));
        assert_eq!(labels.get("zone").map(String::as_str), Some("sim-a"));
        let status = node.status.unwrap();
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert!(ready.last_heartbeat_time.is_some());
        let alloc = status.allocatable.unwrap();
        assert_eq!(alloc["cpu"].0, "8");
        assert_eq!(alloc["memory"].0, "32Gi");
        assert_eq!(alloc["pods"].0, "110");
        assert_eq!(
            status.node_info.unwrap().kubelet_version,
            "v1.33.0-skiff-sim"
        );
        assert!(
            status
                .addresses
                .unwrap()
                .iter()
                .any(|a| a.type_ == "InternalIP")
        );
    }

    // A Lease per node in kube-node-lease.
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    for i in 0..3 {
        let name = format!("sim-node-{i}");
        let lease = eventually(&format!("lease of {name}"), || async {
            leases.get(&name).await.ok()
        })
        .await;
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert!(spec.renew_time.is_some());
        let owner = &lease.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Node", name.as_str())
        );
    }

    // A pod bound to a hollow node becomes Running and Ready.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    create_and_bind(&c, "web", "sim-node-1", json!({})).await;
    let pod = eventually("web to be Running and Ready", || async {
        let p = pods.get("web").await.ok()?;
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    })
    .await;
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.pod_ip.as_deref().unwrap().starts_with("10.128.1."));
    assert_eq!(status.host_ip.as_deref(), Some("100.64.0.2"));
    assert!(status.start_time.is_some());
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&pod, kind).as_deref(), Some("True"), "{kind}");
    }
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready);
    assert_eq!(cs.restart_count, 0);
    assert_eq!(cs.image, "nginx:1.27");
    assert!(!cs.image_id.is_empty());
    assert!(cs.container_id.as_deref().unwrap().starts_with("sim://"));
    assert!(cs.state.as_ref().unwrap().running.is_some());

    // A second pod on the same node gets another IP.
    create_and_bind(&c, "web-2", "sim-node-1", json!({})).await;
    let ip2 = eventually("web-2 IP", || async {
        pods.get("web-2").await.ok()?.status?.pod_ip
    })
    .await;
    assert_ne!(Some(ip2.as_str()), status.pod_ip.as_deref());

    // A pod that does not restart runs to completion.
    create_and_bind(
        &c,
        "job-pod",
        "sim-node-0",
        json!({"restartPolicy": "Never"}),
    )
    .await;
    let done = eventually("job-pod to succeed", || async {
        let p = pods.get("job-pod").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(p)
    })
    .await;
    let term = done.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));

    // A bound pod deleted gracefully disappears (the hollow kubelet finishes the delete).
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("web to disappear", || async {
        pods.get("web").await.is_err().then_some(())
    })
    .await;

    // Pods on other nodes are not touched.
    create_and_bind(&c, "elsewhere", "real-node", json!({})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pods.get("elsewhere")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref()
            != Some("Running")
    );
    sim.abort();
}
