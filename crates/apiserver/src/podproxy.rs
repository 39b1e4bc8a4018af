//! pods/proxy and services/proxy (↔ pkg/registry/core/pod/rest ProxyREST,
//! pkg/registry/core/service ProxyREST, their ResourceLocation, and
//! k8s.io/apimachinery's UpgradeAwareHandler with the link-rewriting
//! transport): `/api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy/PATH`
//! is forwarded to the pod IP, the service form to a ready endpoint
//! address of the named (or numbered) service port. Every method, the
//! query and the body go through; the answer streams back. The API server
//! runs on a node and reaches pod IPs directly (its own node's bridge,
//! routes to the other nodes' pod CIDRs). `https:` dials TLS without
//! verifying the backend, as kube-apiserver's proxy transport does.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxy::{client_tls, read_object, relay};
use crate::request::ResourcePath;
use crate::rewrite::Rewriter;
use crate::server::{Body, full};
use crate::state::ApiServer;
use crate::status::ApiError;

/// HTML pages larger than this are passed through without link rewriting.
const MAX_REWRITE: usize = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `rp` is pods/proxy or services/proxy.
pub fn handles(rp: &ResourcePath) -> bool {
    rp.info.group.is_empty()
        && rp.name.is_some()
        && rp.subresource.as_deref() == Some("proxy")
        && matches!(rp.info.plural, "pods" | "services")
}

/// `[scheme:]name[:port]` (↔ utilnet.SplitSchemeNamePort).
pub fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// Where a proxied request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub https: bool,
    pub host: String,
    /// None: the scheme's default port.
    pub port: Option<String>,
}

impl Location {
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

fn pod_ip(pod: &Value) -> Option<&str> {
    pod.pointer("/status/podIPs/0/ip")
        .or_else(|| pod.pointer("/status/podIP"))
        .and_then(Value::as_str)
}

/// Go's net.IP.IsGlobalUnicast (what proxyutil.IsProxyableIP allows).
pub(crate) fn global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// ↔ proxyutil.IsProxyableHostname: every address `host` resolves to may
/// be proxied to (no loopback, link-local or other special address), so
/// a Node object cannot turn the API server against its own host.
pub(crate) async fn proxyable_hostname(host: &str) -> Result<(), ApiError> {
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| ApiError::bad_request(format!("lookup {host}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ApiError::bad_request("no addresses for hostname"));
    }
    if addrs.into_iter().all(global_unicast) {
        Ok(())
    } else {
        Err(ApiError::bad_request("address not allowed"))
    }
}

/// The pod's location (↔ pod.ResourceLocation): the port asked for, else
/// the first declared container port, else the scheme's default.
pub fn pod_location(pod: &Value, scheme: &str, port: &str) -> Result<Location, ApiError> {
    let mut port = port.to_string();
    if port.is_empty()
        && let Some(p) = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find_map(|c| c.pointer("/ports/0/containerPort").and_then(Value::as_i64))
            })
    {
        port = p.to_string();
    }
    let ip = pod_ip(pod).unwrap_or_default();
    match ip.parse::<IpAddr>() {
        Ok(addr) if global_unicast(addr) => {}
        _ => return Err(ApiError::bad_request("address not allowed")),
    }
    Ok(Location {
        https: scheme == "https",
        host: ip.to_string(),
        port: (!port.is_empty()).then_some(port),
    })
}

/// The service's location (↔ service REST ResourceLocation): a port number
/// is first turned into the service port's name, then a ready address of
/// an Endpoints subset with a port of that name is picked at random.
pub fn service_location(
    id: &str,
    svc_name: &str,
    scheme: &str,
    port: &str,
    service: Option<&Value>,
    endpoints: Option<&Value>,
    pod_exists: impl Fn(&Value) -> bool,
) -> Result<Location, ApiError> {
    let mut port_name = port.to_string();
    if let Ok(num) = port.parse::<i64>() {
        let svc = service.ok_or_else(|| ApiError::not_found("", "services", svc_name))?;
        let named = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("port").and_then(Value::as_i64) == Some(num))
            })
            .map(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            });
        port_name = named.ok_or_else(|| {
            unavailable(format!(
                "no service port {num} found for service {svc_name:?}"
            ))
        })?;
    }
    let eps = endpoints.ok_or_else(|| ApiError::not_found("", "endpoints", svc_name))?;
    let subsets = eps
        .get("subsets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if subsets.is_empty() {
        return Err(unavailable(format!(
            "no endpoints available for service {svc_name:?}"
        )));
    }
    let mut rng = rand::rng();
    let seed = rng.random_range(0..subsets.len());
    for k in 0..subsets.len() {
        let ss = &subsets[(seed + k) % subsets.len()];
        let addrs = ss
            .get("addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if addrs.is_empty() {
            continue;
        }
        let ports = ss
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in &ports {
            if p.get("name").and_then(Value::as_str).unwrap_or_default() != port_name {
                continue;
            }
            let Some(num) = p.get("port").and_then(Value::as_i64) else {
                continue;
            };
            let a_seed = rng.random_range(0..addrs.len());
            for t in 0..addrs.len() {
                let addr = &addrs[(a_seed + t) % addrs.len()];
                if !pod_exists(addr) {
                    continue;
                }
                if let Some(ip) = addr.get("ip").and_then(Value::as_str) {
                    return Ok(Location {
                        https: scheme == "https",
                        host: ip.to_string(),
                        port: Some(num.to_string()),
                    });
                }
            }
        }
    }
    Err(unavailable(format!(
        "no endpoints available for service {id:?}"
    )))
}

