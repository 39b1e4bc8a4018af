//! Resource verbs: get, list, create, update, patch, delete,
//! deletecollection, and the status, scale, binding and eviction
//! subresources. Watch is in `watch.rs`.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Method, Response};
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::selector::{FieldSelector, LabelSelector};

use crate::admission;
use crate::cache::{ObjRef, set_resource_version};
use crate::output::{self, Output, Wire};
use crate::request::{Query, ResourcePath, decode_body, media_type};
use crate::server::{Body, bytes_response, json_response};
use crate::state::ApiServer;
use crate::status::{ApiError, ApiResult, success_status};

/// Retries of an internal read-modify-write when the object changed under us.
const MAX_RETRIES: usize = 16;

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn name_of(v: &Value) -> &str {
    v.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn rv_of(v: &Value) -> Option<&str> {
    v.get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A decoded request on a resource.
pub struct Req<'a> {
    pub server: &'a Arc<ApiServer>,
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub query: &'a Query,
    pub output: Output,
    pub field_manager: String,
    pub dry_run: bool,
    /// `Warning` headers of the response (from any stage of the request,
    /// admission webhooks and policies included).
    pub warnings: std::sync::Mutex<Vec<String>>,
    /// Fields the JSON body set twice (reported with the unknown fields
    /// under fieldValidation Strict/Warn, as Kubernetes' strict decoder).
    pub duplicate_fields: Vec<String>,
    /// Who asks (after impersonation).
    pub user: crate::authz::UserInfo,
}

impl Req<'_> {
    /// Add a warning for the client (once).
    pub fn warn(&self, warning: impl Into<String>) {
        let warning = warning.into();
        let mut warnings = self
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// The warnings as `Warning: 299 - "..."` headers.
    fn warning_headers(&self, resp: &mut Response<Body>) {
        let warnings = self
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for w in warnings.iter() {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&format!(
                "299 - \"{}\"",
                w.replace('"', "\\\"")
            )) {
                resp.headers_mut().append(hyper::header::WARNING, v);
            }
        }
    }

    /// A stored object as the request's version shows it (custom
    /// resources are stored in their storage version).
    pub fn served_version<'v>(&self, obj: &'v Value) -> std::borrow::Cow<'v, Value> {
        // (Not a Scale or a Status answered for the resource.)
        if self.info.custom && obj.get("kind").and_then(Value::as_str) == Some(self.info.kind) {
            crate::crd::on_read(self.server.resources.custom(self.info).as_deref(), obj)
        } else {
            std::borrow::Cow::Borrowed(obj)
        }
    }

    /// What admission webhooks are told of this request.
    pub fn admission_attributes<'b>(
        &'b self,
        operation: &'static str,
        sub: Option<&'b str>,
        name: &'b str,
        object: Option<&'b Value>,
        old: Option<&'b Value>,
        dry_run: bool,
    ) -> crate::webhook::Attributes<'b> {
        crate::webhook::Attributes {
            operation,
            info: self.info,
            sub,
            namespace: self.namespace.as_deref(),
            name,
            object,
            old,
            dry_run,
            user: &self.user,
            field_manager: &self.field_manager,
            warnings: self,
        }
    }

    /// The bytes an object is stored as: in its storage version.
    fn stored_bytes(&self, obj: &Value) -> ApiResult<Vec<u8>> {
        match self.server.resources.custom(self.info) {
            Some(served) => {
                let storage = format!("{}/{}", self.info.group, served.storage_version);
                encode_for_store(&crate::crd::in_version(obj, &storage))
            }
            None => encode_for_store(obj),
        }
    }

    pub fn key(&self, name: &str) -> String {
        self.info.key(self.namespace.as_deref(), name)
    }

    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(self.info.group, self.info.plural, name)
    }

    fn respond(&self, code: u16, obj: &Value) -> Response<Body> {
        let converted = self.served_version(obj);
        let obj: &Value = &converted;
        let mut resp = match self.output {
            Output::Table(inc) => {
                let custom = self.server.resources.custom(self.info);
                json_response(
                    code,
                    &output::table(
                        output::Printer::of(self.info, custom.as_deref()),
                        [obj],
                        inc,
                        rv_of(obj),
                        None,
                        true,
                    ),
                )
            }
            Output::PartialMetadata(wire) => {
                output::value_response(code, wire, &output::partial_metadata(obj))
            }
            Output::Json => json_response(code, obj),
            Output::Protobuf => output::value_response(code, Wire::Protobuf, obj),
        };
        self.warning_headers(&mut resp);
        resp
    }
}

/// Serves a request on a resource in the negotiated encoding; when that is
/// protobuf, errors are protobuf Status objects too (as kube-apiserver's).
pub async fn resource(
    server: &Arc<ApiServer>,
    rp: ResourcePath,
    parts: &Parts,
    body: Bytes,
    query: &Query,
    accept: &str,
    watch: bool,
    user: crate::authz::UserInfo,
) -> ApiResult<Response<Body>> {
    let protobuf = skiff_api::protobuf::has_protobuf(&rp.info.api_version(), rp.info.kind);
    let out = Output::negotiate(accept, query.get("includeObject"), protobuf, watch)?;
    match serve_resource(server, rp, parts, body, query, out, watch, user).await {
        Err(e) if out.wire() == Wire::Protobuf => Ok(output::error_response(&e, Wire::Protobuf)),
        r => r,
    }
}

