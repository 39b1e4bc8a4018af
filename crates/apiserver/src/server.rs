//! The HTTPS server: TLS accept, authentication, routing to discovery,
//! OpenAPI, health and resource handlers, metrics around every request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authz::UserInfo;
use crate::discovery;
use crate::metrics::RequestLabels;
use crate::request::{Query, parse_resource_path};
use crate::state::ApiServer;
use crate::status::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

/// Bodies above this are refused with 413 (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

pub fn bytes_response(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Accept TLS connections until `shutdown` resolves.
pub async fn serve(
    server: Arc<ApiServer>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: crate::state::ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, typically: give the
                    // connections that end a moment to free some.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "too many open connections: closing a new one");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // x509 authentication: the verified client certificate, if any,
            // names the user of every request on this connection.
            let cert_user: Option<Arc<UserInfo>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::cert_subject(leaf))
                .map(|s| {
                    let groups: Vec<&str> = s.organizations.iter().map(String::as_str).collect();
                    Arc::new(UserInfo::new(s.common_name.clone(), &groups))
                });
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(server, req, cert_user).await) }
            });
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // Headers in time, or the connection goes (slowloris, idle
            // HTTP/1.1 keep-alives); HTTP/2 connections are pinged and
            // closed when the peer stops answering.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(limits.header_read_timeout)
                .keep_alive_timeout(std::time::Duration::from_secs(20));
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    }
}

pub(crate) fn verb_for(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method, has_name) {
        (&Method::GET, _) if watch => "WATCH",
        (&Method::GET, true) => "GET",
        (&Method::GET, false) => "LIST",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, true) => "DELETE",
        (&Method::DELETE, false) => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

async fn handle(
    server: Arc<ApiServer>,
    req: Request<Incoming>,
    cert_user: Option<Arc<UserInfo>>,
) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    // The user is filled in once authenticated.
    let attributes = crate::authz::Attributes::of_request(
        UserInfo::default(),
        req.method().as_str(),
        &path,
        &query,
    );
    let mut labels = fallback_labels(&attributes);
    let timeout = if crate::flowcontrol::long_running(&attributes) {
        Ok(None)
    } else {
        request_timeout(&query, server.request_timeout).map(Some)
    };
    let resp = match timeout {
        Err(e) => error_response(&e),
        Ok(timeout) => {
            // Each request runs in its own task: a panic in it is a 500
            // for that request alone. A request that outlives its timeout
            // is answered 504 and stopped at its next await, as a Go
            // handler whose context is cancelled (a write under way may
            // or may not land, as there; it is not acknowledged).
            let mut task = {
                let (server, path, query) = (server.clone(), path.clone(), query.clone());
                let mut labels = labels.clone();
                tokio::spawn(async move {
                    let r = route(
                        &server,
                        req,
                        cert_user,
                        attributes,
                        &path,
                        &query,
                        &mut labels,
                    )
                    .await;
                    (r, labels)
                })
            };
            let outcome = match timeout {
                Some(t) => tokio::time::timeout(t, &mut task).await.ok(),
                None => Some((&mut task).await),
            };
            match outcome {
                Some(Ok((r, l))) => {
                    labels = l;
                    r.unwrap_or_else(|e| error_response(&e))
                }
                Some(Err(e)) => {
                    tracing::error!(%path, error = %e, "request handler panicked");
                    server.metrics.count_panic();
                    error_response(&ApiError::internal("the request handler failed"))
                }
                None => {
                    task.abort();
                    let mut e = ApiError::new(
                        504,
                        "Timeout",
                        "Timeout: request did not complete within requested timeout - context deadline exceeded",
                    );
                    e.retry_after = Some(0);
                    error_response(&e)
                }
            }
        }
    };
    let code = resp.status().as_u16();
    server.metrics.observe(&labels, code, started.elapsed());
    tracing::debug!(verb = labels.verb, %path, code, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// The labels of a request's metrics as far as its path tells them (the
/// handlers refine them).
fn fallback_labels(a: &crate::authz::Attributes) -> RequestLabels {
    RequestLabels {
        verb: match a.verb.as_str() {
            "get" => "GET",
            "list" => "LIST",
            "watch" => "WATCH",
            "create" => "POST",
            "update" => "PUT",
            "patch" => "PATCH",
            "delete" => "DELETE",
            "deletecollection" => "DELETECOLLECTION",
            _ => "OTHER",
        },
        group: a.api_group.clone(),
        version: a.api_version.clone(),
        resource: a.resource.clone(),
        subresource: a.subresource.clone(),
        scope: "",
    }
}

/// How long a request may take: the server's limit, or less when the
/// `timeout` query parameter asks for less (kube-apiserver's
/// WithRequestDeadline; 0 or more than the limit is the limit).
fn request_timeout(
    query: &Query,
    limit: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    let Some(value) = query.get("timeout").filter(|v| !v.is_empty()) else {
        return Ok(limit);
    };
    let asked = skiff_api::duration::parse_go(value).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid timeout specified in the request URL - time: invalid duration {value:?}"
        ))
    })?;
    let asked = std::time::Duration::from_nanos(u64::try_from(asked).unwrap_or(0));
    Ok(if asked.is_zero() || asked > limit {
        limit
    } else {
        asked
    })
}

