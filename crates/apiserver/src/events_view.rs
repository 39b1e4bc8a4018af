//! events.k8s.io/v1 Events as a view of the core/v1 Events: one storage,
//! two shapes, as in Kubernetes (pkg/apis/events/v1/conversion.go). An
//! Event written through either API is read through both, and a core field
//! selector (`source=...`) finds one created as events.k8s.io.
//!
//! A request on /apis/events.k8s.io/v1/... is served by the core events
//! handlers: its body (objects and patches) is converted to the core shape,
//! its field selector translated, and the response (object, list or watch
//! stream) converted back. Tables pass through: the printer is the same.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, header};
use serde_json::{Map, Value, json};
use skiff_api::selector::FieldSelector;

use crate::metrics::RequestLabels;
use crate::request::{Query, media_type, parse_resource_path};
use crate::server::Body;
use crate::state::ApiServer;
use crate::status::ApiError;

const PREFIX: &str = "/apis/events.k8s.io/v1";
const API_VERSION: &str = "events.k8s.io/v1";

/// (events.k8s.io/v1 field, core/v1 field): the renamed top-level fields.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The core path serving an events.k8s.io/v1 path, if it is one.
pub fn core_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix(PREFIX)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let resource = match segs.as_slice() {
        [""] => return None,
        ["watch", rest @ ..] | rest => rest,
    };
    let plural = match resource {
        [p] | [p, _] | ["namespaces", _, p] | ["namespaces", _, p, _] => *p,
        _ => return None,
    };
    (plural == "events").then(|| format!("/api/v1{rest}"))
}

fn rename(obj: Value, to_core: bool) -> Value {
    let Value::Object(map) = obj else {
        return obj;
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let renamed = RENAMES
            .iter()
            .find(|(new, old)| if to_core { new == &k } else { old == &k })
            .map(|(new, old)| if to_core { *old } else { *new });
        out.insert(renamed.map(str::to_string).unwrap_or(k), v);
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in the core/v1 shape.
pub fn to_core(obj: Value) -> Value {
    let mut v = rename(obj, true);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("kind".into(), json!("Event"));
    }
    v
}

/// A core/v1 Event in the events.k8s.io/v1 shape.
pub fn from_core(obj: Value) -> Value {
    let mut v = rename(obj, false);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(API_VERSION));
        m.insert("kind".into(), json!("Event"));
    }
    v
}

/// Converts a response object of the core handlers: an Event, an
/// EventList, a watch event; anything else (Status, Table) unchanged.
fn response_from_core(v: Value) -> Value {
    match v.get("kind").and_then(Value::as_str) {
        Some("Event") if v.get("apiVersion").and_then(Value::as_str) == Some("v1") => from_core(v),
        Some("EventList") => {
            let Value::Object(mut m) = v else { return v };
            m.insert("apiVersion".into(), json!(API_VERSION));
            if let Some(Value::Array(items)) = m.remove("items") {
                m.insert(
                    "items".into(),
                    Value::Array(items.into_iter().map(from_core).collect()),
                );
            }
            Value::Object(m)
        }
        _ => {
            // A watch event: {"type": ..., "object": {...}}.
            if v.get("type").is_some()
                && let Value::Object(mut m) = v
            {
                if let Some(o) = m.remove("object") {
                    m.insert("object".into(), response_from_core(o));
                }
                return Value::Object(m);
            }
            v
        }
    }
}

/// The core field selector for an events.k8s.io one, checked against the
/// events.k8s.io field set first (so errors name the fields the client sent).
fn core_field_selector(sel: &str) -> Result<String, ApiError> {
    FieldSelector::parse(sel, "events.k8s.io", "Event", true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let parts: Vec<String> = sel
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            let split = part.find(['=', '!']).unwrap_or(part.len());
            let (key, rest) = part.split_at(split);
            let key = key.trim();
            let core_key = if let Some(field) = key.strip_prefix("regarding.") {
                format!("involvedObject.{field}")
            } else if key == "reportingController" {
                "reportingComponent".to_string()
            } else {
                key.to_string()
            };
            format!("{core_key}{rest}")
        })
        .collect();
    Ok(parts.join(","))
}

/// A patch document on an events.k8s.io Event, in the core shape.
fn patch_to_core(media: &str, patch: Value) -> Value {
    if media != "application/json-patch+json" {
        // merge, strategic merge and apply patches name fields as objects do.
        return rename(patch, true);
    }
    let Value::Array(ops) = patch else {
        return patch;
    };
    let rewrite = |p: &str| -> String {
        let mut segs = p.splitn(3, '/');
        let (_, first, rest) = (segs.next(), segs.next().unwrap_or(""), segs.next());
        let core = RENAMES
            .iter()
            .find(|(new, _)| *new == first)
            .map_or(first, |(_, old)| old);
        match rest {
            Some(r) => format!("/{core}/{r}"),
            None => format!("/{core}"),
        }
    };
    Value::Array(
        ops.into_iter()
            .map(|mut op| {
                for k in ["path", "from"] {
                    if let Some(p) = op.get(k).and_then(Value::as_str).map(&rewrite) {
                        op[k] = json!(p);
                    }
                }
                op
            })
            .collect(),
    )
}

