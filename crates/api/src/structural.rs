//! Structural schemas: what kube-apiserver does to a custom resource with
//! its definition's OpenAPI v3 schema (k8s.io/apiextensions-apiserver's
//! `pkg/apiserver/schema`): prune unknown fields, apply defaults, validate
//! (types, enums, bounds, lengths, patterns, required fields), with
//! Kubernetes' field paths and messages. The schema is the
//! `openAPIV3Schema` JSON of a CustomResourceDefinition version.

use serde_json::{Map, Value};

use crate::validation::FieldError;

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const EMBEDDED: &str = "x-kubernetes-embedded-resource";

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drop the fields the schema does not specify (unless it preserves
/// unknown fields there), as kube-apiserver's pruning does; returns the
/// paths of what was dropped ("spec.foo"), which fieldValidation reports.
/// At the root and in embedded resources, apiVersion, kind and metadata
/// are kept.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_at(obj, schema, "", true, &mut dropped);
    dropped
}

fn prune_at(v: &mut Value, schema: &Value, path: &str, resource: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, PRESERVE);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let p = join(path, &k);
                if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_schema = props.and_then(|ps| ps.get(&k)).or(match additional {
                    Some(s @ Value::Object(_)) => Some(s),
                    _ => None,
                });
                match child_schema {
                    Some(cs) => {
                        if let Some(child) = map.get_mut(&k) {
                            let embedded = flag(cs, EMBEDDED);
                            prune_at(child, cs, &p, embedded, out);
                        }
                    }
                    None if preserve || additional == Some(&Value::Bool(true)) => {}
                    None => {
                        map.remove(&k);
                        out.push(p);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let embedded = flag(item_schema, EMBEDDED);
                    prune_at(item, item_schema, &format!("{path}[{i}]"), embedded, out);
                }
            }
        }
        _ => {}
    }
}

/// Set the `default` of every property the object leaves out (or sets to
/// null where null is not allowed), depth first, as kube-apiserver's
/// structural defaulting does after pruning.
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    let absent = match map.get(k) {
                        None => true,
                        Some(Value::Null) => !flag(ps, "nullable"),
                        Some(_) => false,
                    };
                    if absent && let Some(d) = ps.get("default") {
                        map.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in map.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        apply_defaults(child, ps);
                    }
                }
            } else if let Some(additional @ Value::Object(_)) = schema.get("additionalProperties") {
                for child in map.values_mut() {
                    apply_defaults(child, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Validate `obj` against the schema; every error names its field path.
/// apiVersion, kind and metadata at the root are the server's to check.
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_at(obj, schema, "", true, &mut errs);
    errs
}

/// [`validate`], then the schema's CEL rules (`x-kubernetes-validations`,
/// compiled once with [`crate::cel::Rules::compile`]), with `old`, the
/// stored object on an update, for transition rules. As kube-apiserver,
/// the rules are not run on an object with type, enum, required or size
/// errors: one error says so instead.
pub fn validate_with_rules(
    obj: &Value,
    old: Option<&Value>,
    schema: &Value,
    rules: Option<&crate::cel::Rules>,
) -> Vec<FieldError> {
    use crate::validation::FieldErrorKind as K;
    let mut errs = validate(obj, schema);
    let Some(rules) = rules else { return errs };
    let blocking = errs.iter().any(|e| {
        matches!(
            e.kind,
            K::NotSupported | K::Required | K::TooLong | K::TooMany
        ) || e.message.contains(" must be of type ")
    });
    if blocking {
        errs.push(FieldError::invalid_repr(
            "<nil>",
            "null",
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ));
    } else {
        errs.extend(rules.validate(schema, obj, old));
    }
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        _ => true,
    }
}

/// "spec.replicas in body should be ...": kube-openapi's detail wording.
fn in_body(path: &str, detail: &str) -> String {
    format!("{path} in body {detail}")
}

fn go_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn validate_at(v: &Value, schema: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if flag(schema, "nullable") || schema.get("type").is_none() && !root {
            return;
        }
        if let Some(ty) = schema.get("type").and_then(Value::as_str) {
            errs.push(FieldError::invalid_repr(
                path,
                "\"null\"",
                &in_body(path, &format!("must be of type {ty}: \"null\"")),
            ));
        }
        return;
    }
    if flag(schema, INT_OR_STRING) {
        if !(is_integer(v) || v.is_string()) {
            errs.push(FieldError::invalid(
                path,
                v,
                &in_body(
                    path,
                    &format!("must be of type integer-or-string: \"{}\"", type_name(v)),
                ),
            ));
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !has_type(v, ty)
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &in_body(path, &format!("must be of type {ty}: \"{}\"", type_name(v))),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, v, &refs));
    }
    match v {
        Value::Number(n) => validate_number(n.as_f64().unwrap_or(0.0), v, schema, path, errs),
        Value::String(s) => validate_string(s, v, schema, path, errs),
        Value::Array(items) => validate_array(items, v, schema, path, errs),
        Value::Object(map) => validate_object(map, v, schema, path, root, errs),
        _ => {}
    }
}

