//! Endpoints and EndpointSlices may not name unspecified, loopback,
//! link-local or link-local multicast addresses (Kubernetes'
//! ValidateNonSpecialIP), so that no client can point a Service (and the
//! ingress or proxy behind it) at a node's own services or a cloud's
//! metadata service; the server's own `kubernetes` endpoints, which it
//! writes itself, may name the loopback address it listens on.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_testsupport::TestServer;

fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn refusal(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn clients_cannot_point_endpoints_at_special_addresses() {
    let s = TestServer::start().await;
    let pp = PostParams::default();
    let endpoints: Api<Endpoints> = Api::namespaced(s.client.clone(), "default");
    let own = endpoints.get("kubernetes").await.unwrap();
    let ip = own.subsets.unwrap()[0].addresses.as_ref().unwrap()[0]
        .ip
        .clone();
    assert_eq!(ip, "127.0.0.1");

    let e = endpoints
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "kubelet"},
                "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 10250}]}]})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refusal(e),
        (
            422,
            "Endpoints \"kubelet\" is invalid: subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)".into()
        )
    );

    let slices: Api<EndpointSlice> = Api::namespaced(s.client.clone(), "default");
    let e = slices
        .create(
            &pp,
            &obj(
                json!({"metadata": {"name": "metadata"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["169.254.169.254"]}], "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refusal(e),
        (
            422,
            "EndpointSlice.discovery.k8s.io \"metadata\" is invalid: endpoints[0].addresses[0]: Invalid value: \"169.254.169.254\": may not be in the link-local range (169.254.0.0/16, fe80::/10)".into()
        )
    );

    // An ordinary address is fine.
    slices
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "web"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.0.7"]}], "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
}
