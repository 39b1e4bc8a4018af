//! The protobuf form of the OpenAPI v2 (swagger) document.
//!
//! Older kubectl releases (1.27 and before) fetch `GET /openapi/v2` with
//! `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and
//! parse the body as gnostic's `openapi.v2.Document` (github.com/google/
//! gnostic-models, `openapiv2/OpenAPIv2.proto`). [`encode_document`] turns the
//! JSON document of [`crate::openapi::v2_document`] into that wire format with
//! a tiny hand-written protobuf writer.
//!
//! Encoding follows gnostic's compiler: maps become repeated `Named*`
//! messages in the JSON's key order, `x-` keys become `NamedAny` vendor
//! extensions, and free-form values (`default`, `example`, `enum` members,
//! vendor extension values) become `Any{yaml}` holding the value's JSON text
//! (JSON is YAML). Proto3 scalars equal to their default (empty string,
//! `false`, `0`) are left out, as Go's marshaller does; `null` counts as
//! absent. Keys the proto has no field for are skipped; a known key holding
//! the wrong JSON type is an [`EncodeError`].

use serde_json::{Map, Value};

/// Why a JSON document could not be encoded as an `openapi.v2.Document`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A key the proto has a field for holds the wrong JSON type.
    #[error("openapi v2 document at `{path}`: expected {expected}")]
    WrongType {
        path: String,
        expected: &'static str,
    },
    /// A value the proto cannot represent (an out-of-range integer, an
    /// unknown parameter location or security scheme type, too deep nesting).
    #[error("openapi v2 document at `{path}`: {message}")]
    Invalid { path: String, message: String },
}

type Result<T = ()> = std::result::Result<T, EncodeError>;

/// Encodes a swagger 2.0 JSON document as the protobuf wire format of
/// gnostic's `openapi.v2.Document`.
pub fn encode_document(doc: &Value) -> std::result::Result<Vec<u8>, EncodeError> {
    let mut out = Buf::default();
    let at = At::ROOT;
    let m = object(doc, &at)?;
    document(m, &at, &mut out)?;
    Ok(out.0)
}

/// Encodes one schema alone (a `Schema` message): whether a schema from
/// outside (a custom resource's) can stand in the document.
pub fn encode_schema(schema: &Value) -> std::result::Result<Vec<u8>, EncodeError> {
    let mut out = Buf::default();
    self::schema(schema, &At::ROOT, &mut out)?;
    Ok(out.0)
}

// ---------------------------------------------------------------------------
// Protobuf writer.

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A string, even when empty (repeated strings, map keys of oneofs).
    fn string_always(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A proto3 singular string: left out when empty.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.string_always(field, s);
        }
    }

    /// A bool, even when false (oneof members).
    fn bool_always(&mut self, field: u32, b: bool) {
        self.tag(field, VARINT);
        self.varint(u64::from(b));
    }

    fn double(&mut self, field: u32, d: f64) {
        if d.to_bits() != 0 {
            self.tag(field, FIXED64);
            self.0.extend_from_slice(&d.to_le_bytes());
        }
    }

    fn int64(&mut self, field: u32, i: i64) {
        if i != 0 {
            self.tag(field, VARINT);
            self.varint(i as u64);
        }
    }

    /// A length-delimited sub-message written by `body` (always present, even
    /// when empty: a set message field is distinguishable from an unset one).
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Buf) -> Result) -> Result {
        self.tag(field, LEN);
        let start = self.0.len();
        // One byte reserved for the length; widened below when the body is longer.
        self.0.push(0);
        body(self)?;
        let len = (self.0.len() - start - 1) as u64;
        if len < 0x80 {
            if let Some(b) = self.0.get_mut(start) {
                *b = len as u8;
            }
        } else {
            let mut prefix = Buf::default();
            prefix.varint(len);
            self.0.splice(start..start + 1, prefix.0);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// JSON locations, for error messages (rendered only on error).

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Copy)]
struct At<'a> {
    parent: Option<&'a At<'a>>,
    seg: Option<Seg<'a>>,
    depth: u32,
}

/// Deeper JSON than this is refused rather than risking the stack.
const MAX_DEPTH: u32 = 128;

impl<'a> At<'a> {
    const ROOT: At<'static> = At {
        parent: None,
        seg: None,
        depth: 0,
    };

    fn key<'b>(&'b self, k: &'b str) -> At<'b> {
        At {
            parent: Some(self),
            seg: Some(Seg::Key(k)),
            depth: self.depth + 1,
        }
    }

    fn index<'b>(&'b self, i: usize) -> At<'b> {
        At {
            parent: Some(self),
            seg: Some(Seg::Index(i)),
            depth: self.depth + 1,
        }
    }

    /// The location as a JSON pointer.
    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(at) = cur {
            if let Some(seg) = at.seg {
                segs.push(seg);
            }
            cur = at.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            out.push('/');
            match seg {
                Seg::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Seg::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    fn wrong(&self, expected: &'static str) -> EncodeError {
        EncodeError::WrongType {
            path: self.render(),
            expected,
        }
    }

    fn invalid(&self, message: impl Into<String>) -> EncodeError {
        EncodeError::Invalid {
            path: self.render(),
            message: message.into(),
        }
    }

    fn check_depth(&self) -> Result {
        if self.depth > MAX_DEPTH {
            Err(self.invalid("nested too deeply"))
        } else {
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// JSON accessors and field helpers. `null` counts as absent throughout.

fn object<'v>(v: &'v Value, at: &At) -> Result<&'v Map<String, Value>> {
    v.as_object().ok_or_else(|| at.wrong("an object"))
}

fn present<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn opt_object<'v>(
    m: &'v Map<String, Value>,
    key: &str,
    at: &At,
) -> Result<Option<&'v Map<String, Value>>> {
    present(m, key).map(|v| object(v, &at.key(key))).transpose()
}

fn opt_array<'v>(m: &'v Map<String, Value>, key: &str, at: &At) -> Result<Option<&'v Vec<Value>>> {
    present(m, key)
        .map(|v| v.as_array().ok_or_else(|| at.key(key).wrong("an array")))
        .transpose()
}