/// The request path split after its first `segments` segments (the API
/// path up to `/proxy`) and the proxied path (percent-encoding kept).
fn proxied_path(full_path: &str, segments: usize) -> (&str, &str) {
    let mut seen = 0;
    for (i, b) in full_path.bytes().enumerate().skip(1) {
        if b == b'/' {
            seen += 1;
            if seen == segments {
                return full_path.split_at(i);
            }
        }
    }
    (full_path, "")
}

/// Hop-by-hop headers and the credentials: not sent on (↔ httputil
/// ReverseProxy's removal and the authentication filter's).
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "proxy-connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

fn returned(name: &HeaderName) -> bool {
    forwarded(name)
        && !matches!(
            name.as_str(),
            "access-control-allow-credentials"
                | "access-control-allow-headers"
                | "access-control-allow-methods"
                | "access-control-allow-origin"
        )
}

/// 503 without Retry-After (↔ errors.NewServiceUnavailable), so clients
/// do not retry on their own.
fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

fn unreachable(e: impl std::fmt::Display) -> ApiError {
    unavailable(format!("error trying to reach service: {e}"))
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn dial(loc: &Location) -> Result<Box<dyn Io>, ApiError> {
    let port: u16 = match &loc.port {
        None => {
            if loc.https {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse().map_err(|_| {
            unreachable(format!(
                "dial tcp: address {}: invalid port",
                loc.authority()
            ))
        })?,
    };
    let addr = loc.authority();
    let tcp = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((loc.host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(unreachable(format!("dial tcp {addr}: {e}"))),
        Err(_) => return Err(unreachable(format!("dial tcp {addr}: i/o timeout"))),
    };
    let _ = tcp.set_nodelay(true);
    if !loc.https {
        return Ok(Box::new(tcp));
    }
    let name = match loc.host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(loc.host.clone())
            .map_err(|e| ApiError::internal(format!("backend host {:?}: {e}", loc.host)))?,
    };
    let tls = tokio_rustls::TlsConnector::from(client_tls()?)
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(format!("tls handshake with {addr}: {e}")))?;
    Ok(Box::new(tls))
}

/// Serve pods/proxy or services/proxy.
pub async fn handle(
    server: &Arc<ApiServer>,
    rp: ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let id = rp.name.clone().unwrap_or_default();
    let ns = rp.namespace.clone().unwrap_or_else(|| "default".into());
    let kind = if rp.info.plural == "pods" {
        "pod"
    } else {
        "service"
    };
    let (scheme, name, port) = split_scheme_name_port(&id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid {kind} request {id:?}")))?;
    let loc = if rp.info.plural == "pods" {
        let pod = read_object(server, &rp.info.key(Some(&ns), name))
            .await?
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        pod_location(&pod, scheme, port)?
    } else {
        let service = read_object(server, &rp.info.key(Some(&ns), name)).await?;
        let eps_info = skiff_api::registry::registry()
            .lookup("", "v1", "endpoints")
            .ok_or_else(|| ApiError::internal("no endpoints resource"))?;
        let pods_info = skiff_api::registry::registry()
            .lookup("", "v1", "pods")
            .ok_or_else(|| ApiError::internal("no pods resource"))?;
        let endpoints = server
            .cache
            .get(&eps_info.key(Some(&ns), name))
            .map(|o| o.value.clone());
        let cache = &server.cache;
        service_location(
            &id,
            name,
            scheme,
            port,
            service.as_ref(),
            endpoints.as_ref(),
            |addr| {
                // ↔ isValidAddress: a Pod target must exist with that IP.
                match addr.get("targetRef") {
                    Some(t) if t.get("kind").and_then(Value::as_str) == Some("Pod") => {
                        let tns = t.get("namespace").and_then(Value::as_str).unwrap_or(&ns);
                        let tname = t.get("name").and_then(Value::as_str).unwrap_or_default();
                        cache
                            .get(&pods_info.key(Some(tns), tname))
                            .is_some_and(|p| {
                                let ip = addr.get("ip").and_then(Value::as_str);
                                let ips: Vec<&str> = p
                                    .value
                                    .pointer("/status/podIPs")
                                    .and_then(Value::as_array)
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(|i| i.get("ip").and_then(Value::as_str))
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                ip.is_some_and(|ip| {
                                    ips.contains(&ip) || pod_ip(&p.value) == Some(ip)
                                })
                            })
                    }
                    _ => true,
                }
            },
        )?
    };

    // /api/v1/namespaces/NS/PLURAL/ID/proxy: 7 segments.
    forward(req, &loc, 7).await
}

/// Send `req` on to `loc` (↔ UpgradeAwareHandler.ServeHTTP with the
/// rewriting transport); the API path is the request path's first
/// `segments` segments, the rest is the backend's path.
pub async fn forward(
    mut req: Request<Incoming>,
    loc: &Location,
    segments: usize,
) -> Result<Response<Body>, ApiError> {
    let full_path = req.uri().path().to_string();
    let (prefix, mut path) = proxied_path(&full_path, segments);
    let raw_query = req.uri().query().map(str::to_string);
    let upgrade = req.headers().contains_key(header::UPGRADE);
    // ↔ proxyRedirectsforRootPath: GET/HEAD of ".../proxy" answer 301 to ".../proxy/".
    if path.is_empty() && !upgrade && matches!(*req.method(), Method::GET | Method::HEAD) {
        let location = match &raw_query {
            Some(q) if !q.is_empty() => format!("{full_path}/?{q}"),
            _ => format!("{full_path}/"),
        };
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(resp);
    }
    if path.is_empty() {
        path = "/";
    }
    let target = match &raw_query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let request_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let rewriter = Rewriter {
        path_prepend: prefix.to_string(),
        backend_host: loc.authority(),
        request_host: request_host.clone(),
    };

    let io = dial(loc).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(io))
        .await
        .map_err(unreachable)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxied backend connection ended with an error");
        }
    });
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = Request::builder().method(parts.method.clone()).uri(&target);
    let host_header = if request_host.is_empty() {
        loc.authority()
    } else {
        request_host.clone()
    };
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        out = out.header(header::HOST, v);
    }
    let keep: fn(&HeaderName) -> bool = if upgrade {
        // An upgrade keeps Connection/Upgrade (as tryUpgrade sends the request as it is).
        |n| !matches!(n.as_str(), "host" | "authorization" | "content-length")
    } else {
        forwarded
    };
    for (k, v) in &parts.headers {
        if keep(k) {
            out = out.header(k, v);
        }
    }
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        out = out.header(header::CONTENT_LENGTH, len);
    }
    let mut forwarded_uri = path_join(prefix, path);
    if path.ends_with('/') && !forwarded_uri.ends_with('/') {
        forwarded_uri.push('/');
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded_uri) {
        out = out.header("x-forwarded-uri", v);
    }
    let out = out
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender.send_request(out).await.map_err(unreachable)?;

    if let Some(on) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return Ok(crate::proxy::splice(on, resp));
    }
    respond(resp, &rewriter).await
}