async fn serve_resource(
    server: &Arc<ApiServer>,
    rp: ResourcePath,
    parts: &Parts,
    body: Bytes,
    query: &Query,
    out: Output,
    watch: bool,
    user: crate::authz::UserInfo,
) -> ApiResult<Response<Body>> {
    let mut req = Req {
        user,
        server,
        info: rp.info,
        namespace: rp.namespace.clone(),
        query,
        output: out,
        field_manager: query.get("fieldManager").unwrap_or_default().to_string(),
        dry_run: query.dry_run()?,
        warnings: Default::default(),
        duplicate_fields: Vec::new(),
    };
    if req.field_manager.is_empty() {
        let ua = parts
            .headers
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        req.field_manager = ua.split('/').next().unwrap_or("unknown").to_string();
    }
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let media = media_type(content_type);
    if matches!(parts.method, Method::POST | Method::PUT)
        && matches!(media.as_str(), "application/json" | "")
        && req.query.get("fieldValidation") != Some("Ignore")
    {
        req.duplicate_fields = skiff_api::openapi::duplicate_fields(&body);
    }
    let name = rp.name.clone();
    let sub = rp.subresource.as_deref();
    match (&parts.method, name, sub) {
        (&Method::GET, None, None) if watch => crate::watch::serve(&req, None).await,
        (&Method::GET, Some(n), None) if watch => crate::watch::serve(&req, Some(n)).await,
        (&Method::GET, None, None) => list(&req).await,
        (&Method::GET, Some(n), None | Some("status")) => get(&req, &n).await,
        (&Method::GET, Some(n), Some("approval")) if req.info.has_subresource("approval") => {
            get(&req, &n).await
        }
        (&Method::GET, Some(n), Some("ephemeralcontainers")) if is_pods(req.info) => {
            get(&req, &n).await
        }
        (&Method::GET, Some(n), Some("scale")) => {
            let obj = read(&req, &n).await?;
            Ok(req.respond(200, &scale_of(&req, &obj.value)?))
        }
        (&Method::POST, None, None) => {
            if req.info.namespaced && req.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let obj = decode_body(&body, &media)?;
            create(&mut req, obj).await
        }
        (&Method::POST, Some(n), Some("binding")) => {
            bind(&req, &n, decode_body(&body, &media)?).await
        }
        (&Method::POST, Some(n), Some("eviction")) => {
            let eviction = decode_body(&body, &media)?;
            evict(&req, &n, &eviction).await
        }
        (&Method::POST, Some(n), Some("token")) => {
            token_request(&req, &n, decode_body(&body, &media)?).await
        }
        (&Method::PUT, Some(n), Some("ephemeralcontainers")) if is_pods(req.info) => {
            let obj = decode_body(&body, &media)?;
            update(&mut req, &n, obj, Some("ephemeralcontainers")).await
        }
        (&Method::PATCH, Some(n), Some("ephemeralcontainers")) if is_pods(req.info) => {
            let patch = decode_body(&body, &media)?;
            patch_object(&mut req, &n, &media, patch, Some("ephemeralcontainers")).await
        }
        (&Method::PUT, Some(n), sub @ Some("approval")) if req.info.has_subresource("approval") => {
            let obj = decode_body(&body, &media)?;
            update(&mut req, &n, obj, sub).await
        }
        (&Method::PATCH, Some(n), sub @ Some("approval"))
            if req.info.has_subresource("approval") =>
        {
            let patch = decode_body(&body, &media)?;
            patch_object(&mut req, &n, &media, patch, sub).await
        }
        (&Method::PUT, Some(n), sub @ (None | Some("status") | Some("finalize"))) => {
            let obj = decode_body(&body, &media)?;
            update(&mut req, &n, obj, sub).await
        }
        (&Method::PUT, Some(n), Some("scale")) => {
            let scale = decode_body(&body, &media)?;
            update_scale(&req, &n, |_| Ok(scale.clone())).await
        }
        (&Method::PATCH, Some(n), sub @ (None | Some("status"))) => {
            let patch = decode_body(&body, &media)?;
            patch_object(&mut req, &n, &media, patch, sub).await
        }
        (&Method::PATCH, Some(n), Some("scale")) => {
            let patch = decode_body(&body, &media)?;
            let info = req.info;
            update_scale(&req, &n, |current| {
                crate::patching::apply_patch(info, &media, current, &patch, true)
            })
            .await
        }
        (&Method::DELETE, Some(n), None) => {
            let opts = DeleteOptions::from_request(&req, &body, &media)?;
            delete(&req, &n, &opts).await
        }
        (&Method::DELETE, None, None) => {
            let opts = DeleteOptions::from_request(&req, &body, &media)?;
            delete_collection(&req, &opts).await
        }
        (_, Some(_), Some(sub))
            if ["log", "exec", "attach", "portforward", "proxy"].contains(&sub) =>
        {
            Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "the {sub} subresource needs a node agent (kubelet), which this server does not run yet"
                ),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn is_pods(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Pod"
}

/// A consistent read of one object: the cache, once it has caught up with the store.
pub async fn read(req: &Req<'_>, name: &str) -> ApiResult<ObjRef> {
    let key = req.key(name);
    if let Some(o) = req.server.cache.get(&key) {
        // Fast path: the cache may be a little behind; sync when asked for the latest.
        if req
            .query
            .get("resourceVersion")
            .is_some_and(|rv| !rv.is_empty())
        {
            return Ok(o);
        }
    }
    req.server.cache.sync().await?;
    req.server
        .cache
        .get(&key)
        .ok_or_else(|| req.not_found(name))
}

async fn get(req: &Req<'_>, name: &str) -> ApiResult<Response<Body>> {
    let obj = read(req, name).await?;
    Ok(match req.output {
        // A custom resource read in another version than stored, or
        // lacking a default: as the reader sees it.
        Output::Json if matches!(req.served_version(&obj.value), std::borrow::Cow::Owned(_)) => {
            req.respond(200, &obj.value)
        }
        Output::Json => {
            let mut r = bytes_response(200, "application/json", obj.bytes.clone());
            req.warning_headers(&mut r);
            r
        }
        Output::Protobuf => match obj.protobuf() {
            Some(raw) => bytes_response(
                200,
                skiff_api::protobuf::MEDIA_TYPE,
                skiff_api::protobuf::envelope(&req.info.api_version(), req.info.kind, raw),
            ),
            None => req.respond(200, &obj.value),
        },
        _ => req.respond(200, &obj.value),
    })
}

/// The selectors of a list or watch request.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_query(req: &Req<'_>) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let selectable = req
            .server
            .resources
            .custom(req.info)
            .map(|s| s.selectable_fields.clone())
            .unwrap_or_default();
        let fields = FieldSelector::parse_with(
            req.query.get("fieldSelector").unwrap_or_default(),
            req.info.group,
            req.info.kind,
            req.info.namespaced,
            &selectable,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
}

/// The key prefix a list or watch covers.
pub fn scope_prefix(req: &Req<'_>) -> String {
    match (&req.namespace, req.info.namespaced) {
        (Some(ns), true) => req.info.namespace_prefix(ns),
        _ => req.info.key_prefix(),
    }
}

fn encode_continue(key: &str, rv: i64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": key}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(String, i64)> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    Ok((start, rv))
}

async fn list(req: &Req<'_>) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(req)?;
    // A custom resource's definition (its version, defaults, columns).
    let custom = req.server.resources.custom(req.info);
    let limit = req.query.int("limit")?.unwrap_or(0).max(0) as usize;
    let prefix = scope_prefix(req);
    let start_after = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (start, _) = decode_continue(token)?;
            if !start.starts_with(&prefix) {
                return Err(ApiError::bad_request(
                    "continue key is not valid: does not match the request",
                ));
            }
            Some(start)
        }
        None => None,
    };
    // resourceVersion="" asks for the latest state; "0" (or any other) accepts the cache as it is.
    match req.query.get("resourceVersion") {
        None | Some("") => {
            req.server.cache.sync().await?;
        }
        Some(rv) => {
            let rv: i64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if rv > 0 {
                req.server.cache.wait_for(rv).await?;
            }
        }
    }
    // Name-pinned field selectors read one key instead of scanning.
    let (items, rev, more) = match (filter.fields.name(), &req.namespace) {
        (Some(name), Some(_)) | (Some(name), None)
            if !(req.info.namespaced && req.namespace.is_none()) =>
        {
            let key = req.key(name);
            let rev = req.server.cache.revision();
            let items: Vec<ObjRef> = req
                .server
                .cache
                .get(&key)
                .filter(|o| filter.matches(&o.value))
                .into_iter()
                .collect();
            (items, rev, false)
        }
        _ => req
            .server
            .cache
            .list(&prefix, start_after.as_deref(), limit, |o| {
                filter.matches(&o.value)
            }),
    };
    let continue_token = if more {
        items.last().map(|o| encode_continue(&o.key, rev))
    } else {
        None
    };
    Ok(match req.output {
        Output::Json => bytes_response(
            200,
            "application/json",
            output::list_bytes(
                req.info,
                custom.as_deref(),
                &items,
                rev,
                continue_token.as_deref(),
                None,
            ),
        ),
        Output::Table(inc) => json_response(
            200,
            &output::table(
                output::Printer::of(req.info, custom.as_deref()),
                items.iter().map(|o| &o.value),
                inc,
                Some(&rev.to_string()),
                continue_token.as_deref(),
                true,
            ),
        ),
        Output::PartialMetadata(wire) => output::value_response(
            200,
            wire,
            &output::partial_metadata_list(&items, rev, continue_token.as_deref()),
        ),
        Output::Protobuf => {
            match output::list_protobuf(req.info, &items, rev, continue_token.as_deref(), None) {
                Some(body) => bytes_response(200, skiff_api::protobuf::MEDIA_TYPE, body),
                None => bytes_response(
                    200,
                    "application/json",
                    output::list_bytes(
                        req.info,
                        custom.as_deref(),
                        &items,
                        rev,
                        continue_token.as_deref(),
                        None,
                    ),
                ),
            }
        }
    })
}

