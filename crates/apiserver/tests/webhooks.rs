//! Admission webhooks against the in-process API server: a small HTTPS
//! webhook server in the test (its certificate from the test's own CA)
//! denies and patches objects; failurePolicy, timeouts, selectors, dry
//! runs and DELETE are what Kubernetes does.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use skiff_testsupport::TestServer;

/// A webhook server on 127.0.0.1 with its CA's PEM.
struct Hook {
    addr: SocketAddr,
    ca_pem: String,
}

fn respond(review: &Value, path: &str) -> Option<Value> {
    let req = &review["request"];
    let uid = req["uid"].clone();
    let object = if req["operation"] == "DELETE" {
        &req["oldObject"]
    } else {
        &req["object"]
    };
    let label = |k: &str| object["metadata"]["labels"][k].as_str().map(str::to_string);
    let response = match path {
        "/deny" => {
            if label("deny").as_deref() == Some("true") {
                json!({"uid": uid, "allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": format!("{} {} is not welcome", req["operation"].as_str().unwrap_or_default(), req["name"].as_str().unwrap_or_default())}})
            } else {
                json!({"uid": uid, "allowed": true})
            }
        }
        "/mutate" => {
            let patch = if object["metadata"]["labels"].is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
            };
            let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch})
        }
        "/user" => {
            // Echo who asked, so the test sees userInfo was sent.
            let who = req["userInfo"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            json!({"uid": uid, "allowed": false, "status": {"message": format!("user {who}")}})
        }
        "/garbage" => return None,
        _ => json!({"uid": uid, "allowed": true}),
    };
    Some(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
    )
}

async fn serve_hooks() -> Hook {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webhook test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let review: Value = serde_json::from_slice(&body).unwrap();
                        if path == "/hang" {
                            // Never answers: the caller's timeout decides.
                            std::future::pending::<()>().await;
                        }
                        let out = match respond(&review, &path) {
                            Some(v) => Bytes::from(v.to_string()),
                            None => Bytes::from_static(b"this is not an AdmissionReview"),
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(out)))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Hook {
        addr,
        ca_pem: ca.pem(),
    }
}

impl Hook {
    fn webhook(&self, name: &str, path: &str, extra: Value) -> Value {
        let mut w = json!({
            "name": name,
            "clientConfig": {
                "url": format!("https://{}{path}", self.addr),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            },
            "rules": [{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            w[k] = v.clone();
        }
        w
    }
}

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
    let hook = serve_hooks().await;
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
    let hook = serve_hooks().await;
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
