//! Inputs that once took the server down or poisoned an object (security
//! review, robustness issue): each is refused with a Kubernetes Status and
//! changes nothing.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use skiff_testsupport::TestServer;

/// The Status of a refused request: (code, reason, message).
async fn refused(
    s: &TestServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u64, String, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .unwrap();
    match s.client.request_text(req).await {
        Ok(text) => panic!("expected a refusal, got {text}"),
        Err(kube::Error::Api(e)) => (u64::from(e.code), e.reason, e.message),
        Err(e) => panic!("expected an API error, got {e}"),
    }
}

#[tokio::test]
async fn a_json_patch_may_neither_copy_without_bound_nor_have_too_many_operations() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "c"}, "data": {"k": "v".repeat(100_000)}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps/c";

    // Review D2: every `copy` of the whole document doubles it.
    let bomb: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "/data", "path": format!("/metadata/annotations/a{i}")}))
        .collect();
    let mut ops = vec![json!({"op": "add", "path": "/metadata/annotations", "value": {}})];
    ops.extend(bomb);
    let (code, _, message) = refused(
        &s,
        "PATCH",
        path,
        "application/json-patch+json",
        serde_json::to_vec(&ops).unwrap(),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("Unable to complete the copy, the accumulated size increase of copy is"),
        "{message}"
    );

    // kube-apiserver's cap: 10,000 operations.
    let many: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/metadata/name", "value": "c"}))
        .collect();
    let (code, reason, message) = refused(
        &s,
        "PATCH",
        path,
        "application/json-patch+json",
        serde_json::to_vec(&many).unwrap(),
    )
    .await;
    assert_eq!((code, reason.as_str()), (413, "RequestEntityTooLarge"));
    assert_eq!(
        message,
        "The allowed maximum operations in a JSON patch is 10000, got 10001"
    );

    // Nothing changed.
    let now = cms.get("c").await.unwrap();
    assert!(now.metadata.annotations.is_none_or(|a| a.is_empty()));
}

#[tokio::test]
async fn a_yaml_body_may_not_expand_its_aliases_quadratically() {
    // Review D3: N aliases of an N-element anchor.
    let s = TestServer::start().await;
    let n = 3_000;
    let body = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\n  annotations:\n    a: &a [{}]\n    b: [{}]\n",
        vec!["x"; n].join(","),
        vec!["*a"; n].join(",")
    );
    let (code, _, message) = refused(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        body.into_bytes(),
    )
    .await;
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("excessive aliasing"), "{message}");
    // An ordinary YAML body still goes through.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/yaml")
        .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\ndata:\n  k: v\n".to_vec())
        .unwrap();
    s.client.request_text(req).await.unwrap();
}

#[tokio::test]
async fn scale_refuses_replicas_beyond_int32() {
    // Review I2: stored, it broke every typed client's decoding.
    let s = TestServer::start().await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let path = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let (code, _, message) = refused(
        &s,
        "PATCH",
        path,
        "application/merge-patch+json",
        br#"{"spec":{"replicas":10000000000}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("cannot unmarshal number 10000000000 into Go struct field ScaleSpec.spec.replicas of type int32"), "{message}");
    let body = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 10_000_000_000_i64}});
    let (code, _, _) = refused(
        &s,
        "PUT",
        path,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(code, 400);
    // The typed client still reads it, at its old size.
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
}

#[tokio::test]
async fn nothing_is_stored_deeper_than_it_can_be_read() {
    // Review I3: a JSON patch can nest an object past what the decoder
    // reads; stored, it could no longer be read, updated or deleted.
    let s = TestServer::start().await;
    let nested = |levels: usize| {
        let mut v = json!("leaf");
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    };
    let revision = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "deep"}, "revision": 1, "data": nested(100)});
    let req = http::Request::post("/apis/apps/v1/namespaces/default/controllerrevisions")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&revision).unwrap())
        .unwrap();
    s.client.request_text(req).await.unwrap();
    let path = "/apis/apps/v1/namespaces/default/controllerrevisions/deep";
    let pointer = format!("/data{}/b", "/a".repeat(99));
    let ops = json!([{"op": "add", "path": pointer, "value": nested(40)}]);
    let (code, _, message) = refused(
        &s,
        "PATCH",
        path,
        "application/json-patch+json",
        serde_json::to_vec(&ops).unwrap(),
    )
    .await;
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("exceeded max depth"), "{message}");
    // Still readable and deletable.
    let get = http::Request::get(path).body(Vec::new()).unwrap();
    s.client.request_text(get).await.unwrap();
    let delete = http::Request::delete(path).body(Vec::new()).unwrap();
    s.client.request_text(delete).await.unwrap();
}