impl crate::webhook::Warnings for Req<'_> {
    fn warn(&self, warning: String) {
        Req::warn(self, warning);
    }
}

/// An object a mutating webhook patched, checked as a request body is
/// (typed decode, or a custom resource's schema); the system metadata
/// stays the server's.
fn redecode(req: &Req<'_>, patched: Value, before: &Value) -> ApiResult<Value> {
    let mut v = match req.server.resources.custom(req.info) {
        Some(served) => {
            let mut v = patched;
            crate::crd::decode(&served, &mut v)?;
            v
        }
        None => {
            let mut v = patched;
            skiff_api::openapi::fill_required_nulls(req.info, &mut v);
            let mut v = (req.info.roundtrip)(v).map_err(|e| {
                ApiError::internal(format!(
                    "admission webhook patch: error decoding {}: {e}",
                    req.info.kind
                ))
            })?;
            // What a webhook added is defaulted as a body is (an init
            // container gets its imagePullPolicy, ...).
            skiff_api::defaults::apply_defaults(req.info.group, req.info.kind, &mut v);
            v
        }
    };
    let before_meta = before.get("metadata").cloned().unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            match before_meta.get(k) {
                Some(x) => {
                    meta.insert(k.into(), x.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
    }
    Ok(v)
}

/// Check apiVersion/kind of a body against the resource, filling them when absent.
fn check_type(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    };
    let api_version = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    Ok(())
}

/// Unknown fields per fieldValidation, then the typed round trip.
/// How deeply objects may nest: what serde_json reads back (its recursion
/// limit of 128, less a level of headroom).
pub const MAX_OBJECT_DEPTH: usize = 126;

/// The nesting depth of `v`: 0 for a scalar, 1 for a flat object.
fn depth(v: &Value) -> usize {
    // Iterative, so that depth itself cannot overflow the stack.
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// The bytes an object is stored as, once it is known to read back:
/// nothing nested deeper than the decoder reads is stored (security
/// review I3: such an object could no longer be read, updated or deleted).
fn encode_for_store(obj: &Value) -> ApiResult<Vec<u8>> {
    if depth(obj) > MAX_OBJECT_DEPTH {
        return Err(ApiError::bad_request(format!(
            "json: exceeded max depth of {MAX_OBJECT_DEPTH}"
        )));
    }
    serde_json::to_vec(obj).map_err(|e| ApiError::internal(e.to_string()))
}

fn decode_typed(req: &mut Req<'_>, obj: Value) -> ApiResult<Value> {
    let mode = req.query.get("fieldValidation").unwrap_or("Warn");
    let mut obj = obj;
    // A custom resource is pruned by its schema (whatever the mode), not
    // decoded into a type.
    let custom = match req.server.resources.custom(req.info) {
        Some(served) => Some((crate::crd::decode(&served, &mut obj)?, served)),
        None if req.info.custom => return Err(req.not_found(name_of(&obj))),
        None => None,
    };
    if mode != "Ignore" {
        let unknown_fields = match &custom {
            Some((dropped, _)) => dropped.clone(),
            None => skiff_api::openapi::unknown_fields(req.info, &obj),
        };
        let unknown: Vec<String> = unknown_fields
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .chain(
                req.duplicate_fields
                    .iter()
                    .map(|f| format!("duplicate field \"{f}\"")),
            )
            .collect();
        if !unknown.is_empty() {
            match mode {
                "Strict" => {
                    let msgs = &unknown;
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        msgs.join(", ")
                    )));
                }
                "Warn" => unknown.into_iter().for_each(|w| req.warn(w)),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "fieldValidation parameter unsupported: {other} (supported values: Ignore, Warn, Strict)"
                    )));
                }
            }
        }
    }
    if custom.is_some() {
        return Ok(obj);
    }
    crate::podsecurity::warn(req, &obj);
    skiff_api::openapi::fill_required_nulls(req.info, &mut obj);
    let mut obj = (req.info.roundtrip)(obj)
        .map_err(|e| ApiError::bad_request(format!("error decoding {}: {e}", req.info.kind)))?;
    if crate::crd::is_definition(req.info) {
        crate::crd::apply_defaults(&mut obj);
    }
    Ok(obj)
}

