//! The API server verifies the kubelets it calls (kube-apiserver's
//! --kubelet-certificate-authority): a kubelet's serving certificate must
//! come from the cluster CA and name the address the API server dials.
//! A fake kubelet on 127.0.0.1 answers a pod's log over TLS with each kind
//! of certificate. `nodes/proxy` refuses such an address outright
//! (IsProxyableHostname).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_testsupport::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A certificate for `ip` and its key: from the CA when given, else
/// self-signed.
fn certificate(ip: &str, ca: Option<(&str, &str)>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![ip.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:n1");
    let cert = match ca {
        Some((ca_pem, ca_key)) => {
            let issuer =
                rcgen::Issuer::from_ca_cert_pem(ca_pem, rcgen::KeyPair::from_pem(ca_key).unwrap())
                    .unwrap();
            params.signed_by(&key, &issuer).unwrap()
        }
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

/// A kubelet on 127.0.0.1 that answers every request with `{}`; its port.
async fn fake_kubelet(cert_pem: &str, key_pem: &str) -> u16 {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

async fn point_node_at(s: &TestServer, port: u16) {
    let nodes: Api<Node> = Api::all(s.client.clone());
    if nodes.get_opt("n1").await.unwrap().is_none() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}
    }});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// The admin's client without kube's retries: a 503 is the answer under
/// test here, not something to retry with backoff.
async fn no_retry(s: &TestServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// The log of a pod bound to n1: the kubelet's answer.
async fn pod_log(s: &TestServer) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    if pods.get_opt("p").await.unwrap().is_none() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let req = http::Request::get("/api/v1/namespaces/default/pods/p/log")
        .body(Vec::new())
        .unwrap();
    no_retry(s)
        .await
        .request_text(req)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn kubelets_must_present_a_certificate_from_the_cluster_ca_for_their_address() {
    let s = TestServer::start().await;
    let tls = s.dir.path().join("tls");
    let ca_pem = std::fs::read_to_string(tls.join("server-ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(tls.join("server-ca.key")).unwrap();

    // Self-signed: refused before any request is sent.
    let (c, k) = certificate("127.0.0.1", None);
    point_node_at(&s, fake_kubelet(&c, &k).await).await;
    let err = pod_log(&s).await.unwrap_err();
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // From the cluster CA, but for another address: refused.
    let (c, k) = certificate("10.9.9.9", Some((&ca_pem, &ca_key)));
    point_node_at(&s, fake_kubelet(&c, &k).await).await;
    let err = pod_log(&s).await.unwrap_err();
    assert!(
        err.contains("TLS handshake") && err.contains("not valid for name"),
        "{err}"
    );

    // From the cluster CA for the address dialled: the call goes through.
    let (c, k) = certificate("127.0.0.1", Some((&ca_pem, &ca_key)));
    point_node_at(&s, fake_kubelet(&c, &k).await).await;
    assert_eq!(pod_log(&s).await.unwrap(), "{}");

    // nodes/proxy does not dial a loopback address at all.
    let req = http::Request::get("/api/v1/nodes/n1/proxy/pods")
        .body(Vec::new())
        .unwrap();
    let err = s.client.request_text(req).await.unwrap_err().to_string();
    assert!(
        err.contains("address not allowed") && err.contains("400"),
        "{err}"
    );
}
