//! The subresources served by the node's kubelet (↔ pkg/registry/core/pod
//! LogLocation/ExecLocation/... and the UpgradeAwareHandler): pods/log,
//! pods/exec, pods/attach, pods/portforward and nodes/proxy. The pod's
//! node is looked up in the watch cache, then the request goes to the
//! kubelet API at the Node's InternalIP and status.daemonEndpoints port
//! over TLS, authenticated with the node-join token. Logs stream back as
//! they come; an upgrade (SPDY/3.1, or a WebSocket) is relayed and both
//! connections are spliced after 101 Switching Protocols.
//!
//! The kubelet's certificate is self-signed and not verified (as
//! kube-apiserver without --kubelet-certificate-authority); the kubelet
//! authenticates the API server by the token.
//!
//! WebSockets: containerd's streaming server speaks the exec/attach
//! channel protocols up to `v4.channel.k8s.io` (and port-forward's
//! `v4.channel.k8s.io`) itself, so those are spliced. kubectl 1.31+ offers
//! only `v5.channel.k8s.io` (v4 plus a close signal for stdin), which is
//! translated to SPDY streams to the kubelet as kube-apiserver 1.30+ does
//! (see [`crate::spdy`]). Logs over WebSocket and kubectl's
//! SPDY-in-WebSocket port-forward tunnel are framed here (see
//! [`crate::ws`]).

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::request::{ResourcePath, percent_decode};
use crate::server::{Body, bytes_response, full};
use crate::state::ApiServer;
use crate::status::{ApiError, ApiResult};

/// The kubelet's port when the Node does not say.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `rp` is a subresource served by a kubelet, or pods/proxy and
/// services/proxy (served by [`crate::podproxy`]).
pub fn handles(rp: &ResourcePath) -> bool {
    let sub = rp.subresource.as_deref();
    crate::podproxy::handles(rp)
        || rp.info.group.is_empty()
            && rp.name.is_some()
            && match rp.info.plural {
                "pods" => matches!(sub, Some("log" | "exec" | "attach" | "portforward")),
                "nodes" => sub == Some("proxy"),
                _ => false,
            }
}

/// Query parameters in order (repeated keys kept).
pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The names of all containers of a pod (init, regular, ephemeral).
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| {
            pod.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container a request is for (↔ ValidateContainer and podHasContainerWithName).
pub fn pick_container(pod: &Value, pod_name: &str, requested: Option<&str>) -> ApiResult<String> {
    let name = match requested.filter(|c| !c.is_empty()) {
        Some(c) => c.to_string(),
        None => {
            let regular: Vec<String> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            match regular.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {pod_name}"
                    )));
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                        container_names(pod).join(" ")
                    )));
                }
            }
        }
    };
    if !container_names(pod).contains(&name) {
        return Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        )));
    }
    Ok(name)
}

/// The kubelet path and query for a pod subresource request.
pub fn kubelet_target(
    sub: &str,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
) -> String {
    let mut out: Vec<(String, String)> = Vec::new();
    let pass = |out: &mut Vec<(String, String)>, from: &str, to: &str| {
        for (k, v) in q {
            if k == from {
                out.push((to.to_string(), v.clone()));
            }
        }
    };
    let flag = |out: &mut Vec<(String, String)>, from: &str, to: &str| {
        if truthy(get(q, from)) {
            out.push((to.to_string(), "1".to_string()));
        }
    };
    let path = match sub {
        "log" => {
            for k in [
                "follow",
                "previous",
                "timestamps",
                "sinceSeconds",
                "sinceTime",
                "tailLines",
                "limitBytes",
            ] {
                if let Some(v) = get(q, k) {
                    out.push((k.to_string(), v.to_string()));
                }
            }
            format!(
                "/containerLogs/{}/{}/{}",
                encode(ns),
                encode(pod),
                encode(container)
            )
        }
        "exec" | "attach" => {
            flag(&mut out, "stdin", "input");
            flag(&mut out, "stdout", "output");
            flag(&mut out, "stderr", "error");
            flag(&mut out, "tty", "tty");
            if sub == "exec" {
                pass(&mut out, "command", "command");
            }
            format!(
                "/{sub}/{}/{}/{}",
                encode(ns),
                encode(pod),
                encode(container)
            )
        }
        _ => {
            pass(&mut out, "ports", "port");
            format!("/portForward/{}/{}", encode(ns), encode(pod))
        }
    };
    if out.is_empty() {
        path
    } else {
        format!("{path}?{}", encode_query(&out))
    }
}