fn check_namespace(req: &Req<'_>, obj: &mut Value) -> ApiResult<()> {
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let meta = obj
        .as_object_mut()
        .and_then(|m| {
            if !m.get("metadata").is_some_and(Value::is_object) {
                m.insert("metadata".into(), json!({}));
            }
            m.get_mut("metadata")
        })
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if req.info.namespaced {
        let ns = req.namespace.clone().unwrap_or_default();
        if let Some(b) = body_ns
            && b != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

fn validate(req: &Req<'_>, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs = skiff_api::validation::validate_object(
        req.info.group,
        req.info.kind,
        obj,
        old,
        req.info.namespaced,
    );
    if (req.info.group, req.info.kind) == ("certificates.k8s.io", "CertificateSigningRequest") {
        errs.extend(crate::certificates::validate(obj, old));
    }
    if crate::crd::is_definition(req.info) {
        errs.extend(crate::crd::validate_definition(obj, old));
    }
    if let Some(served) = req.server.resources.custom(req.info) {
        errs.extend(crate::crd::validate(&served, obj, old));
    }
    // kube-apiserver never advertises a loopback address (ResolveBindAddress
    // picks a host interface); skiff does when it listens on one, so the
    // endpoints of its own `kubernetes` Service, which it writes itself,
    // may name it. Every other writer gets ValidateNonSpecialIP.
    if req.user.name == crate::authz::UserInfo::apiserver().name {
        errs.retain(|e| !skiff_api::validation::is_special_ip_error(e));
    }
    if errs.is_empty() {
        return Ok(());
    }
    let causes = errs
        .iter()
        .map(|e| crate::status::Cause {
            reason: e.reason().to_string(),
            message: e.message.clone(),
            field: e.field.clone(),
        })
        .collect();
    Err(ApiError::invalid(
        req.info.group,
        req.info.kind,
        name_of(obj),
        causes,
    ))
}

async fn create(req: &mut Req<'_>, mut obj: Value) -> ApiResult<Response<Body>> {
    check_type(req.info, &mut obj)?;
    check_namespace(req, &mut obj)?;
    let mut obj = decode_typed(req, obj)?;
    let out = create_object(req, &mut obj).await?;
    Ok(req.respond(201, &out))
}

/// The create path after decoding (also used by server-side apply of a new object).
pub async fn create_object(req: &Req<'_>, obj: &mut Value) -> ApiResult<Value> {
    admission::ensure_namespace_active(req).await?;
    if req
        .server
        .resources
        .custom(req.info)
        .is_some_and(|s| s.terminating)
    {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        ));
    }
    if admission::reads_cache(req.info, obj) {
        // Admission looks objects up in the cache: let it see every write
        // acknowledged before this request (a RuntimeClass created just now).
        req.server.cache.sync().await?;
    }
    admission::prepare_create(req, obj)?;
    let name = name_of(obj).to_string();
    let attrs = req.admission_attributes("CREATE", None, &name, None, None, req.dry_run);
    let before = obj.clone();
    crate::webhook::mutate(req.server, &attrs, obj, |v| redecode(req, v, &before)).await?;
    crate::authz::admit_write(req, "create", None, Some(obj), None)?;
    validate(req, obj, None)?;
    let validated = crate::webhook::Attributes {
        object: Some(obj),
        ..attrs
    };
    crate::admission_policy::validate(req.server, &validated)?;
    crate::webhook::validate(req.server, &validated).await?;
    let allocated = admission::allocate(req, obj).await?;
    let name = name_of(obj).to_string();
    if req.dry_run {
        admission::release(req.server, &allocated).await;
        return Ok(obj.clone());
    }
    let bytes = req.stored_bytes(obj)?;
    match req.server.store.create(&req.key(&name), bytes).await {
        Ok(kv) => {
            set_resource_version(obj, kv.mod_revision);
            Ok(obj.clone())
        }
        Err(e) => {
            admission::release(req.server, &allocated).await;
            Err(ApiError::from_store(
                e,
                req.info.group,
                req.info.plural,
                &name,
            ))
        }
    }
}

