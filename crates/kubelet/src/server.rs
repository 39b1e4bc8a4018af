//! The kubelet API (↔ pkg/kubelet/server): HTTPS on port 10250 for the
//! API server, with a serving certificate from the cluster CA
//! ([`crate::serving`]); callers authenticate with client certificates
//! and each call is authorized by a SubjectAccessReview. `/healthz`,
//! `/pods`, `/containerLogs/{ns}/{pod}/{container}` (CRI log files, see
//! [`crate::logs`]), and `/exec`, `/attach`, `/portForward`, which ask the
//! runtime for a CRI streaming URL and then relay the client's upgraded
//! connection (SPDY/3.1) to containerd's streaming server byte for byte.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::logs::{self, LogOptions};
use crate::runtime::{
    Container, ContainerState, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, Labels, Runtime, SandboxState, StreamRequest,
};

/// The kubelet's port.
pub const DEFAULT_PORT: u16 = 10250;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("generating the kubelet certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("kubelet TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening on port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
}

/// What the API serves from.
pub struct KubeletApi {
    pub runtime: Arc<dyn Runtime>,
    pub client: kube::Client,
    pub node_name: String,
    /// The bearer token callers must present when clients are not
    /// verified by certificate; without either every request but /healthz
    /// is refused.
    pub token: Option<String>,
    /// Callers present client certificates from the cluster CA (the API
    /// server's `system:kube-apiserver-kubelet-client`), and each call is
    /// authorized with a SubjectAccessReview, as the kubelet's webhook
    /// authorizer does; the token is then not accepted.
    pub verify_clients: bool,
    /// SubjectAccessReview answers, cached as the kubelet caches them
    /// (allowed 5 minutes, denied 30 seconds).
    pub decisions: std::sync::Mutex<
        std::collections::HashMap<(String, String, String), (bool, std::time::Instant)>,
    >,
    /// Where the pods' log directories are (`<ns>_<name>_<uid>`).
    pub log_root: PathBuf,
}

/// An error answered as plain text, as the kubelet does; the API server
/// turns it into a Status.
#[derive(Debug)]
struct HttpError {
    code: u16,
    message: String,
}

fn err(code: u16, message: impl Into<String>) -> HttpError {
    HttpError {
        code,
        message: message.into(),
    }
}

fn text(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response body fed from a channel (streamed logs).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

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

/// The kubelet API's TLS configuration: the serving certificate `cert`
/// presents (see [`crate::serving`]); with `client_ca` (PEM), client
/// certificates signed by it are verified (and required for everything
/// but /healthz).
pub fn tls_config(
    cert: Arc<dyn rustls::server::ResolvesServerCert>,
    client_ca: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in rustls_pemfile::certs(&mut pem.as_bytes()).flatten() {
                roots.add(der)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(cert)
        }
        None => builder.with_no_client_auth().with_cert_resolver(cert),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Listen on `port` on all addresses; when the port is taken (another
/// kubelet on this machine), on a free one, which the Node advertises.
pub async fn bind(port: u16) -> Result<TcpListener, ServerError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
            tracing::warn!(
                port,
                "the kubelet port is in use; listening on a free port instead"
            );
            TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .await
                .map_err(|source| ServerError::Listen { port: 0, source })
        }
        Err(source) => Err(ServerError::Listen { port, source }),
    }
}

/// Serve the kubelet API on `listener` until dropped.
/// A kubelet API connection must finish its TLS handshake within this...
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// ...send each request's headers within this (from the end of the
/// previous response, so it is also the idle timeout), and at most this
/// many are open at once (security review D1; the API server's limits).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(100);
const MAX_CONNECTIONS: usize = 4_096;

pub async fn serve(api: Arc<KubeletApi>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "kubelet API: too many open connections, closing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "kubelet API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "kubelet API TLS handshake timed out");
                    return;
                }
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| cert_user(leaf))
                .map(Arc::new);
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(api, req, user).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user (CN) and groups (O) of a verified client certificate.
fn cert_user(der: &[u8]) -> Option<(String, Vec<String>)> {
    skiff_api::x509::certificate_subject(der).map(|s| (s.common_name, s.organizations))
}

