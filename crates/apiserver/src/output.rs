//! Response shapes chosen by the Accept header: plain objects and lists,
//! meta.k8s.io/v1 Table (what `kubectl get` asks for), and
//! PartialObjectMetadata(List).

use bytes::{BufMut, Bytes, BytesMut};
use hyper::Response;
use hyper::header::{self, HeaderValue};
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;

use crate::cache::ObjRef;
use crate::server::{Body, bytes_response, json_response};
use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The wire encoding of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The object itself as JSON (also what YAML clients get).
    Json,
    /// The object itself as Kubernetes protobuf.
    Protobuf,
    /// meta.k8s.io/v1 Table (JSON only, as kube-apiserver).
    Table(IncludeObject),
    PartialMetadata(Wire),
}

/// The media types a resource endpoint serves, as kube-apiserver lists them
/// in a 406 (protobuf included even where only `as=PartialObjectMetadata`
/// can use it, as for custom resources).
const SUPPORTED: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";
/// The same for watch streams (YAML has no stream serializer).
const SUPPORTED_STREAM: &str =
    "application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch";

/// One clause of an Accept header (bitbucket.org/ww/goautoneg's Accept).
struct Clause<'a> {
    ty: &'a str,
    sub: &'a str,
    q: f32,
    params: Vec<(&'a str, &'a str)>,
}

fn parse_accept(header: &str) -> Vec<Clause<'_>> {
    let mut clauses = Vec::new();
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let range = pieces.next().unwrap_or("").trim();
        let (ty, sub) = match range.split_once('/') {
            Some((t, s)) => (t.trim(), s.trim()),
            None if range == "*" => ("*", "*"),
            None => continue,
        };
        let mut clause = Clause {
            ty,
            sub,
            q: 1.0,
            params: Vec::new(),
        };
        for param in pieces {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k == "q" {
                clause.q = v.parse().unwrap_or(0.0);
            } else {
                clause.params.push((k, v));
            }
        }
        clauses.push(clause);
    }
    // Highest q first, then specific types before wildcards (stable).
    clauses.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then((a.ty == "*").cmp(&(b.ty == "*")))
            .then((a.sub == "*").cmp(&(b.sub == "*")))
    });
    clauses
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Media {
    Json,
    Yaml,
    Protobuf,
}

impl Output {
    /// Content negotiation as kube-apiserver's
    /// (apiserver/pkg/endpoints/handlers/negotiation): Accept clauses by
    /// quality, each matched against JSON, YAML and protobuf; `as=Table`
    /// only in JSON/YAML, `as=PartialObjectMetadata[List]` in any of them,
    /// other conversions refused; protobuf for the object itself only when
    /// its kind has a protobuf message (`protobuf`); `stream=watch` only
    /// where a stream encoding exists. An empty Accept means JSON; nothing
    /// acceptable is a 406 NotAcceptable.
    pub fn negotiate(
        accept: &str,
        include_object: Option<&str>,
        protobuf: bool,
        watch: bool,
    ) -> Result<Output, ApiError> {
        if accept.trim().is_empty() {
            return Ok(Output::Json);
        }
        const MEDIA: [(&str, &str, Media); 3] = [
            ("application", "json", Media::Json),
            ("application", "yaml", Media::Yaml),
            ("application", "vnd.kubernetes.protobuf", Media::Protobuf),
        ];
        for clause in parse_accept(accept) {
            for (ty, sub, media) in MEDIA {
                let matches = (clause.ty == ty && (clause.sub == sub || clause.sub == "*"))
                    || (clause.ty == "*" && clause.sub == "*");
                if !matches {
                    continue;
                }
                if let Some(out) = accept_options(&clause, media, include_object, protobuf) {
                    if watch && media == Media::Yaml {
                        return Err(not_acceptable(SUPPORTED_STREAM));
                    }
                    return Ok(out);
                }
            }
        }
        Err(not_acceptable(if watch {
            SUPPORTED_STREAM
        } else {
            SUPPORTED
        }))
    }

    /// The wire encoding of this output.
    pub fn wire(self) -> Wire {
        match self {
            Output::Protobuf | Output::PartialMetadata(Wire::Protobuf) => Wire::Protobuf,
            _ => Wire::Json,
        }
    }
}

fn not_acceptable(supported: &str) -> ApiError {
    ApiError::new(
        406,
        "NotAcceptable",
        format!("only the following media types are accepted: {supported}"),
    )
}