fn opt_str<'v>(m: &'v Map<String, Value>, key: &str, at: &At) -> Result<Option<&'v str>> {
    present(m, key)
        .map(|v| v.as_str().ok_or_else(|| at.key(key).wrong("a string")))
        .transpose()
}

fn string(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str, at: &At) -> Result {
    if let Some(s) = opt_str(m, key, at)? {
        out.string(field, s);
    }
    Ok(())
}

fn boolean(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str, at: &At) -> Result {
    match present(m, key) {
        None | Some(Value::Bool(false)) => Ok(()),
        Some(Value::Bool(true)) => {
            out.bool_always(field, true);
            Ok(())
        }
        Some(_) => Err(at.key(key).wrong("a boolean")),
    }
}

fn double(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str, at: &At) -> Result {
    if let Some(v) = present(m, key) {
        let d = v.as_f64().ok_or_else(|| at.key(key).wrong("a number"))?;
        out.double(field, d);
    }
    Ok(())
}

fn int64(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str, at: &At) -> Result {
    let Some(v) = present(m, key) else {
        return Ok(());
    };
    let Value::Number(n) = v else {
        return Err(at.key(key).wrong("an integer"));
    };
    let i = if let Some(i) = n.as_i64() {
        i
    } else if n.is_u64() {
        return Err(at.key(key).invalid("integer out of int64 range"));
    } else {
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => f as i64,
            _ => return Err(at.key(key).wrong("an integer")),
        }
    };
    out.int64(field, i);
    Ok(())
}

/// `repeated string`: a JSON array of strings.
fn strings(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str, at: &At) -> Result {
    let Some(items) = opt_array(m, key, at)? else {
        return Ok(());
    };
    let at = at.key(key);
    for (i, item) in items.iter().enumerate() {
        let s = item.as_str().ok_or_else(|| at.index(i).wrong("a string"))?;
        out.string_always(field, s);
    }
    Ok(())
}

/// The body of an `Any`: `yaml` (field 2) holding the value's JSON text.
fn any_body(v: &Value, out: &mut Buf) -> Result {
    out.string(2, &format!("{v}\n"));
    Ok(())
}

/// A singular `Any` field.
fn any(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str) -> Result {
    if let Some(v) = present(m, key) {
        out.message(field, |o| any_body(v, o))?;
    }
    Ok(())
}

/// `repeated Any` from a JSON array (`enum`).
fn anys(out: &mut Buf, field: u32, m: &Map<String, Value>, key: &str, at: &At) -> Result {
    for v in opt_array(m, key, at)?.into_iter().flatten() {
        out.message(field, |o| any_body(v, o))?;
    }
    Ok(())
}

/// `repeated NamedAny vendor_extension`: every `x-` key.
fn vendor_extensions(out: &mut Buf, field: u32, m: &Map<String, Value>) -> Result {
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        named_any(out, field, k, v)?;
    }
    Ok(())
}

fn named_any(out: &mut Buf, field: u32, name: &str, v: &Value) -> Result {
    out.message(field, |o| {
        o.string(1, name);
        o.message(2, |o| any_body(v, o))
    })
}

/// A `repeated Named*` map: for each entry of the JSON object at `key`, a
/// message with `name` = 1 and the value (written by `value`) at 2.
fn named_map(
    out: &mut Buf,
    field: u32,
    m: &Map<String, Value>,
    key: &str,
    at: &At,
    value: impl Fn(&Value, &At, &mut Buf) -> Result,
) -> Result {
    let Some(entries) = opt_object(m, key, at)? else {
        return Ok(());
    };
    let at = at.key(key);
    out.message(field, |o| {
        named_entries(o, 1, entries, &at, |_| true, &value)
    })
}

fn named_entries(
    out: &mut Buf,
    field: u32,
    entries: &Map<String, Value>,
    at: &At,
    keep: impl Fn(&str) -> bool,
    value: &impl Fn(&Value, &At, &mut Buf) -> Result,
) -> Result {
    for (name, v) in entries.iter().filter(|(k, _)| keep(k)) {
        let at = at.key(name);
        out.message(field, |o| {
            o.string(1, name);
            o.message(2, |o| value(v, &at, o))
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Messages, in the order of OpenAPIv2.proto's field numbers.

/// `Document`.
fn document(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "swagger", at)?;
    if let Some(info_obj) = opt_object(m, "info", at)? {
        out.message(2, |o| info(info_obj, &at.key("info"), o))?;
    }
    string(out, 3, m, "host", at)?;
    string(out, 4, m, "basePath", at)?;
    strings(out, 5, m, "schemes", at)?;
    strings(out, 6, m, "consumes", at)?;
    strings(out, 7, m, "produces", at)?;
    if let Some(paths_obj) = opt_object(m, "paths", at)? {
        out.message(8, |o| paths(paths_obj, &at.key("paths"), o))?;
    }
    // Definitions { repeated NamedSchema additional_properties = 1; }
    named_map(out, 9, m, "definitions", at, schema)?;
    // ParameterDefinitions { repeated NamedParameter additional_properties = 1; }
    named_map(out, 10, m, "parameters", at, |v, at, o| {
        parameter(object(v, at)?, at, o)
    })?;
    // ResponseDefinitions { repeated NamedResponse additional_properties = 1; }
    named_map(out, 11, m, "responses", at, |v, at, o| {
        response(object(v, at)?, at, o)
    })?;
    security_requirements(out, 12, m, at)?;
    // SecurityDefinitions { repeated NamedSecurityDefinitionsItem additional_properties = 1; }
    named_map(
        out,
        13,
        m,
        "securityDefinitions",
        at,
        security_definitions_item,
    )?;
    if let Some(tags) = opt_array(m, "tags", at)? {
        let at = at.key("tags");
        for (i, t) in tags.iter().enumerate() {
            let at = at.index(i);
            out.message(14, |o| tag(object(t, &at)?, &at, o))?;
        }
    }
    external_docs(out, 15, m, at)?;
    vendor_extensions(out, 16, m)
}

/// `Info`.
fn info(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "title", at)?;
    string(out, 2, m, "version", at)?;
    string(out, 3, m, "description", at)?;
    string(out, 4, m, "termsOfService", at)?;
    if let Some(c) = opt_object(m, "contact", at)? {
        let at = at.key("contact");
        out.message(5, |o| {
            string(o, 1, c, "name", &at)?;
            string(o, 2, c, "url", &at)?;
            string(o, 3, c, "email", &at)?;
            vendor_extensions(o, 4, c)
        })?;
    }
    if let Some(l) = opt_object(m, "license", at)? {
        let at = at.key("license");
        out.message(6, |o| {
            string(o, 1, l, "name", &at)?;
            string(o, 2, l, "url", &at)?;
            vendor_extensions(o, 3, l)
        })?;
    }
    vendor_extensions(out, 7, m)
}

/// `ExternalDocs` at `field`, from the `externalDocs` key of `m`.
fn external_docs(out: &mut Buf, field: u32, m: &Map<String, Value>, at: &At) -> Result {
    let Some(d) = opt_object(m, "externalDocs", at)? else {
        return Ok(());
    };
    let at = at.key("externalDocs");
    out.message(field, |o| {
        string(o, 1, d, "description", &at)?;
        string(o, 2, d, "url", &at)?;
        vendor_extensions(o, 3, d)
    })
}

/// `Tag`.
fn tag(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "name", at)?;
    string(out, 2, m, "description", at)?;
    external_docs(out, 3, m, at)?;
    vendor_extensions(out, 4, m)
}

/// `Paths`: vendor extensions (1) first, then the paths (2).
fn paths(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    vendor_extensions(out, 1, m)?;
    named_entries(out, 2, m, at, |k| !k.starts_with("x-"), &|v, at, o| {
        path_item(object(v, at)?, at, o)
    })
}

/// `PathItem`.
fn path_item(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "$ref", at)?;
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = opt_object(m, method, at)? {
            out.message(field, |o| operation(op, &at.key(method), o))?;
        }
    }
    parameters(out, 9, m, at)?;
    vendor_extensions(out, 10, m)
}

