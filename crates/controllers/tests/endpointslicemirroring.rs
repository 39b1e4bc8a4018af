//! The EndpointSliceMirroring controller against a real API server: the
//! Endpoints of a Service without a selector are mirrored into
//! EndpointSlices through create, update and delete (as the conformance
//! test "should mirror a custom Endpoints resource through create update
//! and delete" does), and mirroring stops with the skip-mirror label or a
//! selector on the Service.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Namespace, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::endpointslice::{self, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use skiff_controllers::endpointslicemirroring::{self, MANAGED_BY, SKIP_MIRROR_LABEL};
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

const NS: &str = "mirror";

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

async fn create_namespace(client: &kube::Client) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn create_service(client: &kube::Client, name: &str) {
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("example".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Api::<Service>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}

fn endpoints(name: &str, ip: &str, port: i32) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("team".to_string(), "db".to_string())])),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: ip.into(),
                ..Default::default()
            }]),
            not_ready_addresses: Some(vec![EndpointAddress {
                ip: "10.9.9.9".into(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                port,
                ..Default::default()
            }]),
        }]),
    }
}

/// Every slice labelled with the service's name (as the conformance test lists them).
async fn slices_of(client: &kube::Client, service: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let lp = kube::api::ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    api.list(&lp).await.unwrap().items
}

/// Per slice: (address, ready) of each endpoint, and the ports.
type Shape = Vec<(Vec<(String, Option<bool>)>, Vec<Option<i32>>)>;

fn shape(slices: &[EndpointSlice]) -> Shape {
    slices
        .iter()
        .map(|s| {
            (
                s.endpoints
                    .iter()
                    .map(|e| {
                        (
                            e.addresses.join(","),
                            e.conditions.as_ref().and_then(|c| c.ready),
                        )
                    })
                    .collect(),
                s.ports.iter().flatten().map(|p| p.port).collect(),
            )
        })
        .collect()
}

async fn slices_become(client: &kube::Client, service: &str, ip: &str, port: i32) -> EndpointSlice {
    let want = vec![(
        vec![
            (ip.to_string(), Some(true)),
            ("10.9.9.9".to_string(), Some(false)),
        ],
        vec![Some(port)],
    )];
    eventually(&format!("{service} mirrored as {want:?}"), || async {
        let slices = slices_of(client, service).await;
        (shape(&slices) == want).then(|| slices[0].clone())
    })
    .await
}

async fn slices_gone(client: &kube::Client, service: &str) {
    eventually(&format!("no slices of {service}"), || async {
        slices_of(client, service).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_endpoints_are_mirrored_through_create_update_and_delete() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    create_namespace(&client).await;
    let ctx = context(&server);
    // The EndpointSlice controller runs too: it must leave mirrored slices alone.
    let slice_controller = tokio::spawn(endpointslice::run(ctx.clone()));
    let controller = tokio::spawn(endpointslicemirroring::run(ctx));
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), NS);

    create_service(&client, "custom").await;
    let created = endpoints_api
        .create(&PostParams::default(), &endpoints("custom", "10.1.2.3", 80))
        .await
        .unwrap();
    let slice = slices_become(&client, "custom", "10.1.2.3", 80).await;
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some(MANAGED_BY)
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("db"));
    assert_eq!(slice.address_type, "IPv4");
    let owner = &slice.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.as_str())
        ),
        ("Endpoints", "custom", created.metadata.uid.as_deref())
    );
    let port = &slice.ports.clone().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.protocol.as_deref()),
        (Some(""), Some("TCP"))
    );

    // Update: another address and another port; still one slice.
    let mut current = endpoints_api.get("custom").await.unwrap();
    current.subsets = endpoints("custom", "10.2.3.4", 8080).subsets;
    endpoints_api
        .replace("custom", &PostParams::default(), &current)
        .await
        .unwrap();
    slices_become(&client, "custom", "10.2.3.4", 8080).await;

    // Delete: the mirrored slice goes.
    endpoints_api
        .delete("custom", &DeleteParams::default())
        .await
        .unwrap();
    slices_gone(&client, "custom").await;

    // Endpoints before their Service: mirrored once the Service exists.
    endpoints_api
        .create(&PostParams::default(), &endpoints("late", "10.3.0.1", 80))
        .await
        .unwrap();
    create_service(&client, "late").await;
    slices_become(&client, "late", "10.3.0.1", 80).await;

    controller.abort();
    slice_controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_mirror_label_and_a_selector_stop_mirroring() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    create_namespace(&client).await;
    let controller = tokio::spawn(endpointslicemirroring::run(context(&server)));
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);

    // The skip-mirror label: the slices go.
    create_service(&client, "skipped").await;
    endpoints_api
        .create(
            &PostParams::default(),
            &endpoints("skipped", "10.4.0.1", 80),
        )
        .await
        .unwrap();
    slices_become(&client, "skipped", "10.4.0.1", 80).await;
    let label = json!({"metadata": {"labels": {SKIP_MIRROR_LABEL: "true"}}});
    endpoints_api
        .patch("skipped", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    slices_gone(&client, "skipped").await;
    // ... and come back without it.
    let unlabel = json!({"metadata": {"labels": {SKIP_MIRROR_LABEL: null}}});
    endpoints_api
        .patch("skipped", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    slices_become(&client, "skipped", "10.4.0.1", 80).await;

    // A selector on the Service: the EndpointSlice controller's business now.
    create_service(&client, "selected").await;
    endpoints_api
        .create(
            &PostParams::default(),
            &endpoints("selected", "10.5.0.1", 80),
        )
        .await
        .unwrap();
    slices_become(&client, "selected", "10.5.0.1", 80).await;
    let selector = json!({"spec": {"selector": {"app": "db"}}});
    services
        .patch(
            "selected",
            &PatchParams::default(),
            &Patch::Merge(&selector),
        )
        .await
        .unwrap();
    slices_gone(&client, "selected").await;

    // The Service deleted: the slices go too.
    services
        .delete("skipped", &DeleteParams::default())
        .await
        .unwrap();
    slices_gone(&client, "skipped").await;

    controller.abort();
}
