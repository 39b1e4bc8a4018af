//! Deletion lifecycles through the official client library (kube-rs):
//! finalizers, namespace finalization, graceful pod deletion, binding.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_testsupport::TestServer;

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let held = cms.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn namespaces_terminate_and_go_when_finalized() {
    let s = TestServer::start().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let t = nss.get("doomed").await.unwrap();
    assert_eq!(
        t.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    // No new content in a terminating namespace.
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "doomed");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err:?}"
    );
    // Finalizing (what the namespace controller does when the namespace is empty) removes it.
    let mut t = nss.get("doomed").await.unwrap();
    t.spec = Some(Default::default());
    let data = serde_json::to_vec(&t).unwrap();
    let req = http::Request::put("/api/v1/namespaces/doomed/finalize")
        .header("content-type", "application/json")
        .body(data)
        .unwrap();
    s.client.request_text(req).await.unwrap();
    assert!(nss.get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test]
async fn bound_pods_terminate_gracefully_and_unbound_pods_go_at_once() {
    let s = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap()
    };
    pods.create(&PostParams::default(), &pod("unbound"))
        .await
        .unwrap();
    pods.delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    assert!(pods.get_opt("unbound").await.unwrap().is_none());

    pods.create(&PostParams::default(), &pod("bound"))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n1"}});
    let data = serde_json::to_vec(&binding).unwrap();
    let req = http::Request::post("/api/v1/namespaces/default/pods/bound/binding")
        .header("content-type", "application/json")
        .body(data)
        .unwrap();
    s.client.request_text(req).await.unwrap();
    let p = pods.get("bound").await.unwrap();
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("n1")
    );
    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let p = pods.get("bound").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // The kubelet's final delete (grace 0) removes it.
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_none());
}

#[tokio::test]
async fn service_account_tokens_authenticate_until_the_account_goes() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let s = TestServer::start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "builder"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let out: TokenRequest = sas
        .create_subresource("token", "builder", &PostParams::default(), &tr)
        .await
        .unwrap();
    let token = out.status.unwrap().token;
    // A client using only that token: authenticated (discovery is every
    // authenticated user's), not authorized to list namespaces.
    let as_sa = s.client_with_token(&token).await;
    as_sa.list_core_api_versions().await.unwrap();
    let nss: Api<Namespace> = Api::all(as_sa.clone());
    let err = nss.list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err:?}"
    );
    sas.delete("builder", &DeleteParams::default())
        .await
        .unwrap();
    let err = as_sa.list_core_api_versions().await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 401),
        "{err:?}"
    );
}