/// The kubelet endpoint of a Node: its InternalIP (else another address)
/// and status.daemonEndpoints.kubeletEndpoint.Port.
pub fn kubelet_endpoint(node: &Value) -> Option<(String, u16)> {
    let addrs = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let by_type = |t: &str| {
        addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address"))
            .and_then(Value::as_str)
    };
    let host = by_type("InternalIP")
        .or_else(|| by_type("ExternalIP"))
        .or_else(|| by_type("Hostname"))?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((host, port))
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// A response body fed from a channel.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Accepts any certificate; signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn client_tls() -> ApiResult<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// The API server's client configuration towards kubelets: it presents
/// its `system:kube-apiserver-kubelet-client` certificate (no replayable
/// credential goes to whatever address a Node names), each kubelet
/// authorizes the call with a SubjectAccessReview, and the kubelet's
/// serving certificate must be issued by `kubelet_ca_pem` for the address
/// dialled (kube-apiserver's --kubelet-certificate-authority).
pub fn kubelet_client_tls(
    cert_pem: &str,
    key_pem: &str,
    kubelet_ca_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, crate::tls::TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|source| crate::tls::TlsError::Io {
            path: "client-kube-apiserver-kubelet-client.crt".into(),
            source,
        })?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|source| crate::tls::TlsError::Io {
            path: "client-kube-apiserver-kubelet-client.key".into(),
            source,
        })?
        .ok_or_else(|| {
            crate::tls::TlsError::Empty("client-kube-apiserver-kubelet-client.key".into())
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut kubelet_ca_pem.as_bytes()) {
        let der = der.map_err(|source| crate::tls::TlsError::Io {
            path: "the kubelet CA".into(),
            source,
        })?;
        roots.add(der)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Headers about the connection rather than the request: not relayed.
fn relayed(name: &header::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "content-length"
            | "transfer-encoding"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

/// Send a request to the kubelet at `host:port`.
pub(crate) async fn kubelet_request(
    server: &ApiServer,
    host: &str,
    port: u16,
    method: Method,
    target: &str,
    headers: &HeaderMap,
) -> ApiResult<Response<Incoming>> {
    let addr = format!("{host}:{port}");
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return Err(unavailable(format!(
                "error dialing backend: dial tcp {addr}: {e}"
            )));
        }
        Err(_) => {
            return Err(unavailable(format!(
                "error dialing backend: dial tcp {addr}: i/o timeout"
            )));
        }
    };
    let _ = tcp.set_nodelay(true);
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| ApiError::internal(format!("kubelet host {host:?}: {e}")))?,
    };
    let tls = tokio_rustls::TlsConnector::from(server.kubelet_tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| {
            unavailable(format!(
                "error dialing backend: TLS handshake with {addr}: {e}"
            ))
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
            .await
            .map_err(|e| unavailable(format!("error dialing backend: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    let mut req = Request::builder().method(method).uri(target);
    if let Ok(v) = HeaderValue::from_str(&addr) {
        req = req.header(header::HOST, v);
    }
    for (k, v) in headers {
        if relayed(k) {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(format!("error talking to the kubelet at {addr}: {e}")))
}

/// A kubelet's error answer as a Status (passed through when it is one).
async fn error_from(resp: Response<Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<Value>(&body)
        && v.get("kind").and_then(Value::as_str) == Some("Status")
        && let Some(message) = v.get("message").and_then(Value::as_str)
    {
        return ApiError::new(code, reason_for(code), message);
    }
    let text = String::from_utf8_lossy(&body).trim().to_string();
    ApiError::new(
        code,
        reason_for(code),
        if text.is_empty() {
            format!("the kubelet answered {code}")
        } else {
            text
        },
    )
}

/// Stream a kubelet's response body back.
fn stream_back(resp: Response<Incoming>) -> Response<Body> {
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut out = Response::new(relay(resp.into_body(), Vec::new()));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("text/plain")),
    );
    out
}

/// A body that streams `first` and then the rest of `body` as it comes
/// (a backend's answer passed on without buffering it).
pub(crate) fn relay(mut body: Incoming, first: Vec<u8>) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data()
                        && tx.send(data).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading from the proxied backend failed");
                    return;
                }
            }
        }
    });
    BodyExt::boxed(ChannelBody(rx))
}