/// Hold `held` (a watch's place in the per-user count) for as long as the
/// response body is being sent.
fn holding<T: Send + Sync + Unpin + 'static>(resp: Response<Body>, held: T) -> Response<Body> {
    struct Holding<T> {
        body: Body,
        _held: T,
    }
    impl<T: Unpin> hyper::body::Body for Holding<T> {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            std::pin::Pin::new(&mut self.body).poll_frame(cx)
        }
        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            self.body.size_hint()
        }
    }
    resp.map(|body| Holding { body, _held: held }.boxed())
}

/// Flow control for a request (see [`crate::flowcontrol`]): a seat held
/// while it runs, and for a watch its place in the user's watch count.
async fn admit(
    server: &ApiServer,
    attrs: &crate::authz::Attributes,
    path: &str,
    query: &Query,
) -> Result<
    (
        Option<crate::flowcontrol::Seat>,
        Option<crate::flowcontrol::WatchSlot>,
    ),
    ApiError,
> {
    let watch = attrs.verb == "watch";
    if crate::flowcontrol::long_running(attrs) && !watch {
        return Ok((None, None));
    }
    let level = crate::flowcontrol::classify(attrs);
    let exempt = level == crate::flowcontrol::Level::Exempt;
    let slot = if watch && !exempt {
        Some(server.flow.watches.open(&attrs.user)?)
    } else {
        None
    };
    // A LIST walks every object of its scope; so does a watch that starts
    // with the current objects.
    let initial_list = !watch
        || matches!(query.get("resourceVersion"), None | Some("" | "0"))
        || query.get("sendInitialEvents") == Some("true");
    let collection = attrs.name.is_empty()
        && matches!(attrs.verb.as_str(), "list" | "watch" | "deletecollection")
        && initial_list;
    let objects = if collection && !exempt {
        match parse_resource_path(path, &server.resources) {
            Ok(Some(rp)) => server.cache.count(&match &rp.namespace {
                Some(ns) if rp.info.namespaced => rp.info.namespace_prefix(ns),
                _ => rp.info.key_prefix(),
            }),
            _ => 0,
        }
    } else {
        0
    };
    let mutating = !matches!(attrs.verb.as_str(), "get" | "list" | "watch");
    let seat = server
        .flow
        .admit(
            level,
            &attrs.user.name,
            crate::flowcontrol::width(collection, objects),
            mutating,
        )
        .await?;
    Ok((Some(seat), slot))
}

/// The request's user: its connection's client certificate first, then a
/// bearer token (kube-apiserver's authenticator order).
fn authenticated(
    server: &ApiServer,
    req: &Request<Incoming>,
    cert_user: Option<Arc<UserInfo>>,
) -> Option<UserInfo> {
    if let Some(user) = cert_user {
        return Some(UserInfo::clone(&user));
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let token = auth.strip_prefix("Bearer ").map(str::trim)?;
    server.authenticate(token)
}

pub(crate) async fn read_body(
    req: Request<Incoming>,
) -> Result<(hyper::http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(ApiError::too_large());
    }
    let collected = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::too_large()
        } else {
            ApiError::bad_request(format!("error reading request body: {e}"))
        }
    })?;
    Ok((parts, collected.to_bytes()))
}

async fn route(
    server: &Arc<ApiServer>,
    req: Request<Incoming>,
    cert_user: Option<Arc<UserInfo>>,
    mut attributes: crate::authz::Attributes,
    path: &str,
    query: &Query,
    labels: &mut RequestLabels,
) -> Result<Response<Body>, ApiError> {
    // Health endpoints answer without credentials (load balancers and probes).
    if crate::health::handles(path) {
        let (code, body) = crate::health::answer(server, path, query).await;
        return Ok(bytes_response(code, "text/plain; charset=utf-8", body));
    }
    match path {
        // The cluster CA for agents to check against their token's hash
        // before they trust this server (k3s's /cacerts).
        "/cacerts" => {
            return Ok(bytes_response(
                200,
                "text/plain; charset=utf-8",
                server.ca_pem.clone(),
            ));
        }
        _ => {}
    }
    let Some(user) = authenticated(server, &req, cert_user) else {
        return Err(ApiError::unauthorized());
    };
    let user = crate::authz::impersonate(server, user, req.headers())?;
    attributes.user = user.clone();
    // Flow control, then authorization, as kube-apiserver's handler chain.
    let (seat, watch) = admit(server, &attributes, path, query).await?;
    let resp = authorized(server, req, user, attributes, path, query, labels).await;
    drop(seat);
    Ok(match watch {
        Some(slot) => holding(resp?, slot),
        None => resp?,
    })
}