/// `Operation`.
fn operation(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    strings(out, 1, m, "tags", at)?;
    string(out, 2, m, "summary", at)?;
    string(out, 3, m, "description", at)?;
    external_docs(out, 4, m, at)?;
    string(out, 5, m, "operationId", at)?;
    strings(out, 6, m, "produces", at)?;
    strings(out, 7, m, "consumes", at)?;
    parameters(out, 8, m, at)?;
    if let Some(r) = opt_object(m, "responses", at)? {
        out.message(9, |o| responses(r, &at.key("responses"), o))?;
    }
    strings(out, 10, m, "schemes", at)?;
    boolean(out, 11, m, "deprecated", at)?;
    security_requirements(out, 12, m, at)?;
    vendor_extensions(out, 13, m)
}

/// `repeated ParametersItem` from the `parameters` array of `m`.
fn parameters(out: &mut Buf, field: u32, m: &Map<String, Value>, at: &At) -> Result {
    let Some(items) = opt_array(m, "parameters", at)? else {
        return Ok(());
    };
    let at = at.key("parameters");
    for (i, p) in items.iter().enumerate() {
        let at = at.index(i);
        let p = object(p, &at)?;
        out.message(field, |o| {
            if present(p, "$ref").is_some() {
                // ParametersItem.json_reference
                o.message(2, |o| json_reference(p, &at, o))
            } else {
                // ParametersItem.parameter
                o.message(1, |o| parameter(p, &at, o))
            }
        })?;
    }
    Ok(())
}

/// `JsonReference`.
fn json_reference(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "$ref", at)?;
    string(out, 2, m, "description", at)
}

/// `Parameter`: oneof `BodyParameter` (1) or `NonBodyParameter` (2), which is
/// itself a oneof by location.
fn parameter(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    let location =
        opt_str(m, "in", at)?.ok_or_else(|| at.key("in").wrong("a parameter location"))?;
    // (NonBodyParameter field, whether the sub-schema has allow_empty_value)
    let (field, allow_empty) = match location {
        "body" => return out.message(1, |o| body_parameter(m, at, o)),
        "header" => (1, false),
        "formData" => (2, true),
        "query" => (3, true),
        "path" => (4, false),
        other => {
            return Err(at
                .key("in")
                .invalid(format!("unknown parameter location {other:?}")));
        }
    };
    out.message(2, |o| {
        o.message(field, |o| non_body_sub_schema(m, at, allow_empty, o))
    })
}

/// `BodyParameter`.
fn body_parameter(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "description", at)?;
    string(out, 2, m, "name", at)?;
    string(out, 3, m, "in", at)?;
    boolean(out, 4, m, "required", at)?;
    if let Some(s) = present(m, "schema") {
        out.message(5, |o| schema(s, &at.key("schema"), o))?;
    }
    vendor_extensions(out, 6, m)
}

/// `HeaderParameterSubSchema` / `PathParameterSubSchema` (no
/// `allow_empty_value`) and `FormDataParameterSubSchema` /
/// `QueryParameterSubSchema` (with it, shifting later fields by one).
fn non_body_sub_schema(
    m: &Map<String, Value>,
    at: &At,
    allow_empty: bool,
    out: &mut Buf,
) -> Result {
    boolean(out, 1, m, "required", at)?;
    string(out, 2, m, "in", at)?;
    string(out, 3, m, "description", at)?;
    string(out, 4, m, "name", at)?;
    let base = if allow_empty {
        boolean(out, 5, m, "allowEmptyValue", at)?;
        6
    } else {
        5
    };
    primitive_fields(m, at, base, out)?;
    vendor_extensions(out, base + 17, m)
}