/// The output a clause asks for in `media`, if the endpoint can serve it
/// (negotiation's acceptMediaTypeOptions with the RequestScope's
/// AllowsMediaTypeTransform).
fn accept_options(
    clause: &Clause<'_>,
    media: Media,
    include_object: Option<&str>,
    protobuf: bool,
) -> Option<Output> {
    let (mut kind, mut group, mut version) = (None, None, None);
    for &(k, v) in &clause.params {
        match k {
            "as" => kind = Some(v),
            "g" => group = Some(v),
            "v" => version = Some(v),
            "stream" if !v.is_empty() && (v != "watch" || media == Media::Yaml) => return None,
            "sv" if !v.is_empty() => return None,
            _ => {}
        }
    }
    let wire = if media == Media::Protobuf {
        Wire::Protobuf
    } else {
        Wire::Json
    };
    if kind.is_none() && group.is_none() && version.is_none() {
        return match media {
            Media::Protobuf if !protobuf => None,
            Media::Protobuf => Some(Output::Protobuf),
            Media::Json | Media::Yaml => Some(Output::Json),
        };
    }
    if group != Some("meta.k8s.io") || !matches!(version, Some("v1" | "v1beta1")) {
        return None;
    }
    match kind {
        Some("Table") if media != Media::Protobuf => {
            let inc = match include_object {
                Some("None") => IncludeObject::None,
                Some("Object") => IncludeObject::Object,
                _ => IncludeObject::Metadata,
            };
            Some(Output::Table(inc))
        }
        Some("PartialObjectMetadata" | "PartialObjectMetadataList") => {
            Some(Output::PartialMetadata(wire))
        }
        _ => None,
    }
}

/// Whether an Accept header takes a plain object (JSON, YAML, protobuf or a
/// wildcard), not only a Table or metadata-only transformation.
pub fn accepts_plain(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|part| {
        let mut params = part.split(';');
        let essence = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let transformed = params.any(|p| p.trim().starts_with("as="));
        !transformed
            && matches!(
                essence.as_str(),
                "*/*"
                    | "application/*"
                    | "application/json"
                    | "application/yaml"
                    | "application/vnd.kubernetes.protobuf"
            )
    })
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Whose columns a Table has: a built-in kind's, or a custom resource's
/// printer columns.
#[derive(Clone, Copy)]
pub enum Printer<'a> {
    Builtin(&'a ResourceInfo),
    Custom(&'a crate::crd::Served),
}

impl<'a> Printer<'a> {
    /// The printer of `info`, with its definition when it is custom.
    pub fn of(info: &'a ResourceInfo, custom: Option<&'a crate::crd::Served>) -> Printer<'a> {
        match custom {
            Some(s) => Printer::Custom(s),
            None => Printer::Builtin(info),
        }
    }
}

fn row(printer: Printer<'_>, obj: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let cells = match printer {
        Printer::Builtin(info) => skiff_api::table::row_cells(info.group, info.kind, obj, now),
        Printer::Custom(served) => crate::crd::row_cells(served, obj, now),
    };
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => partial_metadata(obj),
        IncludeObject::Object => obj.clone(),
    };
    json!({"cells": cells, "object": object})
}

/// A Table of objects. Column definitions are left out when `columns` is false
/// (watch events after the first, as kube-apiserver does).
pub fn table<'a>(
    printer: Printer<'_>,
    objects: impl IntoIterator<Item = &'a Value>,
    include: IncludeObject,
    resource_version: Option<&str>,
    continue_token: Option<&str>,
    columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| row(printer, o, include, now))
        .collect();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    let defs = if !columns {
        json!([])
    } else {
        match printer {
            Printer::Builtin(info) => skiff_api::table::columns_json(info.group, info.kind),
            Printer::Custom(served) => crate::crd::column_definitions(served),
        }
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

/// A list response, assembled from the objects' cached encodings.
pub fn list_bytes(
    info: &ResourceInfo,
    custom: Option<&crate::crd::Served>,
    items: &[ObjRef],
    resource_version: i64,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Bytes {
    let mut meta = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let head = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        info.list_kind,
        info.api_version(),
        meta
    );
    let size: usize = items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + head.len() + 2;
    let mut buf = BytesMut::with_capacity(size);
    buf.put_slice(head.as_bytes());
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        // A custom resource stored in another version, or lacking a
        // default its schema sets, is shown as read; others as stored.
        match crate::crd::on_read(custom, &o.value) {
            std::borrow::Cow::Owned(v) => {
                buf.put_slice(&serde_json::to_vec(&v).unwrap_or_default());
            }
            std::borrow::Cow::Borrowed(_) => buf.put_slice(&o.bytes),
        }
    }
    buf.put_slice(b"]}");
    buf.freeze()
}

/// A response with `value` in the negotiated wire encoding. A value that
/// has no protobuf form is answered in JSON (clients decode by the
/// response's Content-Type).
pub fn value_response(code: u16, wire: Wire, value: &Value) -> Response<Body> {
    if wire == Wire::Protobuf {
        match skiff_api::protobuf::encode(value) {
            Ok(body) => return bytes_response(code, skiff_api::protobuf::MEDIA_TYPE, body),
            Err(e) => tracing::warn!(error = %e, "answering in JSON"),
        }
    }
    json_response(code, value)
}