fn bound(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn count(schema: &Value, key: &str) -> Option<usize> {
    schema
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

fn validate_number(n: f64, v: &Value, schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let exclusive = |k: &str| flag(schema, k);
    if let Some(max) = bound(schema, "maximum") {
        let (bad, word) = if exclusive("exclusiveMaximum") {
            (n >= max, "less than")
        } else {
            (n > max, "less than or equal to")
        };
        if bad {
            let detail = in_body(path, &format!("should be {word} {}", go_number(max)));
            errs.push(FieldError::invalid(path, v, &detail));
        }
    }
    if let Some(min) = bound(schema, "minimum") {
        let (bad, word) = if exclusive("exclusiveMinimum") {
            (n <= min, "greater than")
        } else {
            (n < min, "greater than or equal to")
        };
        if bad {
            let detail = in_body(path, &format!("should be {word} {}", go_number(min)));
            errs.push(FieldError::invalid(path, v, &detail));
        }
    }
    if let Some(m) = bound(schema, "multipleOf")
        && m > 0.0
        && (n / m).fract() != 0.0
    {
        let detail = in_body(path, &format!("should be a multiple of {}", go_number(m)));
        errs.push(FieldError::invalid(path, v, &detail));
    }
}

fn validate_string(s: &str, v: &Value, schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let chars = s.chars().count();
    if let Some(max) = count(schema, "maxLength")
        && chars > max
    {
        errs.push(FieldError::too_long(path, max));
    }
    if let Some(min) = count(schema, "minLength")
        && chars < min
    {
        let detail = in_body(path, &format!("should be at least {min} chars long"));
        errs.push(FieldError::invalid(path, v, &detail));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            _ => {
                let detail = in_body(path, &format!("should match '{pattern}'"));
                errs.push(FieldError::invalid(path, v, &detail));
            }
        }
    }
}

fn validate_array(
    items: &[Value],
    v: &Value,
    schema: &Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(max) = count(schema, "maxItems")
        && items.len() > max
    {
        errs.push(FieldError::too_many(path, items.len(), max));
    }
    if let Some(min) = count(schema, "minItems")
        && items.len() < min
    {
        let detail = in_body(path, &format!("should have at least {min} items"));
        errs.push(FieldError::invalid(path, v, &detail));
    }
    let set = schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
    if flag(schema, "uniqueItems") || set {
        for (i, item) in items.iter().enumerate() {
            if items.iter().take(i).any(|earlier| earlier == item) {
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), item));
            }
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map")
        && let Some(keys) = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
    {
        let key_of = |item: &Value| -> Vec<Value> {
            keys.iter()
                .filter_map(Value::as_str)
                .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                .collect()
        };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items.iter().take(i).any(|earlier| key_of(earlier) == k) {
                let shown = if k.len() == 1 {
                    k.into_iter().next().unwrap_or(Value::Null)
                } else {
                    Value::Array(k)
                };
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), &shown));
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate_at(item, item_schema, &format!("{path}[{i}]"), false, errs);
        }
    }
}