/// The run of fields `type, format, items, collection_format, default,
/// maximum, exclusive_maximum, minimum, exclusive_minimum, max_length,
/// min_length, pattern, max_items, min_items, unique_items, enum,
/// multiple_of` that `PrimitivesItems`, `Header` and the non-body parameter
/// sub-schemas share, numbered consecutively from `base`.
fn primitive_fields(m: &Map<String, Value>, at: &At, base: u32, out: &mut Buf) -> Result {
    at.check_depth()?;
    string(out, base, m, "type", at)?;
    string(out, base + 1, m, "format", at)?;
    if let Some(items) = opt_object(m, "items", at)? {
        out.message(base + 2, |o| primitives_items(items, &at.key("items"), o))?;
    }
    string(out, base + 3, m, "collectionFormat", at)?;
    any(out, base + 4, m, "default")?;
    double(out, base + 5, m, "maximum", at)?;
    boolean(out, base + 6, m, "exclusiveMaximum", at)?;
    double(out, base + 7, m, "minimum", at)?;
    boolean(out, base + 8, m, "exclusiveMinimum", at)?;
    int64(out, base + 9, m, "maxLength", at)?;
    int64(out, base + 10, m, "minLength", at)?;
    string(out, base + 11, m, "pattern", at)?;
    int64(out, base + 12, m, "maxItems", at)?;
    int64(out, base + 13, m, "minItems", at)?;
    boolean(out, base + 14, m, "uniqueItems", at)?;
    anys(out, base + 15, m, "enum", at)?;
    double(out, base + 16, m, "multipleOf", at)
}

/// `PrimitivesItems`.
fn primitives_items(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    primitive_fields(m, at, 1, out)?;
    vendor_extensions(out, 18, m)
}

/// `Header`.
fn header(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    primitive_fields(m, at, 1, out)?;
    string(out, 18, m, "description", at)?;
    vendor_extensions(out, 19, m)
}

/// `Responses`: the status codes (1) first, then vendor extensions (2).
fn responses(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    named_entries(out, 1, m, at, |k| !k.starts_with("x-"), &|v, at, o| {
        let r = object(v, at)?;
        if present(r, "$ref").is_some() {
            // ResponseValue.json_reference
            o.message(2, |o| json_reference(r, at, o))
        } else {
            // ResponseValue.response
            o.message(1, |o| response(r, at, o))
        }
    })?;
    vendor_extensions(out, 2, m)
}

/// `Response`.
fn response(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "description", at)?;
    if let Some(s) = present(m, "schema") {
        let at = at.key("schema");
        // SchemaItem: oneof Schema (1) or FileSchema (2) for `type: file`.
        out.message(2, |o| match s.get("type").and_then(Value::as_str) {
            Some("file") => o.message(2, |o| file_schema(object(s, &at)?, &at, o)),
            _ => o.message(1, |o| schema(s, &at, o)),
        })?;
    }
    // Headers { repeated NamedHeader additional_properties = 1; }
    named_map(out, 3, m, "headers", at, |v, at, o| {
        header(object(v, at)?, at, o)
    })?;
    // Examples { repeated NamedAny additional_properties = 1; }
    if let Some(examples) = opt_object(m, "examples", at)? {
        out.message(4, |o| {
            for (k, v) in examples {
                named_any(o, 1, k, v)?;
            }
            Ok(())
        })?;
    }
    vendor_extensions(out, 5, m)
}

/// `FileSchema`.
fn file_schema(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "format", at)?;
    string(out, 2, m, "title", at)?;
    string(out, 3, m, "description", at)?;
    any(out, 4, m, "default")?;
    strings(out, 5, m, "required", at)?;
    string(out, 6, m, "type", at)?;
    boolean(out, 7, m, "readOnly", at)?;
    external_docs(out, 8, m, at)?;
    any(out, 9, m, "example")?;
    vendor_extensions(out, 10, m)
}

/// `Schema` fields 1-20 (no recursion), kept out of line so that the
/// recursive [`schema`] frame stays small.
#[inline(never)]
fn schema_scalars(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 1, m, "$ref", at)?;
    string(out, 2, m, "format", at)?;
    string(out, 3, m, "title", at)?;
    string(out, 4, m, "description", at)?;
    any(out, 5, m, "default")?;
    double(out, 6, m, "multipleOf", at)?;
    double(out, 7, m, "maximum", at)?;
    boolean(out, 8, m, "exclusiveMaximum", at)?;
    double(out, 9, m, "minimum", at)?;
    boolean(out, 10, m, "exclusiveMinimum", at)?;
    int64(out, 11, m, "maxLength", at)?;
    int64(out, 12, m, "minLength", at)?;
    string(out, 13, m, "pattern", at)?;
    int64(out, 14, m, "maxItems", at)?;
    int64(out, 15, m, "minItems", at)?;
    boolean(out, 16, m, "uniqueItems", at)?;
    int64(out, 17, m, "maxProperties", at)?;
    int64(out, 18, m, "minProperties", at)?;
    strings(out, 19, m, "required", at)?;
    anys(out, 20, m, "enum", at)?;
    Ok(())
}

/// `Schema`. A boolean JSON schema (`true`/`false`) has no swagger 2.0 form
/// and is written as the empty schema.
fn schema(v: &Value, at: &At, out: &mut Buf) -> Result {
    at.check_depth()?;
    let m = match v {
        Value::Object(m) => m,
        Value::Bool(_) => return Ok(()),
        _ => return Err(at.wrong("a schema object")),
    };
    schema_scalars(m, at, out)?;
    // AdditionalPropertiesItem: oneof Schema schema = 1; bool boolean = 2.
    match present(m, "additionalProperties") {
        None => {}
        Some(Value::Bool(b)) => out.message(21, |o| {
            o.bool_always(2, *b);
            Ok(())
        })?,
        Some(s) => out.message(21, |o| {
            o.message(1, |o| schema(s, &at.key("additionalProperties"), o))
        })?,
    }
    // TypeItem { repeated string value = 1; }
    match present(m, "type") {
        None => {}
        Some(Value::String(t)) => out.message(22, |o| {
            o.string_always(1, t);
            Ok(())
        })?,
        Some(Value::Array(_)) => out.message(22, |o| strings(o, 1, m, "type", at))?,
        Some(_) => return Err(at.key("type").wrong("a string or an array of strings")),
    }
    // ItemsItem { repeated Schema schema = 1; }
    match present(m, "items") {
        None => {}
        Some(Value::Array(items)) => {
            let at = at.key("items");
            out.message(23, |o| {
                for (i, s) in items.iter().enumerate() {
                    o.message(1, |o| schema(s, &at.index(i), o))?;
                }
                Ok(())
            })?;
        }
        Some(s) => out.message(23, |o| o.message(1, |o| schema(s, &at.key("items"), o)))?,
    }
    if let Some(all_of) = opt_array(m, "allOf", at)? {
        let at = at.key("allOf");
        for (i, s) in all_of.iter().enumerate() {
            out.message(24, |o| schema(s, &at.index(i), o))?;
        }
    }
    // Properties { repeated NamedSchema additional_properties = 1; }
    named_map(out, 25, m, "properties", at, schema)?;
    schema_tail(m, at, out)
}