/// Read the current object from the store (authoritative, for read-modify-write).
pub(crate) async fn read_current(req: &Req<'_>, name: &str) -> ApiResult<(Value, i64)> {
    let key = req.key(name);
    let kv = req
        .server
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, req.info.group, req.info.plural, name))?
        .ok_or_else(|| req.not_found(name))?;
    let v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
    let mut v = req.served_version(&v).into_owned();
    set_resource_version(&mut v, kv.mod_revision);
    Ok((v, kv.mod_revision))
}

/// What a write did.
pub enum Written {
    Updated(Value),
    /// The update removed the last finalizer of an object being deleted.
    Deleted(Value),
}

/// Write `new` over `old` (read at `revision`): carries over what clients
/// cannot change, validates, and stores with compare-and-swap.
pub async fn write_update(
    req: &Req<'_>,
    mut new: Value,
    old: &Value,
    revision: i64,
    sub: Option<&str>,
) -> ApiResult<Written> {
    admission::prepare_update(req, &mut new, old, sub)?;
    let name = name_of(old).to_string();
    let attrs = req.admission_attributes("UPDATE", sub, &name, None, Some(old), req.dry_run);
    let before = new.clone();
    crate::webhook::mutate(req.server, &attrs, &mut new, |v| redecode(req, v, &before)).await?;
    crate::authz::admit_write(req, "update", sub, Some(&new), Some(old))?;
    // A Service's ClusterIP and NodePorts (not through subresources); what
    // this claims is given back when the update is not stored.
    let services = if sub.is_none() {
        admission::allocate_update(req, &mut new, old).await?
    } else {
        admission::ServiceUpdate::default()
    };
    if let Err(e) = validate(req, &new, Some(old)) {
        admission::release(req.server, &services.claimed).await;
        return Err(e);
    }
    let validated = crate::webhook::Attributes {
        object: Some(&new),
        ..attrs
    };
    if let Err(e) = crate::admission_policy::validate(req.server, &validated) {
        admission::release(req.server, &services.claimed).await;
        return Err(e);
    }
    if let Err(e) = crate::webhook::validate(req.server, &validated).await {
        admission::release(req.server, &services.claimed).await;
        return Err(e);
    }
    // Finalizers gone from an object being deleted: delete it now.
    // (A pod still in its grace period stays until the kubelet's final delete,
    // as Kubernetes' ShouldDeleteDuringUpdate.)
    let grace_pending = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g > 0);
    if !admission::has_finalizers(req.info, &new)
        && !grace_pending
        && new
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
    {
        admission::release(req.server, &services.claimed).await;
        if req.dry_run {
            return Ok(Written::Deleted(new));
        }
        let (_, rev) = req
            .server
            .store
            .delete(&req.key(&name), revision)
            .await
            .map_err(|e| ApiError::from_store(e, req.info.group, req.info.plural, &name))?;
        admission::release_object(req.server, req.info, old).await;
        set_resource_version(&mut new, rev);
        return Ok(Written::Deleted(new));
    }
    // A no-op write is not stored (and does not bump resourceVersion).
    let mut old_cmp = old.clone();
    set_resource_version(&mut old_cmp, 0);
    let mut new_cmp = new.clone();
    set_resource_version(&mut new_cmp, 0);
    if old_cmp == new_cmp {
        admission::release(req.server, &services.claimed).await;
        return Ok(Written::Updated(old.clone()));
    }
    if req.dry_run {
        return Ok(Written::Updated(new));
    }
    strip_resource_version(&mut new);
    let bytes = req.stored_bytes(&new)?;
    let kv = match req
        .server
        .store
        .update(&req.key(&name), bytes, revision)
        .await
    {
        Ok(kv) => kv,
        Err(e) => {
            admission::release(req.server, &services.claimed).await;
            return Err(ApiError::from_store(
                e,
                req.info.group,
                req.info.plural,
                &name,
            ));
        }
    };
    admission::release(req.server, &services.released).await;
    set_resource_version(&mut new, kv.mod_revision);
    Ok(Written::Updated(new))
}

