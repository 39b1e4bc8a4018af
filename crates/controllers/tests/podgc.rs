//! The pod garbage collector against a real API server, with a short
//! period and quarantine.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::podgc::{self, Settings};
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

const NS: &str = "jobs";

fn context(server: &TestServer, threshold: usize) -> Context {
    Context {
        client: server.client.clone(),
        recorder: Arc::new(skiff_runtime::events::Recorder::new(
            server.client.clone(),
            "controller-manager",
            None,
        )),
        config: Arc::new(Config {
            terminated_pod_gc_threshold: threshold,
            ..Config::default()
        }),
        informers: skiff_controllers::shared::SharedInformers::new(server.client.clone()),
    }
}

fn settings() -> Settings {
    Settings {
        period: Duration::from_millis(300),
        quarantine: Duration::from_secs(1),
    }
}

async fn setup(client: &kube::Client) {
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
}

async fn create_node(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

async fn create_pod(client: &kube::Client, name: &str, node: Option<&str>, phase: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(str::to_string),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": phase}})),
    )
    .await
    .unwrap();
}

async fn pod_names(client: &kube::Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_deleted_nodes_are_force_deleted() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    setup(&client).await;
    create_node(&client, "doomed").await;
    create_node(&client, "fine").await;
    create_pod(&client, "running", Some("doomed"), "Running").await;
    create_pod(&client, "terminating", Some("doomed"), "Running").await;
    create_pod(&client, "ghost", Some("never-existed"), "Running").await;
    create_pod(&client, "healthy", Some("fine"), "Running").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // A bound pod is deleted gracefully: without a kubelet it stays terminating.
    pods.delete("terminating", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        pods.get("terminating")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    let controller = tokio::spawn(podgc::run_with(context(&server, 100), settings()));
    // The pod of a node that never existed goes after the quarantine.
    eventually("the ghost node's pod to go", || async {
        (pod_names(&client).await == ["healthy", "running", "terminating"]).then_some(())
    })
    .await;

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted node's pods to go", || async {
        (pod_names(&client).await == ["healthy"]).then_some(())
    })
    .await;
    assert!(
        pods.get("healthy")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_beyond_the_threshold_go_oldest_first() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    setup(&client).await;
    for name in ["done-0", "done-1", "done-2"] {
        create_pod(&client, name, None, "Succeeded").await;
    }
    // creationTimestamp has second precision: make the last one clearly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_pod(&client, "done-3", None, "Failed").await;
    create_pod(&client, "pending", None, "Pending").await;

    let controller = tokio::spawn(podgc::run_with(context(&server, 2), settings()));
    eventually("two terminated pods left", || async {
        (pod_names(&client).await == ["done-2", "done-3", "pending"]).then_some(())
    })
    .await;
    controller.abort();
}