/// Relay an upgraded kubelet connection: answer 101 with the kubelet's
/// headers and splice the two connections.
pub(crate) fn splice(
    client_upgrade: hyper::upgrade::OnUpgrade,
    resp: Response<Incoming>,
) -> Response<Body> {
    let mut out = Response::new(full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        if relayed(k) {
            out.headers_mut().append(k, v.clone());
        }
    }
    let kubelet_upgrade = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        match tokio::join!(client_upgrade, kubelet_upgrade) {
            (Ok(client), Ok(kubelet)) => {
                let mut client = TokioIo::new(client);
                let mut kubelet = TokioIo::new(kubelet);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                    tracing::debug!(error = %e, "stream relay ended with an error");
                }
            }
            (a, b) => {
                tracing::debug!(client = ?a.err(), kubelet = ?b.err(), "stream upgrade failed")
            }
        }
    });
    out
}

/// The options object of an exec, attach or port-forward request, as
/// admission sees it (PodExecOptions, PodAttachOptions,
/// PodPortForwardOptions).
fn connect_options(sub: &str, container: &str, q: &[(String, String)]) -> Option<Value> {
    let flag = |k: &str| truthy(get(q, k));
    match sub {
        "attach" | "exec" => {
            let mut o = serde_json::json!({
                "kind": if sub == "exec" { "PodExecOptions" } else { "PodAttachOptions" },
                "apiVersion": "v1",
                "stdin": flag("stdin"),
                "stdout": flag("stdout"),
                "stderr": flag("stderr"),
                "tty": flag("tty"),
                "container": container,
            });
            if sub == "exec" {
                let command: Vec<&str> = q
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.as_str())
                    .collect();
                o["command"] = serde_json::json!(command);
            }
            Some(o)
        }
        "portforward" => {
            let ports: Vec<u64> = q
                .iter()
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| v.split(','))
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            Some(
                serde_json::json!({"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": ports}),
            )
        }
        _ => None,
    }
}

pub(crate) async fn read_object(server: &ApiServer, key: &str) -> ApiResult<Option<Value>> {
    server.cache.sync().await?;
    Ok(server.cache.get(key).map(|o| o.value.clone()))
}

