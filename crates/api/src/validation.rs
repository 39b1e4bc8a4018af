//! Kubernetes-style object validation producing the field causes of
//! kube-apiserver's `422 Invalid` responses.
//!
//! Messages follow k8s.io/apimachinery/pkg/util/validation (+ `field.Error.ErrorBody()`)
//! and k8s.io/kubernetes/pkg/apis/*/validation word for word where possible, e.g.
//! `Invalid value: "My_Pod": a lowercase RFC 1123 subdomain must consist of ...`.
//!
//! Objects are validated as JSON (`serde_json::Value`). Fields that kube-apiserver
//! defaults before validating (container port protocol, restart policy, service type,
//! ...) are treated as their default when absent, so objects may be validated before
//! or after defaulting.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// Field errors
// ---------------------------------------------------------------------------

/// The type of a field error (`field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
}

impl FieldErrorKind {
    /// The `StatusCause` reason (`metav1.CauseType`), e.g. "FieldValueInvalid".
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }

    /// The human-readable type that prefixes every message, e.g. "Invalid value".
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::NotFound => "Not found",
        }
    }
}

/// One validation failure: a `metav1.StatusCause` of an Invalid status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// The field path, e.g. "metadata.name" or "spec.containers[0].image".
    pub field: String,
    /// The full detail (Go's `ErrorBody()`), e.g.
    /// `Invalid value: "x_y": a lowercase RFC 1123 label must ...`.
    pub message: String,
}

impl fmt::Display for FieldError {
    /// Go's `field.Error.Error()`: "field: message".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl FieldError {
    /// The `StatusCause` reason, e.g. "FieldValueInvalid".
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    fn with(kind: FieldErrorKind, field: impl Into<String>, body: String, detail: &str) -> Self {
        let message = if detail.is_empty() {
            body
        } else {
            format!("{body}: {detail}")
        };
        FieldError {
            kind,
            field: field.into(),
            message,
        }
    }

    /// `field.Required`: "Required value[: detail]".
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::with(
            FieldErrorKind::Required,
            field,
            "Required value".into(),
            detail,
        )
    }

    /// `field.Forbidden`: "Forbidden[: detail]".
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::with(FieldErrorKind::Forbidden, field, "Forbidden".into(), detail)
    }

    /// `field.TooLong` with a maximum length in bytes.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        Self::with(
            FieldErrorKind::TooLong,
            field,
            "Too long".into(),
            &format!("may not be more than {max_bytes} {unit}"),
        )
    }

    /// `field.TooMany`: "Too many: 1001: must have at most 1000 items".
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self::with(
            FieldErrorKind::TooMany,
            field,
            format!("Too many: {actual}"),
            &format!("must have at most {max} items"),
        )
    }

    /// `field.Invalid` with a JSON bad value, printed like Go does (strings quoted,
    /// numbers and booleans bare, `null`).
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self::invalid_repr(field, &go_value(value), detail)
    }

    /// `field.Invalid` with an already rendered bad value.
    pub fn invalid_repr(field: impl Into<String>, value_repr: &str, detail: &str) -> Self {
        Self::with(
            FieldErrorKind::Invalid,
            field,
            format!("Invalid value: {value_repr}"),
            detail,
        )
    }

    /// `field.Duplicate`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self::duplicate_repr(field, &go_value(value))
    }

    /// `field.Duplicate` with an already rendered value.
    pub fn duplicate_repr(field: impl Into<String>, value_repr: &str) -> Self {
        Self::with(
            FieldErrorKind::Duplicate,
            field,
            format!("Duplicate value: {value_repr}"),
            "",
        )
    }

    /// `field.NotSupported`: `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::with(
            FieldErrorKind::NotSupported,
            field,
            format!("Unsupported value: {}", go_value(value)),
            &detail,
        )
    }

    /// `field.NotFound`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self::with(
            FieldErrorKind::NotFound,
            field,
            format!("Not found: {}", go_value(value)),
            "",
        )
    }

    /// The `metav1.StatusCause` JSON: `{"reason", "message", "field"}`.
    pub fn to_cause(&self) -> Value {
        json!({"reason": self.reason(), "message": self.message, "field": self.field})
    }
}

/// The `message` of kube-apiserver's Invalid status:
/// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: ...`, with
/// several (de-duplicated) causes bracketed and comma separated.
pub fn status_message(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> String {
    let qualified = if group.is_empty() || group == "core" {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut seen = HashSet::new();
    let mut msgs = Vec::new();
    for e in errs {
        let m = e.to_string();
        if seen.insert(m.clone()) {
            msgs.push(m);
        }
    }
    match msgs.len() {
        0 => format!("{} {} is invalid", qualified, go_quote(name)),
        1 => format!("{} {} is invalid: {}", qualified, go_quote(name), msgs[0]),
        _ => format!(
            "{} {} is invalid: [{}]",
            qualified,
            go_quote(name),
            msgs.join(", ")
        ),
    }
}

/// The complete `Status` object (HTTP 422, reason `Invalid`) for `errs`.
pub fn invalid_status(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), name.into());
    let group = if group == "core" { "" } else { group };
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    details.insert("kind".into(), kind.into());
    details.insert(
        "causes".into(),
        Value::Array(errs.iter().map(FieldError::to_cause).collect()),
    );
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": status_message(group, kind, name, errs),
        "reason": "Invalid",
        "details": details,
        "code": 422,
    })
}

// ---------------------------------------------------------------------------
// Name and value format checks (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_ERR: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// Max length of a DNS-1123 label / DNS-1035 label / qualified name part / label value.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Max length of a DNS-1123 subdomain (and of a config key).
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Max total size of an object's annotations (keys + values), 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Max total size of the data of a Secret or ConfigMap, 1 MiB.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// "must be greater than or equal to 0"
pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";
/// "field is immutable"
pub const FIELD_IMMUTABLE_ERROR_MSG: &str = "field is immutable";

/// `validation.MaxLenError`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `validation.RegexError`.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(ex);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// `validation.InclusiveRangeError`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

fn matches_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_lowercase()
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `validation.IsDNS1123Label`: the messages describing why `value` is not a
/// lowercase RFC 1123 label (empty when valid).
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `validation.IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `validation.IsDNS1035Label`.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `validation.IsQualifiedName`: label keys, annotation keys, finalizers, ...
/// (`[prefix/]name`, the prefix a DNS-1123 subdomain).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `validation.IsConfigMapKey`: keys of ConfigMap/Secret data.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !valid {
        errs.push(regex_error(
            CONFIG_KEY_ERR,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".to_string());
    } else if value == ".." {
        errs.push("must not be '..'".to_string());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// `validation.IsValidPortNum`.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// `validation.IsValidPortName` (IANA_SVC_NAME).
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty() || !port.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// `validation.IsValidIP`.
pub fn is_valid_ip(value: &str) -> Vec<String> {
    if value.parse::<IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()]
    }
}

/// `path.IsValidPathSegmentName` (names of RBAC objects).
pub fn is_valid_path_segment_name(name: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if name == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    is_valid_path_segment_prefix(name)
}

fn is_valid_path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// How `metadata.name` is validated for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    PathSegment,
}

impl NameRule {
    /// The apimachinery `ValidateNameFunc`; with `prefix` (generateName) a trailing
    /// dash is allowed.
    fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && self != NameRule::PathSegment {
            masked = mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
            NameRule::Dns1123Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
            NameRule::PathSegment if prefix => is_valid_path_segment_prefix(name),
            NameRule::PathSegment => is_valid_path_segment_name(name),
        }
    }
}

fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(rest) if !rest.is_empty() => format!("{rest}a"),
        _ => name.to_string(),
    }
}

fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        (
            "rbac.authorization.k8s.io",
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding",
        ) => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

// ---------------------------------------------------------------------------
// Labels, annotations, selectors
// ---------------------------------------------------------------------------

/// `ValidateLabels`: every key a qualified name, every value a valid label value.
/// All errors are reported at `field` itself, as Kubernetes does. Keys are visited in
/// sorted order.
pub fn validate_labels(labels: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = labels.as_object() else {
        return errs;
    };
    for (k, v) in sorted(map) {
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid_repr(field, &go_quote(k), &msg));
        }
        let value = v.as_str().unwrap_or_default();
        for msg in is_valid_label_value(value) {
            errs.push(FieldError::invalid_repr(field, &go_quote(value), &msg));
        }
    }
    errs
}

/// `ValidateAnnotations`: keys are (case-insensitive) qualified names and the total
/// size of keys and values is at most 256 KiB.
pub fn validate_annotations(annotations: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = annotations.as_object() else {
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in sorted(map) {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid_repr(field, &go_quote(k), &msg));
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateLabelSelector` (strict: values must be valid label values).
pub fn validate_label_selector(selector: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !selector.is_object() {
        return errs;
    }
    errs.extend(validate_labels(
        get(selector, &["matchLabels"]),
        &child(field, "matchLabels"),
    ));
    for (i, expr) in arr(selector, &["matchExpressions"]).iter().enumerate() {
        let path = index(&child(field, "matchExpressions"), i);
        let values = arr(expr, &["values"]);
        let operator = st(expr, &["operator"]);
        match operator {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&path, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&path, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid_repr(
                child(&path, "operator"),
                &go_quote(operator),
                "not a valid selector operator",
            )),
        }
        let key = st(expr, &["key"]);
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid_repr(
                child(&path, "key"),
                &go_quote(key),
                &msg,
            ));
        }
        for (j, v) in values.iter().enumerate() {
            let value = v.as_str().unwrap_or_default();
            for msg in is_valid_label_value(value) {
                errs.push(FieldError::invalid_repr(
                    index(&child(&path, "values"), j),
                    &go_quote(value),
                    &msg,
                ));
            }
        }
    }
    errs
}