fn strip_resource_version(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

async fn update(
    req: &mut Req<'_>,
    name: &str,
    mut obj: Value,
    sub: Option<&str>,
) -> ApiResult<Response<Body>> {
    check_type(req.info, &mut obj)?;
    check_namespace(req, &mut obj)?;
    if name_of(&obj) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&obj)
        )));
    }
    let obj = decode_typed(req, obj)?;
    let wanted_rv = rv_of(&obj).map(str::to_string);
    for _ in 0..MAX_RETRIES {
        let (old, revision) = read_current(req, name).await?;
        if let Some(rv) = &wanted_rv
            && rv != &revision.to_string()
        {
            return Err(ApiError::modified(req.info.group, req.info.plural, name));
        }
        match write_update(req, obj.clone(), &old, revision, sub).await {
            Ok(Written::Updated(v) | Written::Deleted(v)) => return Ok(req.respond(200, &v)),
            Err(e) if e.code == 409 && e.reason == "Conflict" && wanted_rv.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified(req.info.group, req.info.plural, name))
}

async fn patch_object(
    req: &mut Req<'_>,
    name: &str,
    media: &str,
    patch: Value,
    sub: Option<&str>,
) -> ApiResult<Response<Body>> {
    let apply = media == "application/apply-patch+yaml";
    if apply {
        if req.field_manager.is_empty() || req.query.get("fieldManager").is_none() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests must include a fieldManager",
            ));
        }
        let mut p = patch.clone();
        check_type(req.info, &mut p)?;
        if name_of(&p) != name && !name_of(&p).is_empty() {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
    }
    for _ in 0..MAX_RETRIES {
        let current = match read_current(req, name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 && apply && sub.is_none() => None,
            Err(e) => return Err(e),
        };
        let Some((old, revision)) = current else {
            // Server-side apply creates what does not exist.
            let mut applied = patch.clone();
            check_type(req.info, &mut applied)?;
            check_namespace(req, &mut applied)?;
            let force = req.query.flag("force");
            let mut obj = crate::patching::server_side_apply(
                req.info,
                None,
                &applied,
                &req.field_manager,
                force,
            )?;
            obj = decode_typed(req, obj)?;
            let out = create_object(req, &mut obj).await?;
            return Ok(req.respond(201, &out));
        };
        let new = if apply {
            let mut applied = patch.clone();
            check_type(req.info, &mut applied)?;
            check_namespace(req, &mut applied)?;
            crate::patching::server_side_apply(
                req.info,
                Some(&old),
                &applied,
                &req.field_manager,
                req.query.flag("force"),
            )?
        } else {
            crate::patching::apply_patch(req.info, media, &old, &patch, false)?
        };
        // A resourceVersion in the patch is a precondition.
        if let Some(rv) = rv_of(&new)
            && rv != revision.to_string()
        {
            return Err(ApiError::modified(req.info.group, req.info.plural, name));
        }
        let mut new = new;
        check_type(req.info, &mut new)?;
        check_namespace(req, &mut new)?;
        let new = decode_typed(req, new)?;
        let pinned = patch.pointer("/metadata/resourceVersion").is_some();
        match write_update(req, new, &old, revision, sub).await {
            Ok(Written::Updated(v) | Written::Deleted(v)) => return Ok(req.respond(200, &v)),
            Err(e) if e.code == 409 && e.reason == "Conflict" && !pinned => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified(req.info.group, req.info.plural, name))
}

/// The Scale of an object: a built-in kind's, or what a custom
/// resource's scale paths say.
fn scale_of(req: &Req<'_>, obj: &Value) -> ApiResult<Value> {
    match req.server.resources.custom(req.info) {
        Some(served) => served
            .scale_of(obj)
            .ok_or_else(ApiError::method_not_allowed),
        None => Ok(admission::scale_of(obj)),
    }
}

async fn update_scale(
    req: &Req<'_>,
    name: &str,
    new_scale: impl Fn(&Value) -> ApiResult<Value>,
) -> ApiResult<Response<Body>> {
    for _ in 0..MAX_RETRIES {
        let (old, revision) = read_current(req, name).await?;
        let scale = new_scale(&scale_of(req, &old)?)?;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::bad_request("spec.replicas is required in a Scale"))?;
        // A Scale's replicas is an int32: what does not fit is refused as
        // kube-apiserver's decoder refuses it, never stored (security
        // review I2: typed clients could no longer decode the object).
        if i32::try_from(replicas).is_err() {
            return Err(ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: json: cannot unmarshal number {replicas} into Go struct field ScaleSpec.spec.replicas of type int32"
            )));
        }
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![crate::status::Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        if let Some(rv) = rv_of(&scale)
            && rv != revision.to_string()
        {
            return Err(ApiError::modified(req.info.group, req.info.plural, name));
        }
        let mut new = old.clone();
        match req.server.resources.custom(req.info) {
            Some(served) => served.set_replicas(&mut new, replicas)?,
            None => new["spec"]["replicas"] = json!(replicas),
        }
        match write_update(req, new, &old, revision, None).await {
            Ok(Written::Updated(v) | Written::Deleted(v)) => {
                return Ok(req.respond(200, &scale_of(req, &v)?));
            }
            Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified(req.info.group, req.info.plural, name))
}

/// DeleteOptions from the body (JSON, YAML or protobuf, as client-go sends
/// it) or the query.
pub struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    /// `dryRun: ["All"]` in the body (the query's dryRun is `req.dry_run`).
    dry_run: bool,
}