fn validate_object(
    map: &Map<String, Value>,
    v: &Value,
    schema: &Value,
    path: &str,
    root: bool,
    errs: &mut Vec<FieldError>,
) {
    let resource = root || flag(schema, EMBEDDED);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errs.push(FieldError::required(join(path, r), ""));
            }
        }
    }
    if let Some(max) = count(schema, "maxProperties")
        && map.len() > max
    {
        errs.push(FieldError::too_many(path, map.len(), max));
    }
    if let Some(min) = count(schema, "minProperties")
        && map.len() < min
    {
        let detail = in_body(path, &format!("should have at least {min} properties"));
        errs.push(FieldError::invalid(path, v, &detail));
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, child) in map {
        if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            if !root && matches!(k.as_str(), "apiVersion" | "kind") && !child.is_string() {
                errs.push(FieldError::invalid(
                    join(path, k),
                    child,
                    &in_body(&join(path, k), "must be of type string"),
                ));
            }
            continue;
        }
        if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
            validate_at(child, cs, &join(path, k), false, errs);
        }
    }
}

/// The structural-schema rules a definition's schema must follow
/// (apiextensions' `ValidateStructural`, the parts skiff enforces): every
/// specified node has a type (unless it is int-or-string or preserves
/// unknown fields), the root is an object, properties and
/// additionalProperties are not both set, no `$ref`. `path` is the
/// schema's own field path ("spec.versions[0].schema.openAPIV3Schema").
pub fn check_structural(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !schema.is_object() {
        errs.push(FieldError::required(path, "must be an object"));
        return errs;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {}
        Some(other) => errs.push(FieldError::invalid(
            format!("{path}.type"),
            &Value::String(other.into()),
            "must be object at the root",
        )),
        None if flag(schema, PRESERVE) => {}
        None => errs.push(FieldError::required(
            format!("{path}.type"),
            "must not be empty at the root",
        )),
    }
    check_node(schema, path, &mut errs);
    errs
}

