//! The node IPAM controller against a real API server.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, Node, NodeSpec};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use skiff_controllers::{Config, Context, nodeipam};
use skiff_testsupport::{TestServer, eventually};

fn context(server: &TestServer, cidr: (Ipv4Addr, u8)) -> Context {
    Context {
        client: server.client.clone(),
        recorder: Arc::new(skiff_runtime::events::Recorder::new(
            server.client.clone(),
            "controller-manager",
            None,
        )),
        config: Arc::new(Config {
            cluster_cidr: cidr,
            node_cidr_mask: 24,
            ..Config::default()
        }),
        informers: skiff_controllers::shared::SharedInformers::new(server.client.clone()),
    }
}

async fn create_node(client: &kube::Client, name: &str, cidr: Option<&str>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: cidr.map(|c| NodeSpec {
            pod_cidr: Some(c.into()),
            pod_cidrs: Some(vec![c.into()]),
            ..Default::default()
        }),
        status: None,
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

/// The node's podCIDR once set (checking podCIDRs agrees).
async fn cidr_of(client: &kube::Client, name: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(&format!("a pod CIDR for {name}"), || async {
        let spec = nodes.get(name).await.unwrap().spec?;
        let cidr = spec.pod_cidr?;
        assert_eq!(spec.pod_cidrs.as_deref(), Some(std::slice::from_ref(&cidr)));
        Some(cidr)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_cidrs_from_the_cluster_cidr() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    create_node(&client, "early", None).await;
    let controller = tokio::spawn(nodeipam::run(context(
        &server,
        (Ipv4Addr::new(10, 42, 0, 0), 16),
    )));
    for name in ["n1", "n2", "n3"] {
        create_node(&client, name, None).await;
    }
    let mut seen = BTreeSet::new();
    for name in ["early", "n1", "n2", "n3"] {
        let cidr = cidr_of(&client, name).await;
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with(".0/24"),
            "{cidr}"
        );
        assert!(seen.insert(cidr.clone()), "{cidr} assigned twice");
    }
    let want: BTreeSet<String> = (0..4).map(|i| format!("10.42.{i}.0/24")).collect();
    assert_eq!(seen, want, "the first free blocks, in order");
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_cidr_reports_and_reuses_released_blocks() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    // 10.99.0.0/23 holds two /24s; one is already taken by an existing node.
    create_node(&client, "pre", Some("10.99.0.0/24")).await;
    let controller = tokio::spawn(nodeipam::run(context(
        &server,
        (Ipv4Addr::new(10, 99, 0, 0), 23),
    )));
    create_node(&client, "a", None).await;
    assert_eq!(cidr_of(&client, "a").await, "10.99.1.0/24");

    create_node(&client, "b", None).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("a CIDRNotAvailable event for b", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some("b")
                    && e.reason.as_deref() == Some("CIDRNotAvailable")
            })
            .then_some(())
    })
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(
        nodes
            .get("b")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.pod_cidr)
            .is_none()
    );

    // Deleting "pre" frees its block for "b".
    nodes.delete("pre", &DeleteParams::default()).await.unwrap();
    assert_eq!(cidr_of(&client, "b").await, "10.99.0.0/24");
    controller.abort();
}