/// `Schema` fields 26-31 (no recursion), out of line like [`schema_scalars`].
#[inline(never)]
fn schema_tail(m: &Map<String, Value>, at: &At, out: &mut Buf) -> Result {
    string(out, 26, m, "discriminator", at)?;
    boolean(out, 27, m, "readOnly", at)?;
    if let Some(x) = opt_object(m, "xml", at)? {
        let at = at.key("xml");
        out.message(28, |o| {
            string(o, 1, x, "name", &at)?;
            string(o, 2, x, "namespace", &at)?;
            string(o, 3, x, "prefix", &at)?;
            boolean(o, 4, x, "attribute", &at)?;
            boolean(o, 5, x, "wrapped", &at)?;
            vendor_extensions(o, 6, x)
        })?;
    }
    external_docs(out, 29, m, at)?;
    any(out, 30, m, "example")?;
    vendor_extensions(out, 31, m)
}

/// `repeated SecurityRequirement` from the `security` array of `m`: each a
/// map of scheme name to scopes (`NamedStringArray` of `StringArray`).
fn security_requirements(out: &mut Buf, field: u32, m: &Map<String, Value>, at: &At) -> Result {
    let Some(reqs) = opt_array(m, "security", at)? else {
        return Ok(());
    };
    let at = at.key("security");
    for (i, req) in reqs.iter().enumerate() {
        let at = at.index(i);
        let req = object(req, &at)?;
        out.message(field, |o| {
            named_entries(o, 1, req, &at, |_| true, &|v, at, o| {
                let scopes = v.as_array().ok_or_else(|| at.wrong("an array of scopes"))?;
                for (j, s) in scopes.iter().enumerate() {
                    o.string_always(1, s.as_str().ok_or_else(|| at.index(j).wrong("a string"))?);
                }
                Ok(())
            })
        })?;
    }
    Ok(())
}