/// What a kubelet API request asks for, as the kubelet's authorizer
/// reads it (pkg/kubelet/server/auth.go): the verb from the method, the
/// `nodes` subresource from the path.
pub fn request_attributes(method: &Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let sub = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        "configz" => "configz",
        _ => "proxy",
    };
    (verb, sub)
}

const ALLOWED_TTL: std::time::Duration = std::time::Duration::from_secs(300);
const DENIED_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// 401 when the caller is not authenticated, 403 when it may not; None
/// when it may.
async fn authorize(
    api: &KubeletApi,
    req: &Request<Incoming>,
    user: Option<&(String, Vec<String>)>,
) -> Option<(u16, String)> {
    if !api.verify_clients {
        return (!token_matches(api, req)).then(|| (401, "Unauthorized".to_string()));
    }
    let Some((name, groups)) = user else {
        return Some((401, "Unauthorized".to_string()));
    };
    let (verb, sub) = request_attributes(req.method(), req.uri().path());
    let key = (
        format!("{name}\0{}", groups.join(",")),
        verb.to_string(),
        sub.to_string(),
    );
    let cached = api.decisions.lock().ok().and_then(|d| {
        d.get(&key)
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(a, _)| *a)
    });
    let allowed = match cached {
        Some(a) => a,
        None => {
            let review: k8s_openapi::api::authorization::v1::SubjectAccessReview =
                match serde_json::from_value(serde_json::json!({
                    "spec": {"user": name, "groups": groups, "resourceAttributes": {
                        "verb": verb, "resource": "nodes", "subresource": sub, "name": api.node_name}}
                })) {
                    Ok(r) => r,
                    Err(e) => return Some((500, e.to_string())),
                };
            let reviews: Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> =
                Api::all(api.client.clone());
            let allowed = match reviews.create(&Default::default(), &review).await {
                Ok(r) => r.status.is_some_and(|s| s.allowed),
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: SubjectAccessReview failed");
                    return Some((
                        500,
                        format!(
                            "Authorization error (user={name}, verb={verb}, resource=nodes, subresource={sub})"
                        ),
                    ));
                }
            };
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if let Ok(mut d) = api.decisions.lock() {
                d.insert(key, (allowed, std::time::Instant::now() + ttl));
            }
            allowed
        }
    };
    (!allowed).then(|| {
        (
            403,
            format!("Forbidden (user={name}, verb={verb}, resource=nodes, subresource={sub})"),
        )
    })
}

fn token_matches(api: &KubeletApi, req: &Request<Incoming>) -> bool {
    let Some(token) = api.token.as_deref().filter(|t| !t.is_empty()) else {
        return false;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
}

/// Query parameters in order, percent-decoded ('+' is a space).
pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => match (
                    (b[i + 1] as char).to_digit(16),
                    (b[i + 2] as char).to_digit(16),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Go's strconv.ParseBool truths.
    fn flag(&self, names: &[&str]) -> bool {
        names.iter().any(|n| {
            matches!(
                self.get(n),
                Some("1" | "t" | "T" | "true" | "TRUE" | "True")
            )
        })
    }

    fn int(&self, k: &str) -> Result<Option<i64>, HttpError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| err(400, format!("invalid value for {k}: {v:?}"))),
        }
    }
}

