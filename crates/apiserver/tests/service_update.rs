//! A Service's ClusterIP and NodePorts across updates, as Kubernetes'
//! service REST does them: a type change to NodePort allocates node ports
//! and a change back releases them; values left out of a replace are
//! carried over; the ClusterIP is immutable; ExternalName gives it up.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_testsupport::TestServer;

fn node_ports(svc: &Service) -> Vec<i32> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.node_port)
        .collect()
}

fn cluster_ip(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_default()
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn merge(
    api: &Api<Service>,
    name: &str,
    patch: serde_json::Value,
) -> Result<Service, kube::Error> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

#[tokio::test]
async fn type_changes_allocate_and_release_node_ports() {
    let s = TestServer::start().await;
    let api: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let spec = json!({"ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]});
    let created = api
        .create(&PostParams::default(), &service("web", spec))
        .await
        .unwrap();
    let ip = cluster_ip(&created);
    assert!(!ip.is_empty());
    assert!(node_ports(&created).is_empty());

    // ClusterIP → NodePort: every port gets a node port; the ClusterIP stays.
    let np = merge(&api, "web", json!({"spec": {"type": "NodePort"}}))
        .await
        .unwrap();
    let ports = node_ports(&np);
    assert_eq!(ports.len(), 2, "{np:?}");
    assert_ne!(ports[0], ports[1]);
    assert_eq!(cluster_ip(&np), ip);

    // Another service asking for one of them is refused: it is claimed.
    let taken = json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": ports[0]}]});
    let err = api
        .create(&PostParams::default(), &service("other", taken.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 422),
        "{err:?}"
    );

    // A replace that leaves out the ClusterIP and node ports keeps them.
    let mut replaced = np.clone();
    let spec = replaced.spec.as_mut().unwrap();
    spec.cluster_ip = None;
    spec.cluster_ips = None;
    for p in spec.ports.as_mut().unwrap() {
        p.node_port = None;
    }
    let kept = api
        .replace("web", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(cluster_ip(&kept), ip);
    assert_eq!(node_ports(&kept), ports);

    // The ClusterIP cannot change once set.
    let err = merge(
        &api,
        "web",
        json!({"spec": {"clusterIP": "10.43.200.200", "clusterIPs": ["10.43.200.200"]}}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 422),
        "{err:?}"
    );

    // NodePort → ClusterIP: the node ports are dropped and free again.
    let back = merge(&api, "web", json!({"spec": {"type": "ClusterIP"}}))
        .await
        .unwrap();
    assert!(node_ports(&back).is_empty(), "{back:?}");
    assert_eq!(cluster_ip(&back), ip);
    let other = api
        .create(&PostParams::default(), &service("other", taken))
        .await
        .unwrap();
    assert_eq!(node_ports(&other), vec![ports[0]]);

    // A node port that a ClusterIP service asks for is refused.
    let err = merge(
        &api,
        "web",
        json!({"spec": {"ports": [{"name": "http", "port": 80, "nodePort": 30999}]}}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 422),
        "{err:?}"
    );

    // ExternalName gives up the ClusterIP; it can then be claimed again.
    let ext = merge(&api, "web", json!({"spec": {"type": "ExternalName", "externalName": "example.com", "clusterIP": null, "clusterIPs": null}})).await.unwrap();
    assert_eq!(cluster_ip(&ext), "");
    let again = api
        .create(
            &PostParams::default(),
            &service("again", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    assert_eq!(cluster_ip(&again), ip);
    // And back from ExternalName: a new ClusterIP is allocated.
    let back = merge(
        &api,
        "web",
        json!({"spec": {"type": "ClusterIP", "externalName": null}}),
    )
    .await
    .unwrap();
    let new_ip = cluster_ip(&back);
    assert!(!new_ip.is_empty() && new_ip != ip, "{new_ip}");
}

#[tokio::test]
async fn a_port_added_to_a_node_port_service_gets_its_own_node_port() {
    let s = TestServer::start().await;
    let api: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let spec = json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}]});
    let created = api
        .create(&PostParams::default(), &service("svc", spec))
        .await
        .unwrap();
    let first = node_ports(&created);
    assert_eq!(first.len(), 1);
    let patched = merge(
        &api,
        "svc",
        json!({"spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
    )
    .await
    .unwrap();
    let ports = node_ports(&patched);
    assert_eq!(ports.len(), 2, "{patched:?}");
    assert_eq!(ports[0], first[0], "the existing port keeps its node port");
    // Removing the port releases its node port: another service can take it.
    merge(
        &api,
        "svc",
        json!({"spec": {"ports": [{"name": "a", "port": 80}]}}),
    )
    .await
    .unwrap();
    let take = json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": ports[1]}]});
    api.create(&PostParams::default(), &service("taker", take))
        .await
        .unwrap();
}