impl DeleteOptions {
    /// The options of a DELETE request: the query's, overridden by a body's.
    pub fn from_request(req: &Req<'_>, body: &[u8], media: &str) -> ApiResult<DeleteOptions> {
        let decoded = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(decode_body(body, media).map_err(|e| {
                ApiError::bad_request(format!("error decoding DeleteOptions: {}", e.message))
            })?)
        };
        DeleteOptions::from_value(req, decoded.as_ref())
    }

    /// The options of a request with no body (the query's alone).
    pub fn from_query(req: &Req<'_>) -> ApiResult<DeleteOptions> {
        DeleteOptions::from_value(req, None)
    }

    /// The options from the query and an already decoded DeleteOptions
    /// object (a DELETE body, or an Eviction's `deleteOptions`).
    pub fn from_value(req: &Req<'_>, v: Option<&Value>) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions {
            grace: req.query.int("gracePeriodSeconds")?,
            propagation: req.query.get("propagationPolicy").map(str::to_string),
            uid: None,
            resource_version: None,
            dry_run: false,
        };
        if let Some(v) = v {
            if let Some(g) = v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
                o.grace = Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "error decoding DeleteOptions: gracePeriodSeconds: {g} is not an integer"
                    ))
                })?);
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(p.to_string());
            }
            if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
                if o.propagation.is_some() {
                    return Err(invalid_delete_options(
                        "FieldValueInvalid",
                        "propagationPolicy",
                        "Invalid value: orphanDependents and deletionPropagation cannot be both set",
                    ));
                }
                o.propagation = Some(if orphan { "Orphan" } else { "Background" }.into());
            }
            o.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.resource_version = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(dr) = v.get("dryRun").and_then(Value::as_array) {
                for d in dr {
                    match d.as_str() {
                        Some("All") => o.dry_run = true,
                        _ => {
                            return Err(invalid_delete_options(
                                "FieldValueNotSupported",
                                "dryRun",
                                &format!("Unsupported value: {d}: supported values: \"All\""),
                            ));
                        }
                    }
                }
            }
        }
        if let Some(p) = &o.propagation
            && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
        {
            return Err(invalid_delete_options(
                "FieldValueNotSupported",
                "propagationPolicy",
                &format!(
                    "Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            ));
        }
        Ok(o)
    }
}

/// When a graceful deletion of `grace` seconds from now ends: saturating
/// at the last representable instant rather than overflowing (a grace
/// period is any int64, from the query, the body or the pod's spec).
fn deletion_deadline(grace: i64) -> jiff::Timestamp {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or(if grace < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        })
}

/// A 422 for DeleteOptions, as kube-apiserver's ValidateDeleteOptions.
fn invalid_delete_options(reason: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "meta.k8s.io",
        "DeleteOptions",
        "",
        vec![crate::status::Cause {
            reason: reason.into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}

/// Delete one object, honouring finalizers, graceful pod deletion and
/// propagation policy. Returns the last state (or the object being deleted).
pub async fn delete_one(
    req: &Req<'_>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<(Value, bool)> {
    let dry_run = req.dry_run || opts.dry_run;
    for _ in 0..MAX_RETRIES {
        let (old, revision) = read_current(req, name).await?;
        crate::authz::admit_write(req, "delete", None, None, Some(&old))?;
        if let Some(uid) = &opts.uid
            && old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                req.info.group,
                req.info.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != &revision.to_string()
        {
            return Err(ApiError::conflict(
                req.info.group,
                req.info.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                ),
            ));
        }
        let attrs = req.admission_attributes("DELETE", None, name, None, Some(&old), dry_run);
        crate::admission_policy::validate(req.server, &attrs)?;
        crate::webhook::validate(req.server, &attrs).await?;
        let mut new = old.clone();
        let mut finalizers: Vec<Value> = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if crate::crd::is_definition(req.info) {
            crate::crd::prepare_delete(&old, &mut finalizers, &mut new);
        }
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push(json!("foregroundDeletion"))
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push(json!("orphan"))
            }
            _ => {}
        }
        let graceful = admission::graceful_period(req.info, &old, opts.grace);
        let already_deleting = old
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        let namespace_finalizers = req.info.kind == "Namespace"
            && old
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        if finalizers.is_empty() && graceful.is_none() && !namespace_finalizers {
            if dry_run {
                return Ok((old, true));
            }
            match req.server.store.delete(&req.key(name), revision).await {
                Ok((_, rev)) => {
                    admission::release_object(req.server, req.info, &old).await;
                    let mut last = old;
                    set_resource_version(&mut last, rev);
                    return Ok((last, true));
                }
                Err(skiff_store::StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    return Err(ApiError::from_store(
                        e,
                        req.info.group,
                        req.info.plural,
                        name,
                    ));
                }
            }
        }
        // Mark for deletion: finalizers and graceful termination finish it.
        let meta = new
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::internal("object without metadata"))?;
        if !finalizers.is_empty() {
            meta.insert("finalizers".into(), Value::Array(finalizers));
        }
        let grace = graceful.unwrap_or(0);
        if !already_deleting {
            let ts = deletion_deadline(grace);
            meta.insert(
                "deletionTimestamp".into(),
                json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        } else if let Some(g) = graceful {
            // A shorter grace period may replace a longer one.
            let current = meta
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            if g < current {
                let ts = deletion_deadline(g);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(g));
            }
        }
        if req.info.kind == "Namespace" {
            new["status"]["phase"] = json!("Terminating");
        }
        if new == old {
            return Ok((old, false));
        }
        if dry_run {
            return Ok((new, false));
        }
        strip_resource_version(&mut new);
        let bytes = req.stored_bytes(&new)?;
        match req
            .server
            .store
            .update(&req.key(name), bytes, revision)
            .await
        {
            Ok(kv) => {
                set_resource_version(&mut new, kv.mod_revision);
                return Ok((new, false));
            }
            Err(skiff_store::StoreError::Conflict { .. }) => continue,
            Err(e) => {
                return Err(ApiError::from_store(
                    e,
                    req.info.group,
                    req.info.plural,
                    name,
                ));
            }
        }
    }
    Err(ApiError::modified(req.info.group, req.info.plural, name))
}