fn path_join(prefix: &str, path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for s in prefix.split('/').chain(path.split('/')) {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/"))
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if returned(k) {
            to.append(k, v.clone());
        }
    }
}

/// The backend's answer, with its Location or HTML links rewritten.
async fn respond(resp: Response<Incoming>, rw: &Rewriter) -> Result<Response<Body>, ApiError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut out_headers = HeaderMap::new();
    copy_headers(&headers, &mut out_headers);
    if let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        if let Ok(v) = HeaderValue::from_str(&rw.url(loc)) {
            out_headers.insert(header::LOCATION, v);
        }
        return Ok(build(
            status,
            out_headers,
            relay(resp.into_body(), Vec::new()),
        ));
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().is_empty());
    if media != "text/html" || encoded {
        return Ok(build(
            status,
            out_headers,
            relay(resp.into_body(), Vec::new()),
        ));
    }
    // Buffer the page to rewrite it; a page too large passes through as it is.
    let mut body = resp.into_body();
    let mut page: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(unreachable)?;
        if let Ok(data) = frame.into_data() {
            page.extend_from_slice(&data);
            if page.len() > MAX_REWRITE {
                return Ok(build(status, out_headers, relay(body, page)));
            }
        }
    }
    Ok(build(status, out_headers, full(rw.html(&page))))
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_scheme_name_and_port() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(split_scheme_name_port("web:80"), Some(("", "web", "80")));
        assert_eq!(
            split_scheme_name_port("https:web:443"),
            Some(("https", "web", "443"))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    #[tokio::test]
    async fn node_addresses_must_be_proxyable() {
        proxyable_hostname("192.0.2.7").await.unwrap();
        for host in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "0.0.0.0",
            "fe80::1",
            "localhost",
        ] {
            let e = proxyable_hostname(host).await.unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str()),
                (400, "address not allowed"),
                "{host}"
            );
        }
    }

    #[test]
    fn locates_pods() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}]}});
        let loc = pod_location(&pod, "", "").unwrap();
        assert_eq!(
            (loc.https, loc.authority()),
            (false, "10.42.0.5:8080".into())
        );
        let loc = pod_location(&pod, "https", "443").unwrap();
        assert_eq!((loc.https, loc.authority()), (true, "10.42.0.5:443".into()));
        let bare =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"podIP": "10.42.0.5"}});
        assert_eq!(
            pod_location(&bare, "", "").unwrap().authority(),
            "10.42.0.5"
        );
        let pending = json!({"spec": {"containers": [{"name": "a"}]}, "status": {}});
        let e = pod_location(&pending, "", "80").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "address not allowed"));
        let lo = json!({"spec": {}, "status": {"podIP": "127.0.0.1"}});
        assert_eq!(pod_location(&lo, "", "80").unwrap_err().code, 400);
    }

    #[test]
    fn locates_services_by_port_name_or_number() {
        let svc = json!({"spec": {"ports": [{"name": "http", "port": 80}, {"name": "tls", "port": 443}]}});
        let eps = json!({"subsets": [{"addresses": [{"ip": "10.42.0.9"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "tls", "port": 8443}]}]});
        let any = |_: &Value| true;
        let loc = service_location("s:http", "s", "", "http", Some(&svc), Some(&eps), any).unwrap();
        assert_eq!(loc.authority(), "10.42.0.9:8080");
        let loc = service_location(
            "https:s:443",
            "s",
            "https",
            "443",
            Some(&svc),
            Some(&eps),
            any,
        )
        .unwrap();
        assert_eq!(
            (loc.https, loc.authority()),
            (true, "10.42.0.9:8443".into())
        );
        let e = service_location("s:81", "s", "", "81", Some(&svc), Some(&eps), any).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no service port 81 found for service \"s\"")
        );
        // An unnamed port matches only an unnamed endpoint port.
        let e = service_location("s", "s", "", "", Some(&svc), Some(&eps), any).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no endpoints available for service \"s\"")
        );
        let empty = json!({"subsets": []});
        let e =
            service_location("s:http", "s", "", "http", Some(&svc), Some(&empty), any).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no endpoints available for service \"s\"")
        );
        let e = service_location("s:http", "s", "", "http", Some(&svc), None, any).unwrap_err();
        assert_eq!(e.code, 404);
        // Addresses whose pod is gone are skipped.
        let e = service_location("s:http", "s", "", "http", Some(&svc), Some(&eps), |_| false)
            .unwrap_err();
        assert_eq!(e.message, "no endpoints available for service \"s:http\"");
    }

    #[test]
    fn splits_the_proxied_path() {
        assert_eq!(
            proxied_path("/api/v1/namespaces/ns/pods/p:80/proxy/a/b/", 7),
            ("/api/v1/namespaces/ns/pods/p:80/proxy", "/a/b/")
        );
        assert_eq!(
            proxied_path("/api/v1/namespaces/ns/services/proxyish/proxy", 7),
            ("/api/v1/namespaces/ns/services/proxyish/proxy", "")
        );
        assert_eq!(
            proxied_path("/api/v1/namespaces/proxy/pods/p/proxy/proxy", 7),
            ("/api/v1/namespaces/proxy/pods/p/proxy", "/proxy")
        );
        assert_eq!(
            proxied_path("/api/v1/nodes/n:8080/proxy/x", 5),
            ("/api/v1/nodes/n:8080/proxy", "/x")
        );
    }
}