fn check_node(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if schema.get("$ref").is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.$ref"),
            "$ref is not supported",
        ));
    }
    if let Some(ty) = schema.get("type") {
        let known = ["object", "array", "string", "integer", "number", "boolean"];
        if !ty.as_str().is_some_and(|t| known.contains(&t)) {
            let refs: Vec<&str> = known.to_vec();
            errs.push(FieldError::not_supported(format!("{path}.type"), ty, &refs));
        }
    }
    if let (Some(_), Some(a)) = (schema.get("properties"), schema.get("additionalProperties"))
        && a != &Value::Bool(false)
    {
        errs.push(FieldError::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(pattern).is_err()
    {
        errs.push(FieldError::invalid(
            format!("{path}.pattern"),
            &Value::String(pattern.into()),
            "must be a valid regular expression",
        ));
    }
    let specified = |child: &Value, child_path: &str, errs: &mut Vec<FieldError>| {
        if child.get("type").is_none() && !flag(child, INT_OR_STRING) && !flag(child, PRESERVE) {
            errs.push(FieldError::required(
                format!("{child_path}.type"),
                "must not be empty for specified object fields",
            ));
        }
        check_node(child, child_path, errs);
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            specified(child, &format!("{path}.properties[{k}]"), errs);
        }
    }
    if let Some(child @ Value::Object(_)) = schema.get("additionalProperties") {
        specified(child, &format!("{path}.additionalProperties"), errs);
    }
    match schema.get("items") {
        Some(child @ Value::Object(_)) => specified(child, &format!("{path}.items"), errs),
        Some(_) => errs.push(FieldError::forbidden(
            format!("{path}.items"),
            "items must be a schema object and not an array",
        )),
        None if schema.get("type").and_then(Value::as_str) == Some("array") => {
            errs.push(FieldError::required(
                format!("{path}.items"),
                "must be specified",
            ));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string", "maxLength": 10},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "port": {"x-kubernetes-int-or-string": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "items": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        })
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_and_additional() {
        let mut obj = json!({
            "apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "a", "whatever": 1},
            "spec": {"cronSpec": "* * * * */5", "bogus": 1,
                     "extra": {"anything": {"deep": true}},
                     "labels": {"x": "y"},
                     "items": [{"name": "n", "junk": 2}]},
            "other": true
        });
        let dropped = prune(&mut obj, &crontab_schema());
        assert_eq!(dropped, vec!["other", "spec.bogus", "spec.items[0].junk"]);
        assert_eq!(obj["spec"]["extra"]["anything"]["deep"], true);
        assert_eq!(obj["spec"]["labels"]["x"], "y");
        // Metadata at the root is the server's (typed) business.
        assert_eq!(obj["metadata"]["whatever"], 1);
    }

    #[test]
    fn defaults_absent_fields() {
        let mut obj = json!({"spec": {"cronSpec": "x"}});
        apply_defaults(&mut obj, &crontab_schema());
        assert_eq!(obj["spec"]["replicas"], 1);
        let mut set = json!({"spec": {"replicas": 3}});
        apply_defaults(&mut set, &crontab_schema());
        assert_eq!(set["spec"]["replicas"], 3);
    }

    fn messages(obj: Value) -> Vec<String> {
        validate(&obj, &crontab_schema())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn validation_messages_are_kubernetes_own() {
        assert!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "replicas": 3, "port": "http"}}))
                .is_empty()
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "replicas": "three"}})),
            vec![
                r#"spec.replicas: Invalid value: "three": spec.replicas in body must be of type integer: "string""#
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "replicas": 11}})),
            vec![
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
            ]
        );
        assert_eq!(
            messages(json!({"spec": {}})),
            vec!["spec.cronSpec: Required value"]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "nope"}})),
            vec![
                r#"spec.cronSpec: Invalid value: "nope": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "mode": "c"}})),
            vec![r#"spec.mode: Unsupported value: "c": supported values: "a", "b""#]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "image": "much-too-long"}})),
            vec!["spec.image: Too long: may not be more than 10 bytes"]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "items": [{}, {}, {}]}})),
            vec!["spec.items: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "port": true}})),
            vec![
                r#"spec.port: Invalid value: true: spec.port in body must be of type integer-or-string: "boolean""#
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"cronSpec": "* * * * */5", "labels": {"a": 1}}})),
            vec![
                r#"spec.labels.a: Invalid value: 1: spec.labels.a in body must be of type string: "integer""#
            ]
        );
    }

    #[test]
    fn rules_run_only_on_objects_without_blocking_errors() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"n": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.n < 3"}]}}});
        let rules = crate::cel::Rules::compile(&schema);
        let check = |obj: Value| -> Vec<String> {
            validate_with_rules(&obj, None, &schema, rules.as_ref())
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(check(json!({"spec": {"n": 2}})).is_empty());
        assert_eq!(
            check(json!({"spec": {"n": 5}})),
            [r#"spec: Invalid value: "object": failed rule: self.n < 3"#]
        );
        assert_eq!(
            check(json!({"spec": {"n": "5"}})),
            [
                r#"spec.n: Invalid value: "5": spec.n in body must be of type integer: "string""#,
                "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
    }

    #[test]
    fn structural_checks() {
        assert!(check_structural(&crontab_schema(), "s").is_empty());
        let bad = json!({"type": "object", "properties": {"spec": {"properties": {}}, "list": {"type": "array"}}});
        let errs: Vec<String> = check_structural(&bad, "s")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec![
                "s.properties[list].items: Required value: must be specified",
                "s.properties[spec].type: Required value: must not be empty for specified object fields",
            ]
        );
        let not_object = json!({"type": "string"});
        assert_eq!(check_structural(&not_object, "s").len(), 1);
    }
}