async fn handle(
    api: Arc<KubeletApi>,
    req: Request<Incoming>,
    user: Option<Arc<(String, Vec<String>)>>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(200, "ok");
    }
    if let Some((code, message)) = authorize(&api, &req, user.as_deref()).await {
        return text(code, message);
    }
    let query = Query(parse_query(req.uri().query()));
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method().clone();
    let result = match (&method, segs.as_slice()) {
        (&Method::GET, ["pods"]) => api.pods().await,
        (&Method::GET, ["stats", "summary"]) => api.stats_summary().await,
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            api.container_logs(ns, pod, container, &query).await
        }
        (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
            match api.stream_url(ns, pod, container, &query, true).await {
                Ok(url) => relay_upgrade(req, &url).await,
                Err(e) => Err(e),
            }
        }
        (&Method::GET | &Method::POST, ["attach", ns, pod, container]) => {
            match api.stream_url(ns, pod, container, &query, false).await {
                Ok(url) => relay_upgrade(req, &url).await,
                Err(e) => Err(e),
            }
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
            match api.port_forward_url(ns, pod, &query).await {
                Ok(url) => relay_upgrade(req, &url).await,
                Err(e) => Err(e),
            }
        }
        _ => Err(err(404, "404 page not found")),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%path, code = e.code, message = %e.message, "kubelet API error");
            text(e.code, e.message)
        }
    }
}

fn runtime_err(e: crate::runtime::RuntimeError) -> HttpError {
    err(500, e.to_string())
}

impl KubeletApi {
    /// The Summary API (what metrics-server scrapes).
    async fn stats_summary(&self) -> Result<Response<Body>, HttpError> {
        let mine: Labels = [(LABEL_NODE.to_string(), self.node_name.clone())].into();
        let stats = self
            .runtime
            .container_stats(&mine)
            .await
            .map_err(runtime_err)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let body =
            crate::stats::summary(&self.node_name, &crate::stats::NodeUsage::read(now), &stats);
        let mut r = text(200, serde_json::to_vec(&body).unwrap_or_default());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }

