//! The reverse proxy: one request → the current routing table → a ready
//! endpoint of the backend (round-robin, straight to the pod address) over
//! HTTP/1.1 with kept-alive connections; 404 when no rule matches, 503
//! when the backend has no ready endpoint, 502 when no endpoint can be
//! reached. Hop-by-hop headers are dropped, X-Forwarded-* and X-Real-IP
//! set (as ingress-nginx does by default: the client's own X-Forwarded-For
//! is not trusted), and upgrades (WebSocket) are relayed byte for byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::routes::{Backend, Routes};

pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;
type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// How long a connection to an endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle backend connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 32;
/// Endpoints tried when connecting fails.
const ATTEMPTS: usize = 3;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A client connection's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub scheme: Scheme,
}

/// Idle HTTP/1.1 connections to endpoints.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Instant, Sender)>>>,
}

impl Pool {
    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some((since, sender)) = list.pop() {
            if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        list.retain(|(since, s)| since.elapsed() < IDLE_TIMEOUT && !s.is_closed());
        if list.len() < MAX_IDLE {
            list.push((Instant::now(), sender));
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers meaningful for one connection only (RFC 9110 7.6.1), and those
/// the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The protocol an HTTP/1.1 request asks to upgrade to.
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The proxy: the current routes and the connection pool.
pub struct Proxy {
    pub routes: Arc<Routes>,
    pool: Arc<Pool>,
}

impl Proxy {
    pub fn new(routes: Arc<Routes>) -> Proxy {
        Proxy {
            routes,
            pool: Arc::new(Pool::default()),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: Conn) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let table = self.routes.load();
        let Some(backend) = table.route(&host, req.uri().path()).cloned() else {
            tracing::debug!(%host, path = req.uri().path(), "no rule matches");
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        drop(table);
        if backend.endpoints.is_empty() {
            tracing::debug!(%host, backend = %backend.name, "no ready endpoints");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 service unavailable: no ready endpoints\n",
            );
        }

        let upgrade = upgrade_of(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
        }
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&host)
        {
            parts.headers.insert(header::HOST, v);
        }
        let peer_ip = conn.peer.ip().to_string();
        if let Ok(v) = HeaderValue::from_str(&peer_ip) {
            parts.headers.insert("x-forwarded-for", v.clone());
            parts.headers.insert("x-real-ip", v);
        }
        parts.headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(conn.scheme.as_str()),
        );
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert("x-forwarded-host", v);
        }
        parts
            .headers
            .insert("x-forwarded-port", HeaderValue::from(conn.local.port()));
        // Origin form on the wire to the endpoint.
        parts.uri = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, body);

        let (addr, sender, mut resp) = match self.send(&backend, req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let backend_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, backend_upgrade) {
                        Ok((client, backend)) => {
                            let mut client = TokioIo::new(client);
                            let mut backend = TokioIo::new(backend);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                        }
                        Err(e) => tracing::debug!(%addr, error = %e, "upgrade failed"),
                    }
                });
            }
            return resp.map(|b| b.boxed_unsync());
        }
        // Back to the pool once the response body has been read.
        let pool = self.pool.clone();
        let mut sender = sender;
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(addr, sender);
            }
        });
        strip_hop_by_hop(resp.headers_mut());
        resp.map(|b| b.boxed_unsync())
    }

    /// Sends `req` to an endpoint of `backend`: pooled connections first,
    /// then new ones; connection failures move on to the next endpoint.
    async fn send(
        &self,
        backend: &Backend,
        mut req: Request<Incoming>,
    ) -> Result<(SocketAddr, Sender, Response<Incoming>), Response<Body>> {
        for addr in backend.attempts(ATTEMPTS) {
            while let Some(mut sender) = self.pool.take(addr) {
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok((addr, sender, resp)),
                    Err(mut e) => match e.take_message() {
                        // Not sent (the idle connection had closed): retry.
                        Some(r) => req = r,
                        None => {
                            tracing::info!(%addr, backend = %backend.name, error = %e.error(), "backend request failed");
                            return Err(text(StatusCode::BAD_GATEWAY, "502 bad gateway\n"));
                        }
                    },
                }
            }
            let mut sender = match connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%addr, backend = %backend.name, error = %e, "connecting to endpoint failed");
                    continue;
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((addr, sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => {
                        tracing::info!(%addr, backend = %backend.name, error = %e.error(), "backend request failed");
                        return Err(text(StatusCode::BAD_GATEWAY, "502 bad gateway\n"));
                    }
                },
            }
        }
        Err(text(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: no endpoint reachable\n",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strips_hop_by_hop_headers_and_those_connection_names() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "1"),
            ("authorization", "Bearer t"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "x-kept"]);
    }
}