async fn delete(req: &Req<'_>, name: &str, opts: &DeleteOptions) -> ApiResult<Response<Body>> {
    let (obj, gone) = delete_one(req, name, opts).await?;
    // Kubernetes answers a finished delete with the object for most kinds
    // and a Status for a few (namespaces too answer with the object).
    if gone && admission::delete_returns_status(req.info) {
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(output::value_response(
            200,
            req.output.wire(),
            &success_status(req.info.group, req.info.plural, name, uid),
        ));
    }
    Ok(req.respond(200, &obj))
}

async fn delete_collection(req: &Req<'_>, opts: &DeleteOptions) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(req)?;
    req.server.cache.sync().await?;
    let (items, rev, _) = req
        .server
        .cache
        .list(&scope_prefix(req), None, 0, |o| filter.matches(&o.value));
    let mut deleted = Vec::new();
    for o in &items {
        let name = name_of(&o.value).to_string();
        let ns_req = Req {
            user: req.user.clone(),
            server: req.server,
            info: req.info,
            namespace: o
                .value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            query: req.query,
            output: Output::Json,
            field_manager: req.field_manager.clone(),
            dry_run: req.dry_run,
            warnings: Default::default(),
            duplicate_fields: Vec::new(),
        };
        match delete_one(&ns_req, &name, opts).await {
            Ok((v, _)) => deleted.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({"kind": req.info.list_kind, "apiVersion": req.info.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted});
    Ok(json_response(200, &list))
}

async fn bind(req: &Req<'_>, name: &str, binding: Value) -> ApiResult<Response<Body>> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding target name is required"))?
        .to_string();
    for _ in 0..MAX_RETRIES {
        let (old, revision) = read_current(req, name).await?;
        if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str)
            && old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                "the UID in the binding does not match the pod",
            ));
        }
        if old
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(current) = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        admission::set_pod_condition(&mut new, "PodScheduled", "True", None, None);
        if req.dry_run {
            break;
        }
        strip_resource_version(&mut new);
        let bytes = req.stored_bytes(&new)?;
        match req
            .server
            .store
            .update(&req.key(name), bytes, revision)
            .await
        {
            Ok(_) => break,
            Err(skiff_store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, "", "pods", name)),
        }
    }
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn evict(req: &Req<'_>, name: &str, eviction: &Value) -> ApiResult<Response<Body>> {
    // PodDisruptionBudgets are enforced by the disruption controller's
    // status; until it runs, an eviction is a graceful delete with the
    // Eviction's deleteOptions.
    let opts = DeleteOptions::from_value(req, eviction.get("deleteOptions"))?;
    delete_one(req, name, &opts).await?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// TokenRequest: a signed, expiring token for a service account.
async fn token_request(req: &Req<'_>, name: &str, mut request: Value) -> ApiResult<Response<Body>> {
    let sa = read(req, name).await?;
    let uid = sa
        .value
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let expiration = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![crate::status::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                ),
                field: "spec.expirationSeconds".into(),
            }],
        ));
    }
    if expiration > 1 << 32 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![crate::status::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
                ),
                field: "spec.expirationSeconds".into(),
            }],
        ));
    }
    // --service-account-max-token-expiration: longer requests get the maximum.
    let expiration = expiration.min(crate::tokens::MAX_EXPIRATION_SECONDS);
    let audiences: Vec<String> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let bound = request.pointer("/spec/boundObjectRef").map(|b| {
        (
            b.get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            b.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            b.get("uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    });
    // A token bound to a pod or secret needs it to exist (with the uid
    // given); the token carries its uid and dies with it.
    let bound = match bound {
        Some((kind, bound_name, uid)) if kind == "Pod" || kind == "Secret" => {
            let plural = if kind == "Pod" { "pods" } else { "secrets" };
            let key = format!(
                "/registry/{plural}/{}/{bound_name}",
                req.namespace.as_deref().unwrap_or_default()
            );
            let current = req
                .server
                .cache
                .get(&key)
                .ok_or_else(|| ApiError::not_found("", plural, &bound_name))?;
            let current_uid = current
                .value
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !uid.is_empty() && uid != current_uid {
                return Err(ApiError::conflict(
                    "",
                    plural,
                    &bound_name,
                    &format!(
                        "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            Some((kind, bound_name, current_uid))
        }
        Some((kind, _, _)) if !kind.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {kind}"
            )));
        }
        _ => None,
    };
    let now = jiff::Timestamp::now().as_second();
    let user = crate::tokens::ServiceAccountUser {
        namespace: req.namespace.clone().unwrap_or_default(),
        name: name.to_string(),
        uid,
    };
    let token = req
        .server
        .token_signer
        .issue(
            &user,
            &audiences,
            now,
            expiration,
            bound
                .as_ref()
                .map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
        )
        .ok_or_else(|| ApiError::internal("could not sign the token"))?;
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    if !request.is_object() {
        request = json!({});
    }
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] =
        json!({"name": name, "namespace": req.namespace, "creationTimestamp": now_rfc3339()});
    request["spec"]["expirationSeconds"] = json!(expiration);
    if request.pointer("/spec/audiences").is_none() {
        request["spec"]["audiences"] = json!([]);
    }
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(json_response(201, &request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Value {
        let mut v = json!("leaf");
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn what_is_stored_reads_back() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
        let deepest = nested(MAX_OBJECT_DEPTH);
        let bytes = encode_for_store(&deepest).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), deepest);
        let err = encode_for_store(&nested(MAX_OBJECT_DEPTH + 1)).unwrap_err();
        assert_eq!(err.code, 400);
        // serde_json itself stops a little further: the limit is its own.
        let too_deep = serde_json::to_vec(&nested(130)).unwrap();
        assert!(serde_json::from_slice::<Value>(&too_deep).is_err());
    }
}
