//! Request decoding: the resource a path names (k8s.io/apiserver's
//! RequestInfoFactory), query parameters, and body formats.

use std::collections::HashMap;

use serde_json::Value;
use skiff_api::registry::{ResourceInfo, registry};

use crate::crd::Resources;

use crate::status::ApiError;

/// What a resource path names.
#[derive(Debug)]
pub struct ResourcePath {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

/// Parse `/api/v1/...` and `/apis/{group}/{version}/...` resource paths.
/// Returns Ok(None) for paths that are not resource paths (discovery).
pub fn parse_resource_path(
    path: &str,
    resources: &Resources,
) -> Result<Option<ResourcePath>, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(None),
    };
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let lookup = |plural: &str| {
        resources
            .lookup(group, version, plural)
            .ok_or_else(ApiError::no_route)
    };
    let (info, namespace, tail): (&'static ResourceInfo, Option<String>, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..] => {
            if group.is_empty()
                && tail.is_empty()
                && let Some(ns_info) = registry().lookup("", version, "namespaces")
                && ns_info.has_subresource(plural)
            {
                // /api/v1/namespaces/{name}/status|finalize
                return Ok(Some(ResourcePath {
                    info: ns_info,
                    namespace: None,
                    name: Some(ns.to_string()),
                    subresource: Some(plural.to_string()),
                    watch_prefix,
                }));
            }
            let info = lookup(plural)?;
            if !info.namespaced {
                return Err(ApiError::no_route());
            }
            (info, Some(ns.to_string()), tail)
        }
        [plural, tail @ ..] => (lookup(plural)?, None, tail),
        [] => return Err(ApiError::no_route()),
    };
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub, ..] => {
            if !info.has_subresource(sub) {
                return Err(ApiError::no_route());
            }
            (Some(name.to_string()), Some(sub.to_string()))
        }
    };
    Ok(Some(ResourcePath {
        info,
        namespace,
        name,
        subresource,
        watch_prefix,
    }))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode a query component ('+' is a space).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters (last value wins).
#[derive(Clone, Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | ""))
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }

    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other}: supported values are [All]"
            ))),
        }
    }
}

/// The media type of a request body, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Decode a JSON or YAML body into a value.
pub fn decode_body(body: &[u8], media: &str) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match media {
        "application/json"
        | ""
        | "*/*"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding request body as JSON: {e}"))
        }),
        "application/yaml"
        | "application/apply-patch+yaml"
        | "application/x-yaml"
        | "text/yaml" => {
            // JSON is YAML: try the fast path first.
            if let Ok(v) = serde_json::from_slice::<Value>(body) {
                return Ok(v);
            }
            crate::yaml::to_json(body).map_err(ApiError::bad_request)
        }
        // kubectl's typed clients (create configmap/secret/deployment, ...) send protobuf.
        "application/vnd.kubernetes.protobuf" => {
            skiff_api::protobuf::decode(body).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(path: &str) -> Result<Option<ResourcePath>, ApiError> {
        parse_resource_path(path, &Resources::default())
    }

    #[test]
    fn paths() {
        let p = pr("/api/v1/namespaces/default/pods/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(p.info.plural, "pods");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = pr("/api/v1/namespaces/kube-system").unwrap().unwrap();
        assert_eq!(p.info.plural, "namespaces");
        assert_eq!(p.name.as_deref(), Some("kube-system"));
        let p = pr("/api/v1/namespaces/x/finalize").unwrap().unwrap();
        assert_eq!(p.subresource.as_deref(), Some("finalize"));
        let p = pr("/apis/apps/v1/watch/namespaces/a/deployments")
            .unwrap()
            .unwrap();
        assert!(p.watch_prefix);
        assert_eq!(p.info.kind, "Deployment");
        let p = pr("/apis/apps/v1/namespaces/default/replicasets/r/scale")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                p.info.kind,
                p.namespace.as_deref(),
                p.subresource.as_deref()
            ),
            ("ReplicaSet", Some("default"), Some("scale"))
        );
        let p = pr("/api/v1/pods").unwrap().unwrap();
        assert!(p.namespace.is_none() && p.name.is_none());
        assert!(pr("/api/v1").unwrap().is_none());
        assert_eq!(pr("/api/v1/bogus").unwrap_err().code, 404);
        assert_eq!(
            pr("/api/v1/namespaces/a/pods/p/bogus").unwrap_err().code,
            404
        );
        assert_eq!(pr("/api/v1/namespaces/a/nodes").unwrap_err().code, 404);
    }

    #[test]
    fn query() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn bodies() {
        assert!(decode_body(b"{", "application/json").unwrap_err().code == 400);
        let v = decode_body(b"kind: Pod\nmetadata:\n  name: a\n", "application/yaml").unwrap();
        assert_eq!(v["metadata"]["name"], "a");
        assert_eq!(
            decode_body(b"x", "application/vnd.kubernetes.protobuf")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(decode_body(b"x", "application/cbor").unwrap_err().code, 415);
    }
}
