//! Pod Security Admission against the in-process server: a namespace's
//! enforce label refuses pods with Kubernetes' message, warn answers
//! `Warning` headers (for pods and pod templates), raising enforce warns
//! about existing pods, invalid labels are refused, and the cluster default
//! applies to namespaces without labels.
#![allow(clippy::unwrap_used)]

use http::{Method, Request};
use kube::client::Body;
use serde_json::{Value, json};
use skiff_testsupport::TestServer;

/// A raw request: (status, Warning header values, body).
async fn send(
    s: &TestServer,
    method: Method,
    path: &str,
    content_type: &str,
    body: Value,
) -> (u16, Vec<String>, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = s.client.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (
        status,
        warnings,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Vec<String>, Value) {
    send(s, Method::POST, path, "application/json", body).await
}

async fn namespace(s: &TestServer, name: &str, labels: Value) {
    let (code, _, body) = post(
        s,
        "/api/v1/namespaces",
        json!({"metadata": {"name": name, "labels": labels}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // A read waits for the cache, which admission reads namespaces from.
    let req = Request::builder()
        .uri(format!("/api/v1/namespaces/{name}"))
        .body(Vec::new())
        .unwrap();
    s.client.request_text(req).await.unwrap();
}

fn privileged_pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}})
}

fn restricted_pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}})
}

#[tokio::test]
async fn enforce_refuses_with_kubernetes_message() {
    let s = TestServer::start().await;
    namespace(
        &s,
        "locked",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let (code, _, status) = post(&s, "/api/v1/namespaces/locked/pods", privileged_pod("x")).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": \
         privileged (container \"c\" must not set securityContext.privileged=true), \
         allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
         unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
         runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
         seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
    // A compliant pod is admitted, without warnings.
    let (code, warnings, body) =
        post(&s, "/api/v1/namespaces/locked/pods", restricted_pod("ok")).await;
    assert_eq!(code, 201, "{body}");
    assert!(warnings.is_empty(), "{warnings:?}");
    // Updates that do not touch what the policy checks are not evaluated.
    let (code, _, body) = send(
        &s,
        Method::PATCH,
        "/api/v1/namespaces/locked/pods/ok",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Other namespaces are privileged by default.
    let (code, _, body) = post(&s, "/api/v1/namespaces/default/pods", privileged_pod("x")).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn warn_answers_warning_headers_for_pods_and_templates() {
    let s = TestServer::start().await;
    namespace(
        &s,
        "warned",
        json!({"pod-security.kubernetes.io/warn": "baseline", "pod-security.kubernetes.io/warn-version": "v1.28"}),
    )
    .await;
    let pod = json!({"metadata": {"name": "h"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}});
    let (code, warnings, body) = post(&s, "/api/v1/namespaces/warned/pods", pod).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        warnings,
        [
            "299 - \"would violate PodSecurity \\\"baseline:v1.28\\\": hostPath volumes (volume \\\"root\\\")\""
        ]
    );
    let deploy = json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {
            "hostNetwork": true, "containers": [{"name": "c", "image": "busybox"}]}}}});
    let (code, warnings, body) =
        post(&s, "/apis/apps/v1/namespaces/warned/deployments", deploy).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        warnings,
        [
            "299 - \"would violate PodSecurity \\\"baseline:v1.28\\\": host namespaces (hostNetwork)\""
        ]
    );
    let cronjob = json!({"metadata": {"name": "cj"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}}}}}});
    let (code, warnings, body) =
        post(&s, "/apis/batch/v1/namespaces/warned/cronjobs", cronjob).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("privileged (container \\\"c\\\""),
        "{warnings:?}"
    );
    // A compliant workload gets no warning.
    let (code, warnings, body) =
        post(&s, "/api/v1/namespaces/warned/pods", restricted_pod("fine")).await;
    assert_eq!(code, 201, "{body}");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn raising_enforce_warns_about_existing_pods_and_bad_labels_are_invalid() {
    let s = TestServer::start().await;
    namespace(&s, "team", json!({})).await;
    for name in ["p2", "p1", "p3"] {
        let (code, _, body) = post(&s, "/api/v1/namespaces/team/pods", privileged_pod(name)).await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, _, body) = post(&s, "/api/v1/namespaces/team/pods", restricted_pod("good")).await;
    assert_eq!(code, 201, "{body}");
    let req = Request::builder()
        .uri("/api/v1/namespaces/team/pods")
        .body(Vec::new())
        .unwrap();
    s.client.request_text(req).await.unwrap();
    let (code, warnings, body) = send(
        &s,
        Method::PATCH,
        "/api/v1/namespaces/team",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        warnings,
        [
            "299 - \"existing pods in namespace \\\"team\\\" violate the new PodSecurity enforce level \\\"baseline:latest\\\"\"",
            "299 - \"p1 (and 2 other pods): privileged\"",
        ]
    );
    // The same level again: nothing to say.
    let (code, warnings, _) = send(
        &s,
        Method::PATCH,
        "/api/v1/namespaces/team",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"other": "x"}}}),
    )
    .await;
    assert_eq!(code, 200);
    assert!(warnings.is_empty(), "{warnings:?}");
    // Now enforced.
    let (code, _, status) = post(&s, "/api/v1/namespaces/team/pods", privileged_pod("p4")).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"p4\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );

    // Existing pods may still change what the policy does not look at
    // (upstream isSignificantPodUpdate), not their images.
    let patch_pod = |patch: Value| {
        send(
            &s,
            Method::PATCH,
            "/api/v1/namespaces/team/pods/p1",
            "application/merge-patch+json",
            patch,
        )
    };
    let (code, _, body) = patch_pod(json!({"metadata": {"labels": {"a": "b"}}})).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, status) = patch_pod(
        json!({"spec": {"containers": [{"name": "c", "image": "busybox:2", "securityContext": {"privileged": true}}]}}),
    )
    .await;
    assert_eq!(code, 403, "{status}");

    let (code, _, status) = send(
        &s,
        Method::PATCH,
        "/api/v1/namespaces/team",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "strict"}}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "Namespace \"team\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"
    );
    let (code, _, status) = post(
        &s,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "bad", "labels": {"pod-security.kubernetes.io/warn-version": "1.28"}}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "Namespace \"bad\" is invalid: metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.28\": must be \"latest\" or \"v1.x\""
    );
}

#[tokio::test]
async fn the_cluster_default_applies_to_unlabelled_namespaces() {
    let s = TestServer::start_with(|c| {
        c.pod_security_default = skiff_apiserver::podsecurity::Level::Baseline;
    })
    .await;
    let (code, _, status) = post(&s, "/api/v1/namespaces/default/pods", privileged_pod("x")).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );
    // A namespace's own label overrides the default.
    namespace(
        &s,
        "open",
        json!({"pod-security.kubernetes.io/enforce": "privileged"}),
    )
    .await;
    let (code, _, body) = post(&s, "/api/v1/namespaces/open/pods", privileged_pod("x")).await;
    assert_eq!(code, 201, "{body}");
}