/// Serve a kubelet-backed subresource (see [`handles`]).
pub async fn handle(
    server: &Arc<ApiServer>,
    rp: ResourcePath,
    mut req: Request<Incoming>,
    user: &crate::authz::UserInfo,
) -> ApiResult<Response<Body>> {
    if crate::podproxy::handles(&rp) {
        return crate::podproxy::handle(server, rp, req).await;
    }
    let name = rp.name.clone().unwrap_or_default();
    let sub = rp.subresource.clone().unwrap_or_default();
    let q = parse_query(req.uri().query());
    let upgrade = is_upgrade(req.headers());
    let nodes = skiff_api::registry::registry()
        .lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let (node_name, target) = if rp.info.plural == "nodes" {
        // /api/v1/nodes/[{scheme}:]{name}[:{port}]/proxy/{path...}
        let (scheme, node_name, port) = crate::podproxy::split_scheme_name_port(&name)
            .ok_or_else(|| ApiError::bad_request(format!("invalid node request {name:?}")))?;
        let node = read_object(server, &nodes.key(None, node_name))
            .await?
            .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
        let (host, kubelet_port) = kubelet_endpoint(&node).ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node_name} has no address to reach its kubelet at"
            ))
        })?;
        crate::podproxy::proxyable_hostname(&host).await?;
        // ↔ node.ResourceLocation: another port than the kubelet's is a
        // plain proxy to the node's address.
        if !port.is_empty() && port != kubelet_port.to_string() {
            let loc = crate::podproxy::Location {
                https: scheme == "https",
                host,
                port: Some(port.to_string()),
            };
            return crate::podproxy::forward(req, &loc, 5).await;
        }
        let prefix = format!("/api/v1/nodes/{name}/proxy");
        let rest = req.uri().path().strip_prefix(&prefix).unwrap_or("/");
        let rest = if rest.is_empty() { "/" } else { rest };
        let target = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        (node_name.to_string(), target)
    } else {
        let ns = rp.namespace.clone().unwrap_or_else(|| "default".into());
        let pod = read_object(server, &rp.info.key(Some(&ns), &name))
            .await?
            .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
        let container = match sub.as_str() {
            "portforward" => String::new(),
            _ => pick_container(&pod, &name, get(&q, "container"))?,
        };
        // Admission of the CONNECT (↔ the connecter handler's Validate):
        // validating webhooks see the exec/attach/port-forward options.
        if let Some(options) = connect_options(&sub, &container, &q) {
            let attrs = crate::webhook::Attributes {
                operation: "CONNECT",
                info: rp.info,
                sub: Some(&sub),
                namespace: Some(&ns),
                name: &name,
                object: Some(&options),
                old: None,
                dry_run: false,
                user,
                field_manager: "",
                warnings: &crate::webhook::Discard,
            };
            crate::webhook::validate(server, &attrs).await?;
        }
        let node_name = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if node_name.is_empty() {
            if sub == "log" {
                // As kube-apiserver: no location, an empty log.
                return Ok(bytes_response(200, "text/plain", Bytes::new()));
            }
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        (node_name, kubelet_target(&sub, &ns, &name, &container, &q))
    };
    let node = read_object(server, &nodes.key(None, &node_name))
        .await?
        .ok_or_else(|| ApiError::not_found("", "nodes", &node_name))?;
    let (host, port) = kubelet_endpoint(&node).ok_or_else(|| {
        ApiError::bad_request(format!(
            "node {node_name} has no address to reach its kubelet at"
        ))
    })?;
    let method = if upgrade || rp.info.plural == "nodes" {
        req.method().clone()
    } else {
        Method::GET
    };
    let headers = req.headers().clone();
    if rp.info.plural == "pods" && crate::ws::is_websocket(req.headers()) {
        let offered = crate::ws::offered_protocols(req.headers());
        match sub.as_str() {
            "log" => return log_websocket(server, &host, port, &target, req, &offered).await,
            "portforward" if offered.iter().any(|p| p == crate::ws::SPDY_TUNNEL_PROTOCOL) => {
                return spdy_tunnel(server, &host, port, &target, req).await;
            }
            "exec" | "attach" if offered.iter().any(|p| p == V5_CHANNEL_PROTOCOL) => {
                let streams = crate::spdy::Streams {
                    stdin: truthy(get(&q, "stdin")),
                    stdout: truthy(get(&q, "stdout")),
                    stderr: truthy(get(&q, "stderr")),
                    tty: truthy(get(&q, "tty")),
                };
                return stream_translator(server, &host, port, &target, req, streams).await;
            }
            _ => {}
        }
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let resp = kubelet_request(server, &host, port, method, &target, &headers).await?;
    match client_upgrade {
        Some(on) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => Ok(splice(on, resp)),
        _ if resp.status().is_success() => Ok(stream_back(resp)),
        _ => Err(error_from(resp).await),
    }
}

/// kubectl 1.31+'s exec/attach subprotocol.
pub const V5_CHANNEL_PROTOCOL: &str = "v5.channel.k8s.io";
const V4_CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

/// The log stream's subprotocol (↔ wsstream.Reader's handshake): the
/// first offered one known, binary without an offer.
pub fn log_protocol(offered: &[String]) -> ApiResult<String> {
    if offered.is_empty() {
        return Ok(String::new());
    }
    offered
        .iter()
        .find(|p| {
            matches!(
                p.as_str(),
                crate::ws::BINARY_PROTOCOL | crate::ws::BASE64_BINARY_PROTOCOL
            )
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "requested protocol(s) are not supported: {offered:?}; supports [\"{}\" \"{}\"]",
                crate::ws::BINARY_PROTOCOL,
                crate::ws::BASE64_BINARY_PROTOCOL
            ))
        })
}

