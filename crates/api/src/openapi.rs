//! OpenAPI documents generated from k8s-openapi's schemas, and the unknown-
//! field check behind `fieldValidation=Strict|Warn`.
//!
//! kubectl reads OpenAPI v3 (`/openapi/v3` index, then one document per
//! group-version) for `kubectl explain` and to learn that the server supports
//! the `fieldValidation` query parameter (a PATCH operation tagged with the
//! kind's `x-kubernetes-group-version-kind` must list it).

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::registry::{ResourceInfo, registry};

struct Schemas {
    /// All component schemas, by name, in OpenAPI 3 form.
    defs: Map<String, Value>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    for r in registry().all() {
        (r.add_schema)(&mut generator);
    }
    // What custom resources' list schemas refer to.
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    let mut defs = generator.take_definitions(true);
    for r in registry().all() {
        if let Some(Value::Object(schema)) = defs.get_mut(&r.schema_name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
            );
        }
    }
    // The strategic-merge-patch extensions kubectl reads when it builds an apply patch from OpenAPI.
    for (type_name, field, strategy, merge_key) in crate::patch::PATCH_STRATEGIES {
        if let Some(prop) = defs
            .get_mut(*type_name)
            .and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
            .and_then(Value::as_object_mut)
        {
            prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if let Some(key) = merge_key {
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    Schemas { defs }
});

fn resolve<'a>(defs: &'a Map<String, Value>, schema: &'a Value) -> &'a Value {
    let mut cur = schema;
    for _ in 0..8 {
        if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
            match r.rsplit('/').next().and_then(|name| defs.get(name)) {
                Some(next) => cur = next,
                None => return cur,
            }
        } else if let Some(first) = cur
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            cur = first;
        } else {
            return cur;
        }
    }
    cur
}

/// Paths (".spec.foo" style without the leading dot, as Kubernetes words
/// them: `unknown field "spec.foo"`) of the fields of `value` that the kind's
/// schema does not know.
pub fn unknown_fields(info: &ResourceInfo, value: &Value) -> Vec<String> {
    let defs = &SCHEMAS.defs;
    let mut out = Vec::new();
    if let Some(root) = defs.get(&info.schema_name) {
        walk(defs, root, value, String::new(), &mut out);
    }
    out
}

/// Go's zero `metav1.Time`, which its JSON encoder writes as `null`.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Replaces `null` in fields the kind requires with the field's zero value,
/// as Go's decoder does (a `null` string is "", a `null` Time is the zero
/// time), so that the typed round trip accepts what kube-apiserver accepts
/// (a Service status condition without lastTransitionTime, from
/// `metav1.Condition{}`). Returns the JSON pointers of the Time fields
/// filled with [`ZERO_TIME`]. They are stored as that string, not as
/// `null`: Go clients read it as the same zero time, and typed clients in
/// other languages (k8s-openapi's required `Time`) can still decode the
/// object.
pub fn fill_required_nulls(info: &ResourceInfo, value: &mut Value) -> Vec<String> {
    let defs = &SCHEMAS.defs;
    let mut times = Vec::new();
    if let Some(root) = defs.get(&info.schema_name) {
        fill_nulls(defs, root, value, String::new(), &mut times, 0);
    }
    times
}

fn fill_nulls(
    defs: &Map<String, Value>,
    schema: &Value,
    value: &mut Value,
    pointer: String,
    times: &mut Vec<String>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let schema = resolve(defs, schema);
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (k, v) in map.iter_mut() {
                let Some(prop) = props.get(k) else { continue };
                let child = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                if v.is_null() {
                    if required.contains(&k.as_str()) {
                        let prop = resolve(defs, prop);
                        *v = match (
                            prop.get("type").and_then(Value::as_str),
                            prop.get("format").and_then(Value::as_str),
                        ) {
                            (Some("string"), Some("date-time")) => {
                                times.push(child);
                                json!(ZERO_TIME)
                            }
                            (Some("string"), _) => json!(""),
                            (Some("integer" | "number"), _) => json!(0),
                            (Some("boolean"), _) => json!(false),
                            (Some("array"), _) => json!([]),
                            (Some("object"), _) => json!({}),
                            _ => Value::Null,
                        };
                    }
                } else {
                    fill_nulls(defs, prop, v, child, times, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    fill_nulls(
                        defs,
                        item_schema,
                        v,
                        format!("{pointer}/{i}"),
                        times,
                        depth + 1,
                    );
                }
            }
        }
        _ => {}
    }
}