fn convert_body(media: &str, method: &hyper::Method, body: &Bytes) -> Result<Bytes, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(body.clone());
    }
    let v = crate::request::decode_body(body, media)?;
    let converted = if method == hyper::Method::PATCH {
        patch_to_core(media, v)
    } else if method == hyper::Method::DELETE {
        v
    } else {
        to_core(v)
    };
    serde_json::to_vec(&converted)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Serves an events.k8s.io/v1 request through the core events handlers.
pub async fn handle(
    server: &Arc<ApiServer>,
    req: Request<Incoming>,
    core: &str,
    query: &Query,
    accept: &str,
    labels: &mut RequestLabels,
    user: crate::authz::UserInfo,
) -> Result<Response<Body>, ApiError> {
    let Some(rp) = parse_resource_path(core, &server.resources)? else {
        return Err(ApiError::no_route());
    };
    let method = req.method().clone();
    let watch = rp.watch_prefix || (method == hyper::Method::GET && query.flag("watch"));
    labels.verb = crate::server::verb_for(&method, rp.name.is_some(), watch);
    labels.group = "events.k8s.io".into();
    labels.version = "v1".into();
    labels.resource = "events".into();
    let mut query = query.clone();
    if let Some(sel) = query.get("fieldSelector").map(str::to_string) {
        query
            .0
            .insert("fieldSelector".into(), core_field_selector(&sel)?);
    }
    let (mut parts, body) = crate::server::read_body(req).await?;
    let media = media_type(
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let body = convert_body(&media, &method, &body)?;
    if method != hyper::Method::PATCH && !body.is_empty() {
        parts.headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
    }
    // Objects are converted as JSON; a Table is the same for both groups.
    let wants_table = accept.contains("as=Table");
    let inner_accept = if wants_table {
        accept
    } else {
        "application/json"
    };
    let resp =
        crate::handlers::resource(server, rp, &parts, body, &query, inner_accept, watch, user)
            .await;
    let resp = resp?;
    if wants_table {
        return Ok(resp);
    }
    let (head, body) = resp.into_parts();
    if watch {
        let stream = body.map_frame(|frame| {
            frame.map_data(|data| {
                let mut out = Vec::with_capacity(data.len());
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    match serde_json::from_slice::<Value>(line) {
                        Ok(v) => {
                            let _ = serde_json::to_writer(&mut out, &response_from_core(v));
                        }
                        Err(_) => out.extend_from_slice(line),
                    }
                    out.push(b'\n');
                }
                Bytes::from(out)
            })
        });
        return Ok(Response::from_parts(head, stream.boxed()));
    }
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let converted = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Bytes::from(serde_json::to_vec(&response_from_core(v)).unwrap_or_default()),
        Err(_) => bytes,
    };
    let mut resp = Response::from_parts(head, http_body_util::Full::new(converted).boxed());
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_core_events() {
        assert_eq!(
            core_path("/apis/events.k8s.io/v1/namespaces/a/events/x").as_deref(),
            Some("/api/v1/namespaces/a/events/x")
        );
        assert_eq!(
            core_path("/apis/events.k8s.io/v1/events").as_deref(),
            Some("/api/v1/events")
        );
        assert_eq!(
            core_path("/apis/events.k8s.io/v1/watch/namespaces/a/events").as_deref(),
            Some("/api/v1/watch/namespaces/a/events")
        );
        assert_eq!(core_path("/apis/events.k8s.io/v1"), None);
        assert_eq!(core_path("/apis/events.k8s.io/v1beta1/events"), None);
        assert_eq!(core_path("/apis/events.k8s.io/v1x/events"), None);
    }

    #[test]
    fn events_convert_both_ways() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reportingController": "c",
            "reportingInstance": "i", "action": "Do", "reason": "Test", "type": "Normal",
            "deprecatedCount": 2, "series": {"count": 3}});
        let core = to_core(ev.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "c");
        assert_eq!(core["count"], 2);
        assert_eq!(core["series"]["count"], 3);
        assert_eq!(from_core(core), ev);
    }

    #[test]
    fn field_selectors_and_patches_are_translated() {
        assert_eq!(
            core_field_selector("regarding.name=p,reportingController!=c,type=Normal").unwrap(),
            "involvedObject.name=p,reportingComponent!=c,type=Normal"
        );
        // Fields events.k8s.io does not register are refused in its terms.
        assert!(core_field_selector("involvedObject.name=p").is_err());
        assert_eq!(
            patch_to_core("application/merge-patch+json", json!({"note": "x"})),
            json!({"message": "x"})
        );
        assert_eq!(
            patch_to_core(
                "application/json-patch+json",
                json!([{"op": "replace", "path": "/regarding/name", "value": "q"}])
            ),
            json!([{"op": "replace", "path": "/involvedObject/name", "value": "q"}])
        );
        let list = response_from_core(json!({"kind": "EventList", "apiVersion": "v1",
            "items": [{"kind": "Event", "apiVersion": "v1", "message": "m"}]}));
        assert_eq!(list["apiVersion"], "events.k8s.io/v1");
        assert_eq!(list["items"][0]["note"], "m");
    }
}
