//! Admission webhooks against the in-process API server: a small HTTPS
//! webhook server in the test (its certificate from the test's own CA)
//! denies and patches objects; failurePolicy, timeouts, selectors, dry
//! runs and DELETE are what Kubernetes does.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use skiff_testsupport::TestServer;

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn validating(s: &TestServer, name: &str, webhooks: Vec<Value>) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(s.client.clone());
    let config =
        serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": webhooks})).unwrap();
    api.create(&PostParams::default(), &config).await.unwrap();
}

/// Wait until the server's follower has the configuration: a write the
/// webhook must refuse is refused.
async fn until_refused(cms: &Api<ConfigMap>, probe: ConfigMap) -> (u16, String) {
    skiff_testsupport::eventually("the webhook takes effect", || async {
        match cms.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(e)) => Some((e.code, e.message)),
            Ok(created) => {
                let _ = cms
                    .delete(
                        &created.metadata.name.unwrap_or_default(),
                        &DeleteParams::default(),
                    )
                    .await;
                None
            }
            Err(_) => None,
        }
    })
    .await
}

#[tokio::test]
async fn a_validating_webhook_denies_and_a_mutating_one_patches() {
    let s = TestServer::start().await;
    let hook = skiff_testsupport::webhook::serve().await;
    s.namespace("team").await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    validating(
        &s,
        "deny",
        vec![hook.webhook("deny.example.com", "/deny", json!({}))],
    )
    .await;
    let (code, message) = until_refused(&cms, cm("probe", json!({"deny": "true"}))).await;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "admission webhook \"deny.example.com\" denied the request: CREATE probe is not welcome"
    );
    // Others pass; an update that adds the label is refused; so is a delete
    // of an object that has it (the old object is sent).
    cms.create(&PostParams::default(), &cm("fine", json!({})))
        .await
        .unwrap();
    let mut fine = cms.get("fine").await.unwrap();
    fine.metadata.labels = Some([("deny".to_string(), "true".to_string())].into());
    let (code, message) = refused(cms.replace("fine", &PostParams::default(), &fine).await);
    assert_eq!(
        (code, message.as_str()),
        (
            403,
            "admission webhook \"deny.example.com\" denied the request: UPDATE fine is not welcome"
        )
    );

    let mutating: Api<MutatingWebhookConfiguration> = Api::all(s.client.clone());
    let config = serde_json::from_value(json!({"metadata": {"name": "mutate"}, "webhooks": [hook.webhook("mutate.example.com", "/mutate", json!({}))]})).unwrap();
    mutating
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let labelled = skiff_testsupport::eventually("the mutating webhook takes effect", || async {
        let name = format!("m-{}", uuid::Uuid::new_v4());
        let created = cms
            .create(&PostParams::default(), &cm(&name, json!({"a": "b"})))
            .await
            .ok()?;
        let labels = created.metadata.labels.unwrap_or_default();
        labels.contains_key("mutated").then_some(labels)
    })
    .await;
    assert_eq!(labelled.get("a").map(String::as_str), Some("b"));
    assert_eq!(labelled.get("mutated").map(String::as_str), Some("yes"));
    // The webhook's warnings reach the client as Warning headers.
    let req = http::Request::post("/api/v1/namespaces/team/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&cm("warned", json!({}))).unwrap())
        .unwrap();
    let resp = s
        .client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings, vec!["299 - \"labelled by the test webhook\""]);
    // Mutating runs before validating: a patched object is what is validated
    // and stored, and a dry run with sideEffects None is allowed.
    let dry = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry", json!({})),
        )
        .await
        .unwrap();
    assert_eq!(
        dry.metadata
            .labels
            .unwrap_or_default()
            .get("mutated")
            .map(String::as_str),
        Some("yes")
    );
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    // The configurations themselves never go to webhooks: a deny-everything
    // webhook on every resource can still be deleted.
    let everything = hook.webhook(
        "all.example.com",
        "/user",
        json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}]}),
    );
    validating(&s, "everything", vec![everything]).await;
    let (code, message) = until_refused(&cms, cm("any", json!({}))).await;
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "admission webhook \"all.example.com\" denied the request: user system:admin"
    );
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(s.client.clone());
    vwcs.delete("everything", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn failure_policy_timeouts_selectors_and_dry_runs() {
    let s = TestServer::start().await;
    let hook = skiff_testsupport::webhook::serve().await;
    s.namespace("team").await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    // An answer that is not an AdmissionReview: Fail → 500, Ignore → allowed.
    validating(
        &s,
        "garbage",
        vec![
            hook.webhook(
                "garbage-ignored.example.com",
                "/garbage",
                json!({"failurePolicy": "Ignore"}),
            ),
            hook.webhook(
                "garbage.example.com",
                "/garbage",
                json!({"objectSelector": {"matchLabels": {"strict": "yes"}}}),
            ),
        ],
    )
    .await;
    let (code, message) = until_refused(&cms, cm("g", json!({"strict": "yes"}))).await;
    assert_eq!(code, 500);
    assert!(
        message.starts_with("Internal error occurred: failed calling webhook \"garbage.example.com\": failed to call webhook: Post \"https://127.0.0.1:"),
        "{message}"
    );
    // The objectSelector leaves other objects alone; Ignore lets them pass.
    cms.create(&PostParams::default(), &cm("plain", json!({})))
        .await
        .unwrap();

    // A webhook that never answers: its timeout, then its failurePolicy.
    validating(
        &s,
        "hang",
        vec![hook.webhook(
            "hang.example.com",
            "/hang",
            json!({"timeoutSeconds": 1, "objectSelector": {"matchLabels": {"slow": "yes"}}}),
        )],
    )
    .await;
    let (code, message) = until_refused(&cms, cm("h", json!({"slow": "yes"}))).await;
    assert_eq!(code, 500);
    assert!(message.ends_with("context deadline exceeded"), "{message}");

    // sideEffects Unknown: a dry run is refused, a real write goes through.
    validating(
        &s,
        "effects",
        vec![hook.webhook("effects.example.com", "/allow", json!({"sideEffects": "Unknown", "objectSelector": {"matchLabels": {"effects": "yes"}}}))],
    )
    .await;
    let probe = cm("e", json!({"effects": "yes"}));
    let (code, message) = skiff_testsupport::eventually("the dry run is refused", || async {
        match cms
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &probe,
            )
            .await
        {
            Err(kube::Error::Api(e)) => Some((e.code, e.message)),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        (code, message.as_str()),
        (
            400,
            "admission webhook \"effects.example.com\" does not support dry run"
        )
    );
    cms.create(&PostParams::default(), &probe).await.unwrap();

    // namespaceSelector: only namespaces labelled guarded=yes.
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let guarded: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "guarded", "labels": {"guarded": "yes"}}}),
    )
    .unwrap();
    namespaces
        .create(&PostParams::default(), &guarded)
        .await
        .unwrap();
    validating(
        &s,
        "guard",
        vec![hook.webhook(
            "guard.example.com",
            "/user",
            json!({"namespaceSelector": {"matchLabels": {"guarded": "yes"}}}),
        )],
    )
    .await;
    let in_guarded: Api<ConfigMap> = Api::namespaced(s.client.clone(), "guarded");
    let (code, _) = until_refused(&in_guarded, cm("x", json!({}))).await;
    assert_eq!(code, 400);
    cms.create(&PostParams::default(), &cm("unguarded", json!({})))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connect_to_a_pod_goes_through_validating_webhooks() {
    let s = TestServer::start().await;
    let hook = skiff_testsupport::webhook::serve().await;
    s.namespace("team").await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.client.clone(), "team");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    validating(
        &s,
        "no-attach",
        vec![hook.webhook(
            "no-attach.example.com",
            "/user",
            json!({"rules": [{"operations": ["CONNECT"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/attach", "pods/exec"]}]}),
        )],
    )
    .await;
    let (code, message) = skiff_testsupport::eventually("the CONNECT is refused", || async {
        let req = http::Request::post("/api/v1/namespaces/team/pods/p/exec?command=ls&stdout=true")
            .body(Vec::new())
            .unwrap();
        match s.client.request_text(req).await {
            Err(kube::Error::Api(e)) if e.message.contains("denied") => Some((e.code, e.message)),
            _ => None,
        }
    })
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "admission webhook \"no-attach.example.com\" denied the request: user system:admin"
    );
}

#[tokio::test]
async fn match_conditions_decide_which_requests_a_webhook_sees() {
    let s = TestServer::start().await;
    let hook = skiff_testsupport::webhook::serve().await;
    s.namespace("team").await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    validating(
        &s,
        "conditional",
        vec![hook.webhook(
            "conditional.example.com",
            "/user",
            json!({"matchConditions": [
                {"name": "prefixed", "expression": "object.metadata.name.startsWith('cond-')"},
                {"name": "not-by-the-server", "expression": "request.userInfo.username != 'system:apiserver'"}
            ]}),
        )],
    )
    .await;
    let (code, message) = until_refused(&cms, cm("cond-a", json!({}))).await;
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "admission webhook \"conditional.example.com\" denied the request: user system:admin"
    );
    cms.create(&PostParams::default(), &cm("plain", json!({})))
        .await
        .unwrap();
    // A condition that cannot be evaluated follows failurePolicy (Fail).
    validating(
        &s,
        "erroring",
        vec![hook.webhook(
            "erroring.example.com",
            "/allow",
            json!({"matchConditions": [{"name": "bad", "expression": "object.metadata.nothing == 'x'"}],
                   "objectSelector": {"matchLabels": {"probe": "yes"}}}),
        )],
    )
    .await;
    let (code, message) = until_refused(&cms, cm("p", json!({"probe": "yes"}))).await;
    assert_eq!(code, 500);
    assert!(
        message.starts_with(
            "Internal error occurred: failed calling webhook \"erroring.example.com\": matchCondition 'bad':"
        ),
        "{message}"
    );
}

/// The machine's first non-loopback IPv4 address (what a Service's
/// Endpoints may name: validation refuses loopback).
fn host_ip() -> std::net::IpAddr {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .filter_map(|ip| ip.parse().ok())
        .next()
        .expect("this test needs a non-loopback IPv4 address")
}

#[tokio::test]
async fn a_webhook_behind_a_service_is_reached_through_its_endpoints() {
    let s = TestServer::start().await;
    s.namespace("hooks").await;
    s.namespace("team").await;
    let hook = skiff_testsupport::webhook::serve_at(host_ip(), &["deny-svc.hooks.svc"]).await;
    // A selectorless Service on 443 whose Endpoints name the server's
    // address and port (as a webhook pod's would be).
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(s.client.clone(), "hooks");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "deny-svc"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hook.addr.port()}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(s.client.clone(), "hooks");
    endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "deny-svc"},
                "subsets": [{"addresses": [{"ip": hook.addr.ip().to_string()}],
                             "ports": [{"name": "https", "port": hook.addr.port()}]}]}))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut w = hook.webhook("svc.example.com", "/deny", json!({}));
    w["clientConfig"] = json!({
        "service": {"namespace": "hooks", "name": "deny-svc", "path": "/deny", "port": 443},
        "caBundle": w["clientConfig"]["caBundle"].clone(),
    });
    validating(&s, "through-service", vec![w]).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    let (code, message) = until_refused(&cms, cm("svc", json!({"deny": "true"}))).await;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "admission webhook \"svc.example.com\" denied the request: CREATE svc is not welcome"
    );
    cms.create(&PostParams::default(), &cm("fine", json!({})))
        .await
        .unwrap();
}