/// An error as a `Status` in the negotiated wire encoding.
pub fn error_response(e: &ApiError, wire: Wire) -> Response<Body> {
    let mut resp = match (wire, e.to_status_protobuf()) {
        (Wire::Protobuf, Some(body)) => {
            bytes_response(e.code, skiff_api::protobuf::MEDIA_TYPE, body)
        }
        _ => return crate::server::error_response(e),
    };
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A protobuf list response (`<Kind>List{metadata, items}`), assembled from
/// the objects' cached protobuf encodings. None when an object has none.
pub fn list_protobuf(
    info: &ResourceInfo,
    items: &[ObjRef],
    resource_version: i64,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Option<Bytes> {
    let mut meta = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let raw: Vec<&Bytes> = items.iter().map(|o| o.protobuf()).collect::<Option<_>>()?;
    match skiff_api::protobuf::encode_list(
        &info.api_version(),
        info.list_kind,
        &meta,
        raw.iter().map(|b| b.as_ref()),
    ) {
        Ok(body) => Some(Bytes::from(body)),
        Err(e) => {
            tracing::warn!(error = %e, kind = info.list_kind, "answering in JSON");
            None
        }
    }
}

pub fn partial_metadata_list(
    items: &[ObjRef],
    resource_version: i64,
    continue_token: Option<&str>,
) -> Value {
    let mut meta = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "items": items.iter().map(|o| partial_metadata(&o.value)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn neg(accept: &str) -> Result<Output, u16> {
        Output::negotiate(accept, None, true, false).map_err(|e| e.code)
    }

    #[test]
    fn negotiation() {
        assert_eq!(
            neg(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            Ok(Output::Table(IncludeObject::Metadata))
        );
        assert_eq!(neg("application/json"), Ok(Output::Json));
        assert_eq!(neg(""), Ok(Output::Json));
        assert_eq!(neg("*/*"), Ok(Output::Json));
        assert_eq!(neg("application/*"), Ok(Output::Json));
        assert_eq!(neg("application/yaml"), Ok(Output::Json));
        assert!(accepts_plain(""));
        assert!(accepts_plain("application/json, */*"));
        assert!(accepts_plain(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!accepts_plain(
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
        assert!(!accepts_plain("text/html"));
        assert_eq!(
            neg(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
            ),
            Ok(Output::PartialMetadata(Wire::Json))
        );
        // What client-go's typed clients send.
        assert_eq!(
            neg("application/vnd.kubernetes.protobuf, application/json"),
            Ok(Output::Protobuf)
        );
        assert_eq!(
            neg("application/vnd.kubernetes.protobuf"),
            Ok(Output::Protobuf)
        );
        // client-go's metadata client.
        assert_eq!(
            neg(
                "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
            ),
            Ok(Output::PartialMetadata(Wire::Protobuf))
        );
        // Quality order wins over header order.
        assert_eq!(
            neg("application/json;q=0.5, application/vnd.kubernetes.protobuf"),
            Ok(Output::Protobuf)
        );
        // Table has no protobuf form: the next clause is used.
        assert_eq!(
            neg(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json"
            ),
            Ok(Output::Json)
        );
        // Conversions that are not served, unknown groups and versions.
        assert_eq!(neg("application/json;as=Deployment;g=apps;v=v1"), Err(406));
        assert_eq!(neg("application/json;as=Table;g=meta.k8s.io"), Err(406));
        assert_eq!(neg("text/html"), Err(406));
        assert_eq!(neg("application/xml, text/plain"), Err(406));
        // Kinds without protobuf (custom resources): JSON, or 406 when only
        // protobuf is acceptable; metadata in protobuf still works.
        let cr = |a: &str| Output::negotiate(a, None, false, false).map_err(|e| e.code);
        assert_eq!(
            cr("application/vnd.kubernetes.protobuf, application/json"),
            Ok(Output::Json)
        );
        assert_eq!(cr("application/vnd.kubernetes.protobuf"), Err(406));
        assert_eq!(
            cr("application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
            Ok(Output::PartialMetadata(Wire::Protobuf))
        );
        // Watch: stream=watch is allowed for JSON and protobuf, YAML has no stream.
        let w = |a: &str| Output::negotiate(a, None, true, true).map_err(|e| e.code);
        assert_eq!(
            w("application/vnd.kubernetes.protobuf;stream=watch"),
            Ok(Output::Protobuf)
        );
        assert_eq!(w("application/json;stream=watch"), Ok(Output::Json));
        assert_eq!(w("application/yaml"), Err(406));
        assert_eq!(neg("application/yaml;stream=watch"), Err(406));
        let e = Output::negotiate("text/html", None, true, false).unwrap_err();
        assert_eq!(e.reason, "NotAcceptable");
        assert_eq!(
            e.message,
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
        );
    }
}
