//! The endpoints and EndpointSlice controllers against a real API server:
//! pods' readiness (set through the status subresource, as a kubelet
//! would) drives Endpoints and EndpointSlices.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointSubset, Endpoints, Namespace, Node, Pod,
    PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::endpoints::TRIGGER_TIME_ANNOTATION;
use skiff_controllers::endpointslice::{self, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

const NS: &str = "shop";

fn context(server: &TestServer) -> Context {
    Context {
        client: server.client.clone(),
        recorder: Arc::new(skiff_runtime::events::Recorder::new(
            server.client.clone(),
            "controller-manager",
            None,
        )),
        config: Arc::new(Config::default()),
        informers: skiff_controllers::shared::SharedInformers::new(server.client.clone()),
    }
}

async fn setup(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-a".into()),
            labels: Some(BTreeMap::from([(
                "topology.kubernetes.io/zone".to_string(),
                "zone-1".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

async fn create_service(client: &kube::Client, name: &str, selector: Option<&str>) {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("team".to_string(), "shop".to_string())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: selector.map(|s| BTreeMap::from([("app".to_string(), s.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("web".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    services.create(&PostParams::default(), &svc).await.unwrap();
}

/// A pod bound to node-a, running with `ip`, ready or not.
async fn create_pod(client: &kube::Client, name: &str, app: &str, ip: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            containers: vec![Container {
                name: "web".into(),
                image: Some("nginx".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("web".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn set_ready(client: &kube::Client, name: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<String> {
    let mut v: Vec<String> = addresses.iter().flatten().map(|a| a.ip.clone()).collect();
    v.sort();
    v
}

fn ready_and_not(subsets: &[EndpointSubset]) -> (Vec<String>, Vec<String>) {
    let mut ready: Vec<String> = subsets.iter().flat_map(|s| ips(&s.addresses)).collect();
    let mut not_ready: Vec<String> = subsets
        .iter()
        .flat_map(|s| ips(&s.not_ready_addresses))
        .collect();
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// Endpoints whose (ready, not ready) IPs are as given.
async fn endpoints_become(
    client: &kube::Client,
    name: &str,
    ready: &[&str],
    not_ready: &[&str],
) -> Endpoints {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let want = (
        ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        not_ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    eventually(
        &format!("endpoints {name} with ready {ready:?}, not ready {not_ready:?}"),
        || async {
            api.get_opt(name)
                .await
                .unwrap()
                .filter(|e| ready_and_not(e.subsets.as_deref().unwrap_or_default()) == want)
        },
    )
    .await
}

/// (ip, ready, serving, terminating) of every endpoint in the service's slices, sorted.
fn slice_state(slices: &[EndpointSlice]) -> Vec<(String, bool, bool, bool)> {
    let mut v: Vec<(String, bool, bool, bool)> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses.join(","),
                c.ready == Some(true),
                c.serving == Some(true),
                c.terminating == Some(true),
            )
        })
        .collect();
    v.sort();
    v
}

async fn slices_become(
    client: &kube::Client,
    name: &str,
    want: &[(&str, bool, bool, bool)],
) -> Vec<EndpointSlice> {
    let want: Vec<(String, bool, bool, bool)> = want
        .iter()
        .map(|(ip, r, s, t)| (ip.to_string(), *r, *s, *t))
        .collect();
    eventually(&format!("slices of {name} to be {want:?}"), || async {
        let slices = endpointslice::list_service_slices(client, NS, name)
            .await
            .unwrap();
        (slice_state(&slices) == want).then_some(slices)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pod_readiness() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    setup(&client).await;
    let ctx = context(&server);
    let endpoints_controller = tokio::spawn(skiff_controllers::endpoints::run(ctx.clone()));
    let slice_controller = tokio::spawn(endpointslice::run(ctx));

    create_service(&client, "web", Some("web")).await;
    create_pod(&client, "web-1", "web", "10.42.0.11", true).await;
    create_pod(&client, "web-2", "web", "10.42.0.12", false).await;
    create_pod(&client, "other", "db", "10.42.0.13", true).await;

    // Endpoints: ready and not-ready split, named targetPort resolved, pod references.
    let ep = endpoints_become(&client, "web", &["10.42.0.11"], &["10.42.0.12"]).await;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let ports = subset.ports.as_ref().unwrap();
    assert_eq!(
        (
            ports[0].name.as_deref(),
            ports[0].port,
            ports[0].protocol.as_deref()
        ),
        (Some("http"), 8080, Some("TCP"))
    );
    let addr = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(addr.node_name.as_deref(), Some("node-a"));
    let target = addr.target_ref.as_ref().unwrap();
    assert_eq!(
        (
            target.kind.as_deref(),
            target.name.as_deref(),
            target.namespace.as_deref()
        ),
        (Some("Pod"), Some("web-1"), Some(NS))
    );
    assert!(target.uid.is_some());
    assert!(
        ep.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(TRIGGER_TIME_ANNOTATION))
    );
    assert_eq!(
        ep.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("shop")
    );

    // Slices: one, owned, labelled, with conditions, node and zone.
    let slices = slices_become(
        &client,
        "web",
        &[
            ("10.42.0.11", true, true, false),
            ("10.42.0.12", false, false, false),
        ],
    )
    .await;
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get(SERVICE_NAME_LABEL).map(String::as_str),
        Some("web")
    );
    assert_eq!(
        labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some(MANAGED_BY)
    );
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let svc = services.get("web").await.unwrap();
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), Some(&owner.uid)),
        ("Service", "web", svc.metadata.uid.as_ref())
    );
    assert_eq!(owner.controller, Some(true));
    let e = slice
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.42.0.11"])
        .unwrap();
    assert_eq!(e.node_name.as_deref(), Some("node-a"));
    assert_eq!(e.zone.as_deref(), Some("zone-1"));
    assert_eq!(
        e.target_ref.as_ref().and_then(|r| r.name.as_deref()),
        Some("web-1")
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );

    // web-2 becomes ready, web-1 not.
    set_ready(&client, "web-2", true).await;
    set_ready(&client, "web-1", false).await;
    endpoints_become(&client, "web", &["10.42.0.12"], &["10.42.0.11"]).await;
    slices_become(
        &client,
        "web",
        &[
            ("10.42.0.11", false, false, false),
            ("10.42.0.12", true, true, false),
        ],
    )
    .await;

    // A label change moves a pod out of the service.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.patch(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    endpoints_become(&client, "web", &["10.42.0.12"], &[]).await;
    slices_become(&client, "web", &[("10.42.0.12", true, true, false)]).await;

    // A terminating pod (bound, so deleted gracefully) leaves Endpoints and
    // stays in slices as terminating, serving but not ready.
    pods.delete("web-2", &DeleteParams::default())
        .await
        .unwrap();
    let ep = endpoints_become(&client, "web", &[], &[]).await;
    assert!(ep.subsets.is_none_or(|s| s.is_empty()));
    slices_become(&client, "web", &[("10.42.0.12", false, true, true)]).await;

    // Gone for good: an empty placeholder slice remains.
    pods.delete(
        "web-2",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let slices = slices_become(&client, "web", &[]).await;
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());

    // Deleting the service deletes its endpoints and slices.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    eventually("the endpoints of a deleted service to go", || async {
        endpoints
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually("the slices of a deleted service to go", || async {
        endpointslice::list_service_slices(&client, NS, "web")
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;

    endpoints_controller.abort();
    slice_controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_selector_and_the_kubernetes_service_are_left_alone() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    setup(&client).await;
    let ctx = context(&server);
    let endpoints_controller = tokio::spawn(skiff_controllers::endpoints::run(ctx.clone()));
    let slice_controller = tokio::spawn(endpointslice::run(ctx));

    // A selector-less service with hand-written endpoints.
    create_service(&client, "manual", None).await;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let manual = Endpoints {
        metadata: ObjectMeta {
            name: Some("manual".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: "192.0.2.10".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    endpoints
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    // A selecting service in the same namespace, processed after it.
    create_service(&client, "web", Some("web")).await;
    create_pod(&client, "web-1", "web", "10.42.0.21", true).await;
    endpoints_become(&client, "web", &["10.42.0.21"], &[]).await;
    slices_become(&client, "web", &[("10.42.0.21", true, true, false)]).await;

    // Settled: no more writes (no update loop against the API server's defaults).
    let rv_before = endpoints
        .get("web")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let slices_before: Vec<Option<String>> = endpointslice::list_service_slices(&client, NS, "web")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.metadata.resource_version)
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        endpoints
            .get("web")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv_before
    );
    let slices_after: Vec<Option<String>> = endpointslice::list_service_slices(&client, NS, "web")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.metadata.resource_version)
        .collect();
    assert_eq!(slices_after, slices_before);

    let got = endpoints.get("manual").await.unwrap();
    assert_eq!(
        ready_and_not(got.subsets.as_deref().unwrap_or_default()),
        (vec!["192.0.2.10".to_string()], vec![])
    );
    assert!(
        endpointslice::list_service_slices(&client, NS, "manual")
            .await
            .unwrap()
            .is_empty()
    );
    let default_eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let kubernetes = default_eps.get("kubernetes").await.unwrap();
    assert_eq!(
        kubernetes.subsets.as_ref().map(Vec::len),
        Some(1),
        "the API server's endpoints are untouched"
    );

    endpoints_controller.abort();
    slice_controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_hold_at_most_100_endpoints() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    setup(&client).await;
    create_service(&client, "big", Some("big")).await;
    for i in 0..105 {
        create_pod(
            &client,
            &format!("big-{i}"),
            "big",
            &format!("10.42.1.{i}"),
            true,
        )
        .await;
    }
    let slice_controller = tokio::spawn(endpointslice::run(context(&server)));
    let slices = eventually("105 endpoints in slices", || async {
        let slices = endpointslice::list_service_slices(&client, NS, "big")
            .await
            .unwrap();
        (slices.iter().map(|s| s.endpoints.len()).sum::<usize>() == 105).then_some(slices)
    })
    .await;
    let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [5, 100]);
    slice_controller.abort();
}