/// exec/attach over `v5.channel.k8s.io` (↔ StreamTranslator): the kubelet
/// gets the SPDY/3.1 `v4.channel.k8s.io` upgrade kubectl would have sent,
/// and [`crate::spdy::translate`] carries the streams between the two.
async fn stream_translator(
    server: &ApiServer,
    host: &str,
    port: u16,
    target: &str,
    mut req: Request<Incoming>,
    streams: crate::spdy::Streams,
) -> ApiResult<Response<Body>> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(V4_CHANNEL_PROTOCOL),
    );
    let resp = kubelet_request(server, host, port, Method::POST, target, &headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(error_from(resp).await);
    }
    let answer = crate::ws::switching_protocols(req.headers(), V5_CHANNEL_PROTOCOL)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    crate::spdy::translate(
        hyper::upgrade::on(&mut req),
        hyper::upgrade::on(resp),
        streams,
    );
    Ok(answer)
}

/// pods/log over WebSocket: the log is read from the kubelet as usual and
/// each chunk sent as a message.
async fn log_websocket(
    server: &ApiServer,
    host: &str,
    port: u16,
    target: &str,
    mut req: Request<Incoming>,
    offered: &[String],
) -> ApiResult<Response<Body>> {
    let protocol = log_protocol(offered)?;
    let resp = kubelet_request(server, host, port, Method::GET, target, &HeaderMap::new()).await?;
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    let answer = crate::ws::switching_protocols(req.headers(), &protocol)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    crate::ws::serve_log(hyper::upgrade::on(&mut req), resp.into_body(), protocol);
    Ok(answer)
}

/// Port-forward as kubectl 1.31+ asks for it: SPDY tunnelled in a
/// WebSocket. The kubelet gets the SPDY/3.1 upgrade kubectl would have
/// sent; its connection is carried in the WebSocket's binary messages.
async fn spdy_tunnel(
    server: &ApiServer,
    host: &str,
    port: u16,
    target: &str,
    mut req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static("portforward.k8s.io"),
    );
    let resp = kubelet_request(server, host, port, Method::POST, target, &headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(error_from(resp).await);
    }
    let answer = crate::ws::switching_protocols(req.headers(), crate::ws::SPDY_TUNNEL_PROTOCOL)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    crate::ws::serve_tunnel(hyper::upgrade::on(&mut req), hyper::upgrade::on(resp));
    Ok(answer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Vec<(String, String)> {
        parse_query(Some(s))
    }

    #[test]
    fn maps_queries_to_the_kubelet() {
        let t = kubelet_target(
            "exec",
            "default",
            "p",
            "c",
            &q("command=sh&command=-c&command=exit+3&stdin=true&stdout=true&tty=false&container=c"),
        );
        assert_eq!(
            t,
            "/exec/default/p/c?input=1&output=1&command=sh&command=-c&command=exit%203"
        );
        let t = kubelet_target(
            "log",
            "ns",
            "p",
            "c",
            &q("container=c&follow=true&tailLines=5&previous=false"),
        );
        assert_eq!(
            t,
            "/containerLogs/ns/p/c?follow=true&previous=false&tailLines=5"
        );
        assert_eq!(
            kubelet_target("portforward", "ns", "p", "", &q("ports=8080&ports=9090")),
            "/portForward/ns/p?port=8080&port=9090"
        );
        assert_eq!(
            kubelet_target(
                "attach",
                "ns",
                "p",
                "c",
                &q("stdin=1&stdout=1&stderr=1&tty=1")
            ),
            "/attach/ns/p/c?input=1&output=1&error=1&tty=1"
        );
    }

    #[test]
    fn picks_containers_as_kubernetes() {
        let one = json!({"spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "init"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "app");
        assert_eq!(pick_container(&one, "p", Some("init")).unwrap(), "init");
        let e = pick_container(&one, "p", Some("nope")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container nope is not valid for pod p")
        );
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            pick_container(&two, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
    }

    #[test]
    fn finds_the_kubelet_endpoint() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 41000}}}});
        assert_eq!(kubelet_endpoint(&n), Some(("10.0.0.5".into(), 41000)));
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(kubelet_endpoint(&n), Some(("n1".into(), 10250)));
        assert_eq!(kubelet_endpoint(&json!({})), None);
    }

    #[test]
    fn negotiates_the_log_subprotocol() {
        let offer = |ps: &[&str]| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(log_protocol(&[]).unwrap(), "");
        assert_eq!(
            log_protocol(&offer(&["x", "base64.binary.k8s.io"])).unwrap(),
            "base64.binary.k8s.io"
        );
        assert_eq!(
            log_protocol(&offer(&["v4.channel.k8s.io"]))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn builds_the_client_tls() {
        client_tls().unwrap();
    }
}