/// Serve an authenticated request once flow control let it run.
async fn authorized(
    server: &Arc<ApiServer>,
    req: Request<Incoming>,
    user: UserInfo,
    attributes: crate::authz::Attributes,
    path: &str,
    query: &Query,
    labels: &mut RequestLabels,
) -> Result<Response<Body>, ApiError> {
    if server.authorization {
        crate::authz::check(server, &attributes)?;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let method = req.method().clone();
    if let Some((review, namespace)) = crate::authz::find(path) {
        labels.verb = "POST";
        if method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        // Reviews have no metadata to print: a client that only takes a
        // Table (or metadata) gets 406, as from kube-apiserver.
        if !crate::output::accepts_plain(&accept) {
            return Err(ApiError::not_acceptable());
        }
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (_, body) = read_body(req).await?;
        let body = crate::request::decode_body(&body, &crate::request::media_type(ct.as_deref()))?;
        let answer = crate::authz::answer(server, review, namespace.as_deref(), body, &user)?;
        // In protobuf when the client prefers it (client-go), as any object.
        let wire = match crate::output::Output::negotiate(&accept, None, true, false)? {
            crate::output::Output::Protobuf => crate::output::Wire::Protobuf,
            _ => crate::output::Wire::Json,
        };
        return Ok(crate::output::value_response(201, wire, &answer));
    }
    // events.k8s.io/v1 is a view of the core Events.
    if let Some(core) = crate::events_view::core_path(path) {
        return crate::events_view::handle(server, req, &core, query, &accept, labels, user).await;
    }
    // metrics.k8s.io is served here (no aggregation), not from the store.
    if crate::resource_metrics::handles(path) {
        return crate::resource_metrics::handle(server, &method, path, query, labels).await;
    }
    if let Some(rp) = parse_resource_path(path, &server.resources)? {
        let watch = rp.watch_prefix || (method == Method::GET && query.flag("watch"));
        labels.verb = verb_for(&method, rp.name.is_some(), watch);
        labels.group = rp.info.group.to_string();
        labels.version = rp.info.version.to_string();
        labels.resource = rp.info.plural.to_string();
        labels.subresource = rp.subresource.clone().unwrap_or_default();
        labels.scope = match (&rp.name, &rp.namespace) {
            (Some(_), _) => "resource",
            (None, Some(_)) => "namespace",
            (None, None) => "cluster",
        };
        // Served by the node's kubelet; upgrades need the request itself.
        if crate::proxy::handles(&rp) {
            return crate::proxy::handle(server, rp, req, &user).await;
        }
        let (parts, body) = read_body(req).await?;
        return crate::handlers::resource(server, rp, &parts, body, query, &accept, watch, user)
            .await;
    }
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    labels.verb = "GET";
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Ok(json_response(200, &crate::state::version_info())),
        // Service account issuer discovery (OIDC), as kube-apiserver serves it.
        [".well-known", "openid-configuration"] => Ok(json_response(
            200,
            &server.token_signer.openid_configuration(&format!(
                "https://{}/openid/v1/jwks",
                server.advertise_address
            )),
        )),
        ["openid", "v1", "jwks"] => Ok(bytes_response(
            200,
            "application/jwk-set+json",
            server.token_signer.jwks().to_string(),
        )),
        ["metrics"] => Ok(bytes_response(
            200,
            "text/plain; version=0.0.4",
            server.render_metrics(),
        )),
        ["api"] => match discovery::wants_aggregated(&accept) {
            Some(media) => Ok(bytes_response(
                200,
                media,
                serde_json::to_vec(&discovery::aggregated(&server.resources, true, media))
                    .unwrap_or_default(),
            )),
            None => Ok(json_response(
                200,
                &discovery::api_versions(&server.advertise_address),
            )),
        },
        ["apis"] => match discovery::wants_aggregated(&accept) {
            Some(media) => Ok(bytes_response(
                200,
                media,
                serde_json::to_vec(&discovery::aggregated(&server.resources, false, media))
                    .unwrap_or_default(),
            )),
            None => Ok(json_response(
                200,
                &discovery::api_group_list(&server.resources),
            )),
        },
        ["api", version] => discovery::api_resource_list(&server.resources, "", version)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::no_route),
        ["apis", group] => discovery::api_group_doc(&server.resources, group)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::no_route),
        ["apis", group, version] => discovery::api_resource_list(&server.resources, group, version)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::no_route),
        ["openapi", "v2"] => {
            // kubectl (1.27 for validation and explain) asks for gnostic protobuf.
            if accept.contains("application/com.github.proto-openapi.spec.v2") {
                let bytes = server.openapi_v2_proto()?;
                Ok(bytes_response(
                    200,
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    bytes,
                ))
            } else {
                Ok(bytes_response(
                    200,
                    "application/json",
                    server.openapi_v2_json(),
                ))
            }
        }
        ["openapi", "v3"] => Ok(json_response(200, &server.openapi_v3_index())),
        ["openapi", "v3", rest @ ..] => {
            let (group, version) = match rest {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => return Err(ApiError::no_route()),
            };
            let doc = server
                .openapi_v3(group, version)
                .ok_or_else(ApiError::no_route)?;
            let mut resp = bytes_response(200, "application/json", doc);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, immutable"),
            );
            Ok(resp)
        }
        _ => Err(ApiError::no_route()),
    }
}