/// Whether a label selector (JSON `LabelSelector`) matches `labels`. A null selector
/// matches nothing, an empty one everything. Invalid selectors match nothing.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    if !selector.is_object() {
        return false;
    }
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = get(selector, &["matchLabels"]).as_object() {
        for (k, v) in ml {
            if label(k) != v.as_str() {
                return false;
            }
        }
    }
    for expr in arr(selector, &["matchExpressions"]) {
        let key = st(expr, &["key"]);
        let values: Vec<&str> = arr(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ok = match st(expr, &["operator"]) {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_is_empty(selector: &Value) -> bool {
    map_len(selector, &["matchLabels"]) + arr(selector, &["matchExpressions"]).len() == 0
}

// ---------------------------------------------------------------------------
// Object metadata
// ---------------------------------------------------------------------------

fn validate_object_meta(obj: &Value, namespaced: bool, rule: NameRule, errs: &mut Vec<FieldError>) {
    let meta = get(obj, &["metadata"]);
    let generate_name = st(meta, &["generateName"]);
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid_repr(
                "metadata.generateName",
                &go_quote(generate_name),
                &msg,
            ));
        }
    }
    let name = st(meta, &["name"]);
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name, false) {
            errs.push(FieldError::invalid_repr(
                "metadata.name",
                &go_quote(name),
                &msg,
            ));
        }
    }
    let namespace = st(meta, &["namespace"]);
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(FieldError::invalid_repr(
                    "metadata.namespace",
                    &go_quote(namespace),
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(g) = opt_int(meta, &["generation"]).filter(|g| *g < 0) {
        errs.push(FieldError::invalid_repr(
            "metadata.generation",
            &g.to_string(),
            IS_NEGATIVE_ERROR_MSG,
        ));
    }
    validate_common_meta(meta, errs);
    validate_finalizers(meta, errs);
}

/// Labels, annotations and owner references: checked on create and update.
fn validate_common_meta(meta: &Value, errs: &mut Vec<FieldError>) {
    errs.extend(validate_labels(get(meta, &["labels"]), "metadata.labels"));
    errs.extend(validate_annotations(
        get(meta, &["annotations"]),
        "metadata.annotations",
    ));
    let refs = arr(meta, &["ownerReferences"]);
    let path = "metadata.ownerReferences";
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = st(r, &["apiVersion"]);
        let version = match api_version.rsplit_once('/') {
            Some((_, v)) => v,
            None => api_version,
        };
        if version.is_empty() {
            errs.push(FieldError::invalid_repr(
                child(path, "apiVersion"),
                &go_quote(api_version),
                "version must not be empty",
            ));
        }
        for (key, detail) in [
            ("kind", "must not be empty"),
            ("name", "must not be empty"),
            ("uid", "must not be empty"),
        ] {
            let v = st(r, &[key]);
            if v.is_empty() {
                errs.push(FieldError::invalid_repr(
                    child(path, key),
                    &go_quote(v),
                    detail,
                ));
            }
        }
        if get(r, &["controller"]).as_bool() == Some(true) {
            let current = format!("{}/{}", st(r, &["kind"]), st(r, &["name"]));
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid_repr(
                    path,
                    &json_repr(&Value::Array(refs.to_vec())),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

fn validate_finalizers(meta: &Value, errs: &mut Vec<FieldError>) {
    let finalizers: Vec<&str> = arr(meta, &["finalizers"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in &finalizers {
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid_repr(
                "metadata.finalizers",
                &go_quote(f),
                &msg,
            ));
        }
    }
    if finalizers.contains(&"orphan") && finalizers.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid_repr(
            "metadata.finalizers",
            &go_string_slice(&finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

fn validate_object_meta_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let meta = get(new, &["metadata"]);
    let old_meta = get(old, &["metadata"]);
    if is_set(old_meta, &["deletionTimestamp"]) {
        let old_finalizers: HashSet<&str> = arr(old_meta, &["finalizers"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(meta, &["finalizers"])
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_finalizers.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_string_slice(&extra)
                ),
            ));
        }
    }
    // The name and namespace come from the request path when empty, and an empty
    // uid means "keep the existing one".
    for key in ["name", "namespace", "uid"] {
        let new_v = st(meta, &[key]);
        if !new_v.is_empty() && new_v != st(old_meta, &[key]) {
            errs.push(FieldError::invalid_repr(
                format!("metadata.{key}"),
                &go_quote(new_v),
                FIELD_IMMUTABLE_ERROR_MSG,
            ));
        }
    }
    validate_common_meta(meta, errs);
    let finalizers: Vec<&str> = arr(meta, &["finalizers"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in &finalizers {
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid_repr(
                "metadata.finalizers",
                &go_quote(f),
                &msg,
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

/// Validate `obj` (of `group`/`kind`, `group` "" or "core" for the core group) the way
/// kube-apiserver does before persisting it. `old` is the stored object on update.
/// `namespaced` is whether the resource is namespace scoped. Returns every field error
/// found (empty when valid).
pub fn validate_object(
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
    namespaced: bool,
) -> Vec<FieldError> {
    let group = if group == "core" { "" } else { group };
    let mut errs = Vec::new();
    if !obj.is_object() {
        errs.push(FieldError::invalid_repr(
            "",
            &json_repr(obj),
            "must be an object",
        ));
        return errs;
    }
    match old {
        None => validate_object_meta(obj, namespaced, name_rule(group, kind), &mut errs),
        Some(old) => validate_object_meta_update(obj, old, &mut errs),
    }
    match (group, kind) {
        ("", "Pod") => validate_pod(obj, old, &mut errs),
        ("", "PodTemplate") => {
            validate_pod_template(get(obj, &["template"]), "template", &[], &mut errs)
        }
        ("", "ReplicationController") => validate_replication_controller(obj, &mut errs),
        ("", "Service") => validate_service(obj, old, &mut errs),
        ("", "ConfigMap") => validate_config_map(obj, old, &mut errs),
        ("", "Secret") => validate_secret(obj, old, &mut errs),
        ("", "Namespace") => validate_namespace(obj, &mut errs),
        ("", "Endpoints") => validate_endpoints(obj, &mut errs),
        ("", "Node") => validate_node(obj, old, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, old, &mut errs),
        ("apps" | "extensions", "Deployment") => {
            validate_replica_set_like(obj, old, true, &mut errs)
        }
        ("apps" | "extensions", "ReplicaSet") => {
            validate_replica_set_like(obj, old, false, &mut errs)
        }
        ("apps" | "extensions", "DaemonSet") => validate_daemon_set(obj, old, &mut errs),
        ("apps", "StatefulSet") => validate_stateful_set(obj, old, &mut errs),
        ("batch", "Job") => validate_job(obj, old, &mut errs),
        ("batch", "CronJob") => validate_cron_job(obj, old, &mut errs),
        _ => {}
    }
    errs
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

const UPDATABLE_POD_SPEC_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn validate_pod(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    validate_pod_spec(get(obj, &["spec"]), "spec", &[], true, errs);
    if let Some(old) = old {
        validate_pod_update(get(obj, &["spec"]), get(old, &["spec"]), errs);
    }
}

fn validate_pod_template(
    template: &Value,
    path: &str,
    extra_volumes: &[&str],
    errs: &mut Vec<FieldError>,
) {
    if !template.is_object() {
        errs.push(FieldError::required(path, ""));
        return;
    }
    errs.extend(validate_labels(
        get(template, &["metadata", "labels"]),
        &child(path, "labels"),
    ));
    errs.extend(validate_annotations(
        get(template, &["metadata", "annotations"]),
        &child(path, "annotations"),
    ));
    let spec = get(template, &["spec"]);
    validate_pod_spec(spec, &child(path, "spec"), extra_volumes, false, errs);
    if !arr(spec, &["ephemeralContainers"]).is_empty() {
        errs.push(FieldError::forbidden(
            child(path, "spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// `ValidatePodSpec` (the essentials). `extra_volumes` are names that volume mounts may
/// refer to besides `spec.volumes` (a StatefulSet's volumeClaimTemplates).
/// `validateEphemeralContainers`: like containers, unique names among all
/// of the pod's containers, an existing target, and none of the fields an
/// ephemeral container cannot have.
fn validate_ephemeral_containers(
    spec: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    is_pod: bool,
    errs: &mut Vec<FieldError>,
) {
    let eph_path = child(path, "ephemeralContainers");
    let regular: HashSet<&str> = arr(spec, &["containers"])
        .iter()
        .chain(arr(spec, &["initContainers"]).iter())
        .map(|c| st(c, &["name"]))
        .collect();
    for (i, c) in arr(spec, &["ephemeralContainers"]).iter().enumerate() {
        let cpath = index(&eph_path, i);
        validate_container(c, &cpath, volumes, names, is_pod, errs);
        for field in [
            "ports",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "resources",
            "resizePolicy",
            "restartPolicy",
        ] {
            // Kubernetes compares with the Go zero value: `resources: {}`
            // (what kubectl debug sends) is not set.
            let value = get(c, &[field]);
            let set = match value {
                Value::Null => false,
                Value::Object(m) => m.values().any(|v| !is_zero(v)),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if set {
                errs.push(FieldError::forbidden(
                    child(&cpath, field),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        let target = st(c, &["targetContainerName"]);
        if !target.is_empty() && !regular.contains(target) {
            errs.push(FieldError::not_found(
                child(&cpath, "targetContainerName"),
                &Value::from(target),
            ));
        }
    }
}

/// The longest sysctl name Kubernetes accepts.
const SYSCTL_MAX_LENGTH: usize = 253;

/// Whether a sysctl name matches Kubernetes' `SysctlContainSlashFmt`:
/// segments of `[a-z0-9]([-_a-z0-9]*[a-z0-9])?` separated by `.` or `/`
/// (kernel.shm_rmid_forced, net/ipv4/ip_forward).
fn is_sysctl_name(name: &str) -> bool {
    if name.is_empty() || name.len() > SYSCTL_MAX_LENGTH {
        return false;
    }
    name.split(['.', '/']).all(|seg| {
        let b = seg.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-' || *c == b'_')
            }
            _ => false,
        }
    })
}

/// `spec.securityContext.sysctls` (ValidateSysctls): valid and unique names.
fn validate_sysctls(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let sysctls_path = child(&child(path, "securityContext"), "sysctls");
    let mut seen = HashSet::new();
    for (i, s) in arr(spec, &["securityContext", "sysctls"])
        .iter()
        .enumerate()
    {
        let name_path = child(&index(&sysctls_path, i), "name");
        let name = st(s, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
        } else if !is_sysctl_name(name) {
            errs.push(FieldError::invalid_repr(
                &name_path,
                &go_quote(name),
                &format!(
                    "must have at most {SYSCTL_MAX_LENGTH} characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
                ),
            ));
        } else if !seen.insert(name.replace('/', ".")) {
            errs.push(FieldError::duplicate_repr(&name_path, &go_quote(name)));
        }
    }
}

fn validate_pod_spec(
    spec: &Value,
    path: &str,
    extra_volumes: &[&str],
    is_pod: bool,
    errs: &mut Vec<FieldError>,
) {
    let mut volumes: HashSet<String> = extra_volumes.iter().map(|v| v.to_string()).collect();
    let volumes_path = child(path, "volumes");
    let mut seen_volumes = HashSet::new();
    for (i, vol) in arr(spec, &["volumes"]).iter().enumerate() {
        let vpath = index(&volumes_path, i);
        let name = st(vol, &["name"]);
        let sources: Vec<&String> = vol
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| *k != "name" && !v.is_null())
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        if sources.is_empty() {
            errs.push(FieldError::required(&vpath, "must specify a volume type"));
        } else {
            for extra in sources.iter().skip(1) {
                errs.push(FieldError::forbidden(
                    child(&vpath, extra),
                    "may not specify more than 1 volume type",
                ));
            }
        }
        let name_path = child(&vpath, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
        } else {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid_repr(&name_path, &go_quote(name), &msg));
            }
        }
        if !seen_volumes.insert(name.to_string()) {
            errs.push(FieldError::duplicate_repr(&name_path, &go_quote(name)));
        }
        volumes.insert(name.to_string());
    }

    validate_sysctls(spec, path, errs);

    let containers_path = child(path, "containers");
    let containers = arr(spec, &["containers"]);
    let mut names: HashSet<String> = HashSet::new();
    if containers.is_empty() {
        errs.push(FieldError::required(&containers_path, ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let cpath = index(&containers_path, i);
        validate_container(c, &cpath, &volumes, &mut names, is_pod, errs);
        validate_probes_and_lifecycle(c, &cpath, errs);
        if is_set(c, &["restartPolicy"]) {
            errs.push(FieldError::forbidden(
                child(&cpath, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    let init_path = child(path, "initContainers");
    for (i, c) in arr(spec, &["initContainers"]).iter().enumerate() {
        let cpath = index(&init_path, i);
        validate_container(c, &cpath, &volumes, &mut names, is_pod, errs);
        if st(c, &["restartPolicy"]) == "Always" {
            validate_probes_and_lifecycle(c, &cpath, errs);
        } else {
            for field in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if is_set(c, &[field]) {
                    errs.push(FieldError::forbidden(
                        child(&cpath, field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
        if let Some(policy) = get(c, &["restartPolicy"]).as_str()
            && policy != "Always"
        {
            errs.push(FieldError::not_supported(
                child(&cpath, "restartPolicy"),
                &Value::from(policy),
                &["Always"],
            ));
        }
    }
    validate_ephemeral_containers(spec, path, &volumes, &mut names, is_pod, errs);
    validate_seccomp_profile(
        get(spec, &["securityContext", "seccompProfile"]),
        &child(&child(path, "securityContext"), "seccompProfile"),
        errs,
    );

    if let Some(policy) = get(spec, &["restartPolicy"]).as_str() {
        match policy {
            "Always" | "OnFailure" | "Never" => {}
            "" => errs.push(FieldError::required(child(path, "restartPolicy"), "")),
            other => errs.push(FieldError::not_supported(
                child(path, "restartPolicy"),
                &Value::from(other),
                &["Always", "OnFailure", "Never"],
            )),
        }
    }
    if let Some(policy) = get(spec, &["dnsPolicy"]).as_str() {
        match policy {
            "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" | "" => {}
            other => errs.push(FieldError::not_supported(
                child(path, "dnsPolicy"),
                &Value::from(other),
                &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
            )),
        }
    }
    errs.extend(validate_labels(
        get(spec, &["nodeSelector"]),
        &child(path, "nodeSelector"),
    ));
    let sa = st(spec, &["serviceAccountName"]);
    if !sa.is_empty() {
        for msg in is_dns1123_subdomain(sa) {
            errs.push(FieldError::invalid_repr(
                child(path, "serviceAccountName"),
                &go_quote(sa),
                &msg,
            ));
        }
    }
    let node = st(spec, &["nodeName"]);
    if !node.is_empty() {
        for msg in is_dns1123_subdomain(node) {
            errs.push(FieldError::invalid_repr(
                child(path, "nodeName"),
                &go_quote(node),
                &msg,
            ));
        }
    }
    if let Some(ads) = opt_int(spec, &["activeDeadlineSeconds"])
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        errs.push(FieldError::invalid_repr(
            child(path, "activeDeadlineSeconds"),
            &ads.to_string(),
            &inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    for key in ["hostname", "subdomain"] {
        let v = st(spec, &[key]);
        if !v.is_empty() {
            for msg in is_dns1123_label(v) {
                errs.push(FieldError::invalid_repr(
                    child(path, key),
                    &go_quote(v),
                    &msg,
                ));
            }
        }
    }
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    is_pod: bool,
    errs: &mut Vec<FieldError>,
) {
    let name = st(c, &["name"]);
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid_repr(&name_path, &go_quote(name), &msg));
        }
    }
    if !names.insert(name.to_string()) {
        errs.push(FieldError::duplicate_repr(&name_path, &go_quote(name)));
    }
    let image = st(c, &["image"]);
    if image.is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    } else if is_pod && image.trim() != image {
        errs.push(FieldError::invalid_repr(
            child(path, "image"),
            &go_quote(image),
            "must not have leading or trailing whitespace",
        ));
    }
    if let Some(policy) = get(c, &["imagePullPolicy"]).as_str() {
        match policy {
            "Always" | "IfNotPresent" | "Never" => {}
            "" => errs.push(FieldError::required(child(path, "imagePullPolicy"), "")),
            other => errs.push(FieldError::not_supported(
                child(path, "imagePullPolicy"),
                &Value::from(other),
                &["Always", "IfNotPresent", "Never"],
            )),
        }
    }

    let ports_path = child(path, "ports");
    let mut port_names = HashSet::new();
    for (i, p) in arr(c, &["ports"]).iter().enumerate() {
        let ppath = index(&ports_path, i);
        let pname = st(p, &["name"]);
        if !pname.is_empty() {
            let msgs = is_valid_port_name(pname);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid_repr(
                        child(&ppath, "name"),
                        &go_quote(pname),
                        &msg,
                    ));
                }
            } else if !port_names.insert(pname) {
                errs.push(FieldError::duplicate_repr(
                    child(&ppath, "name"),
                    &go_quote(pname),
                ));
            }
        }
        let container_port = int(p, &["containerPort"]);
        if container_port == 0 {
            errs.push(FieldError::required(child(&ppath, "containerPort"), ""));
        } else {
            for msg in is_valid_port_num(container_port) {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "containerPort"),
                    &container_port.to_string(),
                    &msg,
                ));
            }
        }
        let host_port = int(p, &["hostPort"]);
        if host_port != 0 {
            for msg in is_valid_port_num(host_port) {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "hostPort"),
                    &host_port.to_string(),
                    &msg,
                ));
            }
        }
        validate_protocol(get(p, &["protocol"]), &child(&ppath, "protocol"), errs);
    }

    let sc_path = child(path, "securityContext");
    validate_seccomp_profile(
        get(c, &["securityContext", "seccompProfile"]),
        &child(&sc_path, "seccompProfile"),
        errs,
    );

    let mounts_path = child(path, "volumeMounts");
    let mut mount_points = HashSet::new();
    for (i, m) in arr(c, &["volumeMounts"]).iter().enumerate() {
        let mpath = index(&mounts_path, i);
        let mname = st(m, &["name"]);
        if mname.is_empty() {
            errs.push(FieldError::required(child(&mpath, "name"), ""));
        }
        if !volumes.contains(mname) {
            errs.push(FieldError::not_found(
                child(&mpath, "name"),
                &Value::from(mname),
            ));
        }
        let mount_path = st(m, &["mountPath"]);
        if mount_path.is_empty() {
            errs.push(FieldError::required(child(&mpath, "mountPath"), ""));
        }
        if !mount_points.insert(mount_path) {
            errs.push(FieldError::invalid_repr(
                child(&mpath, "mountPath"),
                &go_quote(mount_path),
                "must be unique",
            ));
        }
    }
}

/// ↔ validateSeccompProfileField: a known type, and a Localhost profile
/// that is a relative path without `..` (the kubelet reads it under its
/// seccomp directory).
fn validate_seccomp_profile(sp: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if sp.is_null() {
        return;
    }
    let ty = st(sp, &["type"]);
    let type_path = child(path, "type");
    match ty {
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        "" => errs.push(FieldError::required(
            &type_path,
            "type is required when seccompProfile is set",
        )),
        other => errs.push(FieldError::not_supported(
            &type_path,
            &Value::from(other),
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
    let profile_path = child(path, "localhostProfile");
    match (ty, get(sp, &["localhostProfile"]).as_str()) {
        ("Localhost", None) => errs.push(FieldError::required(
            &profile_path,
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(p)) => {
            if p.starts_with('/') {
                errs.push(FieldError::invalid_repr(
                    &profile_path,
                    &go_quote(p),
                    "must be a relative path",
                ));
            }
            if p.split('/').any(|part| part == "..") {
                errs.push(FieldError::invalid_repr(
                    &profile_path,
                    &go_quote(p),
                    "must not contain '..'",
                ));
            }
        }
        (_, Some(p)) => errs.push(FieldError::invalid_repr(
            &profile_path,
            &format!(
                "&core.SeccompProfile{{Type:{}, LocalhostProfile:{}}}",
                go_quote(ty),
                go_quote(p)
            ),
            "can only be set when seccomp type is Localhost",
        )),
        (_, None) => {}
    }
}

/// A container's lifecycle hooks and probes (↔ validateLifecycle,
/// validateLivenessProbe, validateReadinessProbe, validateStartupProbe).
fn validate_probes_and_lifecycle(c: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let lifecycle = get(c, &["lifecycle"]);
    for hook in ["postStart", "preStop"] {
        let h = get(lifecycle, &[hook]);
        if !h.is_null() {
            validate_handler(h, &child(&child(path, "lifecycle"), hook), errs);
        }
    }
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe = get(c, &[kind]);
        if probe.is_null() {
            continue;
        }
        let ppath = child(path, kind);
        validate_handler(probe, &ppath, errs);
        for field in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            validate_nonnegative(probe, &[field], &child(&ppath, field), errs);
        }
        if let Some(grace) = opt_int(probe, &["terminationGracePeriodSeconds"]) {
            if kind == "readinessProbe" {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "terminationGracePeriodSeconds"),
                    &grace.to_string(),
                    "must not be set for readinessProbes",
                ));
            } else if grace <= 0 {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "terminationGracePeriodSeconds"),
                    &grace.to_string(),
                    "must be greater than 0",
                ));
            }
        }
        // Absent is defaulted to 1.
        if kind != "readinessProbe"
            && let Some(n) = opt_int(probe, &["successThreshold"])
            && n != 1
        {
            errs.push(FieldError::invalid_repr(
                child(&ppath, "successThreshold"),
                &n.to_string(),
                "must be 1",
            ));
        }
    }
}

/// One handler of a probe or hook: exactly one of exec, httpGet,
/// tcpSocket, grpc (↔ validateHandler).
fn validate_handler(h: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let mut count = 0;
    for kind in ["exec", "httpGet", "tcpSocket", "grpc"] {
        let action = get(h, &[kind]);
        if action.is_null() {
            continue;
        }
        let apath = child(path, kind);
        if count > 0 {
            errs.push(FieldError::forbidden(
                &apath,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match kind {
            "exec" => {
                if arr(action, &["command"]).is_empty() {
                    errs.push(FieldError::required(child(&apath, "command"), ""));
                }
            }
            "httpGet" => validate_http_get_action(action, &apath, errs),
            "tcpSocket" => {
                validate_port_num_or_name(get(action, &["port"]), &child(&apath, "port"), errs)
            }
            _ => validate_port_num_or_name(
                &Value::from(int(action, &["port"])),
                &child(&apath, "port"),
                errs,
            ),
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

/// ↔ validateHTTPGetAction: a path, a port, HTTP or HTTPS, and header
/// names that are HTTP tokens (so that a probe cannot smuggle request
/// lines through them).
fn validate_http_get_action(action: &Value, path: &str, errs: &mut Vec<FieldError>) {
    // Defaulting sets path "/" and scheme HTTP; only an explicit "" is missing.
    if get(action, &["path"]).as_str() == Some("") {
        errs.push(FieldError::required(child(path, "path"), ""));
    }
    validate_port_num_or_name(get(action, &["port"]), &child(path, "port"), errs);
    if let Some(scheme) = get(action, &["scheme"]).as_str()
        && scheme != "HTTP"
        && scheme != "HTTPS"
    {
        errs.push(FieldError::not_supported(
            child(path, "scheme"),
            &Value::from(scheme),
            &["HTTP", "HTTPS"],
        ));
    }
    for header in arr(action, &["httpHeaders"]) {
        let name = st(header, &["name"]);
        for msg in is_http_header_name(name) {
            errs.push(FieldError::invalid_repr(
                child(path, "httpHeaders"),
                &go_quote(name),
                &msg,
            ));
        }
    }
}

/// `ValidatePortNumOrName`: an IntOrString port.
fn validate_port_num_or_name(port: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match port {
        Value::String(name) => {
            for msg in is_valid_port_name(name) {
                errs.push(FieldError::invalid_repr(path, &go_quote(name), &msg));
            }
        }
        other => {
            let n = opt_int(other, &[]).unwrap_or(0);
            for msg in is_valid_port_num(n) {
                errs.push(FieldError::invalid_repr(path, &n.to_string(), &msg));
            }
        }
    }
}

/// `validation.IsHTTPHeaderName`.
pub fn is_http_header_name(value: &str) -> Vec<String> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Vec::new()
    } else {
        vec![regex_error(
            "a valid HTTP header name must consist of alphanumeric characters or '-'",
            "[-A-Za-z0-9]+",
            &["X-Header-Name"],
        )]
    }
}

/// Port protocols (absent = defaulted TCP).
fn validate_protocol(protocol: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match protocol.as_str() {
        None | Some("TCP" | "UDP" | "SCTP") => {}
        Some("") => errs.push(FieldError::required(path, "")),
        Some(other) => errs.push(FieldError::not_supported(
            path,
            &Value::from(other),
            &["SCTP", "TCP", "UDP"],
        )),
    }
}

fn validate_pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    // Ephemeral containers are only added, never changed or removed
    // (ValidatePodEphemeralContainersUpdate).
    let new_eph = arr(new, &["ephemeralContainers"]);
    for old_c in arr(old, &["ephemeralContainers"]) {
        let name = st(old_c, &["name"]);
        match new_eph.iter().find(|c| st(c, &["name"]) == name) {
            Some(c) if normalize(c) == normalize(old_c) => {}
            Some(_) => errs.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be changed"),
            )),
            None => errs.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be removed"),
            )),
        }
    }
    for key in ["containers", "initContainers"] {
        let new_c = arr(new, &[key]);
        let old_c = arr(old, &[key]);
        if new_c.len() != old_c.len() {
            errs.push(FieldError::forbidden(
                format!("spec.{key}"),
                "pod updates may not add or remove containers",
            ));
            return;
        }
    }

    if let Some(new_ads) = opt_int(new, &["activeDeadlineSeconds"]) {
        if !(0..=i64::from(i32::MAX)).contains(&new_ads) {
            errs.push(FieldError::invalid_repr(
                "spec.activeDeadlineSeconds",
                &new_ads.to_string(),
                &inclusive_range_error(0, i64::from(i32::MAX)),
            ));
            return;
        }
        if let Some(old_ads) = opt_int(old, &["activeDeadlineSeconds"])
            && old_ads < new_ads
        {
            errs.push(FieldError::invalid_repr(
                "spec.activeDeadlineSeconds",
                &new_ads.to_string(),
                "must be less than or equal to previous value",
            ));
            return;
        }
    } else if is_set(old, &["activeDeadlineSeconds"]) {
        errs.push(FieldError::invalid_repr(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        ));
    }

    // Only additions to tolerations (tolerationSeconds of existing ones may change).
    let new_tolerations = arr(new, &["tolerations"]);
    for old_t in arr(old, &["tolerations"]) {
        let found = new_tolerations.iter().any(|new_t| {
            let mut o = normalize(old_t);
            let mut n = normalize(new_t);
            if let (Some(o), Some(n)) = (o.as_object_mut(), n.as_object_mut()) {
                o.remove("tolerationSeconds");
                n.remove("tolerationSeconds");
            }
            o == n
        });
        if !found {
            errs.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    // Only deletions from schedulingGates.
    let old_gates: HashSet<&str> = arr(old, &["schedulingGates"])
        .iter()
        .map(|g| st(g, &["name"]))
        .collect();
    let mut added: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, g) in arr(new, &["schedulingGates"]).iter().enumerate() {
        added.insert(st(g, &["name"]), i);
    }
    for (gate, i) in added {
        if !old_gates.contains(gate) {
            errs.push(FieldError::forbidden(
                format!("spec.schedulingGates[{i}].name"),
                &format!("only deletion is allowed, but found new scheduling gate '{gate}'"),
            ));
        }
    }

    let old_norm = normalize(old);
    if normalize(new) == old_norm {
        return;
    }
    let mut munged = new.clone();
    if let Some(m) = munged.as_object_mut() {
        for key in ["containers", "initContainers"] {
            if let Some(Value::Array(list)) = m.get_mut(key) {
                for (i, c) in list.iter_mut().enumerate() {
                    if let Some(c) = c.as_object_mut() {
                        match get(old, &[key]).get(i).and_then(|o| o.get("image")) {
                            Some(img) => c.insert("image".into(), img.clone()),
                            None => c.remove("image"),
                        };
                    }
                }
            }
        }
        for key in [
            "activeDeadlineSeconds",
            "schedulingGates",
            "tolerations",
            "ephemeralContainers",
        ] {
            match old.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        let old_grace = opt_int(old, &["terminationGracePeriodSeconds"]);
        let new_grace = opt_int(new, &["terminationGracePeriodSeconds"]);
        if let (Some(o), Some(1)) = (old_grace, new_grace)
            && o < 0
        {
            m.insert("terminationGracePeriodSeconds".into(), Value::from(o));
        }
    }
    let munged = normalize(&munged);
    if munged != old_norm {
        errs.push(FieldError::forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {}\n{}",
                UPDATABLE_POD_SPEC_FIELDS,
                spec_diff("core.PodSpec", &old_norm, &munged)
            ),
        ));
    }
}

/// A compact, cmp.Diff-like rendering of the top-level differences of two objects.
fn spec_diff(type_name: &str, old: &Value, new: &Value) -> String {
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = format!("  {type_name}{{\n");
    for k in keys {
        let (ov, nv) = (o.get(k), n.get(k));
        if ov == nv {
            continue;
        }
        if let Some(v) = ov {
            out.push_str(&format!("- \t{}: {},\n", k, json_repr(v)));
        }
        if let Some(v) = nv {
            out.push_str(&format!("+ \t{}: {},\n", k, json_repr(v)));
        }
    }
    out.push_str("  }\n");
    out
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

fn validate_nonnegative(obj: &Value, path: &[&str], field: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = opt_int(obj, path).filter(|v| *v < 0) {
        errs.push(FieldError::invalid_repr(
            field,
            &v.to_string(),
            IS_NEGATIVE_ERROR_MSG,
        ));
    }
}

/// Selector required, valid and non-empty; template labels must match it (a nil
/// selector matches nothing, an empty one is not checked).
fn validate_selector_and_template_labels(obj: &Value, what: &str, errs: &mut Vec<FieldError>) {
    let selector = get(obj, &["spec", "selector"]);
    if selector.is_null() {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        errs.extend(validate_label_selector(selector, "spec.selector"));
        if selector_is_empty(selector) {
            errs.push(FieldError::invalid_repr(
                "spec.selector",
                &go_label_selector(selector),
                &format!("empty selector is invalid for {what}"),
            ));
        }
    }
    let labels = get(obj, &["spec", "template", "metadata", "labels"]);
    // A nil selector selects nothing (so never matches); an empty one is skipped.
    let check = selector.is_null() || !selector_is_empty(selector);
    if check && !selector_matches(selector, labels) {
        errs.push(FieldError::invalid_repr(
            "spec.template.metadata.labels",
            &go_string_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
}

fn validate_template_restart_always(obj: &Value, errs: &mut Vec<FieldError>) {
    let policy = str_or(
        obj,
        &["spec", "template", "spec", "restartPolicy"],
        "Always",
    );
    if policy != "Always" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &Value::from(policy),
            &["Always"],
        ));
    }
}

fn validate_selector_immutable(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    if let Some(old) = old {
        let new_sel = get(obj, &["spec", "selector"]);
        let old_sel = get(old, &["spec", "selector"]);
        if normalize(new_sel) != normalize(old_sel) {
            errs.push(FieldError::invalid_repr(
                "spec.selector",
                &go_label_selector(new_sel),
                FIELD_IMMUTABLE_ERROR_MSG,
            ));
        }
    }
}

/// Deployments and ReplicaSets (Kubernetes reports an empty selector as "invalid for
/// deployment" for both).
fn validate_replica_set_like(
    obj: &Value,
    old: Option<&Value>,
    is_deployment: bool,
    errs: &mut Vec<FieldError>,
) {
    validate_nonnegative(obj, &["spec", "replicas"], "spec.replicas", errs);
    validate_nonnegative(
        obj,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    validate_selector_and_template_labels(obj, "deployment", errs);
    validate_pod_template(get(obj, &["spec", "template"]), "spec.template", &[], errs);
    validate_template_restart_always(obj, errs);
    if is_set(obj, &["spec", "template", "spec", "activeDeadlineSeconds"]) {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    if let Some(strategy) = get(obj, &["spec", "strategy", "type"]).as_str()
        && is_deployment
        && !matches!(strategy, "Recreate" | "RollingUpdate")
    {
        errs.push(FieldError::not_supported(
            "spec.strategy.type",
            &Value::from(strategy),
            &["Recreate", "RollingUpdate"],
        ));
    }
    validate_selector_immutable(obj, old, errs);
}

fn validate_replication_controller(obj: &Value, errs: &mut Vec<FieldError>) {
    validate_nonnegative(obj, &["spec", "replicas"], "spec.replicas", errs);
    validate_nonnegative(
        obj,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    let template = get(obj, &["spec", "template"]);
    // An empty selector defaults to the template labels.
    let selector = match get(obj, &["spec", "selector"]) {
        s if map_len(s, &[]) > 0 => s,
        _ => get(template, &["metadata", "labels"]),
    };
    if map_len(selector, &[]) == 0 {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        errs.extend(validate_labels(selector, "spec.selector"));
    }
    if template.is_object() {
        let labels = get(template, &["metadata", "labels"]);
        let matches = selector
            .as_object()
            .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
        if map_len(selector, &[]) > 0 && !matches {
            errs.push(FieldError::invalid_repr(
                "spec.template.metadata.labels",
                &go_string_map(labels),
                "`selector` does not match template `labels`",
            ));
        }
        validate_pod_template(template, "spec.template", &[], errs);
        validate_template_restart_always(obj, errs);
        if is_set(template, &["spec", "activeDeadlineSeconds"]) {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicationController is not Supported",
            ));
        }
    } else {
        errs.push(FieldError::required("spec.template", ""));
    }
}

fn validate_daemon_set(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    validate_nonnegative(
        obj,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    validate_selector_and_template_labels(obj, "daemonset", errs);
    validate_pod_template(get(obj, &["spec", "template"]), "spec.template", &[], errs);
    validate_template_restart_always(obj, errs);
    if let Some(ads) = opt_int(obj, &["spec", "template", "spec", "activeDeadlineSeconds"]) {
        errs.push(FieldError::invalid_repr(
            "spec.template.spec.activeDeadlineSeconds",
            &ads.to_string(),
            "activeDeadlineSeconds must be nil for daemons",
        ));
    }
    if let Some(strategy) = get(obj, &["spec", "updateStrategy", "type"]).as_str()
        && !matches!(strategy, "OnDelete" | "RollingUpdate")
    {
        errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            &Value::from(strategy),
            &["OnDelete", "RollingUpdate"],
        ));
    }
    validate_selector_immutable(obj, old, errs);
}

const STATEFULSET_MUTABLE_SPEC_FIELDS: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

fn validate_stateful_set(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    validate_nonnegative(obj, &["spec", "replicas"], "spec.replicas", errs);
    validate_nonnegative(
        obj,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    if let Some(policy) = get(obj, &["spec", "podManagementPolicy"]).as_str()
        && !matches!(policy, "OrderedReady" | "Parallel")
    {
        errs.push(FieldError::not_supported(
            "spec.podManagementPolicy",
            &Value::from(policy),
            &["OrderedReady", "Parallel"],
        ));
    }
    validate_selector_and_template_labels(obj, "statefulset", errs);
    let claim_names: Vec<&str> = arr(obj, &["spec", "volumeClaimTemplates"])
        .iter()
        .map(|t| st(t, &["metadata", "name"]))
        .collect();
    validate_pod_template(
        get(obj, &["spec", "template"]),
        "spec.template",
        &claim_names,
        errs,
    );
    validate_template_restart_always(obj, errs);
    if is_set(obj, &["spec", "template", "spec", "activeDeadlineSeconds"]) {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    if let Some(old) = old {
        let strip = |v: &Value| {
            let mut spec = normalize(get(v, &["spec"]));
            if let Some(m) = spec.as_object_mut() {
                for key in STATEFULSET_MUTABLE_SPEC_FIELDS {
                    m.remove(key);
                }
            }
            spec
        };
        if strip(obj) != strip(old) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

fn validate_job_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        validate_nonnegative(spec, &[key], &child(path, key), errs);
    }
    let selector = get(spec, &["selector"]);
    let template = get(spec, &["template"]);
    if selector.is_object() {
        errs.extend(validate_label_selector(selector, &child(path, "selector")));
        let labels = get(template, &["metadata", "labels"]);
        if !selector_matches(selector, labels) {
            errs.push(FieldError::invalid_repr(
                child(path, "template.metadata.labels"),
                &go_string_map(labels),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(mode) = get(spec, &["completionMode"]).as_str()
        && !matches!(mode, "NonIndexed" | "Indexed")
    {
        errs.push(FieldError::not_supported(
            child(path, "completionMode"),
            &Value::from(mode),
            &["NonIndexed", "Indexed"],
        ));
    }
    validate_pod_template(template, &child(path, "template"), &[], errs);
    let policy = st(template, &["spec", "restartPolicy"]);
    if policy != "OnFailure" && policy != "Never" {
        errs.push(FieldError::required(
            child(path, "template.spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        ));
    }
}

fn validate_job(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = get(obj, &["spec"]);
    validate_job_spec(spec, "spec", errs);
    let Some(old) = old else {
        return;
    };
    let old_spec = get(old, &["spec"]);
    // Completions are mutable only for "elastic" indexed jobs (completions == parallelism).
    let elastic = st(spec, &["completionMode"]) == "Indexed"
        && opt_int(spec, &["completions"]).is_some()
        && opt_int(spec, &["completions"]) == opt_int(spec, &["parallelism"])
        && opt_int(old_spec, &["completions"]) == opt_int(old_spec, &["parallelism"]);
    if !elastic && get(spec, &["completions"]) != get(old_spec, &["completions"]) {
        errs.push(FieldError::invalid_repr(
            "spec.completions",
            &go_value(get(spec, &["completions"])),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
    let new_sel = get(spec, &["selector"]);
    if normalize(new_sel) != normalize(get(old_spec, &["selector"])) {
        errs.push(FieldError::invalid_repr(
            "spec.selector",
            &go_label_selector(new_sel),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
    let new_template = get(spec, &["template"]);
    if normalize(new_template) != normalize(get(old_spec, &["template"])) {
        errs.push(FieldError::invalid_repr(
            "spec.template",
            &json_repr(new_template),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
    for key in ["completionMode", "podFailurePolicy", "backoffLimitPerIndex"] {
        let (n, o) = (
            normalize(get(spec, &[key])),
            normalize(get(old_spec, &[key])),
        );
        if n != o {
            errs.push(FieldError::invalid_repr(
                format!("spec.{key}"),
                &go_value(get(spec, &[key])),
                FIELD_IMMUTABLE_ERROR_MSG,
            ));
        }
    }
}

fn validate_cron_job(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let name = st(obj, &["metadata", "name"]);
    if old.is_none() && name.len() > 52 {
        errs.push(FieldError::invalid_repr(
            "metadata.name",
            &go_quote(name),
            "must be no more than 52 characters",
        ));
    }
    let schedule = st(obj, &["spec", "schedule"]);
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else if let Err(msg) = check_cron_schedule(schedule) {
        errs.push(FieldError::invalid_repr(
            "spec.schedule",
            &go_quote(schedule),
            &msg,
        ));
    }
    if let Some(policy) = get(obj, &["spec", "concurrencyPolicy"]).as_str()
        && !matches!(policy, "Allow" | "Forbid" | "Replace")
    {
        errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            &Value::from(policy),
            &["Allow", "Forbid", "Replace"],
        ));
    }
    validate_nonnegative(
        obj,
        &["spec", "startingDeadlineSeconds"],
        "spec.startingDeadlineSeconds",
        errs,
    );
    validate_nonnegative(
        obj,
        &["spec", "successfulJobsHistoryLimit"],
        "spec.successfulJobsHistoryLimit",
        errs,
    );
    validate_nonnegative(
        obj,
        &["spec", "failedJobsHistoryLimit"],
        "spec.failedJobsHistoryLimit",
        errs,
    );
    let job_template = get(obj, &["spec", "jobTemplate"]);
    errs.extend(validate_labels(
        get(job_template, &["metadata", "labels"]),
        "spec.jobTemplate.labels",
    ));
    errs.extend(validate_annotations(
        get(job_template, &["metadata", "annotations"]),
        "spec.jobTemplate.annotations",
    ));
    validate_job_spec(get(job_template, &["spec"]), "spec.jobTemplate.spec", errs);
}

/// A standard 5-field cron expression or a predefined descriptor ("@hourly", "@every 5m").
fn check_cron_schedule(schedule: &str) -> Result<(), String> {
    let spec = schedule.trim();
    for prefix in ["TZ=", "CRON_TZ="] {
        if spec.starts_with(prefix) {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
    }
    if spec.starts_with('@') {
        return match spec {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            s if s.starts_with("@every ") => Ok(()),
            s => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

/// The default NodePort range of kube-apiserver (`--service-node-port-range`).
pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

fn cluster_ips(spec: &Value) -> Vec<&str> {
    let ips: Vec<&str> = arr(spec, &["clusterIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    match st(spec, &["clusterIP"]) {
        "" => Vec::new(),
        ip => vec![ip],
    }
}

fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = get(obj, &["spec"]);
    let ty = match st(spec, &["type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let ips = cluster_ips(spec);
    let headless = ips.first() == Some(&"None");
    let ports = arr(spec, &["ports"]);

    for (i, ip) in arr(spec, &["externalIPs"]).iter().enumerate() {
        let field = index("spec.externalIPs", i);
        let ip = ip.as_str().unwrap_or_default();
        let msgs = is_valid_ip(ip);
        if msgs.is_empty() {
            errs.extend(validate_non_special_ip(ip, &field));
        }
        for msg in msgs {
            errs.push(FieldError::invalid_repr(&field, &go_quote(ip), &msg));
        }
    }
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if !matches!(
        ty,
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort"
    ) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &Value::from(ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    if ty == "ExternalName" {
        if !ips.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        let external = st(spec, &["externalName"]);
        let clean = external.strip_suffix('.').unwrap_or(external);
        if clean.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            for msg in is_dns1123_subdomain(clean) {
                errs.push(FieldError::invalid_repr(
                    "spec.externalName",
                    &go_quote(clean),
                    &msg,
                ));
            }
        }
    } else {
        for (i, ip) in ips.iter().enumerate() {
            if (i == 0 && *ip == "None") || ip.is_empty() {
                continue;
            }
            for msg in is_valid_ip(ip) {
                errs.push(FieldError::invalid_repr(
                    format!("spec.clusterIPs[{i}]"),
                    &go_quote(ip),
                    &msg,
                ));
            }
        }
    }

    let require_name = ports.len() > 1;
    let mut names = HashSet::new();
    let mut seen_ports = HashSet::new();
    let mut seen_node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let ppath = format!("spec.ports[{i}]");
        let name = st(p, &["name"]);
        if require_name && name.is_empty() {
            errs.push(FieldError::required(child(&ppath, "name"), ""));
        } else if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "name"),
                    &go_quote(name),
                    &msg,
                ));
            }
            if !names.insert(name) {
                errs.push(FieldError::duplicate_repr(
                    child(&ppath, "name"),
                    &go_quote(name),
                ));
            }
        }
        let port = int(p, &["port"]);
        for msg in is_valid_port_num(port) {
            errs.push(FieldError::invalid_repr(
                child(&ppath, "port"),
                &port.to_string(),
                &msg,
            ));
        }
        validate_protocol(get(p, &["protocol"]), &child(&ppath, "protocol"), errs);
        let protocol = str_or(p, &["protocol"], "TCP");
        match get(p, &["targetPort"]) {
            Value::Number(n) => {
                let tp = n.as_i64().unwrap_or(-1);
                // 0 means "unset" (defaulted to the port).
                if tp != 0 {
                    for msg in is_valid_port_num(tp) {
                        errs.push(FieldError::invalid_repr(
                            child(&ppath, "targetPort"),
                            &tp.to_string(),
                            &msg,
                        ));
                    }
                }
            }
            Value::String(s) if !s.is_empty() => {
                for msg in is_valid_port_name(s) {
                    errs.push(FieldError::invalid_repr(
                        child(&ppath, "targetPort"),
                        &go_quote(s),
                        &msg,
                    ));
                }
            }
            _ => {}
        }
        if let Some(app) = get(p, &["appProtocol"]).as_str() {
            for msg in is_qualified_name(app) {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "appProtocol"),
                    &go_quote(app),
                    &msg,
                ));
            }
        }
        let node_port = int(p, &["nodePort"]);
        if node_port != 0 {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    child(&ppath, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
            let msgs = is_valid_port_num(node_port);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid_repr(
                        child(&ppath, "nodePort"),
                        &node_port.to_string(),
                        &msg,
                    ));
                }
            } else if node_port < NODE_PORT_RANGE.0 || node_port > NODE_PORT_RANGE.1 {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "nodePort"),
                    &node_port.to_string(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                    ),
                ));
            }
            if !seen_node_ports.insert((protocol, node_port)) {
                errs.push(FieldError::duplicate_repr(
                    child(&ppath, "nodePort"),
                    &node_port.to_string(),
                ));
            }
        }
        if !seen_ports.insert((protocol, port)) {
            errs.push(FieldError::duplicate_repr(
                ppath.clone(),
                &format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(protocol),
                    port
                ),
            ));
        }
    }

    if let Some(affinity) = get(spec, &["sessionAffinity"]).as_str()
        && !matches!(affinity, "ClientIP" | "None" | "")
    {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            &Value::from(affinity),
            &["ClientIP", "None"],
        ));
    }
    errs.extend(validate_labels(get(spec, &["selector"]), "spec.selector"));

    if let Some(old) = old {
        validate_cluster_ip_update(spec, get(old, &["spec"]), errs);
    }
}

fn validate_cluster_ip_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let ext = |s: &Value| st(s, &["type"]) == "ExternalName";
    if ext(new) || ext(old) {
        return;
    }
    let new_ips = cluster_ips(new);
    let old_ips = cluster_ips(old);
    // An update that leaves the cluster IPs out keeps the allocated ones.
    if new_ips.is_empty() {
        return;
    }
    if new_ips.first() == Some(&"None") && old_ips.first() == Some(&"None") {
        return;
    }
    let repr = go_string_slice(&new_ips);
    let changed = match old_ips.len().cmp(&new_ips.len()) {
        std::cmp::Ordering::Equal => old_ips.iter().zip(&new_ips).any(|(o, n)| o != n),
        _ => !old_ips.is_empty() && old_ips[0] != new_ips[0],
    };
    if changed {
        errs.push(FieldError::invalid_repr(
            "spec.clusterIPs[0]",
            &repr,
            "may not change once set",
        ));
    }
}

// ---------------------------------------------------------------------------
// ConfigMaps, Secrets, Namespaces
// ---------------------------------------------------------------------------

fn validate_config_map(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let mut total = 0usize;
    let binary = get(obj, &["binaryData"]);
    if let Some(data) = get(obj, &["data"]).as_object() {
        for (k, v) in sorted(data) {
            for msg in is_config_map_key(k) {
                errs.push(FieldError::invalid_repr(
                    format!("data[{k}]"),
                    &go_quote(k),
                    &msg,
                ));
            }
            if binary.get(k).is_some() {
                errs.push(FieldError::invalid_repr(
                    format!("data[{k}]"),
                    &go_quote(k),
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map(str::len).unwrap_or(0);
        }
    }
    if let Some(data) = binary.as_object() {
        for (k, v) in sorted(data) {
            for msg in is_config_map_key(k) {
                errs.push(FieldError::invalid_repr(
                    format!("binaryData[{k}]"),
                    &go_quote(k),
                    &msg,
                ));
            }
            total += base64_decoded_len(v.as_str().unwrap_or_default());
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    if let Some(old) = old {
        validate_immutable_data(obj, old, &["data", "binaryData"], errs);
    }
}

fn validate_immutable_data(obj: &Value, old: &Value, keys: &[&str], errs: &mut Vec<FieldError>) {
    if get(old, &["immutable"]).as_bool() != Some(true) {
        return;
    }
    if get(obj, &["immutable"]).as_bool() != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for key in keys {
        if normalize(get(obj, &[key])) != normalize(get(old, &[key])) {
            errs.push(FieldError::forbidden(
                *key,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn validate_secret(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    // stringData is merged into data before validation.
    let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
    if let Some(data) = get(obj, &["data"]).as_object() {
        for (k, v) in data {
            keys.insert(k, base64_decoded_len(v.as_str().unwrap_or_default()));
        }
    }
    if let Some(data) = get(obj, &["stringData"]).as_object() {
        for (k, v) in data {
            keys.insert(k, v.as_str().map(str::len).unwrap_or(0));
        }
    }
    let mut total = 0usize;
    for (k, len) in &keys {
        for msg in is_config_map_key(k) {
            errs.push(FieldError::invalid_repr(
                format!("data[{k}]"),
                &go_quote(k),
                &msg,
            ));
        }
        total += len;
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| keys.contains_key(k);
    let ty = match st(obj, &["type"]) {
        "" => "Opaque",
        t => t,
    };
    match ty {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            let sa = get(obj, &["metadata", "annotations", key])
                .as_str()
                .unwrap_or_default();
            if sa.is_empty() {
                errs.push(FieldError::required(
                    format!("metadata.annotations[{key}]"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.push(FieldError::required("data[.dockercfg]", ""));
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.push(FieldError::required("data[.dockerconfigjson]", ""));
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if keys.get("ssh-privatekey").copied().unwrap_or(0) == 0 => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(format!("data[{k}]"), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_ty = match st(old, &["type"]) {
            "" => "Opaque",
            t => t,
        };
        if ty != old_ty {
            errs.push(FieldError::invalid_repr(
                "type",
                &go_quote(ty),
                FIELD_IMMUTABLE_ERROR_MSG,
            ));
        }
        validate_immutable_data(obj, old, &["data"], errs);
    }
}

// ---------------------------------------------------------------------------
// Endpoints and EndpointSlices
// ---------------------------------------------------------------------------

/// `ValidateNonSpecialIP`: endpoint (and external) addresses may not be
/// unspecified, loopback, link-local or link-local multicast, so that no
/// Service, proxy or ingress can be pointed at a node's own services or
/// at a cloud's metadata service.
pub fn validate_non_special_ip(ip: &str, field: &str) -> Vec<FieldError> {
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return vec![FieldError::invalid_repr(
            field,
            &go_quote(ip),
            "must be a valid IP address",
        )];
    };
    // Go treats an IPv4-mapped IPv6 address as the IPv4 address.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    let (unspecified, loopback, link_local, link_local_multicast) = match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4.is_unspecified(),
                v4.is_loopback(),
                v4.is_link_local(),
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (
                v6.is_unspecified(),
                v6.is_loopback(),
                o[0] == 0xfe && o[1] & 0xc0 == 0x80,
                o[0] == 0xff && o[1] & 0x0f == 0x02,
            )
        }
    };
    let mut errs = Vec::new();
    let mut push = |detail: &str| errs.push(FieldError::invalid_repr(field, &go_quote(ip), detail));
    if unspecified {
        push(&format!("may not be unspecified ({ip})"));
    }
    if loopback {
        push("may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    if link_local {
        push("may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    if link_local_multicast {
        push("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)");
    }
    errs
}

/// Whether `e` is one of [`validate_non_special_ip`]'s refusals of a
/// well-formed address.
pub fn is_special_ip_error(e: &FieldError) -> bool {
    e.kind == FieldErrorKind::Invalid
        && [
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ]
        .iter()
        .any(|d| e.message.ends_with(d))
        || e.message.contains(": may not be unspecified (")
}

fn validate_dns1123_label_field(value: &str, field: &str, errs: &mut Vec<FieldError>) {
    for msg in is_dns1123_label(value) {
        errs.push(FieldError::invalid_repr(field, &go_quote(value), &msg));
    }
}

fn validate_node_name_field(value: &str, field: &str, errs: &mut Vec<FieldError>) {
    for msg in is_dns1123_subdomain(value) {
        errs.push(FieldError::invalid_repr(field, &go_quote(value), &msg));
    }
}

fn validate_port_protocol(p: &Value, field: &str, errs: &mut Vec<FieldError>) {
    // Absent is defaulted to TCP.
    match get(p, &["protocol"]).as_str() {
        None | Some("TCP" | "UDP" | "SCTP") => {}
        Some("") => errs.push(FieldError::required(field, "")),
        Some(other) => errs.push(FieldError::not_supported(
            field,
            &Value::from(other),
            &["SCTP", "TCP", "UDP"],
        )),
    }
}

fn validate_app_protocol(p: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(app) = get(p, &["appProtocol"]).as_str() {
        for msg in is_qualified_name(app) {
            errs.push(FieldError::invalid_repr(field, &go_quote(app), &msg));
        }
    }
}

/// ↔ ValidateNodeUpdate's address check: no address twice in
/// status.addresses. (Kubernetes does not refuse special addresses in a
/// Node; the API server's proxy refuses to connect to them instead.)
fn validate_node(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    if old.is_none() {
        return;
    }
    let mut seen = HashSet::new();
    for (i, a) in arr(obj, &["status", "addresses"]).iter().enumerate() {
        let (ty, address) = (st(a, &["type"]), st(a, &["address"]));
        if !seen.insert((ty, address)) {
            errs.push(FieldError::duplicate_repr(
                index("status.addresses", i),
                &format!(
                    "core.NodeAddress{{Type:{}, Address:{}}}",
                    go_quote(ty),
                    go_quote(address)
                ),
            ));
        }
    }
}

/// ↔ ValidateEndpoints (validateEndpointSubsets, validateEndpointAddress,
/// validateEndpointPort).
fn validate_endpoints(obj: &Value, errs: &mut Vec<FieldError>) {
    for (i, ss) in arr(obj, &["subsets"]).iter().enumerate() {
        let spath = index("subsets", i);
        let ready = arr(ss, &["addresses"]);
        let not_ready = arr(ss, &["notReadyAddresses"]);
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &spath,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (key, list) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, a) in list.iter().enumerate() {
                let apath = index(&child(&spath, key), j);
                let ip = st(a, &["ip"]);
                let ip_path = child(&apath, "ip");
                for msg in is_valid_ip(ip) {
                    errs.push(FieldError::invalid_repr(&ip_path, &go_quote(ip), &msg));
                }
                let hostname = st(a, &["hostname"]);
                if !hostname.is_empty() {
                    validate_dns1123_label_field(hostname, &child(&apath, "hostname"), errs);
                }
                if let Some(node) = get(a, &["nodeName"]).as_str() {
                    validate_node_name_field(node, &child(&apath, "nodeName"), errs);
                }
                errs.extend(validate_non_special_ip(ip, &ip_path));
            }
        }
        let ports = arr(ss, &["ports"]);
        for (j, p) in ports.iter().enumerate() {
            let ppath = index(&child(&spath, "ports"), j);
            let name = st(p, &["name"]);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(child(&ppath, "name"), ""));
            } else if !name.is_empty() {
                validate_dns1123_label_field(name, &child(&ppath, "name"), errs);
            }
            let port = int(p, &["port"]);
            for msg in is_valid_port_num(port) {
                errs.push(FieldError::invalid_repr(
                    child(&ppath, "port"),
                    &port.to_string(),
                    &msg,
                ));
            }
            validate_port_protocol(p, &child(&ppath, "protocol"), errs);
            validate_app_protocol(p, &child(&ppath, "appProtocol"), errs);
        }
    }
}

/// ↔ ValidateEndpointSlice / ValidateEndpointSliceUpdate.
fn validate_endpoint_slice(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let address_type = st(obj, &["addressType"]);
    match old {
        Some(old) if st(old, &["addressType"]) != address_type => {
            errs.push(FieldError::invalid_repr(
                "addressType",
                &go_quote(address_type),
                FIELD_IMMUTABLE_ERROR_MSG,
            ))
        }
        Some(_) => {}
        None => match address_type {
            "IPv4" | "IPv6" | "FQDN" => {}
            "" => errs.push(FieldError::required("addressType", "")),
            other => errs.push(FieldError::not_supported(
                "addressType",
                &Value::from(other),
                &["FQDN", "IPv4", "IPv6"],
            )),
        },
    }
    let endpoints = arr(obj, &["endpoints"]);
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), 1000));
        return;
    }
    for (i, e) in endpoints.iter().enumerate() {
        let epath = index("endpoints", i);
        let apath = child(&epath, "addresses");
        let addresses = arr(e, &["addresses"]);
        if addresses.is_empty() {
            errs.push(FieldError::required(
                &apath,
                "must contain at least 1 address",
            ));
        } else if addresses.len() > 100 {
            errs.push(FieldError::too_many(&apath, addresses.len(), 100));
        }
        for (j, a) in addresses.iter().enumerate() {
            let field = index(&apath, j);
            let a = a.as_str().unwrap_or_default();
            match address_type {
                "IPv4" | "IPv6" => {
                    let ok = match address_type {
                        "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                        _ => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    };
                    if !ok {
                        errs.push(FieldError::invalid_repr(
                            &field,
                            &go_quote(a),
                            &format!("must be a valid {address_type} address"),
                        ));
                    }
                    errs.extend(validate_non_special_ip(a, &field));
                }
                "FQDN" => {
                    for msg in is_dns1123_subdomain(a) {
                        errs.push(FieldError::invalid_repr(&field, &go_quote(a), &msg));
                    }
                }
                _ => {}
            }
        }
        if let Some(node) = get(e, &["nodeName"]).as_str() {
            validate_node_name_field(node, &child(&epath, "nodeName"), errs);
        }
        if let Some(hostname) = get(e, &["hostname"]).as_str() {
            validate_dns1123_label_field(hostname, &child(&epath, "hostname"), errs);
        }
    }
    let mut names = HashSet::new();
    for (i, p) in arr(obj, &["ports"]).iter().enumerate() {
        let ppath = index("ports", i);
        let name = st(p, &["name"]);
        if !name.is_empty() {
            validate_dns1123_label_field(name, &child(&ppath, "name"), errs);
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate_repr(
                child(&ppath, "name"),
                &go_quote(name),
            ));
        }
        validate_port_protocol(p, &child(&ppath, "protocol"), errs);
        validate_app_protocol(p, &child(&ppath, "appProtocol"), errs);
    }
}

fn validate_namespace(obj: &Value, errs: &mut Vec<FieldError>) {
    for f in arr(obj, &["spec", "finalizers"])
        .iter()
        .filter_map(Value::as_str)
    {
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid_repr(
                "spec.finalizers",
                &go_quote(f),
                &msg,
            ));
        }
        if !f.contains('/') && !matches!(f, "kubernetes" | "orphan" | "foregroundDeletion") {
            errs.push(FieldError::invalid_repr(
                "spec.finalizers",
                &go_quote(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

/// Length of base64 data once decoded (the stored size of a `[]byte` field).
fn base64_decoded_len(s: &str) -> usize {
    let trimmed = s.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

// ---------------------------------------------------------------------------
// Go value rendering
// ---------------------------------------------------------------------------

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A bad value as Go's `ErrorBody` prints it.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::String(s) => go_quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => json_repr(other),
    }
}

fn json_repr(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `%#v` of a `map[string]string`.
fn go_string_map(v: &Value) -> String {
    match v.as_object() {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let pairs: Vec<String> = sorted(m)
                .into_iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        go_quote(k),
                        go_quote(v.as_str().unwrap_or_default())
                    )
                })
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
    }
}

/// `%#v` of a `[]string`.
fn go_string_slice(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// `%#v` of a `metav1.LabelSelector` (as printed for immutable selectors), or
/// "null" for a nil one.
fn go_label_selector(sel: &Value) -> String {
    if !sel.is_object() {
        return "null".to_string();
    }
    let exprs = match get(sel, &["matchExpressions"]) {
        Value::Array(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match get(e, &["values"]) {
                        Value::Array(vs) => {
                            let vs: Vec<&str> = vs.iter().filter_map(Value::as_str).collect();
                            go_string_slice(&vs)
                        }
                        _ => "[]string(nil)".to_string(),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(st(e, &["key"])),
                        go_quote(st(e, &["operator"])),
                        values
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
        _ => "[]v1.LabelSelectorRequirement(nil)".to_string(),
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        go_string_map(get(sel, &["matchLabels"])),
        exprs
    )
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return &NULL,
        }
    }
    cur
}

fn st<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).as_str().unwrap_or("")
}

fn str_or<'a>(v: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    match get(v, path).as_str() {
        Some("") | None => default,
        Some(s) => s,
    }
}

fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    let v = get(v, path);
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| v.as_f64().map(|f| f as i64))
}

fn int(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn map_len(v: &Value, path: &[&str]) -> usize {
    get(v, path).as_object().map(|m| m.len()).unwrap_or(0)
}

/// Whether a JSON value is what Go's zero value encodes to (null, "", 0,
/// false, an empty list or map, or an object of zero values).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_zero),
    }
}

fn is_set(v: &Value, path: &[&str]) -> bool {
    !get(v, path).is_null()
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Semantic-equality normal form: nulls, empty lists and empty maps dropped (Kubernetes
/// treats nil and empty slices/maps as equal).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let n = normalize(v);
                let empty = match &n {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn sysctl_names() {
        for ok in [
            "kernel.shm_rmid_forced",
            "net/ipv4/ip_forward",
            "kernel.shmmax",
            "safe-and-unsafe",
            "a",
        ] {
            assert!(is_sysctl_name(ok), "{ok}");
        }
        for bad in [
            "foo-",
            "bar..",
            "",
            ".a",
            "A.b",
            "a..b",
            "kernel.shm_rmid_forced_",
        ] {
            assert!(!is_sysctl_name(bad), "{bad}");
        }
        let spec = json!({"securityContext": {"sysctls": [
            {"name": "foo-", "value": "bar"}, {"name": "kernel.shmmax", "value": "1"},
            {"name": "safe-and-unsafe", "value": "1"}, {"name": "bar..", "value": "42"}]}});
        let mut errs = Vec::new();
        validate_sysctls(&spec, "spec", &mut errs);
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("spec.securityContext.sysctls[0].name: Invalid value: \"foo-\""),
            "{text:?}"
        );
        assert!(text[1].contains("Invalid value: \"bar..\""), "{text:?}");
    }

    use super::*;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    /// (field, reason, message) triples for easy comparison.
    fn triples(errs: &[FieldError]) -> Vec<(String, &'static str, String)> {
        errs.iter()
            .map(|e| (e.field.clone(), e.reason(), e.message.clone()))
            .collect()
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.field.clone()).collect()
    }

    fn has(errs: &[FieldError], field: &str, message_start: &str) -> bool {
        errs.iter()
            .any(|e| e.field == field && e.message.starts_with(message_start))
    }

    #[test]
    fn dns1123_subdomain() {
        assert_eq!(
            regex_error(
                DNS1123_SUBDOMAIN_ERR,
                DNS1123_SUBDOMAIN_FMT,
                &["example.com"]
            ),
            SUBDOMAIN_MSG
        );
        let long = "a".repeat(254);
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("example.com", vec![]),
            ("a", vec![]),
            ("1-2.x-y", vec![]),
            ("My_Pod", vec![SUBDOMAIN_MSG.to_string()]),
            ("", vec![SUBDOMAIN_MSG.to_string()]),
            ("a..b", vec![SUBDOMAIN_MSG.to_string()]),
            ("-a", vec![SUBDOMAIN_MSG.to_string()]),
            ("a-", vec![SUBDOMAIN_MSG.to_string()]),
            (".a", vec![SUBDOMAIN_MSG.to_string()]),
            (
                long.as_str(),
                vec!["must be no more than 253 characters".to_string()],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(is_dns1123_subdomain(input), want, "{input:?}");
        }
    }

    #[test]
    fn dns1123_label() {
        let label_msg = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
        let long = "a".repeat(64);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("my-name", vec![]),
            ("123-abc", vec![]),
            ("a.b", vec!["must not contain dots"]),
            ("My-Name", vec![label_msg]),
            ("", vec![label_msg]),
            ("a_b", vec![label_msg]),
            (long.as_str(), vec!["must be no more than 63 characters"]),
        ];
        for (input, want) in cases {
            assert_eq!(is_dns1123_label(input), want, "{input:?}");
        }
    }

    #[test]
    fn dns1035_label() {
        let msg = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("web", vec![]),
            ("a-1", vec![]),
            ("1abc", vec![msg]),
            ("abc-", vec![msg]),
            ("a.b", vec![msg]),
            ("", vec![msg]),
        ];
        for (input, want) in cases {
            assert_eq!(is_dns1035_label(input), want, "{input:?}");
        }
    }

    #[test]
    fn qualified_names_and_label_values() {
        let name_msg = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("app", vec![]),
            ("app.kubernetes.io/name", vec![]),
            ("Foo_Bar.baz", vec![]),
            ("-bad", vec![name_msg.clone()]),
            ("example.com/", vec!["name part must be non-empty".into(), name_msg.clone()]),
            ("/name", vec!["prefix part must be non-empty".into()]),
            ("Bad_Prefix/name", vec![format!("prefix part {SUBDOMAIN_MSG}")]),
            (
                "a/b/c",
                vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into()],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(is_qualified_name(input), want, "{input:?}");
        }
        let value_msg = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
        let long = "v".repeat(64);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("", vec![]),
            ("v1.2_3-x", vec![]),
            ("bad value", vec![value_msg]),
            ("-x", vec![value_msg]),
            (long.as_str(), vec!["must be no more than 63 characters"]),
        ];
        for (input, want) in cases {
            assert_eq!(is_valid_label_value(input), want, "{input:?}");
        }
    }

    #[test]
    fn config_keys_ports_ips() {
        let key_msg = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("app.properties", vec![]),
            ("KEY_1-a", vec![]),
            ("a/b", vec![key_msg]),
            ("", vec![key_msg]),
            (".", vec!["must not be '.'"]),
            ("..", vec!["must not be '..'"]),
            ("..data", vec!["must not start with '..'"]),
        ];
        for (input, want) in cases {
            assert_eq!(is_config_map_key(input), want, "{input:?}");
        }
        for (port, ok) in [
            (0, false),
            (1, true),
            (65535, true),
            (65536, false),
            (-1, false),
        ] {
            assert_eq!(is_valid_port_num(port).is_empty(), ok, "{port}");
        }
        assert_eq!(
            is_valid_port_num(0),
            ["must be between 1 and 65535, inclusive"]
        );
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(
            is_valid_port_name("123"),
            ["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a--b"),
            ["must not contain consecutive hyphens"]
        );
        assert_eq!(is_valid_port_name("http-metrics-port").len(), 1);
        assert!(is_valid_ip("10.0.0.1").is_empty());
        assert!(is_valid_ip("fd00::1").is_empty());
        assert_eq!(is_valid_ip("10.0.0.300").len(), 1);
        assert_eq!(is_valid_path_segment_name(".."), ["may not be '..'"]);
        assert_eq!(
            is_valid_path_segment_name("a/b%"),
            ["may not contain '/'", "may not contain '%'"]
        );
        assert!(is_valid_path_segment_name("system:controller:foo").is_empty());
    }

    #[test]
    fn field_error_bodies() {
        let cases = vec![
            (
                FieldError::required("spec.x", ""),
                "FieldValueRequired",
                "Required value",
            ),
            (
                FieldError::required("metadata.name", "name or generateName is required"),
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ),
            (
                FieldError::invalid("spec.replicas", &json!(-1), IS_NEGATIVE_ERROR_MSG),
                "FieldValueInvalid",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                FieldError::invalid("x", &json!("a\"b\n"), "bad"),
                "FieldValueInvalid",
                "Invalid value: \"a\\\"b\\n\": bad",
            ),
            (
                FieldError::duplicate("x", &json!("c")),
                "FieldValueDuplicate",
                "Duplicate value: \"c\"",
            ),
            (
                FieldError::not_supported("x", &json!("Sometimes"), &["Always", "Never"]),
                "FieldValueNotSupported",
                "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\"",
            ),
            (
                FieldError::forbidden("x", "nope"),
                "FieldValueForbidden",
                "Forbidden: nope",
            ),
            (
                FieldError::too_long("metadata.annotations", 262144),
                "FieldValueTooLong",
                "Too long: may not be more than 262144 bytes",
            ),
            (
                FieldError::not_found("x", &json!("v")),
                "FieldValueNotFound",
                "Not found: \"v\"",
            ),
        ];
        for (err, reason, message) in cases {
            assert_eq!(err.reason(), reason);
            assert_eq!(err.message, message);
        }
        let e = FieldError::required("spec.containers", "");
        assert_eq!(e.to_string(), "spec.containers: Required value");
        assert_eq!(
            e.to_cause(),
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers"})
        );
    }

    #[test]
    fn status_messages() {
        let one = vec![FieldError::required("spec.containers", "")];
        assert_eq!(
            status_message("", "Pod", "p", &one),
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        let two = vec![
            FieldError::required("spec.selector", ""),
            FieldError::required("spec.selector", ""),
            FieldError::invalid("spec.replicas", &json!(-1), IS_NEGATIVE_ERROR_MSG),
        ];
        assert_eq!(
            status_message("apps", "Deployment", "d", &two),
            "Deployment.apps \"d\" is invalid: [spec.selector: Required value, spec.replicas: Invalid value: -1: must be greater than or equal to 0]"
        );
        let st = invalid_status("apps", "Deployment", "d", &two);
        assert_eq!(st["code"], 422);
        assert_eq!(st["reason"], "Invalid");
        assert_eq!(st["details"]["group"], "apps");
        assert_eq!(st["details"]["causes"].as_array().unwrap().len(), 3);
        assert!(
            invalid_status("", "Pod", "p", &one)["details"]
                .get("group")
                .is_none()
        );
    }

    #[test]
    fn labels_and_annotations() {
        let errs = validate_labels(
            &json!({"app": "web", "bad key!": "x", "k": "bad value"}),
            "metadata.labels",
        );
        assert_eq!(fields(&errs), ["metadata.labels", "metadata.labels"]);
        assert!(
            errs[0]
                .message
                .starts_with("Invalid value: \"bad key!\": name part must consist")
        );
        assert!(
            errs[1]
                .message
                .starts_with("Invalid value: \"bad value\": a valid label must")
        );
        assert!(validate_labels(&Value::Null, "x").is_empty());

        // Annotation keys are case-insensitive qualified names; values are free-form.
        assert!(
            validate_annotations(&json!({"Example.COM/Key": "any value at all"}), "a").is_empty()
        );
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errs = validate_annotations(&json!({ "k": big }), "metadata.annotations");
        assert_eq!(
            triples(&errs),
            [(
                "metadata.annotations".to_string(),
                "FieldValueTooLong",
                "Too long: may not be more than 262144 bytes".to_string()
            )]
        );
        let errs = validate_annotations(&json!({"a/b/c": "v"}), "metadata.annotations");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message
                .starts_with("Invalid value: \"a/b/c\": a qualified name must")
        );
    }

    #[test]
    fn label_selectors() {
        let errs = validate_label_selector(
            &json!({"matchLabels": {"app": "x"}, "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Like", "values": ["x"]},
                {"key": "d", "operator": "In", "values": ["bad value"]}
            ]}),
            "spec.selector",
        );
        assert_eq!(
            fields(&errs),
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
                "spec.selector.matchExpressions[3].values[0]"
            ]
        );
        assert_eq!(
            errs[0].message,
            "Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert!(selector_matches(&json!({}), &json!({"a": "b"})));
        assert!(!selector_matches(&Value::Null, &json!({"a": "b"})));
        assert!(selector_matches(
            &json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["x"]}]}),
            &json!({"a": "b"})
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"a": "c"}}),
            &json!({"a": "b"})
        ));
    }

    #[test]
    fn metadata_rules() {
        struct Case {
            group: &'static str,
            kind: &'static str,
            namespaced: bool,
            meta: Value,
            want: Vec<(&'static str, &'static str)>,
        }
        let ok_pod_spec = json!({"containers": [{"name": "c", "image": "i"}]});
        let cases = vec![
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"name": "ok", "namespace": "default"}),
                want: vec![],
            },
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"namespace": "default"}),
                want: vec![(
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            },
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"generateName": "cm-", "namespace": "default"}),
                want: vec![],
            },
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"name": "My_Pod", "namespace": "default"}),
                want: vec![(
                    "metadata.name",
                    "Invalid value: \"My_Pod\": a lowercase RFC 1123 subdomain must consist of",
                )],
            },
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"name": "x"}),
                want: vec![("metadata.namespace", "Required value")],
            },
            Case {
                group: "",
                kind: "Node",
                namespaced: false,
                meta: json!({"name": "n1", "namespace": "default"}),
                want: vec![("metadata.namespace", "Forbidden: not allowed on this type")],
            },
            Case {
                group: "",
                kind: "Namespace",
                namespaced: false,
                meta: json!({"name": "a.b"}),
                want: vec![(
                    "metadata.name",
                    "Invalid value: \"a.b\": must not contain dots",
                )],
            },
            Case {
                group: "",
                kind: "Service",
                namespaced: true,
                meta: json!({"name": "1web", "namespace": "default"}),
                want: vec![(
                    "metadata.name",
                    "Invalid value: \"1web\": a DNS-1035 label must consist",
                )],
            },
            Case {
                group: "rbac.authorization.k8s.io",
                kind: "ClusterRole",
                namespaced: false,
                meta: json!({"name": "system:controller:x"}),
                want: vec![],
            },
            Case {
                group: "rbac.authorization.k8s.io",
                kind: "Role",
                namespaced: true,
                meta: json!({"name": "a/b", "namespace": "ns"}),
                want: vec![(
                    "metadata.name",
                    "Invalid value: \"a/b\": may not contain '/'",
                )],
            },
            Case {
                group: "example.com",
                kind: "Widget",
                namespaced: true,
                meta: json!({"name": "w", "namespace": "Bad_NS"}),
                want: vec![(
                    "metadata.namespace",
                    "Invalid value: \"Bad_NS\": a lowercase RFC 1123 label",
                )],
            },
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"name": "x", "namespace": "d", "labels": {"ok": "-bad"}, "finalizers": ["a/b/c"],
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}]}),
                want: vec![
                    ("metadata.labels", "Invalid value: \"-bad\": a valid label"),
                    (
                        "metadata.ownerReferences.uid",
                        "Invalid value: \"\": must not be empty",
                    ),
                    (
                        "metadata.finalizers",
                        "Invalid value: \"a/b/c\": a qualified name",
                    ),
                ],
            },
            Case {
                group: "",
                kind: "ConfigMap",
                namespaced: true,
                meta: json!({"generateName": "Bad-", "namespace": "d"}),
                want: vec![(
                    "metadata.generateName",
                    "Invalid value: \"Bad-\": a lowercase RFC 1123 subdomain",
                )],
            },
        ];
        for case in cases {
            let mut obj = json!({"metadata": case.meta});
            if case.kind == "Pod" {
                obj["spec"] = ok_pod_spec.clone();
            }
            if case.kind == "Service" {
                obj["spec"] = json!({"clusterIP": "None"});
            }
            let errs = validate_object(case.group, case.kind, &obj, None, case.namespaced);
            assert_eq!(
                errs.len(),
                case.want.len(),
                "{}: {:?}",
                case.kind,
                triples(&errs)
            );
            for (field, msg) in case.want {
                assert!(
                    has(&errs, field, msg),
                    "{}: want {field} {msg}, got {:?}",
                    case.kind,
                    triples(&errs)
                );
            }
        }
    }

    #[test]
    fn metadata_update_rules() {
        let old = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "5"}, "data": {}});
        let cases = vec![
            (
                json!({"metadata": {"name": "a", "namespace": "ns"}}),
                vec![],
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u1"}}),
                vec![],
            ),
            (
                json!({"metadata": {"name": "b", "namespace": "ns"}}),
                vec![("metadata.name", "Invalid value: \"b\": field is immutable")],
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "other"}}),
                vec![(
                    "metadata.namespace",
                    "Invalid value: \"other\": field is immutable",
                )],
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u2"}}),
                vec![("metadata.uid", "Invalid value: \"u2\": field is immutable")],
            ),
        ];
        for (new, want) in cases {
            let errs = validate_object("", "ConfigMap", &new, Some(&old), true);
            assert_eq!(errs.len(), want.len(), "{:?}", triples(&errs));
            for (f, m) in want {
                assert!(has(&errs, f, m), "{:?}", triples(&errs));
            }
        }
        let deleting = json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["x/a"]}});
        let new = json!({"metadata": {"name": "a", "finalizers": ["x/a", "x/b"]}});
        let errs = validate_object("", "ConfigMap", &new, Some(&deleting), true);
        assert_eq!(
            errs[0].message,
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x/b\"}"
        );
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn pod_rules() {
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                json!({"containers": [{"name": "c", "image": "nginx"}]}),
                vec![],
            ),
            (json!({}), vec![("spec.containers", "Required value")]),
            (
                json!({"containers": []}),
                vec![("spec.containers", "Required value")],
            ),
            (
                json!({"containers": [{"name": "C_1", "image": "nginx"}]}),
                vec![(
                    "spec.containers[0].name",
                    "Invalid value: \"C_1\": a lowercase RFC 1123 label",
                )],
            ),
            (
                json!({"containers": [{"image": "nginx"}]}),
                vec![("spec.containers[0].name", "Required value")],
            ),
            (
                json!({"containers": [{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]}),
                vec![("spec.containers[1].name", "Duplicate value: \"c\"")],
            ),
            (
                json!({"initContainers": [{"name": "c", "image": "a"}], "containers": [{"name": "c", "image": "b"}]}),
                vec![("spec.initContainers[0].name", "Duplicate value: \"c\"")],
            ),
            (
                json!({"containers": [{"name": "c"}]}),
                vec![("spec.containers[0].image", "Required value")],
            ),
            (
                json!({"containers": [{"name": "c", "image": " nginx"}]}),
                vec![(
                    "spec.containers[0].image",
                    "Invalid value: \" nginx\": must not have leading or trailing whitespace",
                )],
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "ports": [
                    {"containerPort": 80}, {"containerPort": 70000, "protocol": "HTTP"}, {"containerPort": 0},
                    {"name": "Http", "containerPort": 81, "hostPort": 99999}]}]}),
                vec![
                    (
                        "spec.containers[0].ports[1].containerPort",
                        "Invalid value: 70000: must be between 1 and 65535, inclusive",
                    ),
                    (
                        "spec.containers[0].ports[1].protocol",
                        "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                    ),
                    (
                        "spec.containers[0].ports[2].containerPort",
                        "Required value",
                    ),
                    (
                        "spec.containers[0].ports[3].name",
                        "Invalid value: \"Http\": must contain only alpha-numeric characters",
                    ),
                    (
                        "spec.containers[0].ports[3].hostPort",
                        "Invalid value: 99999: must be between 1 and 65535, inclusive",
                    ),
                ],
            ),
            (
                json!({"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Sometimes"}),
                vec![(
                    "spec.restartPolicy",
                    "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                )],
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Maybe"}]}),
                vec![(
                    "spec.containers[0].imagePullPolicy",
                    "Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
                )],
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}),
                vec![(
                    "spec.containers[0].volumeMounts[0].name",
                    "Not found: \"data\"",
                )],
            ),
            (
                json!({"volumes": [{"name": "data", "emptyDir": {}}],
                       "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}),
                vec![],
            ),
            (
                json!({"volumes": [{"name": "data"}], "containers": [{"name": "c", "image": "i"}]}),
                vec![(
                    "spec.volumes[0]",
                    "Required value: must specify a volume type",
                )],
            ),
            (
                json!({"containers": [{"name": "c", "image": "i"}], "activeDeadlineSeconds": 0}),
                vec![(
                    "spec.activeDeadlineSeconds",
                    "Invalid value: 0: must be between 1 and 2147483647, inclusive",
                )],
            ),
            (
                json!({"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"disk": "s s d"}}),
                vec![(
                    "spec.nodeSelector",
                    "Invalid value: \"s s d\": a valid label",
                )],
            ),
        ];
        for (spec, want) in cases {
            let errs = validate_object("", "Pod", &pod(spec.clone()), None, true);
            assert_eq!(errs.len(), want.len(), "{spec}: {:#?}", triples(&errs));
            for (f, m) in want {
                assert!(
                    has(&errs, f, m),
                    "{spec}: want {f}: {m}; got {:#?}",
                    triples(&errs)
                );
            }
        }
    }

    #[test]
    fn probe_and_lifecycle_rules() {
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "i"});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"containers": [c]})
        };
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                c(
                    json!({"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080,
                    "httpHeaders": [{"name": "X-Custom-Header", "value": "a\r\nb"}]}}}),
                ),
                vec![],
            ),
            (
                c(
                    json!({"readinessProbe": {"httpGet": {"path": "/", "port": 80,
                    "httpHeaders": [{"name": "Host: x\r\nX-Evil", "value": "v"}]}}}),
                ),
                vec![(
                    "spec.containers[0].readinessProbe.httpGet.httpHeaders",
                    "Invalid value: \"Host: x\\r\\nX-Evil\": a valid HTTP header name must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
                )],
            ),
            (
                c(
                    json!({"lifecycle": {"postStart": {"httpGet": {"path": "", "port": 0, "scheme": "FTP",
                    "httpHeaders": [{"name": "", "value": "v"}]}}}}),
                ),
                vec![
                    (
                        "spec.containers[0].lifecycle.postStart.httpGet.path",
                        "Required value",
                    ),
                    (
                        "spec.containers[0].lifecycle.postStart.httpGet.port",
                        "Invalid value: 0: must be between 1 and 65535, inclusive",
                    ),
                    (
                        "spec.containers[0].lifecycle.postStart.httpGet.scheme",
                        "Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
                    ),
                    (
                        "spec.containers[0].lifecycle.postStart.httpGet.httpHeaders",
                        "Invalid value: \"\": a valid HTTP header name",
                    ),
                ],
            ),
            (
                c(json!({"lifecycle": {"preStop": {}}})),
                vec![(
                    "spec.containers[0].lifecycle.preStop",
                    "Required value: must specify a handler type",
                )],
            ),
            (
                c(
                    json!({"startupProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": "http"}}}),
                ),
                vec![(
                    "spec.containers[0].startupProbe.tcpSocket",
                    "Forbidden: may not specify more than 1 handler type",
                )],
            ),
            (
                c(
                    json!({"livenessProbe": {"exec": {}, "periodSeconds": -1, "successThreshold": 2}}),
                ),
                vec![
                    (
                        "spec.containers[0].livenessProbe.exec.command",
                        "Required value",
                    ),
                    (
                        "spec.containers[0].livenessProbe.periodSeconds",
                        "Invalid value: -1: must be greater than or equal to 0",
                    ),
                    (
                        "spec.containers[0].livenessProbe.successThreshold",
                        "Invalid value: 2: must be 1",
                    ),
                ],
            ),
            (
                c(
                    json!({"readinessProbe": {"tcpSocket": {"port": "Not_A_Name"}, "terminationGracePeriodSeconds": 5}}),
                ),
                vec![
                    (
                        "spec.containers[0].readinessProbe.tcpSocket.port",
                        "Invalid value: \"Not_A_Name\": must contain only alpha-numeric characters",
                    ),
                    (
                        "spec.containers[0].readinessProbe.terminationGracePeriodSeconds",
                        "Invalid value: 5: must not be set for readinessProbes",
                    ),
                ],
            ),
            (
                c(json!({"livenessProbe": {"grpc": {"port": 70000}}})),
                vec![(
                    "spec.containers[0].livenessProbe.grpc.port",
                    "Invalid value: 70000: must be between 1 and 65535, inclusive",
                )],
            ),
            (
                json!({"initContainers": [{"name": "i", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}}],
                    "containers": [{"name": "c", "image": "i"}]}),
                vec![(
                    "spec.initContainers[0].readinessProbe",
                    "Forbidden: may not be set for init containers without restartPolicy=Always",
                )],
            ),
        ];
        for (spec, want) in cases {
            let errs = validate_object("", "Pod", &pod(spec.clone()), None, true);
            assert_eq!(errs.len(), want.len(), "{spec}: {:#?}", triples(&errs));
            for (f, m) in want {
                assert!(
                    has(&errs, f, m),
                    "{spec}: want {f}: {m}; got {:#?}",
                    triples(&errs)
                );
            }
        }
        // Pod templates of workloads get the same checks.
        let d = json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": c(json!({"livenessProbe": {"httpGet": {"path": "/", "port": 80,
                "httpHeaders": [{"name": "a b", "value": "v"}]}}}))}}});
        let errs = validate_object("apps", "Deployment", &d, None, true);
        assert!(
            has(
                &errs,
                "spec.template.spec.containers[0].livenessProbe.httpGet.httpHeaders",
                "Invalid value: \"a b\""
            ),
            "{:#?}",
            triples(&errs)
        );
    }

    #[test]
    fn endpoint_addresses_may_not_be_special() {
        let ep = |subsets: Value| json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": subsets});
        let ok = validate_object(
            "",
            "Endpoints",
            &ep(
                json!([{"addresses": [{"ip": "10.1.2.3", "hostname": "a", "nodeName": "n1"}],
                "notReadyAddresses": [{"ip": "2001:db8::1"}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}]),
            ),
            None,
            true,
        );
        assert!(ok.is_empty(), "{:#?}", triples(&ok));
        let special = [
            (
                "127.0.0.1",
                "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            ),
            (
                "127.3.4.5",
                "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            ),
            (
                "::1",
                "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            ),
            (
                "::ffff:127.0.0.1",
                "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            ),
            (
                "169.254.169.254",
                "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            ),
            (
                "fe80::1",
                "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            ),
            (
                "224.0.0.251",
                "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
            ),
            (
                "ff02::1",
                "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
            ),
            ("0.0.0.0", "may not be unspecified (0.0.0.0)"),
            ("::", "may not be unspecified (::)"),
        ];
        for (ip, msg) in special {
            let errs = validate_object(
                "",
                "Endpoints",
                &ep(json!([{"addresses": [{"ip": ip}], "ports": [{"port": 10250}]}])),
                None,
                true,
            );
            assert_eq!(
                triples(&errs),
                vec![(
                    "subsets[0].addresses[0].ip".to_string(),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{ip}\": {msg}")
                )],
                "{ip}"
            );
            let v6 = ip.contains(':');
            let slice = json!({"metadata": {"name": "s", "namespace": "default"},
                "addressType": if v6 { "IPv6" } else { "IPv4" },
                "endpoints": [{"addresses": [ip]}], "ports": [{"port": 10250}]});
            let errs = validate_object("discovery.k8s.io", "EndpointSlice", &slice, None, true);
            assert!(
                has(
                    &errs,
                    "endpoints[0].addresses[0]",
                    &format!("Invalid value: \"{ip}\": {msg}")
                ),
                "{ip}: {:#?}",
                triples(&errs)
            );
            let svc = json!({"metadata": {"name": "s", "namespace": "default"},
                "spec": {"ports": [{"port": 80}], "externalIPs": [ip]}});
            let errs = validate_object("", "Service", &svc, None, true);
            assert!(
                has(
                    &errs,
                    "spec.externalIPs[0]",
                    &format!("Invalid value: \"{ip}\": {msg}")
                ),
                "{ip}: {:#?}",
                triples(&errs)
            );
        }
        let errs = validate_object(
            "",
            "Endpoints",
            &ep(
                json!([{"addresses": [{"ip": "nope"}], "ports": [{"port": 80}, {"port": 0, "protocol": "ICMP"}]}, {}]),
            ),
            None,
            true,
        );
        for (f, m) in [
            (
                "subsets[0].addresses[0].ip",
                "Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ),
            (
                "subsets[0].addresses[0].ip",
                "Invalid value: \"nope\": must be a valid IP address",
            ),
            ("subsets[0].ports[0].name", "Required value"),
            ("subsets[0].ports[1].name", "Required value"),
            (
                "subsets[0].ports[1].port",
                "Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            (
                "subsets[0].ports[1].protocol",
                "Unsupported value: \"ICMP\"",
            ),
            (
                "subsets[1]",
                "Required value: must specify `addresses` or `notReadyAddresses`",
            ),
        ] {
            assert!(has(&errs, f, m), "want {f}: {m}; got {:#?}", triples(&errs));
        }
        // EndpointSlices: the address must be of the slice's type, at least one per endpoint.
        let slice = |ty: &str, endpoints: Value| {
            json!({"metadata": {"name": "s", "namespace": "default"},
            "addressType": ty, "endpoints": endpoints, "ports": [{"name": "a"}, {"name": "a"}]})
        };
        let errs = validate_object(
            "discovery.k8s.io",
            "EndpointSlice",
            &slice(
                "IPv4",
                json!([{"addresses": ["2001:db8::1"]}, {"addresses": []}]),
            ),
            None,
            true,
        );
        for (f, m) in [
            (
                "endpoints[0].addresses[0]",
                "Invalid value: \"2001:db8::1\": must be a valid IPv4 address",
            ),
            (
                "endpoints[1].addresses",
                "Required value: must contain at least 1 address",
            ),
            ("ports[1].name", "Duplicate value: \"a\""),
        ] {
            assert!(has(&errs, f, m), "want {f}: {m}; got {:#?}", triples(&errs));
        }
        let fqdn = slice("FQDN", json!([{"addresses": ["example.com"]}]));
        let errs = validate_object("discovery.k8s.io", "EndpointSlice", &fqdn, None, true);
        assert_eq!(fields(&errs), vec!["ports[1].name"]);
        let errs = validate_object(
            "discovery.k8s.io",
            "EndpointSlice",
            &slice("IPv6", json!([])),
            Some(&fqdn),
            true,
        );
        assert!(has(
            &errs,
            "addressType",
            "Invalid value: \"IPv6\": field is immutable"
        ));
        let errs = validate_object(
            "discovery.k8s.io",
            "EndpointSlice",
            &slice("IPX", json!([])),
            None,
            true,
        );
        assert!(has(&errs, "addressType", "Unsupported value: \"IPX\""));
    }

    #[test]
    fn seccomp_profiles() {
        let spec = |psc: Value, sc: Value| {
            json!({"securityContext": {"seccompProfile": psc},
                "containers": [{"name": "c", "image": "i", "securityContext": {"seccompProfile": sc}}]})
        };
        let check = |psc: Value, sc: Value| {
            triples(&validate_object("", "Pod", &pod(spec(psc, sc)), None, true))
        };
        assert!(
            check(
                json!({"type": "RuntimeDefault"}),
                json!({"type": "Localhost", "localhostProfile": "profiles/a.json"})
            )
            .is_empty()
        );
        assert_eq!(
            check(
                json!({"type": "Localhost", "localhostProfile": "../../etc/x"}),
                json!({"type": "Localhost", "localhostProfile": "/abs.json"})
            ),
            vec![
                (
                    "spec.containers[0].securityContext.seccompProfile.localhostProfile"
                        .to_string(),
                    "FieldValueInvalid",
                    "Invalid value: \"/abs.json\": must be a relative path".to_string()
                ),
                (
                    "spec.securityContext.seccompProfile.localhostProfile".to_string(),
                    "FieldValueInvalid",
                    "Invalid value: \"../../etc/x\": must not contain '..'".to_string()
                ),
            ]
        );
        assert_eq!(
            check(json!({"type": "Localhost"}), json!({"type": "Bogus"})),
            vec![
                (
                    "spec.containers[0].securityContext.seccompProfile.type".to_string(),
                    "FieldValueNotSupported",
                    "Unsupported value: \"Bogus\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"".to_string()
                ),
                (
                    "spec.securityContext.seccompProfile.localhostProfile".to_string(),
                    "FieldValueRequired",
                    "Required value: must be set when seccomp type is Localhost".to_string()
                ),
            ]
        );
        let errs = check(
            json!({}),
            json!({"type": "RuntimeDefault", "localhostProfile": "x"}),
        );
        assert_eq!(
            errs.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            vec![
                "spec.containers[0].securityContext.seccompProfile.localhostProfile",
                "spec.securityContext.seccompProfile.type"
            ]
        );
    }

    #[test]
    fn node_addresses_are_not_repeated_on_update() {
        let node = |addresses: Value| json!({"metadata": {"name": "n1"}, "status": {"addresses": addresses}});
        let twice = node(json!([{"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}]));
        let errs = validate_object("", "Node", &twice, Some(&node(json!([]))), false);
        assert_eq!(
            triples(&errs),
            vec![(
                "status.addresses[2]".to_string(),
                "FieldValueDuplicate",
                "Duplicate value: core.NodeAddress{Type:\"InternalIP\", Address:\"10.0.0.1\"}"
                    .to_string()
            )]
        );
        let distinct = node(json!([{"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "10.0.0.1"}]));
        assert!(validate_object("", "Node", &distinct, Some(&node(json!([]))), false).is_empty());
    }

    #[test]
    fn pod_update_rules() {
        let old = pod(json!({
            "containers": [{"name": "c", "image": "nginx:1"}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
            "nodeName": "n1",
            "schedulingGates": [{"name": "g1"}]
        }));
        let with = |f: &dyn Fn(&mut Value)| {
            let mut p = old.clone();
            f(&mut p);
            p
        };
        // Allowed: image, new toleration, tolerationSeconds change, gate removal, ADS set.
        let ok = with(&|p| {
            p["spec"]["containers"][0]["image"] = json!("nginx:2");
            p["spec"]["tolerations"] = json!([
                {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
                {"key": "new", "operator": "Exists"}]);
            p["spec"]["schedulingGates"] = json!([]);
            p["spec"]["activeDeadlineSeconds"] = json!(100);
        });
        assert!(validate_object("", "Pod", &ok, Some(&old), true).is_empty());

        let changed = with(&|p| p["spec"]["nodeName"] = json!("n2"));
        let errs = validate_object("", "Pod", &changed, Some(&old), true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].reason(), "FieldValueForbidden");
        assert!(errs[0].message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
        assert!(errs[0].message.contains("- \tnodeName: \"n1\""));
        assert!(errs[0].message.contains("+ \tnodeName: \"n2\""));

        let added = with(&|p| {
            p["spec"]["containers"] =
                json!([{"name": "c", "image": "a"}, {"name": "d", "image": "b"}])
        });
        let errs = validate_object("", "Pod", &added, Some(&old), true);
        assert_eq!(
            triples(&errs),
            [(
                "spec.containers".to_string(),
                "FieldValueForbidden",
                "Forbidden: pod updates may not add or remove containers".to_string()
            )]
        );

        let removed_tol = with(&|p| p["spec"]["tolerations"] = json!([]));
        let errs = validate_object("", "Pod", &removed_tol, Some(&old), true);
        assert!(has(
            &errs,
            "spec.tolerations",
            "Forbidden: existing toleration can not be modified except its tolerationSeconds"
        ));

        let new_gate =
            with(&|p| p["spec"]["schedulingGates"] = json!([{"name": "g1"}, {"name": "g2"}]));
        let errs = validate_object("", "Pod", &new_gate, Some(&old), true);
        assert!(has(
            &errs,
            "spec.schedulingGates[1].name",
            "Forbidden: only deletion is allowed, but found new scheduling gate 'g2'"
        ));

        let ads_old = with(&|p| p["spec"]["activeDeadlineSeconds"] = json!(100));
        let ads_up = with(&|p| p["spec"]["activeDeadlineSeconds"] = json!(200));
        let errs = validate_object("", "Pod", &ads_up, Some(&ads_old), true);
        assert!(has(
            &errs,
            "spec.activeDeadlineSeconds",
            "Invalid value: 200: must be less than or equal to previous value"
        ));
        let errs = validate_object("", "Pod", &old, Some(&ads_old), true);
        assert!(has(
            &errs,
            "spec.activeDeadlineSeconds",
            "Invalid value: null: must not update from a positive integer to nil value"
        ));
    }

    fn deployment(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn good_deploy_spec() -> Value {
        json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}
        })
    }

    #[test]
    fn deployment_rules() {
        let mismatch = "Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`";
        type Mutate = Box<dyn Fn(&mut Value)>;
        type Expected = Vec<(&'static str, &'static str)>;
        let cases: Vec<(&str, Mutate, Expected)> = vec![
            ("valid", Box::new(|_| {}), vec![]),
            (
                "negative replicas",
                Box::new(|s| s["replicas"] = json!(-1)),
                vec![(
                    "spec.replicas",
                    "Invalid value: -1: must be greater than or equal to 0",
                )],
            ),
            (
                "label mismatch",
                Box::new(|s| s["template"]["metadata"]["labels"] = json!({"app": "other"})),
                vec![("spec.template.metadata.labels", mismatch)],
            ),
            (
                "no selector",
                Box::new(|s| {
                    s.as_object_mut().unwrap().remove("selector");
                }),
                vec![
                    ("spec.selector", "Required value"),
                    (
                        "spec.template.metadata.labels",
                        "Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
                    ),
                ],
            ),
            (
                "empty selector",
                Box::new(|s| s["selector"] = json!({})),
                vec![(
                    "spec.selector",
                    "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
                )],
            ),
            (
                "restart policy",
                Box::new(|s| s["template"]["spec"]["restartPolicy"] = json!("Never")),
                vec![(
                    "spec.template.spec.restartPolicy",
                    "Unsupported value: \"Never\": supported values: \"Always\"",
                )],
            ),
            (
                "container image",
                Box::new(|s| {
                    s["template"]["spec"]["containers"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("image");
                }),
                vec![("spec.template.spec.containers[0].image", "Required value")],
            ),
            (
                "template labels",
                Box::new(|s| {
                    s["template"]["metadata"]["labels"]["bad key!"] = json!("x");
                }),
                vec![("spec.template.labels", "Invalid value: \"bad key!\"")],
            ),
            (
                "strategy",
                Box::new(|s| s["strategy"] = json!({"type": "BlueGreen"})),
                vec![("spec.strategy.type", "Unsupported value: \"BlueGreen\"")],
            ),
        ];
        for (name, mutate, want) in cases {
            let mut spec = good_deploy_spec();
            mutate(&mut spec);
            let errs = validate_object("apps", "Deployment", &deployment(spec), None, true);
            assert_eq!(errs.len(), want.len(), "{name}: {:#?}", triples(&errs));
            for (f, m) in want {
                assert!(
                    has(&errs, f, m),
                    "{name}: want {f}: {m}; got {:#?}",
                    triples(&errs)
                );
            }
        }
        // ReplicaSets share the rules (and the "for deployment" wording).
        let mut rs = good_deploy_spec();
        rs["selector"] = json!({});
        let errs = validate_object("apps", "ReplicaSet", &deployment(rs), None, true);
        assert!(has(
            &errs,
            "spec.selector",
            "Invalid value: v1.LabelSelector{"
        ));
        assert!(
            errs[0]
                .message
                .ends_with("empty selector is invalid for deployment")
        );
    }

    #[test]
    fn deployment_selector_immutable() {
        let old = deployment(good_deploy_spec());
        let mut spec = good_deploy_spec();
        spec["selector"] = json!({"matchLabels": {"app": "web2"}});
        spec["template"]["metadata"]["labels"] = json!({"app": "web2"});
        let errs = validate_object("apps", "Deployment", &deployment(spec), Some(&old), true);
        assert_eq!(
            triples(&errs),
            [(
                "spec.selector".to_string(),
                "FieldValueInvalid",
                "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".to_string()
            )]
        );
        // Scaling and image changes are fine.
        let mut spec = good_deploy_spec();
        spec["replicas"] = json!(5);
        spec["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(
            validate_object("apps", "Deployment", &deployment(spec), Some(&old), true).is_empty()
        );
        // Same for ReplicaSets and DaemonSets.
        let mut spec = good_deploy_spec();
        spec["selector"]["matchExpressions"] =
            json!([{"key": "tier", "operator": "In", "values": ["a"]}]);
        spec["template"]["metadata"]["labels"]["tier"] = json!("a");
        let errs = validate_object(
            "apps",
            "ReplicaSet",
            &deployment(spec.clone()),
            Some(&old),
            true,
        );
        assert!(has(
            &errs,
            "spec.selector",
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\"}, MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"tier\", Operator:\"In\", Values:[]string{\"a\"}}}}: field is immutable"
        ));
        spec.as_object_mut().unwrap().remove("replicas");
        let errs = validate_object("apps", "DaemonSet", &deployment(spec), Some(&old), true);
        assert!(has(
            &errs,
            "spec.selector",
            "Invalid value: v1.LabelSelector{"
        ));
    }

    #[test]
    fn statefulset_and_daemonset_rules() {
        let mut sts = good_deploy_spec();
        sts["serviceName"] = json!("web");
        sts["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}}]);
        sts["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        let obj = deployment(sts.clone());
        assert!(validate_object("apps", "StatefulSet", &obj, None, true).is_empty());
        let mut bad = sts.clone();
        bad["selector"] = json!({});
        let errs = validate_object("apps", "StatefulSet", &deployment(bad), None, true);
        assert!(has(
            &errs,
            "spec.selector",
            "Invalid value: v1.LabelSelector{"
        ));
        assert!(
            errs[0]
                .message
                .ends_with("empty selector is invalid for statefulset")
        );
        // Updates: replicas/template ok, serviceName forbidden.
        let mut upd = sts.clone();
        upd["replicas"] = json!(7);
        upd["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(
            validate_object(
                "apps",
                "StatefulSet",
                &deployment(upd.clone()),
                Some(&obj),
                true
            )
            .is_empty()
        );
        upd["serviceName"] = json!("other");
        let errs = validate_object("apps", "StatefulSet", &deployment(upd), Some(&obj), true);
        assert!(has(
            &errs,
            "spec",
            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        ));

        let mut ds = good_deploy_spec();
        ds.as_object_mut().unwrap().remove("replicas");
        assert!(
            validate_object("apps", "DaemonSet", &deployment(ds.clone()), None, true).is_empty()
        );
        ds["template"]["metadata"]["labels"] = json!({"app": "x"});
        ds["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        let errs = validate_object("apps", "DaemonSet", &deployment(ds), None, true);
        assert!(has(
            &errs,
            "spec.template.metadata.labels",
            "Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
        ));
        assert!(has(
            &errs,
            "spec.template.spec.activeDeadlineSeconds",
            "Invalid value: 5: activeDeadlineSeconds must be nil for daemons"
        ));
    }

    fn job(spec: Value) -> Value {
        json!({"metadata": {"name": "j", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn job_rules() {
        let good = json!({"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}});
        assert!(validate_object("batch", "Job", &job(good.clone()), None, true).is_empty());
        let mut no_policy = good.clone();
        no_policy["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("restartPolicy");
        let errs = validate_object("batch", "Job", &job(no_policy), None, true);
        assert_eq!(
            triples(&errs),
            [(
                "spec.template.spec.restartPolicy".to_string(),
                "FieldValueRequired",
                "Required value: valid values: \"OnFailure\", \"Never\"".to_string()
            )]
        );
        let mut neg = good.clone();
        neg["parallelism"] = json!(-1);
        neg["backoffLimit"] = json!(-2);
        let errs = validate_object("batch", "Job", &job(neg), None, true);
        assert_eq!(fields(&errs), ["spec.parallelism", "spec.backoffLimit"]);

        // Updates: template and selector are immutable.
        let mut stored = good.clone();
        stored["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}});
        stored["template"]["metadata"] =
            json!({"labels": {"batch.kubernetes.io/controller-uid": "u"}});
        let old = job(stored.clone());
        let mut upd = stored.clone();
        upd["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        let errs = validate_object("batch", "Job", &job(upd), Some(&old), true);
        assert_eq!(fields(&errs), ["spec.template"]);
        assert!(errs[0].message.ends_with(": field is immutable"));
        let mut upd = stored.clone();
        upd["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "v"}});
        upd["template"]["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = json!("v");
        let errs = validate_object("batch", "Job", &job(upd), Some(&old), true);
        assert!(has(
            &errs,
            "spec.selector",
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"batch.kubernetes.io/controller-uid\":\"v\"}"
        ));
        let mut upd = stored.clone();
        upd["completions"] = json!(3);
        let errs = validate_object("batch", "Job", &job(upd), Some(&old), true);
        assert!(has(
            &errs,
            "spec.completions",
            "Invalid value: 3: field is immutable"
        ));
        // Suspending is fine.
        let mut upd = stored;
        upd["suspend"] = json!(true);
        assert!(validate_object("batch", "Job", &job(upd), Some(&old), true).is_empty());
    }

    #[test]
    fn cronjob_rules() {
        let good = json!({"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}});
        let mk = |name: &str, spec: Value| json!({"metadata": {"name": name, "namespace": "d"}, "spec": spec});
        assert!(
            validate_object("batch", "CronJob", &mk("cj", good.clone()), None, true).is_empty()
        );
        let long = "c".repeat(53);
        let errs = validate_object("batch", "CronJob", &mk(&long, good.clone()), None, true);
        assert!(has(&errs, "metadata.name", "Invalid value: \"ccc"));
        assert!(
            errs[0]
                .message
                .ends_with("must be no more than 52 characters")
        );
        let mut bad = good.clone();
        bad["schedule"] = json!("bogus");
        bad["concurrencyPolicy"] = json!("Sometimes");
        bad["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let errs = validate_object("batch", "CronJob", &mk("cj", bad), None, true);
        assert_eq!(
            fields(&errs),
            [
                "spec.schedule",
                "spec.concurrencyPolicy",
                "spec.jobTemplate.spec.template.spec.restartPolicy"
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"bogus\": expected exactly 5 fields, found 1: [bogus]"
        );
        let mut empty = good;
        empty["schedule"] = json!("");
        assert!(has(
            &validate_object("batch", "CronJob", &mk("cj", empty), None, true),
            "spec.schedule",
            "Required value"
        ));
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn service_rules() {
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (json!({"ports": [{"port": 80}]}), vec![]),
            (
                json!({"ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "web"}}),
                vec![],
            ),
            (json!({}), vec![("spec.ports", "Required value")]),
            (json!({"clusterIP": "None"}), vec![]),
            (
                json!({"type": "ExternalName", "externalName": "db.example.com."}),
                vec![],
            ),
            (
                json!({"type": "ExternalName"}),
                vec![("spec.externalName", "Required value")],
            ),
            (
                json!({"type": "Magic", "ports": [{"port": 80}]}),
                vec![(
                    "spec.type",
                    "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                )],
            ),
            (
                json!({"ports": [{"port": 0}]}),
                vec![(
                    "spec.ports[0].port",
                    "Invalid value: 0: must be between 1 and 65535, inclusive",
                )],
            ),
            (
                json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
                vec![(
                    "spec.ports[0].protocol",
                    "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                )],
            ),
            (
                json!({"ports": [{"port": 80, "name": "http"}, {"port": 443}]}),
                vec![("spec.ports[1].name", "Required value")],
            ),
            (
                json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}),
                vec![(
                    "spec.ports[1]",
                    "Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
                )],
            ),
            (
                json!({"ports": [{"port": 80, "nodePort": 30080}]}),
                vec![(
                    "spec.ports[0].nodePort",
                    "Forbidden: may not be used when `type` is 'ClusterIP'",
                )],
            ),
            (
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
                vec![(
                    "spec.ports[0].nodePort",
                    "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
                )],
            ),
            (
                json!({"type": "NodePort", "ports": [{"port": 80, "name": "a", "nodePort": 30080}, {"port": 81, "name": "b", "nodePort": 30080}]}),
                vec![("spec.ports[1].nodePort", "Duplicate value: 30080")],
            ),
            (
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}),
                vec![(
                    "spec.ports[0].nodePort",
                    "Invalid value: 70000: must be between 1 and 65535, inclusive",
                )],
            ),
            (json!({"ports": [{"port": 80, "targetPort": 0}]}), vec![]),
            (
                json!({"ports": [{"port": 80, "targetPort": 99999}]}),
                vec![("spec.ports[0].targetPort", "Invalid value: 99999")],
            ),
            (
                json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}),
                vec![(
                    "spec.clusterIPs[0]",
                    "Invalid value: \"10.0.0.300\": must be a valid IP address",
                )],
            ),
        ];
        for (spec, want) in cases {
            let errs = validate_object("", "Service", &svc(spec.clone()), None, true);
            assert_eq!(errs.len(), want.len(), "{spec}: {:#?}", triples(&errs));
            for (f, m) in want {
                assert!(
                    has(&errs, f, m),
                    "{spec}: want {f}: {m}; got {:#?}",
                    triples(&errs)
                );
            }
        }
    }

    #[test]
    fn service_cluster_ip_immutable() {
        let old = svc(
            json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [{"port": 53, "protocol": "UDP"}]}),
        );
        let same = svc(
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "name": "tcp", "protocol": "TCP"}]}),
        );
        let mut same = same;
        same["spec"]["ports"][0]["name"] = json!("udp");
        assert!(validate_object("", "Service", &same, Some(&old), true).is_empty());
        let omitted = svc(json!({"ports": [{"port": 53, "protocol": "UDP"}]}));
        assert!(validate_object("", "Service", &omitted, Some(&old), true).is_empty());
        let changed =
            svc(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 53, "protocol": "UDP"}]}));
        let errs = validate_object("", "Service", &changed, Some(&old), true);
        assert_eq!(
            triples(&errs),
            [(
                "spec.clusterIPs[0]".to_string(),
                "FieldValueInvalid",
                "Invalid value: []string{\"10.96.0.11\"}: may not change once set".to_string()
            )]
        );
        // Switching to ExternalName drops the IPs legitimately.
        let ext = svc(json!({"type": "ExternalName", "externalName": "x.example.com"}));
        assert!(validate_object("", "Service", &ext, Some(&old), true).is_empty());
    }

    #[test]
    fn config_map_and_secret_rules() {
        let cm = |data: Value| json!({"metadata": {"name": "c", "namespace": "d"}, "data": data});
        assert!(
            validate_object("", "ConfigMap", &cm(json!({"a.b_C-1": "x"})), None, true).is_empty()
        );
        let errs = validate_object(
            "",
            "ConfigMap",
            &cm(json!({"a/b": "x", "..x": "y"})),
            None,
            true,
        );
        assert_eq!(fields(&errs), ["data[..x]", "data[a/b]"]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"..x\": must not start with '..'"
        );
        assert!(errs[1].message.starts_with("Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
        let mut dup = cm(json!({"k": "v"}));
        dup["binaryData"] = json!({"k": "AAAA"});
        let errs = validate_object("", "ConfigMap", &dup, None, true);
        assert!(has(
            &errs,
            "data[k]",
            "Invalid value: \"k\": duplicate of key present in binaryData"
        ));
        let big = cm(json!({"k": "x".repeat(MAX_SECRET_SIZE + 1)}));
        let errs = validate_object("", "ConfigMap", &big, None, true);
        assert_eq!(
            triples(&errs),
            [(
                String::new(),
                "FieldValueTooLong",
                "Too long: may not be more than 1048576 bytes".to_string()
            )]
        );

        let mut immutable = cm(json!({"k": "v"}));
        immutable["immutable"] = json!(true);
        let mut changed = immutable.clone();
        changed["data"]["k"] = json!("w");
        let errs = validate_object("", "ConfigMap", &changed, Some(&immutable), true);
        assert_eq!(fields(&errs), ["data"]);
        assert_eq!(
            errs[0].message,
            "Forbidden: field is immutable when `immutable` is set"
        );
        changed["immutable"] = json!(false);
        changed["data"]["k"] = json!("v");
        assert_eq!(
            fields(&validate_object(
                "",
                "ConfigMap",
                &changed,
                Some(&immutable),
                true
            )),
            ["immutable"]
        );

        let secret = |ty: &str, data: Value| json!({"metadata": {"name": "s", "namespace": "d"}, "type": ty, "data": data});
        assert!(
            validate_object(
                "",
                "Secret",
                &secret("Opaque", json!({"password": "cGFzcw=="})),
                None,
                true
            )
            .is_empty()
        );
        let errs = validate_object(
            "",
            "Secret",
            &secret("kubernetes.io/tls", json!({"tls.crt": "eA=="})),
            None,
            true,
        );
        assert_eq!(
            triples(&errs),
            [(
                "data[tls.key]".to_string(),
                "FieldValueRequired",
                "Required value".to_string()
            )]
        );
        let errs = validate_object(
            "",
            "Secret",
            &secret("kubernetes.io/basic-auth", json!({})),
            None,
            true,
        );
        assert_eq!(fields(&errs), ["data[username]", "data[password]"]);
        let errs = validate_object(
            "",
            "Secret",
            &secret("kubernetes.io/service-account-token", json!({})),
            None,
            true,
        );
        assert_eq!(
            fields(&errs),
            ["metadata.annotations[kubernetes.io/service-account.name]"]
        );
        let mut string_data = secret("Opaque", json!({}));
        string_data["stringData"] = json!({"bad key": "v"});
        assert_eq!(
            fields(&validate_object("", "Secret", &string_data, None, true)),
            ["data[bad key]"]
        );
        let old = secret("Opaque", json!({}));
        let errs = validate_object(
            "",
            "Secret",
            &secret("kubernetes.io/tls", json!({"tls.crt": "", "tls.key": ""})),
            Some(&old),
            true,
        );
        assert_eq!(
            triples(&errs),
            [(
                "type".to_string(),
                "FieldValueInvalid",
                "Invalid value: \"kubernetes.io/tls\": field is immutable".to_string()
            )]
        );
        assert_eq!(base64_decoded_len("cGFzcw=="), 4);
    }

    #[test]
    fn namespace_rules() {
        let ns = |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec});
        assert!(
            validate_object(
                "",
                "Namespace",
                &ns("team-a", json!({"finalizers": ["kubernetes"]})),
                None,
                false
            )
            .is_empty()
        );
        let errs = validate_object("", "Namespace", &ns("Team_A", json!({})), None, false);
        assert_eq!(fields(&errs), ["metadata.name"]);
        assert!(
            errs[0].message.starts_with(
                "Invalid value: \"Team_A\": a lowercase RFC 1123 label must consist of"
            )
        );
        let errs = validate_object(
            "",
            "Namespace",
            &ns("a", json!({"finalizers": ["custom"]})),
            None,
            false,
        );
        assert!(has(
            &errs,
            "spec.finalizers",
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        ));
        let errs = validate_object(
            "",
            "Namespace",
            &json!({"metadata": {"name": "a", "namespace": "b"}}),
            None,
            false,
        );
        assert!(has(
            &errs,
            "metadata.namespace",
            "Forbidden: not allowed on this type"
        ));
    }

    #[test]
    fn replication_controller_rules() {
        let rc = |spec: Value| json!({"metadata": {"name": "rc", "namespace": "d"}, "spec": spec});
        let tmpl = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert!(
            validate_object(
                "",
                "ReplicationController",
                &rc(json!({"template": tmpl.clone()})),
                None,
                true
            )
            .is_empty()
        );
        let errs = validate_object(
            "",
            "ReplicationController",
            &rc(json!({"selector": {"app": "y"}, "template": tmpl})),
            None,
            true,
        );
        assert_eq!(fields(&errs), ["spec.template.metadata.labels"]);
    }

    #[test]
    fn other_kinds_only_get_metadata_checks() {
        let obj =
            json!({"metadata": {"name": "x", "namespace": "d"}, "spec": {"anything": [1, 2]}});
        assert!(validate_object("example.com", "Widget", &obj, None, true).is_empty());
        assert!(
            validate_object(
                "core",
                "Pod",
                &json!({"metadata": {"name": "x", "namespace": "d"}}),
                None,
                true
            )
            .iter()
            .any(|e| e.field == "spec.containers")
        );
        assert_eq!(
            validate_object("", "Pod", &json!("nope"), None, true).len(),
            1
        );
    }
}