/// `SecurityDefinitionsItem`: a oneof chosen by `type` (and `flow` for oauth2).
fn security_definitions_item(v: &Value, at: &At, out: &mut Buf) -> Result {
    let m = object(v, at)?;
    let kind = opt_str(m, "type", at)?.unwrap_or_default();
    let flow = opt_str(m, "flow", at)?.unwrap_or_default();
    let scopes = |o: &mut Buf| -> Result {
        // Oauth2Scopes { repeated NamedString additional_properties = 1; }
        let Some(s) = opt_object(m, "scopes", at)? else {
            return Ok(());
        };
        let sat = at.key("scopes");
        o.message(3, |o| {
            for (name, desc) in s {
                let desc = desc
                    .as_str()
                    .ok_or_else(|| sat.key(name).wrong("a string"))?;
                o.message(1, |o| {
                    o.string(1, name);
                    o.string(2, desc);
                    Ok(())
                })?;
            }
            Ok(())
        })
    };
    match (kind, flow) {
        ("basic", _) => out.message(1, |o| {
            string(o, 1, m, "type", at)?;
            string(o, 2, m, "description", at)?;
            vendor_extensions(o, 3, m)
        }),
        ("apiKey", _) => out.message(2, |o| {
            string(o, 1, m, "type", at)?;
            string(o, 2, m, "name", at)?;
            string(o, 3, m, "in", at)?;
            string(o, 4, m, "description", at)?;
            vendor_extensions(o, 5, m)
        }),
        ("oauth2", "implicit") => out.message(3, |o| {
            string(o, 1, m, "type", at)?;
            string(o, 2, m, "flow", at)?;
            scopes(o)?;
            string(o, 4, m, "authorizationUrl", at)?;
            string(o, 5, m, "description", at)?;
            vendor_extensions(o, 6, m)
        }),
        ("oauth2", flow @ ("password" | "application")) => {
            out.message(if flow == "password" { 4 } else { 5 }, |o| {
                string(o, 1, m, "type", at)?;
                string(o, 2, m, "flow", at)?;
                scopes(o)?;
                string(o, 4, m, "tokenUrl", at)?;
                string(o, 5, m, "description", at)?;
                vendor_extensions(o, 6, m)
            })
        }
        ("oauth2", "accessCode") => out.message(6, |o| {
            string(o, 1, m, "type", at)?;
            string(o, 2, m, "flow", at)?;
            scopes(o)?;
            string(o, 4, m, "authorizationUrl", at)?;
            string(o, 5, m, "tokenUrl", at)?;
            string(o, 6, m, "description", at)?;
            vendor_extensions(o, 7, m)
        }),
        (kind, flow) => Err(at.invalid(format!(
            "unsupported security scheme type {kind:?} (flow {flow:?})"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_alone_encodes_or_says_why_not() {
        let ok = json!({"type": "object", "properties": {"a": {"type": "string", "x-kubernetes-int-or-string": true}}});
        assert!(!encode_schema(&ok).unwrap().is_empty());
        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"type": "object", "properties": {"a": deep}});
        }
        assert!(encode_schema(&deep).is_err());
    }

    /// One decoded field: varint, fixed64 or length-delimited payload.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Wire<'a> {
        Varint(u64),
        Fixed64(u64),
        Bytes(&'a [u8]),
    }

    fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
        }
        panic!("varint too long");
    }

    /// Walks the tags of one message.
    fn fields(buf: &[u8]) -> Vec<(u32, Wire<'_>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos);
            let (field, wire) = ((key >> 3) as u32, key & 7);
            assert!(field > 0, "field number 0");
            let value = match wire {
                0 => Wire::Varint(read_varint(buf, &mut pos)),
                1 => {
                    let b: [u8; 8] = buf[pos..pos + 8].try_into().unwrap();
                    pos += 8;
                    Wire::Fixed64(u64::from_le_bytes(b))
                }
                2 => {
                    let len = read_varint(buf, &mut pos) as usize;
                    let b = &buf[pos..pos + len];
                    pos += len;
                    Wire::Bytes(b)
                }
                w => panic!("unexpected wire type {w}"),
            };
            out.push((field, value));
        }
        assert_eq!(pos, buf.len(), "message overran its buffer");
        out
    }

    fn field_numbers(buf: &[u8]) -> Vec<u32> {
        fields(buf).into_iter().map(|(f, _)| f).collect()
    }

    /// Every length-delimited occurrence of `field`.
    fn all(buf: &[u8], field: u32) -> Vec<&[u8]> {
        fields(buf)
            .into_iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, w)| match w {
                Wire::Bytes(b) => b,
                other => panic!("field {field} is {other:?}, not length-delimited"),
            })
            .collect()
    }

    /// The single length-delimited occurrence of `field`.
    fn one(buf: &[u8], field: u32) -> &[u8] {
        let found = all(buf, field);
        assert_eq!(
            found.len(),
            1,
            "field {field} occurs {} times in {:?}",
            found.len(),
            field_numbers(buf)
        );
        found[0]
    }

    fn string(buf: &[u8], field: u32) -> &str {
        std::str::from_utf8(one(buf, field)).unwrap()
    }

    fn strings(buf: &[u8], field: u32) -> Vec<&str> {
        all(buf, field)
            .into_iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    fn varint(buf: &[u8], field: u32) -> Option<u64> {
        fields(buf)
            .into_iter()
            .find_map(|(f, w)| match (f == field, w) {
                (true, Wire::Varint(v)) => Some(v),
                _ => None,
            })
    }

    fn double(buf: &[u8], field: u32) -> Option<f64> {
        fields(buf)
            .into_iter()
            .find_map(|(f, w)| match (f == field, w) {
                (true, Wire::Fixed64(v)) => Some(f64::from_bits(v)),
                _ => None,
            })
    }

    /// The names (field 1) of a repeated `Named*` field.
    fn names(buf: &[u8], field: u32) -> Vec<&str> {
        all(buf, field).into_iter().map(|e| string(e, 1)).collect()
    }

    /// The value (field 2) of the `Named*` entry called `name`.
    fn named<'a>(buf: &'a [u8], field: u32, name: &str) -> &'a [u8] {
        let entry = all(buf, field).into_iter().find(|e| string(e, 1) == name);
        one(
            entry.unwrap_or_else(|| panic!("no entry {name:?} in field {field}")),
            2,
        )
    }

    /// The JSON value of the vendor extension `name` (an `Any` whose yaml is JSON text).
    fn extension(buf: &[u8], field: u32, name: &str) -> Value {
        let yaml = string(named(buf, field, name), 2);
        assert!(yaml.ends_with('\n'));
        serde_json::from_str(yaml).unwrap()
    }

    fn sample() -> Value {
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0+skiff"},
            "paths": {
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {
                    "patch": {
                        "tags": ["appsv1"],
                        "operationId": "patchAppsV1NamespacedDeployment",
                        "consumes": ["application/json-patch+json", "application/merge-patch+json"],
                        "produces": ["application/json"],
                        "parameters": [
                            {"name": "body", "in": "body", "required": true,
                             "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}},
                            {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true,
                             "description": "Strict, Warn or Ignore"},
                            {"name": "name", "in": "path", "required": true, "type": "string", "description": null},
                            {"$ref": "#/parameters/pretty"}
                        ],
                        "responses": {
                            "200": {"description": "OK", "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}},
                            "401": {"description": "Unauthorized"}
                        },
                        "schemes": ["https"],
                        "x-kubernetes-action": "patch",
                        "x-kubernetes-group-version-kind": {"group": "apps", "version": "v1", "kind": "Deployment"}
                    }
                }
            },
            "definitions": {
                "io.k8s.api.apps.v1.Deployment": {
                    "description": "Deployment enables declarative updates for Pods and ReplicaSets.",
                    "type": "object",
                    "required": ["spec"],
                    "nullable": true,
                    "properties": {
                        "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema."},
                        "replicas": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 0, "default": 1},
                        "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"},
                        "containers": {
                            "type": "array",
                            "items": {"$ref": "#/definitions/io.k8s.api.core.v1.Container"},
                            "x-kubernetes-patch-merge-key": "name",
                            "x-kubernetes-patch-strategy": "merge",
                            "x-kubernetes-list-type": "map"
                        },
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-map-type": "granular"},
                        "closed": {"type": "object", "additionalProperties": false},
                        "strategy": {"type": "string", "enum": ["Recreate", "RollingUpdate"]},
                        "port": {"allOf": [{"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}],
                                 "x-kubernetes-int-or-string": true},
                        "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "any": true
                    },
                    "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}]
                }
            }
        })
    }

    #[test]
    fn document_fields_and_info() {
        let bytes = encode_document(&sample()).unwrap();
        assert_eq!(field_numbers(&bytes), vec![1, 2, 8, 9]);
        assert_eq!(string(&bytes, 1), "2.0");
        let info = one(&bytes, 2);
        assert_eq!(string(info, 1), "Kubernetes");
        assert_eq!(string(info, 2), "v1.33.0+skiff");
    }

    #[test]
    fn definitions_carry_schemas_with_every_property_shape() {
        let bytes = encode_document(&sample()).unwrap();
        let defs = one(&bytes, 9);
        assert_eq!(names(defs, 1), vec!["io.k8s.api.apps.v1.Deployment"]);
        let deployment = named(defs, 1, "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            string(deployment, 4),
            "Deployment enables declarative updates for Pods and ReplicaSets."
        );
        assert_eq!(strings(deployment, 19), vec!["spec"]);
        assert_eq!(strings(one(deployment, 22), 1), vec!["object"]);
        assert_eq!(
            extension(deployment, 31, "x-kubernetes-group-version-kind"),
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        // Fields come out in field-number order; `nullable` (not swagger 2.0) is skipped.
        assert_eq!(field_numbers(deployment), vec![4, 19, 22, 25, 31]);

        let props = one(deployment, 25);
        let mut prop_names = names(props, 1);
        prop_names.sort_unstable();
        assert_eq!(
            prop_names,
            vec![
                "any",
                "apiVersion",
                "closed",
                "containers",
                "labels",
                "port",
                "raw",
                "replicas",
                "spec",
                "strategy"
            ]
        );

        let api_version = named(props, 1, "apiVersion");
        assert_eq!(strings(one(api_version, 22), 1), vec!["string"]);
        assert_eq!(
            string(api_version, 4),
            "APIVersion defines the versioned schema."
        );

        let replicas = named(props, 1, "replicas");
        assert_eq!(string(replicas, 2), "int32");
        assert_eq!(double(replicas, 9), Some(1.0));
        assert_eq!(
            double(replicas, 7),
            None,
            "a zero maximum is the proto3 default and left out"
        );
        assert_eq!(string(one(replicas, 5), 2), "1\n");

        let spec = named(props, 1, "spec");
        assert_eq!(field_numbers(spec), vec![1]);
        assert_eq!(
            string(spec, 1),
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );

        let containers = named(props, 1, "containers");
        assert_eq!(strings(one(containers, 22), 1), vec!["array"]);
        let items = all(one(containers, 23), 1);
        assert_eq!(items.len(), 1);
        assert_eq!(
            string(items[0], 1),
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert_eq!(
            extension(containers, 31, "x-kubernetes-patch-merge-key"),
            json!("name")
        );
        assert_eq!(
            extension(containers, 31, "x-kubernetes-patch-strategy"),
            json!("merge")
        );
        assert_eq!(
            extension(containers, 31, "x-kubernetes-list-type"),
            json!("map")
        );

        let labels = named(props, 1, "labels");
        let additional = one(labels, 21);
        assert_eq!(field_numbers(additional), vec![1]);
        assert_eq!(strings(one(one(additional, 1), 22), 1), vec!["string"]);
        assert_eq!(
            extension(labels, 31, "x-kubernetes-map-type"),
            json!("granular")
        );

        let closed = named(props, 1, "closed");
        let additional = one(closed, 21);
        assert_eq!(
            fields(additional),
            vec![(2, Wire::Varint(0))],
            "boolean false is a set oneof member"
        );

        let strategy = named(props, 1, "strategy");
        let values: Vec<&str> = all(strategy, 20)
            .into_iter()
            .map(|a| string(a, 2))
            .collect();
        assert_eq!(values, vec!["\"Recreate\"\n", "\"RollingUpdate\"\n"]);

        let port = named(props, 1, "port");
        let all_of = all(port, 24);
        assert_eq!(all_of.len(), 1);
        assert_eq!(
            string(all_of[0], 1),
            "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
        );
        assert_eq!(
            extension(port, 31, "x-kubernetes-int-or-string"),
            json!(true)
        );

        let raw = named(props, 1, "raw");
        assert_eq!(
            extension(raw, 31, "x-kubernetes-preserve-unknown-fields"),
            json!(true)
        );

        // A boolean JSON schema is the empty Schema (present, zero length).
        assert!(named(props, 1, "any").is_empty());
    }

    #[test]
    fn paths_carry_operations_parameters_and_responses() {
        let bytes = encode_document(&sample()).unwrap();
        let paths = one(&bytes, 8);
        assert_eq!(
            names(paths, 2),
            vec!["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
        );
        let item = named(
            paths,
            2,
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        );
        assert_eq!(field_numbers(item), vec![8], "only the patch operation");
        let op = one(item, 8);
        assert_eq!(strings(op, 1), vec!["appsv1"]);
        assert_eq!(string(op, 5), "patchAppsV1NamespacedDeployment");
        assert_eq!(strings(op, 6), vec!["application/json"]);
        assert_eq!(
            strings(op, 7),
            vec![
                "application/json-patch+json",
                "application/merge-patch+json"
            ]
        );
        assert_eq!(strings(op, 10), vec!["https"]);
        assert_eq!(extension(op, 13, "x-kubernetes-action"), json!("patch"));
        assert_eq!(
            extension(op, 13, "x-kubernetes-group-version-kind"),
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );

        let params = all(op, 8);
        assert_eq!(params.len(), 4);
        // ParametersItem.parameter → Parameter.body_parameter
        let body = one(one(params[0], 1), 1);
        assert_eq!(string(body, 2), "body");
        assert_eq!(string(body, 3), "body");
        assert_eq!(varint(body, 4), Some(1));
        assert_eq!(
            string(one(body, 5), 1),
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        // ParametersItem.parameter → Parameter.non_body_parameter → query_parameter_sub_schema,
        // the shape kubectl's fieldValidation check walks.
        let non_body = one(one(params[1], 1), 2);
        assert_eq!(field_numbers(non_body), vec![3]);
        let query = one(non_body, 3);
        assert_eq!(string(query, 2), "query");
        assert_eq!(string(query, 3), "Strict, Warn or Ignore");
        assert_eq!(string(query, 4), "fieldValidation");
        assert_eq!(string(query, 6), "string");
        assert_eq!(varint(query, 20), Some(1), "unique_items");
        // path_parameter_sub_schema: required = 1, type = 5; a null description is absent.
        let path = one(one(one(params[2], 1), 2), 4);
        assert_eq!(field_numbers(path), vec![1, 2, 4, 5]);
        assert_eq!(varint(path, 1), Some(1));
        assert_eq!(string(path, 5), "string");
        // ParametersItem.json_reference
        assert_eq!(string(one(params[3], 2), 1), "#/parameters/pretty");

        let responses = one(op, 9);
        assert_eq!(names(responses, 1), vec!["200", "401"]);
        let ok = one(named(responses, 1, "200"), 1);
        assert_eq!(string(ok, 1), "OK");
        // SchemaItem.schema
        assert_eq!(
            string(one(one(ok, 2), 1), 1),
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        let unauthorized = one(named(responses, 1, "401"), 1);
        assert_eq!(field_numbers(unauthorized), vec![1]);
    }

    #[test]
    fn security_tags_and_extensions_outside_schemas() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "t", "version": "v", "x-info": 1},
            "paths": {"x-paths": {"a": [1, 2]}, "/a": {"get": {"responses": {"default": {"$ref": "#/responses/e"}, "x-r": "y"}}}},
            "security": [{"BearerToken": []}],
            "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
            "tags": [{"name": "core", "externalDocs": {"url": "https://k8s.io"}}],
            "x-top": null
        });
        let bytes = encode_document(&doc).unwrap();
        assert_eq!(field_numbers(&bytes), vec![1, 2, 8, 12, 13, 14, 16]);
        assert_eq!(extension(one(&bytes, 2), 7, "x-info"), json!(1));
        let paths = one(&bytes, 8);
        assert_eq!(
            field_numbers(paths),
            vec![1, 2],
            "vendor extensions first, then paths"
        );
        assert_eq!(extension(paths, 1, "x-paths"), json!({"a": [1, 2]}));
        let responses = one(one(named(paths, 2, "/a"), 2), 9);
        assert_eq!(field_numbers(responses), vec![1, 2]);
        assert_eq!(
            string(one(named(responses, 1, "default"), 2), 1),
            "#/responses/e"
        );
        assert_eq!(extension(responses, 2, "x-r"), json!("y"));
        let requirement = one(&bytes, 12);
        assert_eq!(names(requirement, 1), vec!["BearerToken"]);
        assert!(named(requirement, 1, "BearerToken").is_empty());
        let api_key = one(named(one(&bytes, 13), 1, "BearerToken"), 2);
        assert_eq!(
            (string(api_key, 1), string(api_key, 2), string(api_key, 3)),
            ("apiKey", "authorization", "header")
        );
        let tag = one(&bytes, 14);
        assert_eq!(string(tag, 1), "core");
        assert_eq!(string(one(tag, 3), 2), "https://k8s.io");
        // A null vendor extension value is still an extension (yaml "null").
        assert_eq!(extension(&bytes, 16, "x-top"), Value::Null);
    }

    #[test]
    fn long_messages_get_multi_byte_lengths() {
        let description = "d".repeat(70_000);
        let doc = json!({"definitions": {"A": {"description": description}}});
        let bytes = encode_document(&doc).unwrap();
        let a = named(one(&bytes, 9), 1, "A");
        assert_eq!(string(a, 4).len(), 70_000);
        let mut b = Buf::default();
        b.varint(300);
        assert_eq!(b.0, vec![0xac, 0x02]);
        b.int64(1, -1);
        assert_eq!(b.0.len(), 2 + 1 + 10, "negative int64 is a ten-byte varint");
    }

    #[test]
    fn wrong_types_are_errors_with_their_location() {
        assert_eq!(
            encode_document(&json!([])),
            Err(EncodeError::WrongType {
                path: String::new(),
                expected: "an object"
            })
        );
        let doc = json!({"definitions": {"a/b": {"properties": {"x": {"type": 5}}}}});
        assert_eq!(
            encode_document(&doc),
            Err(EncodeError::WrongType {
                path: "/definitions/a~1b/properties/x/type".into(),
                expected: "a string or an array of strings"
            })
        );
        let doc =
            json!({"paths": {"/a": {"get": {"parameters": [{"name": "n", "in": "cookie"}]}}}});
        let err = encode_document(&doc).unwrap_err();
        assert!(
            matches!(&err, EncodeError::Invalid { path, .. } if path == "/paths/~1a/get/parameters/0/in"),
            "{err}"
        );
        let doc = json!({"definitions": {"a": {"maxLength": 1.5}}});
        assert!(encode_document(&doc).is_err());
        let doc = json!({"definitions": {"a": {"maxLength": u64::MAX}}});
        assert!(encode_document(&doc).is_err());
    }

    fn nested(levels: usize) -> Value {
        let mut s = json!({"type": "string"});
        for _ in 0..levels {
            s = json!({"type": "object", "properties": {"p": s}});
        }
        json!({"definitions": {"deep": s}})
    }

    #[test]
    fn deep_nesting_is_refused_but_realistic_depth_is_not() {
        assert!(encode_document(&nested(50)).is_ok());
        let err = encode_document(&nested(1000)).unwrap_err();
        assert!(
            matches!(err, EncodeError::Invalid { ref message, .. } if message == "nested too deeply"),
            "{err}"
        );
    }

    #[test]
    fn the_served_v2_document_encodes() {
        let doc = crate::openapi::v2_document();
        let bytes = encode_document(&doc).unwrap();
        let json_len = doc.to_string().len();
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
        assert!(
            bytes.len() < json_len * 2,
            "{} bytes of protobuf for {json_len} bytes of JSON",
            bytes.len()
        );
        assert_eq!(string(&bytes, 1), "2.0");
        let defs = one(&bytes, 9);
        let deployment = named(defs, 1, "io.k8s.api.apps.v1.Deployment");
        let gvk = extension(deployment, 31, "x-kubernetes-group-version-kind");
        assert_eq!(gvk[0]["kind"], "Deployment");
        assert_eq!(
            names(defs, 1).len(),
            doc["definitions"].as_object().unwrap().len()
        );

        // What kubectl 1.27's fieldValidation check does: find the PATCH
        // operation tagged with the Deployment GVK and look for the query parameter.
        let paths = one(&bytes, 8);
        let found = all(paths, 2).into_iter().any(|entry| {
            let item = one(entry, 2);
            let Some(patch) = all(item, 8).first().copied() else {
                return false;
            };
            let is_deployment = all(patch, 13).into_iter().any(|ext| {
                string(ext, 1) == "x-kubernetes-group-version-kind"
                    && serde_json::from_str::<Value>(string(one(ext, 2), 2)).unwrap()
                        == json!({"group": "apps", "version": "v1", "kind": "Deployment"})
            });
            is_deployment
                && all(patch, 8).into_iter().any(|p| {
                    all(p, 1)
                        .first()
                        .and_then(|param| all(param, 2).first().copied())
                        .is_some_and(|non_body| {
                            all(non_body, 3)
                                .first()
                                .is_some_and(|q| string(q, 4) == "fieldValidation")
                        })
                })
        });
        assert!(
            found,
            "no Deployment PATCH operation with a fieldValidation query parameter"
        );
    }
}