/// The fields a JSON body sets more than once (`spec.replicas`,
/// `spec.containers[0].name`), in the order they occur: what Kubernetes'
/// strict decoder reports as `duplicate field "..."`. A body that is not
/// valid JSON has none (its decoding fails elsewhere).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;
    use std::collections::HashSet;

    struct Walk<'a> {
        path: String,
        out: &'a RefCell<Vec<String>>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let child = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if !seen.insert(key) {
                    self.out.borrow_mut().push(child.clone());
                }
                map.next_value_seed(Walk {
                    path: child,
                    out: self.out,
                })?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    out: self.out,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let out = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Walk {
        path: String::new(),
        out: &out,
    }
    .deserialize(&mut de);
    if walked.is_err() {
        return Vec::new();
    }
    out.into_inner()
}

fn walk(
    defs: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: String,
    out: &mut Vec<String>,
) {
    let schema = resolve(defs, schema);
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        || schema.get("x-kubernetes-int-or-string").is_some()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in map {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match props.get(k) {
                        Some(s) => walk(defs, s, v, child, out),
                        None => out.push(child),
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (k, v) in map {
                    walk(defs, additional, v, format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(defs, item_schema, v, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// A custom resource in the documents: its info and its definition's
/// `openAPIV3Schema` for the version.
#[derive(Clone, Copy)]
pub struct Custom<'a> {
    pub info: &'a ResourceInfo,
    pub schema: Option<&'a Value>,
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The component schemas of a custom kind and its list, as
/// apiextensions-apiserver's OpenAPI builder makes them: the definition's
/// schema with apiVersion, kind and metadata, tagged with the kind.
fn custom_schemas(c: &Custom<'_>) -> [(String, Value); 2] {
    let r = c.info;
    let mut kind = c
        .schema
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    if !kind.is_object() {
        kind = json!({"type": "object"});
    }
    let api_version = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
    let kind_prop = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
    if let Some(m) = kind.as_object_mut() {
        let props = m.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("apiVersion".into(), api_version.clone());
            props.insert("kind".into(), kind_prop.clone());
            props.insert(
                "metadata".into(),
                json!({"$ref": format!("#/components/schemas/{OBJECT_META}")}),
            );
        }
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
        );
    }
    let list = json!({
        "description": format!("{} is a list of {}", r.list_kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": api_version,
            "items": {"type": "array", "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", r.plural), "items": {"$ref": format!("#/components/schemas/{}", r.schema_name)}},
            "kind": kind_prop,
            "metadata": {"$ref": format!("#/components/schemas/{LIST_META}")},
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.list_kind}],
    });
    [
        (r.schema_name.clone(), kind),
        (format!("{}List", r.schema_name), list),
    ]
}

/// The `/openapi/v3` index.
pub fn v3_index() -> Value {
    v3_index_with(&[])
}

/// The `/openapi/v3` index with custom group-versions, each with the hash
/// of its current document.
pub fn v3_index_with(custom: &[(String, String, String)]) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry().groups() {
        for version in versions {
            let key = gv_key(group, version);
            paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc_hash(group, version))}));
        }
    }
    for (group, version, hash) in custom {
        let key = gv_key(group, version);
        paths.entry(key.clone()).or_insert_with(
            || json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    paths.insert(
        "version".into(),
        json!({"serverRelativeURL": "/openapi/v3/version"}),
    );
    json!({ "paths": paths })
}

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable hash of a group-version document (its content never changes
/// within one binary, so the binary's version and the group-version do).
fn doc_hash(group: &str, version: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in env!("CARGO_PKG_VERSION")
        .bytes()
        .chain(group.bytes())
        .chain(version.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(
    r: &ResourceInfo,
    action: &str,
    verb_id: &str,
    params: Vec<Value>,
    body: bool,
) -> Value {
    let kind_ref = json!({"$ref": format!("#/components/schemas/{}", r.schema_name)});
    let mut op = json!({
        "tags": [format!("{}{}", if r.group.is_empty() { "core" } else { r.group }, r.version)],
        "operationId": format!("{verb_id}{}", r.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": kind_ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if body {
        op["requestBody"] = json!({"content": {"*/*": {"schema": kind_ref}}, "required": true});
    }
    op
}

/// One group-version's OpenAPI v3 document.
pub fn v3_document(group: &str, version: &str) -> Option<Value> {
    v3_document_with(group, version, &[])
}

/// One group-version's OpenAPI v3 document, with the custom resources
/// served there.
pub fn v3_document_with(group: &str, version: &str, custom: &[Custom<'_>]) -> Option<Value> {
    let resources: Vec<&ResourceInfo> = registry()
        .in_group_version(group, version)
        .chain(
            custom
                .iter()
                .filter(|c| c.info.group == group && c.info.version == version)
                .map(|c| c.info),
        )
        .collect();
    if resources.is_empty() {
        return None;
    }
    let write_params = || {
        vec![
            query_param(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
            ),
            query_param(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes.",
            ),
            query_param(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.",
            ),
        ]
    };
    let mut paths = Map::new();
    let mut needed: Vec<String> = Vec::new();
    for r in &resources {
        needed.push(r.schema_name.clone());
        let base = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_key(group, version),
                r.plural
            )
        } else {
            format!("/{}/{}", gv_key(group, version), r.plural)
        };
        paths.insert(
            base.clone(),
            json!({
                "get": operation(r, "list", "list", vec![query_param("labelSelector", "A selector to restrict the list of returned objects by their labels."), query_param("fieldSelector", "A selector to restrict the list of returned objects by their fields.")], false),
                "post": operation(r, "post", "create", write_params(), true),
                "delete": operation(r, "deletecollection", "deletecollection", vec![], false),
            }),
        );
        let mut patch_params = write_params();
        patch_params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": operation(r, "get", "read", vec![], false),
                "put": operation(r, "put", "replace", write_params(), true),
                "patch": operation(r, "patch", "patch", patch_params, true),
                "delete": operation(r, "delete", "delete", vec![], false),
            }),
        );
    }
    // The component schemas this document needs: everything reachable from its kinds.
    let defs = &SCHEMAS.defs;
    let mut schemas = Map::new();
    for c in custom
        .iter()
        .filter(|c| c.info.group == group && c.info.version == version)
    {
        for (name, schema) in custom_schemas(c) {
            collect_refs(&schema, &mut needed);
            schemas.insert(name, schema);
        }
    }
    while let Some(name) = needed.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        if let Some(s) = defs.get(&name) {
            collect_refs(s, &mut needed);
            schemas.insert(name, s.clone());
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(name) = r.rsplit('/').next()
            {
                out.push(name.to_string());
            }
            for child in m.values() {
                collect_refs(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// The OpenAPI v2 (swagger) document as JSON, with `#/definitions/` refs.
/// Paths carry the same operations as the v3 documents (older kubectl
/// releases look for the `fieldValidation` parameter here).
pub fn v2_document() -> Value {
    v2_document_with(&[])
}

/// The OpenAPI v2 document with custom resources.
pub fn v2_document_with(custom: &[Custom<'_>]) -> Value {
    let mut defs = SCHEMAS.defs.clone();
    for c in custom {
        for (name, schema) in custom_schemas(c) {
            defs.insert(name, schema);
        }
    }
    for v in defs.values_mut() {
        rewrite_refs(v);
    }
    let mut paths = Map::new();
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for (group, versions) in registry().groups() {
        gvs.extend(versions.into_iter().map(|v| (group, v)));
    }
    for c in custom {
        if !gvs.contains(&(c.info.group, c.info.version)) {
            gvs.push((c.info.group, c.info.version));
        }
    }
    for (group, version) in gvs {
        let Some(doc) = v3_document_with(group, version, custom) else {
            continue;
        };
        let Some(doc_paths) = doc.get("paths").and_then(Value::as_object) else {
            continue;
        };
        for (path, item) in doc_paths {
            let mut v2_item = Map::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                v2_item.insert(method.clone(), v2_operation(op));
            }
            paths.insert(path.clone(), Value::Object(v2_item));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "definitions": defs,
    })
}

fn v2_operation(op: &Value) -> Value {
    let mut out = op.clone();
    let Some(m) = out.as_object_mut() else {
        return out;
    };
    let mut params: Vec<Value> = m
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            json!({"name": p["name"], "in": p["in"], "description": p["description"], "type": "string", "uniqueItems": true})
        })
        .collect();
    if let Some(body) = m.remove("requestBody") {
        let mut schema = body
            .pointer("/content/*~1*/schema")
            .cloned()
            .unwrap_or_else(|| json!({}));
        rewrite_refs(&mut schema);
        params.insert(
            0,
            json!({"name": "body", "in": "body", "required": true, "schema": schema}),
        );
    }
    m.insert("parameters".into(), Value::Array(params));
    if let Some(Value::Object(responses)) = m.get_mut("responses") {
        for r in responses.values_mut() {
            let mut schema = r.pointer("/content/application~1json/schema").cloned();
            if let Some(s) = schema.as_mut() {
                rewrite_refs(s);
            }
            let mut resp =
                json!({"description": r.get("description").cloned().unwrap_or(json!("OK"))});
            if let Some(s) = schema {
                resp["schema"] = s;
            }
            *r = resp;
        }
    }
    m.insert("consumes".into(), json!(["*/*"]));
    m.insert(
        "produces".into(),
        json!(["application/json", "application/yaml"]),
    );
    m.insert("schemes".into(), json!(["https"]));
    out
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // Swagger 2 tools (kubectl's proto models) read `$ref` beside a
            // description, not single-element `allOf` wrappers.
            if let Some(Value::Array(all)) = m.get("allOf")
                && all.len() == 1
                && let Some(r) = all[0].get("$ref").cloned()
            {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/components/schemas/", "#/definitions/");
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn required_nulls_become_zero_values() {
        let services = registry().lookup("", "v1", "services").unwrap();
        let mut svc = json!({"metadata": {"name": "s"}, "status": {"conditions": [
            {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "m",
             "lastTransitionTime": null}]}});
        let times = fill_required_nulls(services, &mut svc);
        assert_eq!(times, vec!["/status/conditions/0/lastTransitionTime"]);
        let typed = (services.roundtrip)(svc).unwrap();
        assert_eq!(
            typed.pointer("/status/conditions/0/lastTransitionTime"),
            Some(&json!(ZERO_TIME))
        );
        assert_eq!(
            typed.pointer("/status/conditions/0/reason"),
            Some(&json!("E2E"))
        );
    }

    #[test]
    fn finds_duplicate_fields_in_order() {
        let body = br#"{"spec": {"replicas": 2, "x": {"a": 1}, "replicas": 3,
            "containers": [{"name": "a", "name": "b"}]}, "spec2": 1, "spec2": 2}"#;
        assert_eq!(
            duplicate_fields(body),
            vec!["spec.replicas", "spec.containers[0].name", "spec2"]
        );
        assert!(duplicate_fields(br#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_empty());
        assert!(duplicate_fields(b"not json").is_empty());
    }

    use super::*;

    #[test]
    fn unknown_fields_are_found_with_their_paths() {
        let pods = registry().lookup("", "v1", "pods").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "foo": 2,
                "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]}]}});
        assert_eq!(
            unknown_fields(pods, &pod),
            vec![
                "metadata.bogus".to_string(),
                "spec.containers[0].foo".to_string()
            ]
        );
    }

    #[test]
    fn v3_document_tags_patch_with_field_validation() {
        let doc = v3_document("apps", "v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let schema = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            schema["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(
            doc["components"]["schemas"]
                .get("io.k8s.api.core.v1.PodSpec")
                .is_some()
        );
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let v2 = v2_document();
        let spec = &v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(
            spec["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(spec.get("allOf").is_none());
        assert!(
            v3_index()["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }
}
