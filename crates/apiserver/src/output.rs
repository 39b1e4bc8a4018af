//! Response shapes chosen by the Accept header: plain objects and lists,
//! meta.k8s.io/v1 Table (what `kubectl get` asks for), and
//! PartialObjectMetadata(List).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;

use crate::cache::ObjRef;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Table(IncludeObject),
    PartialMetadata,
}

impl Output {
    pub fn negotiate(accept: &str, include_object: Option<&str>) -> Output {
        for part in accept.split(',') {
            let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
            if p.contains("as=Table") && p.contains("g=meta.k8s.io") {
                let inc = match include_object {
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    _ => IncludeObject::Metadata,
                };
                return Output::Table(inc);
            }
            if p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io") {
                return Output::PartialMetadata;
            }
            if p.starts_with("application/json")
                || p.starts_with("*/*")
                || p.starts_with("application/yaml")
            {
                return Output::Json;
            }
        }
        Output::Json
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

fn row(info: &ResourceInfo, obj: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let cells = skiff_api::table::row_cells(info.group, info.kind, obj, now);
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
    info: &ResourceInfo,
    objects: impl IntoIterator<Item = &'a Value>,
    include: IncludeObject,
    resource_version: Option<&str>,
    continue_token: Option<&str>,
    columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| row(info, o, include, now))
        .collect();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    let defs = if columns {
        skiff_api::table::columns_json(info.group, info.kind)
    } else {
        json!([])
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

/// A list response, assembled from the objects' cached encodings.
pub fn list_bytes(
    info: &ResourceInfo,
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
        buf.put_slice(&o.bytes);
    }
    buf.put_slice(b"]}");
    buf.freeze()
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
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(
            Output::negotiate(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
                None
            ),
            Output::Table(IncludeObject::Metadata)
        );
        assert_eq!(Output::negotiate("application/json", None), Output::Json);
        assert!(accepts_plain(""));
        assert!(accepts_plain("application/json, */*"));
        assert!(accepts_plain(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!accepts_plain(
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
        assert!(!accepts_plain("text/html"));
        assert_eq!(Output::negotiate("", None), Output::Json);
        assert_eq!(
            Output::negotiate(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
                None
            ),
            Output::PartialMetadata
        );
    }
}