    async fn pods(&self) -> Result<Response<Body>, HttpError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node_name)))
            .await
            .map_err(|e| err(500, format!("listing pods: {e}")))?;
        let body = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list.items});
        let mut r = text(200, serde_json::to_vec(&body).unwrap_or_default());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }

    /// The containers named `container` of the newest incarnation (UID)
    /// of pod `ns/pod`, oldest attempt first.
    async fn containers(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<Container>, HttpError> {
        let labels: Labels = [
            (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
            (LABEL_POD_NAME.to_string(), pod.to_string()),
            (LABEL_CONTAINER_NAME.to_string(), container.to_string()),
            (LABEL_NODE.to_string(), self.node_name.clone()),
        ]
        .into();
        let mut list = self
            .runtime
            .list_containers(&labels)
            .await
            .map_err(runtime_err)?;
        let Some(uid) = list
            .iter()
            .max_by_key(|c| c.created_at)
            .and_then(|c| c.labels.get(LABEL_POD_UID).cloned())
        else {
            return Ok(Vec::new());
        };
        list.retain(|c| c.labels.get(LABEL_POD_UID) == Some(&uid));
        list.sort_by_key(|c| (c.attempt, c.created_at));
        Ok(list)
    }

    async fn container_logs(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        q: &Query,
    ) -> Result<Response<Body>, HttpError> {
        let mut opts = LogOptions {
            tail_lines: q.int("tailLines")?.filter(|n| *n >= 0).map(|n| n as u64),
            timestamps: q.flag(&["timestamps"]),
            since: None,
            limit_bytes: q.int("limitBytes")?.filter(|n| *n > 0).map(|n| n as u64),
            follow: q.flag(&["follow"]),
        };
        if let Some(secs) = q.int("sinceSeconds")? {
            opts.since = jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(secs.max(0)))
                .ok();
        }
        if let Some(t) = q.get("sinceTime").filter(|t| !t.is_empty()) {
            opts.since = Some(
                t.parse()
                    .map_err(|e| err(400, format!("invalid sinceTime {t:?}: {e}")))?,
            );
        }
        let previous = q.flag(&["previous"]);
        let containers = self.containers(ns, pod, container).await?;
        let Some(current) = containers.last() else {
            return Err(err(
                400,
                format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                ),
            ));
        };
        let uid = current
            .labels
            .get(LABEL_POD_UID)
            .cloned()
            .unwrap_or_default();
        let dir = self.log_root.join(format!("{ns}_{pod}_{uid}"));
        let (attempt, follow_id) = if previous {
            let prev = logs::attempts(&dir, container)
                .into_iter()
                .rfind(|a| *a < current.attempt);
            match prev {
                Some(a) => (a, None),
                None => {
                    return Err(err(
                        400,
                        format!(
                            "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                        ),
                    ));
                }
            }
        } else {
            (current.attempt, Some(current.id.clone()))
        };
        let path = logs::log_file(&dir, container, attempt);
        if !path.exists() {
            return Ok(text(200, Bytes::new()));
        }
        opts.follow = opts.follow && follow_id.is_some();
        let (tx, rx) = mpsc::channel(16);
        let runtime = self.runtime.clone();
        let id = follow_id.unwrap_or_default();
        tokio::spawn(async move {
            let running = move || -> futures::future::BoxFuture<'static, bool> {
                let runtime = runtime.clone();
                let id = id.clone();
                Box::pin(async move {
                    matches!(runtime.container_status(&id).await, Ok(s) if s.state == ContainerState::Running)
                })
            };
            if let Err(e) = logs::stream_log(&path, opts, tx, running).await {
                tracing::debug!(path = %path.display(), error = %e, "reading a container log failed");
            }
        });
        let mut r = Response::new(ChannelBody(rx).boxed_unsync());
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(r)
    }

    /// The runtime's streaming URL for an exec (or attach) as the query asks.
    async fn stream_url(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        q: &Query,
        exec: bool,
    ) -> Result<String, HttpError> {
        let tty = q.flag(&["tty"]);
        let stdin = q.flag(&["input", "stdin"]);
        let stdout = q.flag(&["output", "stdout"]);
        // As the kubelet does: no separate stderr stream with a terminal.
        let stderr = q.flag(&["error", "stderr"]) && !tty;
        if !stdin && !stdout && !stderr {
            return Err(err(
                400,
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        let command = q.all("command");
        if exec && command.is_empty() {
            return Err(err(
                400,
                "you must specify at least one command for the container",
            ));
        }
        let containers = self.containers(ns, pod, container).await?;
        let c = containers
            .last()
            .ok_or_else(|| err(404, format!("container not found (\"{container}\")")))?;
        if c.state != ContainerState::Running {
            return Err(err(400, format!("container {container} is not running")));
        }
        let request = StreamRequest {
            container_id: c.id.clone(),
            command,
            tty,
            stdin,
            stdout,
            stderr,
        };
        let url = if exec {
            self.runtime.exec(&request).await
        } else {
            self.runtime.attach(&request).await
        };
        url.map_err(runtime_err)
    }

    async fn port_forward_url(&self, ns: &str, pod: &str, q: &Query) -> Result<String, HttpError> {
        let labels: Labels = [
            (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
            (LABEL_POD_NAME.to_string(), pod.to_string()),
            (LABEL_NODE.to_string(), self.node_name.clone()),
        ]
        .into();
        let sandboxes = self
            .runtime
            .list_sandboxes(&labels)
            .await
            .map_err(runtime_err)?;
        let sandbox = sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| err(404, format!("pod \"{pod}\" not found")))?;
        let mut ports = Vec::new();
        for p in q.all("port") {
            for p in p.split(',').filter(|p| !p.is_empty()) {
                ports.push(
                    p.parse::<i32>()
                        .map_err(|_| err(400, format!("unable to parse {p:?} as a port")))?,
                );
            }
        }
        self.runtime
            .port_forward(&sandbox.id, &ports)
            .await
            .map_err(runtime_err)
    }
}

/// Headers that describe the connection, not the request: not relayed.
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

/// Replay an upgrade request to the runtime's streaming server at `url`,
/// and once both sides switched protocols, copy bytes both ways. A refusal
/// of the streaming server is answered as it was given.
async fn relay_upgrade(mut req: Request<Incoming>, url: &str) -> Result<Response<Body>, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| err(500, format!("the runtime's streaming URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(err(
            500,
            format!("unsupported streaming URL {url:?} (only http is relayed)"),
        ));
    }
    let host = uri
        .host()
        .unwrap_or("127.0.0.1")
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let client_upgrade = hyper::upgrade::on(&mut req);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| {
            err(
                500,
                format!("connecting to the streaming server {url}: {e}"),
            )
        })?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| err(500, format!("streaming server handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended with an error");
        }
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut up = Request::builder().method(req.method().clone()).uri(path);
    if let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        up = up.header(header::HOST, v);
    }
    for (k, v) in req.headers() {
        if relayed(k) {
            up = up.header(k, v);
        }
    }
    let up = up.body(Empty::new()).map_err(|e| err(500, e.to_string()))?;
    let resp = sender
        .send_request(up)
        .await
        .map_err(|e| err(500, format!("streaming server request: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut r = text(status.as_u16(), body);
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return Ok(r);
    }
    let mut out = Response::new(Empty::new().boxed_unsync());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        if relayed(k) {
            out.headers_mut().append(k, v.clone());
        }
    }
    let runtime_upgrade = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        match tokio::join!(client_upgrade, runtime_upgrade) {
            (Ok(client), Ok(runtime)) => {
                let mut client = TokioIo::new(client);
                let mut runtime = TokioIo::new(runtime);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut runtime).await {
                    tracing::debug!(error = %e, "stream relay ended with an error");
                }
            }
            (a, b) => {
                tracing::debug!(client = ?a.err(), runtime = ?b.err(), "stream upgrade failed")
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries() {
        let q = Query(parse_query(Some(
            "command=sh&command=-c&command=exit+3%3B%20x&input=1&tty=true&output=0&bad=%zz",
        )));
        assert_eq!(q.all("command"), vec!["sh", "-c", "exit 3; x"]);
        assert!(q.flag(&["input"]));
        assert!(q.flag(&["tty"]));
        assert!(!q.flag(&["output"]));
        assert!(!q.flag(&["error", "stderr"]));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert!(
            Query(parse_query(Some("tailLines=x")))
                .int("tailLines")
                .is_err()
        );
    }

    #[test]
    fn compares_tokens() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    #[test]
    fn requests_map_to_node_subresources_as_the_kubelet_authorizer() {
        assert_eq!(
            request_attributes(&Method::GET, "/stats/summary"),
            ("get", "stats")
        );
        assert_eq!(
            request_attributes(&Method::GET, "/metrics/cadvisor"),
            ("get", "metrics")
        );
        assert_eq!(
            request_attributes(&Method::GET, "/logs/syslog"),
            ("get", "log")
        );
        assert_eq!(
            request_attributes(&Method::POST, "/exec/ns/p/c"),
            ("create", "proxy")
        );
        assert_eq!(
            request_attributes(&Method::GET, "/containerLogs/ns/p/c"),
            ("get", "proxy")
        );
        assert_eq!(request_attributes(&Method::GET, "/pods"), ("get", "proxy"));
    }

    /// Security review D1: a connection that never completes its TLS
    /// handshake is closed (paused time: the timeout passes at once).
    #[tokio::test(start_paused = true)]
    async fn a_caller_that_never_handshakes_is_disconnected() {
        use tokio::io::AsyncReadExt as _;
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let api = Arc::new(KubeletApi {
            runtime: Arc::new(crate::fake::FakeRuntime::default()),
            client: kube::Client::try_from(config).unwrap(),
            node_name: "n1".into(),
            token: None,
            verify_clients: false,
            decisions: Default::default(),
            log_root: std::env::temp_dir(),
        });
        let cert = crate::serving::self_signed_for_tests("n1", "127.0.0.1");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(api, listener, tls_config(cert, None).unwrap()));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT * 2, tcp.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        server.abort();
    }

    #[test]
    fn makes_a_certificate() {
        let cert = crate::serving::self_signed_for_tests("n1", "127.0.0.1");
        tls_config(cert, None).unwrap();
    }
}
