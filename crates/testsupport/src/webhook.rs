//! A small HTTPS admission webhook server for tests (its certificate from
//! a CA of its own), answering AdmissionReviews by path:
//! `/deny` refuses objects labelled `deny: "true"` (403, "<OP> <name> is
//! not welcome"), `/mutate` adds the label `mutated: "yes"` with a JSON
//! patch (and a warning), `/user` refuses and names the requesting user, `/garbage`
//! answers something that is not an AdmissionReview, `/hang` never
//! answers, anything else allows.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A webhook server on 127.0.0.1 with its CA's PEM.
pub struct WebhookServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
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
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch,
                   "warnings": ["labelled by the test webhook"]})
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

/// Start the server on 127.0.0.1 (on the current tokio runtime).
pub async fn serve() -> WebhookServer {
    serve_at("127.0.0.1".parse().unwrap(), &[]).await
}

/// Start the server on `ip` (port chosen by the system), its certificate
/// for `ip` and `dns_names` (a Service's `<name>.<namespace>.svc`).
pub async fn serve_at(ip: std::net::IpAddr, dns_names: &[&str]) -> WebhookServer {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webhook test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    for name in dns_names {
        params
            .subject_alt_names
            .push(rcgen::SanType::DnsName((*name).try_into().unwrap()));
    }
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
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
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
    WebhookServer {
        addr,
        ca_pem: ca.pem(),
    }
}

impl WebhookServer {
    /// A webhook entry of a configuration pointing at `path` of this
    /// server, for ConfigMaps; `extra` fields replace the defaults.
    pub fn webhook(&self, name: &str, path: &str, extra: Value) -> Value {
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
