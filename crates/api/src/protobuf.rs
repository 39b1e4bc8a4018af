//! Decoding (and, in `protobuf_encode.rs`, encoding) of Kubernetes protobuf bodies
//! (`Content-Type: application/vnd.kubernetes.protobuf`) into the object's
//! JSON form.
//!
//! kubectl sends typed objects it builds itself (`kubectl create configmap`,
//! `create deployment`, `create secret generic`, ...) as protobuf. The body is
//! the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message whose
//! `typeMeta` names the kind and whose `raw` field holds the object encoded
//! with the k8s.io generated.proto schema. [`decode`] turns that into the
//! `serde_json::Value` the rest of skiff works on.
//!
//! The schema table (`protobuf_schema.rs`, a private submodule) is generated
//! by `scripts/gen-protobuf-schema.py` from the prost bindings of the k8s-pb
//! crate (messages, tags, types) and from k8s-openapi (the real type names,
//! JSON field names, required fields, kinds); regenerate it with
//! `python3 scripts/gen-protobuf-schema.py` (`--check` verifies it is current).
//! The crate does not depend on k8s-pb or prost.
//!
//! JSON mapping rules:
//!
//! * absent fields are omitted; present numbers and booleans are kept even when
//!   zero (proto2: `replicas: 0` stays 0), except the fields the generator lists
//!   as Go value types (`metadata.generation`, `spec.minReadySeconds`,
//!   `containers[].stdin`, status counters, ...), which the Go marshaller writes
//!   even when unset; empty repeated fields and maps are omitted; a present
//!   nested message is kept even when empty (`"strategy": {}`, as Go's JSON
//!   encoder writes value-typed structs);
//! * an empty string in an optional (not OpenAPI-required) string field is
//!   omitted: the Go protobuf marshaller writes every value-typed string, set or
//!   not, so `imagePullPolicy: ""` on the wire means "unset" (Go's JSON encoder
//!   drops it through `omitempty`) and must not reach defaulting as a value;
//! * embedded Go structs (`json:",inline"`, e.g. `Volume.volumeSource`) are
//!   flattened into the parent object;
//! * `metav1.Time` -> RFC 3339 seconds (`null` when zero), `metav1.MicroTime` ->
//!   RFC 3339 with 6 fractional digits, `metav1.Duration` -> Go duration string,
//!   `resource.Quantity` -> string, `intstr.IntOrString` -> number or string,
//!   `runtime.RawExtension` / `metav1.FieldsV1` / apiextensions `JSON` -> the
//!   embedded JSON value, `bytes` -> base64, apiextensions
//!   `JSONSchemaPropsOr{Array,Bool,StringArray}` and `ExtraValue` / `Verbs` ->
//!   their custom JSON forms.

use serde_json::{Map, Number, Value};

#[path = "protobuf_schema.rs"]
mod schema;

#[path = "protobuf_encode.rs"]
mod encode;

pub use encode::{
    decode_watch_event, encode, encode_list, encode_message, encode_object, envelope, frame,
    has_protobuf, watch_event, watch_frame,
};
use schema::{GROUPS, KINDS, MESSAGES};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Nested messages deeper than this are rejected.
pub const MAX_DEPTH: usize = 100;

/// Why a protobuf body could not be decoded. Every message is suitable for a
/// 400 BadRequest `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    #[error(
        "object is not a valid protobuf-encoded Kubernetes object: the body does not start with the \"k8s\\x00\" magic number"
    )]
    MissingMagic,
    #[error(
        "object is not a valid protobuf-encoded Kubernetes object: apiVersion and kind must be set"
    )]
    MissingTypeMeta,
    #[error(
        "object is not a valid protobuf-encoded Kubernetes object: unsupported contentEncoding {0:?}"
    )]
    UnsupportedEncoding(String),
    #[error(
        "object is not a valid protobuf-encoded Kubernetes object: unsupported contentType {0:?}"
    )]
    UnsupportedContentType(String),
    #[error(
        "object is not a valid protobuf-encoded Kubernetes object: no kind \"{kind}\" is registered for version \"{api_version}\""
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("object is not a valid protobuf-encoded Kubernetes object: no protobuf message {0}")]
    UnknownMessage(String),
    #[error("object is not a valid protobuf-encoded Kubernetes object: {reason} (in {message})")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    #[error(
        "object is not a valid protobuf-encoded Kubernetes object: messages are nested more than {MAX_DEPTH} levels deep"
    )]
    TooDeep,
    /// Encoding: the kind has no protobuf message (custom resources, Table).
    /// The message is apimachinery's errNotMarshalable.
    #[error(
        "object {api_version}, Kind={kind} does not implement the protobuf marshalling interface and cannot be encoded to a protobuf message"
    )]
    NotMarshalable { api_version: String, kind: String },
    /// Encoding: a JSON value does not fit its field.
    #[error("unable to encode the object as protobuf: {reason} (in {message})")]
    Unencodable {
        message: &'static str,
        reason: String,
    },
}

/// Whether a `Content-Type` header value names the Kubernetes protobuf media
/// type (parameters and case ignored).
pub fn is_protobuf_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(MEDIA_TYPE)
}

/// Decodes a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) into the
/// object's JSON form, with `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_envelope(body, 0)
}

/// Decodes `raw`, the protobuf encoding of the message `message` (a full name
/// such as `io.k8s.api.core.v1.ConfigMap`), into its JSON form (without
/// `apiVersion` / `kind`).
pub fn decode_message(message: &str, raw: &[u8]) -> Result<Value, ProtobufError> {
    let index =
        message_index(message).ok_or_else(|| ProtobufError::UnknownMessage(message.to_string()))?;
    decode_msg(index, raw, 0)
}

/// The full protobuf message name used for `apiVersion` / `kind`, if known
/// (e.g. `("apps/v1", "Deployment")` -> `io.k8s.api.apps.v1.Deployment`).
pub fn message_for_kind(api_version: &str, kind: &str) -> Option<&'static str> {
    kind_index(api_version, kind)
        .and_then(|i| MESSAGES.get(i))
        .map(|m| m.0)
}

// ---------------------------------------------------------------------------
// Schema table types (the data is in protobuf_schema.rs).

/// How a field occurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Card {
    /// Singular; an empty string value is treated as unset.
    Optional,
    /// Singular and required in the OpenAPI schema: kept even when empty.
    Required,
    /// Singular number / bool that is a Go value type (not a pointer): the
    /// zero value means unset and is omitted.
    OmitZero,
    /// Singular message whose fields are inlined into the parent's JSON.
    Embedded,
    /// Repeated.
    Repeated,
    /// `map<string, ty>` (repeated entry messages, key = 1, value = 2).
    Map,
}

/// A field's value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    /// Index into `MESSAGES`.
    Message(u16),
}

/// Messages with a non-object JSON form (custom `MarshalJSON` in Go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    None,
    /// metav1.Time {int64 seconds = 1; int32 nanos = 2}.
    Time,
    /// metav1.MicroTime {int64 seconds = 1; int32 nanos = 2}.
    MicroTime,
    /// metav1.Duration {int64 duration = 1} (nanoseconds).
    Duration,
    /// resource.Quantity {string string = 1}.
    Quantity,
    /// intstr.IntOrString {int64 type = 1; int32 intVal = 2; string strVal = 3}.
    IntOrString,
    /// {bytes raw = 1} holding JSON: RawExtension, FieldsV1, apiextensions JSON.
    RawJson,
    /// JSONSchemaPropsOrArray {schema = 1; repeated jSONSchemas = 2}.
    SchemaOrArray,
    /// JSONSchemaPropsOrBool {bool allows = 1; schema = 2}.
    SchemaOrBool,
    /// JSONSchemaPropsOrStringArray {schema = 1; repeated string property = 2}.
    SchemaOrStringArray,
    /// {repeated string items = 1} standing for a Go `[]string` (ExtraValue, Verbs).
    StringList,
}

/// (tag, JSON name, cardinality, type)
struct Field(u32, &'static str, Card, Ty);

/// (full name, special JSON form, fields)
struct Message(&'static str, Special, &'static [Field]);

fn message_index(name: &str) -> Option<usize> {
    MESSAGES.binary_search_by(|m| m.0.cmp(name)).ok()
}

/// Kinds that every API group version registers (metav1.AddToGroupVersion).
const META_KINDS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "Status",
    "UpdateOptions",
    "WatchEvent",
];

fn kind_index(api_version: &str, kind: &str) -> Option<usize> {
    if let Ok(i) = KINDS.binary_search_by(|&(v, k, _)| (v, k).cmp(&(api_version, kind))) {
        return KINDS.get(i).map(|&(_, _, m)| usize::from(m));
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if version.is_empty() || kind.is_empty() {
        return None;
    }
    if let Ok(g) = GROUPS.binary_search_by(|&(name, _)| name.cmp(group)) {
        let prefix = GROUPS.get(g)?.1;
        let full = format!("{prefix}.{version}.{kind}");
        if let Some(i) = message_index(&full) {
            return Some(i);
        }
        // Names k8s-openapi does not know keep prost's casing (CsiDriver).
        if let Some(i) = MESSAGES
            .iter()
            .position(|m| m.0.eq_ignore_ascii_case(&full))
        {
            return Some(i);
        }
    }
    if META_KINDS.contains(&kind) {
        return message_index(&format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}"));
    }
    None
}

// ---------------------------------------------------------------------------
// Wire format.

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = self.buf.get(i + 1..).unwrap_or(&[]);
                return Ok(value);
            }
        }
        if self.buf.len() >= 10 {
            Err("varint overflows 64 bits".into())
        } else {
            Err("truncated varint".into())
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!(
                "field needs {n} bytes but only {} remain",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn fixed64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| format!("length {len} is too large"))?;
        self.take(len)
    }

    /// Reads a field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u64), String> {
        let key = self.varint()?;
        let tag = key >> 3;
        let wire = key & 7;
        if tag == 0 || tag > MAX_FIELD_NUMBER {
            return Err(format!("invalid field number {tag}"));
        }
        // tag <= 2^29 - 1 fits in u32.
        Ok((tag as u32, wire))
    }

    fn skip(&mut self, tag: u32, wire: u64) -> Result<(), String> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            _ => Err(format!("unsupported wire type {wire} for field {tag}")),
        }
    }
}

fn malformed(message: &'static str) -> impl Fn(String) -> ProtobufError {
    move |reason| ProtobufError::Malformed { message, reason }
}

// ---------------------------------------------------------------------------
// Envelope.

fn decode_envelope(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    const UNKNOWN: &str = "runtime.Unknown";
    const TYPE_META: &str = "runtime.TypeMeta";
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::MissingMagic)?;
    let err = malformed(UNKNOWN);
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut content_encoding = String::new();
    let mut content_type = String::new();
    let mut r = Reader::new(rest);
    while !r.is_empty() {
        let (tag, wire) = r.key().map_err(&err)?;
        if !(1..=4).contains(&tag) {
            r.skip(tag, wire).map_err(&err)?;
            continue;
        }
        if wire != WIRE_LEN {
            return Err(err(format!("field {tag} has wire type {wire}, expected 2")));
        }
        let bytes = r.len_delimited().map_err(&err)?;
        match tag {
            1 => {
                let terr = malformed(TYPE_META);
                let mut t = Reader::new(bytes);
                while !t.is_empty() {
                    let (ttag, twire) = t.key().map_err(&terr)?;
                    if (ttag == 1 || ttag == 2) && twire == WIRE_LEN {
                        let s = string_of(t.len_delimited().map_err(&terr)?);
                        if ttag == 1 { api_version = s } else { kind = s }
                    } else {
                        t.skip(ttag, twire).map_err(&terr)?;
                    }
                }
            }
            2 => raw = bytes,
            3 => content_encoding = string_of(bytes),
            _ => content_type = string_of(bytes),
        }
    }
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    if !content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(content_encoding));
    }
    let object = if content_type.is_empty() || is_protobuf_content_type(&content_type) {
        let index = kind_index(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
        decode_msg(index, raw, depth)?
    } else if is_json_content_type(&content_type) {
        serde_json::from_slice(raw).map_err(|e| err(format!("raw is not valid JSON: {e}")))?
    } else {
        return Err(ProtobufError::UnsupportedContentType(content_type));
    };
    let Value::Object(fields) = object else {
        return Err(err(format!(
            "{api_version} {kind} is not encoded as an object"
        )));
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(kind));
    for (k, v) in fields {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Ok(Value::Object(out))
}

fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Go's protobuf decoder does not validate UTF-8 and its JSON encoder replaces
/// invalid sequences with U+FFFD; do the same.
fn string_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// Messages.

/// Accumulated value of one field while decoding a message.
enum Slot {
    One(Value),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn decode_msg(index: usize, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let msg = MESSAGES
        .get(index)
        .ok_or_else(|| ProtobufError::UnknownMessage(format!("#{index}")))?;
    let name = msg.0;
    let err = malformed(name);
    if msg.1 == Special::RawJson {
        return raw_json(name, bytes, depth);
    }
    let fields = msg.2;
    let mut slots: Vec<Option<Slot>> = fields.iter().map(|_| None).collect();
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (tag, wire) = r.key().map_err(&err)?;
        let Some(pos) = fields.iter().position(|f| f.0 == tag) else {
            r.skip(tag, wire).map_err(&err)?;
            continue;
        };
        let (Some(field), Some(slot)) = (fields.get(pos), slots.get_mut(pos)) else {
            continue;
        };
        match field.2 {
            Card::Repeated => {
                if !matches!(slot, Some(Slot::List(_))) {
                    *slot = Some(Slot::List(Vec::new()));
                }
                let Some(Slot::List(list)) = slot else {
                    continue;
                };
                if wire == WIRE_LEN && is_packable(field.3) {
                    let mut packed = Reader::new(r.len_delimited().map_err(&err)?);
                    while !packed.is_empty() {
                        list.push(read_value(
                            &mut packed,
                            name,
                            field,
                            scalar_wire(field.3),
                            depth,
                        )?);
                    }
                } else {
                    list.push(read_value(&mut r, name, field, wire, depth)?);
                }
            }
            Card::Map => {
                if wire != WIRE_LEN {
                    return Err(err(format!(
                        "map field {tag} has wire type {wire}, expected 2"
                    )));
                }
                let entry = r.len_delimited().map_err(&err)?;
                let (k, v) = map_entry(name, field, entry, depth)?;
                match slot {
                    Some(Slot::Map(map)) => {
                        map.insert(k, v);
                    }
                    _ => {
                        let mut map = Map::new();
                        map.insert(k, v);
                        *slot = Some(Slot::Map(map));
                    }
                }
            }
            Card::Optional | Card::Required | Card::OmitZero | Card::Embedded => {
                // Last one wins, as for proto2 scalars.
                *slot = Some(Slot::One(read_value(&mut r, name, field, wire, depth)?));
            }
        }
    }
    build(msg, bytes.is_empty(), slots)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn is_packable(ty: Ty) -> bool {
    matches!(ty, Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double)
}

fn scalar_wire(ty: Ty) -> u64 {
    match ty {
        Ty::Double => WIRE_FIXED64,
        Ty::Bool | Ty::Int32 | Ty::Int64 => WIRE_VARINT,
        Ty::String | Ty::Bytes | Ty::Message(_) => WIRE_LEN,
    }
}

fn read_value(
    r: &mut Reader<'_>,
    message: &'static str,
    field: &Field,
    wire: u64,
    depth: usize,
) -> Result<Value, ProtobufError> {
    let err = malformed(message);
    let expected = scalar_wire(field.3);
    if wire != expected {
        return Err(err(format!(
            "field {} ({}) has wire type {wire}, expected {expected}",
            field.0, field.1
        )));
    }
    Ok(match field.3 {
        Ty::String => Value::String(string_of(r.len_delimited().map_err(&err)?)),
        Ty::Bytes => Value::String(base64(r.len_delimited().map_err(&err)?)),
        Ty::Bool => Value::Bool(r.varint().map_err(&err)? != 0),
        // int32 values are sign-extended to 64 bits on the wire; keep the low 32.
        Ty::Int32 => Value::from(r.varint().map_err(&err)? as i32),
        Ty::Int64 => Value::from(r.varint().map_err(&err)? as i64),
        Ty::Double => {
            let v = f64::from_bits(r.fixed64().map_err(&err)?);
            Value::Number(Number::from_f64(v).ok_or_else(|| {
                err(format!(
                    "field {} ({}) is not a finite number",
                    field.0, field.1
                ))
            })?)
        }
        Ty::Message(i) => decode_msg(usize::from(i), r.len_delimited().map_err(&err)?, depth + 1)?,
    })
}

fn map_entry(
    message: &'static str,
    field: &Field,
    entry: &[u8],
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let err = malformed(message);
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(entry);
    while !r.is_empty() {
        let (tag, wire) = r.key().map_err(&err)?;
        match tag {
            1 if wire == WIRE_LEN => key = string_of(r.len_delimited().map_err(&err)?),
            1 => {
                return Err(err(format!(
                    "key of map field {} has wire type {wire}",
                    field.0
                )));
            }
            2 => value = Some(read_value(&mut r, message, field, wire, depth)?),
            _ => r.skip(tag, wire).map_err(&err)?,
        }
    }
    let value = match value {
        Some(v) => v,
        None => zero_value(field.3, depth)?,
    };
    Ok((key, value))
}

fn zero_value(ty: Ty, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match ty {
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 => Value::from(0),
        Ty::Double => Value::from(0.0),
        Ty::Message(i) => decode_msg(usize::from(i), &[], depth + 1)?,
    })
}

/// Turns the decoded fields of `msg` into its JSON value.
fn build(msg: &Message, empty: bool, slots: Vec<Option<Slot>>) -> Result<Value, ProtobufError> {
    let name = msg.0;
    let err = malformed(name);
    let fields = msg.2;
    let mut by_tag: Vec<(u32, Slot)> = Vec::new();
    let mut out = Map::new();
    for (field, slot) in fields.iter().zip(slots) {
        let Some(slot) = slot else { continue };
        if msg.1 != Special::None {
            by_tag.push((field.0, slot));
            continue;
        }
        match slot {
            Slot::One(Value::String(s))
                if s.is_empty() && field.2 == Card::Optional && field.3 == Ty::String => {}
            Slot::One(v) if field.2 == Card::OmitZero && is_zero(&v) => {}
            Slot::One(Value::Object(inner)) if field.2 == Card::Embedded => {
                for (k, v) in inner {
                    out.entry(k).or_insert(v);
                }
            }
            Slot::One(v) => {
                out.insert(field.1.to_string(), v);
            }
            Slot::List(list) if !list.is_empty() => {
                out.insert(field.1.to_string(), Value::Array(list));
            }
            Slot::Map(map) if !map.is_empty() => {
                out.insert(field.1.to_string(), Value::Object(map));
            }
            Slot::List(_) | Slot::Map(_) => {}
        }
    }
    let take = |by_tag: &mut Vec<(u32, Slot)>, tag: u32| -> Option<Slot> {
        let pos = by_tag.iter().position(|(t, _)| *t == tag)?;
        Some(by_tag.swap_remove(pos).1)
    };
    let one = |slot: Option<Slot>| match slot {
        Some(Slot::One(v)) => Some(v),
        _ => None,
    };
    let list = |slot: Option<Slot>| match slot {
        Some(Slot::List(v)) => v,
        _ => Vec::new(),
    };
    let int = |v: Option<Value>| v.and_then(|v| v.as_i64()).unwrap_or(0);
    Ok(match msg.1 {
        Special::None => Value::Object(out),
        // Go: an empty message is the zero time, which marshals as null.
        Special::Time if empty => Value::Null,
        Special::Time => {
            Value::String(rfc3339(int(one(take(&mut by_tag, 1))), None).map_err(&err)?)
        }
        Special::MicroTime if empty => Value::Null,
        Special::MicroTime => {
            let seconds = int(one(take(&mut by_tag, 1)));
            let nanos = int(one(take(&mut by_tag, 2)));
            Value::String(rfc3339(seconds, Some(nanos)).map_err(&err)?)
        }
        Special::Duration => Value::String(go_duration(int(one(take(&mut by_tag, 1))))),
        Special::Quantity => one(take(&mut by_tag, 1)).unwrap_or_else(|| Value::String("0".into())),
        Special::IntOrString => {
            let is_string = int(one(take(&mut by_tag, 1))) == 1;
            if is_string {
                one(take(&mut by_tag, 3)).unwrap_or_else(|| Value::String(String::new()))
            } else {
                Value::from(int(one(take(&mut by_tag, 2))))
            }
        }
        Special::SchemaOrArray => {
            let schemas = list(take(&mut by_tag, 2));
            if schemas.is_empty() {
                one(take(&mut by_tag, 1)).unwrap_or(Value::Null)
            } else {
                Value::Array(schemas)
            }
        }
        Special::SchemaOrBool => match one(take(&mut by_tag, 2)) {
            Some(schema) => schema,
            None => Value::Bool(
                one(take(&mut by_tag, 1))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            ),
        },
        Special::SchemaOrStringArray => {
            let property = list(take(&mut by_tag, 2));
            if property.is_empty() {
                one(take(&mut by_tag, 1)).unwrap_or(Value::Null)
            } else {
                Value::Array(property)
            }
        }
        Special::StringList => Value::Array(list(take(&mut by_tag, 1))),
        // Handled before field decoding.
        Special::RawJson => Value::Null,
    })
}

/// `{bytes raw = 1}` holding a JSON document (RawExtension, FieldsV1,
/// apiextensions JSON). kubectl puts JSON there; a nested protobuf object
/// (`k8s\0` prefix) is decoded as well.
fn raw_json(message: &'static str, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let err = malformed(message);
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (tag, wire) = r.key().map_err(&err)?;
        if tag == 1 && wire == WIRE_LEN {
            raw = r.len_delimited().map_err(&err)?;
        } else if tag == 1 {
            return Err(err(format!(
                "field 1 (raw) has wire type {wire}, expected 2"
            )));
        } else {
            r.skip(tag, wire).map_err(&err)?;
        }
    }
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC) {
        return decode_envelope(raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| err(format!("raw is not valid JSON: {e}")))
}

// ---------------------------------------------------------------------------
// Value formatting.

/// RFC 3339 in UTC as Go's metav1.Time (`2006-01-02T15:04:05Z`) or, with
/// `nanos`, metav1.MicroTime (`2006-01-02T15:04:05.000000Z`).
fn rfc3339(seconds: i64, nanos: Option<i64>) -> Result<String, String> {
    let (seconds, micros) = match nanos {
        Some(n) => {
            let total = i128::from(seconds) * 1_000_000_000 + i128::from(n);
            let secs = total.div_euclid(1_000_000_000);
            let secs = i64::try_from(secs).map_err(|_| "time out of range".to_string())?;
            (secs, Some(total.rem_euclid(1_000_000_000) / 1000))
        }
        None => (seconds, None),
    };
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(format!(
            "time {seconds}s since the epoch is outside years 0-9999"
        ));
    }
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    );
    if let Some(micros) = micros {
        out.push_str(&format!(".{micros:06}"));
    }
    out.push('Z');
    Ok(out)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`: "0s", "1.5s", "1m30s", "2h0m0s", "1.5ms".
fn go_duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if nanos < 0 {
        out.push('-');
    }
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (scale, unit): (u64, &str) = if u < 1_000 {
            (1, "ns")
        } else if u < 1_000_000 {
            (1_000, "µs")
        } else {
            (1_000_000, "ms")
        };
        out.push_str(&(u / scale).to_string());
        push_fraction(&mut out, u % scale, scale);
        out.push_str(unit);
        return out;
    }
    let frac = u % 1_000_000_000;
    u /= 1_000_000_000;
    let (h, m, s) = (u / 3600, u / 60 % 60, u % 60);
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    push_fraction(&mut out, frac, 1_000_000_000);
    out.push('s');
    out
}

/// Appends `.digits` of `frac / scale` (scale a power of ten), without
/// trailing zeros; nothing when `frac` is 0.
fn push_fraction(out: &mut String, frac: u64, scale: u64) {
    if frac == 0 || scale <= 1 {
        return;
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    out.push('.');
    out.push_str(digits.trim_end_matches('0'));
}

/// Standard base64 with padding, as Go's JSON encoder writes `[]byte`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(ALPHABET[(i & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tiny protobuf encoder for building test bodies.
    #[derive(Default, Clone)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn new() -> Self {
            Enc::default()
        }
        fn varint(mut self, mut v: u64) -> Self {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return self;
                }
                self.0.push(b | 0x80);
            }
        }
        fn key(self, tag: u32, wire: u64) -> Self {
            self.varint((u64::from(tag) << 3) | wire)
        }
        /// int32 / int64 / bool (negative values sign-extended, as Go does).
        fn int(self, tag: u32, v: i64) -> Self {
            self.key(tag, WIRE_VARINT).varint(v as u64)
        }
        fn bytes(self, tag: u32, b: &[u8]) -> Self {
            let mut e = self.key(tag, WIRE_LEN).varint(b.len() as u64);
            e.0.extend_from_slice(b);
            e
        }
        fn str(self, tag: u32, s: &str) -> Self {
            self.bytes(tag, s.as_bytes())
        }
        fn msg(self, tag: u32, m: Enc) -> Self {
            self.bytes(tag, &m.0)
        }
        fn double(self, tag: u32, v: f64) -> Self {
            let mut e = self.key(tag, WIRE_FIXED64);
            e.0.extend_from_slice(&v.to_le_bytes());
            e
        }
        fn bytes_raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        fn map_str(self, tag: u32, k: &str, v: &str) -> Self {
            self.msg(tag, Enc::new().str(1, k).str(2, v))
        }
        fn map_bytes(self, tag: u32, k: &str, v: &[u8]) -> Self {
            self.msg(tag, Enc::new().str(1, k).bytes(2, v))
        }
        fn map_msg(self, tag: u32, k: &str, v: Enc) -> Self {
            self.msg(tag, Enc::new().str(1, k).msg(2, v))
        }
    }

    /// `k8s\0` + runtime.Unknown, as Go writes it (empty contentEncoding and
    /// contentType included).
    fn envelope(api_version: &str, kind: &str, raw: &Enc) -> Vec<u8> {
        let unknown = Enc::new()
            .msg(1, Enc::new().str(1, api_version).str(2, kind))
            .bytes(2, &raw.0)
            .str(3, "")
            .str(4, "");
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&unknown.0);
        body
    }

    /// Decodes a body and checks that encoding the result and decoding that
    /// again gives the same object (`decode(encode(x)) == x`).
    fn dec(body: &[u8]) -> Value {
        let v = decode(body).unwrap();
        let again = encode(&v).unwrap();
        assert_eq!(decode(&again).unwrap(), v, "round trip of {v}");
        v
    }

    fn quantity(s: &str) -> Enc {
        Enc::new().str(1, s)
    }

    /// ObjectMeta the way gogo-protobuf marshals a Go ObjectMeta with only
    /// `name` (and `labels`) set: every value-typed field is written.
    fn object_meta(name: &str, labels: &[(&str, &str)], created: Option<i64>) -> Enc {
        let mut m = Enc::new()
            .str(1, name)
            .str(2, "")
            .str(3, "")
            .str(4, "")
            .str(5, "")
            .str(6, "")
            .int(7, 0)
            .msg(
                8,
                created.map_or_else(Enc::new, |s| Enc::new().int(1, s).int(2, 0)),
            );
        for (k, v) in labels {
            m = m.map_str(11, k, v);
        }
        m
    }

    #[test]
    fn config_map() {
        let raw = Enc::new()
            .msg(
                1,
                object_meta("x", &[("app", "web"), ("tier", "")], Some(1_700_000_000)),
            )
            .map_str(2, "a", "1")
            .map_str(2, "empty", "")
            .map_bytes(3, "bin", &[0, 1, 2, 255]);
        let v = dec(&envelope("v1", "ConfigMap", &raw));
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "x",
                    "creationTimestamp": "2023-11-14T22:13:20Z",
                    "labels": {"app": "web", "tier": ""},
                },
                "data": {"a": "1", "empty": ""},
                "binaryData": {"bin": "AAEC/w=="},
            })
        );
    }

    #[test]
    fn config_map_like_kubectl_create() {
        // `kubectl create configmap x --from-literal=a=1`: the Go object has a
        // zero creationTimestamp, which marshals as an empty Time message.
        let raw = Enc::new()
            .msg(1, object_meta("x", &[], None))
            .map_str(2, "a", "1");
        let v = dec(&envelope("v1", "ConfigMap", &raw));
        // Exactly `kubectl create configmap x --from-literal=a=1 --dry-run=client -o json`.
        assert_eq!(
            v,
            json!({
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "x", "creationTimestamp": null},
                "data": {"a": "1"},
            })
        );
    }

    /// A Go corev1.Container as gogo-protobuf marshals it: every value-typed
    /// field is written, set or not.
    fn go_container(name: &str, image: &str, ports: Vec<Enc>, resources: Enc) -> Enc {
        let mut c = Enc::new().str(1, name).str(2, image).str(5, "");
        for p in ports {
            c = c.msg(6, p);
        }
        c.msg(8, resources)
            .str(13, "")
            .str(14, "")
            .int(16, 0)
            .int(17, 0)
            .int(18, 0)
            .str(20, "")
    }

    /// A Go corev1.PodSpec with only `containers` set, as gogo-protobuf marshals it.
    fn go_pod_spec(container: Enc) -> Enc {
        Enc::new()
            .msg(2, container)
            .str(3, "")
            .str(6, "")
            .str(8, "")
            .str(9, "")
            .str(10, "")
            .int(11, 0)
            .int(12, 0)
            .int(13, 0)
            .str(16, "")
            .str(17, "")
            .str(19, "")
            .str(24, "")
    }

    /// A zero Go appsv1.DeploymentStatus.
    fn go_deployment_status() -> Enc {
        Enc::new()
            .int(1, 0)
            .int(2, 0)
            .int(3, 0)
            .int(4, 0)
            .int(5, 0)
            .int(7, 0)
    }

    #[test]
    fn deployment_like_kubectl_create() {
        // `kubectl create deployment web --image=busybox`.
        let labels = [("app", "web")];
        let spec = Enc::new()
            .int(1, 1)
            .msg(2, Enc::new().map_str(1, "app", "web"))
            .msg(
                3,
                Enc::new().msg(1, object_meta("", &labels, None)).msg(
                    2,
                    go_pod_spec(go_container("busybox", "busybox", vec![], Enc::new())),
                ),
            )
            .msg(4, Enc::new().str(1, ""))
            .int(5, 0)
            .int(7, 0);
        let raw = Enc::new()
            .msg(1, object_meta("web", &labels, None))
            .msg(2, spec)
            .msg(3, go_deployment_status());
        let v = dec(&envelope("apps/v1", "Deployment", &raw));
        // Exactly `kubectl create deployment web --image=busybox --dry-run=client -o json`.
        assert_eq!(
            v,
            json!({
                "kind": "Deployment",
                "apiVersion": "apps/v1",
                "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "busybox", "image": "busybox", "resources": {}}]},
                    },
                    "strategy": {},
                },
                "status": {},
            })
        );
    }

    #[test]
    fn deployment() {
        let int_or_string_int = |n: i64| Enc::new().int(1, 0).int(2, n).str(3, "");
        let int_or_string_str = |s: &str| Enc::new().int(1, 1).int(2, 0).str(3, s);
        let port = Enc::new()
            .str(1, "")
            .int(2, 0)
            .int(3, 8080)
            .str(4, "TCP")
            .str(5, "");
        let resources =
            Enc::new()
                .map_msg(1, "cpu", quantity("500m"))
                .map_msg(1, "memory", quantity("128Mi"));
        let spec = Enc::new()
            .int(1, 0) // replicas: 0 (a *int32 set to 0)
            .msg(2, Enc::new().map_str(1, "app", "web"))
            .msg(
                3,
                Enc::new()
                    .msg(1, object_meta("", &[("app", "web")], None))
                    .msg(
                        2,
                        go_pod_spec(go_container("web", "nginx", vec![port], resources)).int(21, 0), // automountServiceAccountToken: false (*bool)
                    ),
            )
            .msg(
                4,
                Enc::new().str(1, "RollingUpdate").msg(
                    2,
                    Enc::new()
                        .msg(1, int_or_string_int(1))
                        .msg(2, int_or_string_str("25%")),
                ),
            )
            .int(5, 0)
            .int(6, 0) // revisionHistoryLimit: 0 (*int32)
            .int(7, 0);
        let raw = Enc::new()
            .msg(
                1,
                object_meta("web", &[("app", "web")], Some(1_700_000_000)),
            )
            .msg(2, spec)
            .msg(3, go_deployment_status().int(2, 3));
        let v = dec(&envelope("apps/v1", "Deployment", &raw));
        assert_eq!(
            v,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "web",
                    "creationTimestamp": "2023-11-14T22:13:20Z",
                    "labels": {"app": "web"},
                },
                "spec": {
                    "replicas": 0,
                    "revisionHistoryLimit": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                        "spec": {
                            "automountServiceAccountToken": false,
                            "containers": [{
                                "name": "web",
                                "image": "nginx",
                                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                            }],
                        },
                    },
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
                    },
                },
                "status": {"replicas": 3},
            })
        );
    }

    #[test]
    fn secret_like_kubectl_create() {
        // `kubectl create secret generic s --from-literal=k=v`.
        let raw = Enc::new()
            .msg(1, object_meta("s", &[], None))
            .map_bytes(2, "k", b"v")
            .str(3, "");
        let v = dec(&envelope("v1", "Secret", &raw));
        assert_eq!(
            v,
            json!({
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": {"name": "s", "creationTimestamp": null},
                "data": {"k": "dg=="},
            })
        );
    }

    #[test]
    fn secret_bytes_are_base64() {
        let raw = Enc::new()
            .msg(1, object_meta("s", &[], None))
            .map_bytes(2, "k", b"v")
            .map_bytes(2, "bin", &[0xde, 0xad, 0xbe, 0xef, 0x00])
            .map_bytes(2, "empty", b"")
            .str(3, "Opaque");
        let v = dec(&envelope("v1", "Secret", &raw));
        assert_eq!(
            v["data"],
            json!({"k": "dg==", "bin": "3q2+7wA=", "empty": ""})
        );
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn embedded_structs_are_inlined() {
        // Volume { name; VolumeSource (inline) { configMap { LocalObjectReference (inline) { name } } } }
        let volume = Enc::new().str(1, "cfg").msg(
            2,
            Enc::new().msg(
                19,
                Enc::new().msg(1, Enc::new().str(1, "my-cm")).int(3, 0o644),
            ),
        );
        let raw = Enc::new()
            .msg(1, object_meta("p", &[], None))
            .msg(2, Enc::new().msg(1, volume));
        let v = dec(&envelope("v1", "Pod", &raw));
        assert_eq!(
            v["spec"]["volumes"],
            json!([{"name": "cfg", "configMap": {"name": "my-cm", "defaultMode": 420}}])
        );
    }

    #[test]
    fn raw_extension_and_fields_v1_are_json() {
        let managed = Enc::new()
            .str(1, "kubectl")
            .str(2, "Update")
            .str(3, "v1")
            .msg(4, Enc::new().int(1, 0).int(2, 0))
            .str(6, "FieldsV1")
            .msg(7, Enc::new().bytes(1, br#"{"f:data":{".":{}}}"#));
        let meta = Enc::new().str(1, "rev").msg(17, managed);
        let raw = Enc::new()
            .msg(1, meta)
            .msg(2, Enc::new().bytes(1, br#"{"spec":{"replicas":2}}"#))
            .int(3, 7);
        let v = dec(&envelope("apps/v1", "ControllerRevision", &raw));
        assert_eq!(v["data"], json!({"spec": {"replicas": 2}}));
        assert_eq!(v["revision"], json!(7));
        assert_eq!(
            v["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {".": {}}})
        );
        assert_eq!(
            v["metadata"]["managedFields"][0]["time"],
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(v["metadata"]["managedFields"][0]["manager"], "kubectl");

        let bad = Enc::new().msg(2, Enc::new().bytes(1, b"{not json"));
        assert!(decode(&envelope("apps/v1", "ControllerRevision", &bad)).is_err());
    }

    #[test]
    fn special_types() {
        let micro = Enc::new().int(1, 1_700_000_000).int(2, 123_456_789);
        assert_eq!(
            decode_message("io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime", &micro.0).unwrap(),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            decode_message("io.k8s.apimachinery.pkg.apis.meta.v1.Time", &[]).unwrap(),
            Value::Null
        );
        let d = |ns: i64| {
            decode_message(
                "io.k8s.apimachinery.pkg.apis.meta.v1.Duration",
                &Enc::new().int(1, ns).0,
            )
            .unwrap()
        };
        assert_eq!(d(5_000_000_000), "5s");
        assert_eq!(d(90_000_000_000), "1m30s");
        assert_eq!(d(3_600_000_000_000), "1h0m0s");
        assert_eq!(d(1_500_000_000), "1.5s");
        assert_eq!(d(1_500_000), "1.5ms");
        assert_eq!(d(2_500), "2.5µs");
        assert_eq!(d(7), "7ns");
        assert_eq!(d(0), "0s");
        assert_eq!(d(-5_000_000_000), "-5s");
        let ios = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
        assert_eq!(
            decode_message(ios, &Enc::new().int(1, 0).int(2, -3).0).unwrap(),
            json!(-3)
        );
        assert_eq!(
            decode_message(ios, &Enc::new().int(1, 1).str(3, "http").0).unwrap(),
            "http"
        );
        // JSONSchemaProps with its custom-marshalled helpers.
        let schema = Enc::new()
            .str(5, "object")
            .double(9, 10.5)
            .msg(30, Enc::new().int(1, 1))
            .map_msg(29, "s", Enc::new().str(5, "string"))
            .msg(24, Enc::new().msg(1, Enc::new().str(5, "integer")))
            .msg(8, Enc::new().bytes(1, b"{\"a\":1}"));
        assert_eq!(
            decode_message(
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
                &schema.0
            )
            .unwrap(),
            json!({
                "type": "object",
                "maximum": 10.5,
                "additionalProperties": true,
                "properties": {"s": {"type": "string"}},
                "items": {"type": "integer"},
                "default": {"a": 1},
            })
        );
        // authentication ExtraValue is a Go []string.
        let user = Enc::new().str(1, "alice").msg(
            4,
            Enc::new()
                .str(1, "scopes")
                .msg(2, Enc::new().str(1, "a").str(1, "b")),
        );
        assert_eq!(
            decode_message("io.k8s.api.authentication.v1.UserInfo", &user.0).unwrap(),
            json!({"username": "alice", "extra": {"scopes": ["a", "b"]}})
        );
    }

    #[test]
    fn packed_and_unpacked_repeated_scalars() {
        let name = "io.k8s.api.core.v1.PodPortForwardOptions";
        let unpacked = Enc::new().int(1, 80).int(1, 443);
        assert_eq!(
            decode_message(name, &unpacked.0).unwrap(),
            json!({"ports": [80, 443]})
        );
        let packed = Enc::new().bytes(1, &Enc::new().varint(80).varint(443).0);
        assert_eq!(
            decode_message(name, &packed.0).unwrap(),
            json!({"ports": [80, 443]})
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let raw = Enc::new()
            .int(99, 5)
            .msg(1, object_meta("x", &[], None).str(1000, "future"))
            .double(98, 1.0)
            .key(97, 5)
            .bytes_raw(&[1, 2, 3, 4])
            .map_str(2, "a", "1");
        let v = dec(&envelope("v1", "ConfigMap", &raw));
        assert_eq!(v["data"], json!({"a": "1"}));
        assert_eq!(v["metadata"]["name"], "x");
    }

    #[test]
    fn kinds() {
        assert_eq!(
            message_for_kind("apps/v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        assert_eq!(
            message_for_kind("v1", "ConfigMapList"),
            Some("io.k8s.api.core.v1.ConfigMapList")
        );
        assert_eq!(
            message_for_kind("storage.k8s.io/v1", "CSIDriver"),
            Some("io.k8s.api.storage.v1.CSIDriver")
        );
        assert_eq!(
            message_for_kind("apps/v1", "DeleteOptions"),
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        );
        assert_eq!(
            message_for_kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            Some("io.k8s.api.rbac.v1.ClusterRoleBinding")
        );
        assert_eq!(
            message_for_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            Some(
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
            )
        );
        assert_eq!(message_for_kind("v1", "Nope"), None);
        assert_eq!(message_for_kind("", ""), None);
        assert!(is_protobuf_content_type(
            "application/vnd.kubernetes.protobuf"
        ));
        assert!(is_protobuf_content_type(
            "Application/Vnd.Kubernetes.Protobuf; charset=utf-8"
        ));
        assert!(!is_protobuf_content_type("application/json"));
    }

    #[test]
    fn table_is_consistent() {
        assert!(
            MESSAGES.windows(2).all(|w| w[0].0 < w[1].0),
            "MESSAGES sorted and unique"
        );
        assert!(
            KINDS
                .windows(2)
                .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)),
            "KINDS sorted"
        );
        assert!(GROUPS.windows(2).all(|w| w[0].0 < w[1].0), "GROUPS sorted");
        for m in MESSAGES {
            for f in m.2 {
                if let Ty::Message(i) = f.3 {
                    assert!(usize::from(i) < MESSAGES.len(), "{}.{}", m.0, f.1);
                }
            }
        }
        for &(v, k, i) in KINDS {
            let name = MESSAGES[usize::from(i)].0;
            assert!(name.ends_with(&format!(".{k}")), "{v} {k} -> {name}");
        }
    }

    #[test]
    fn errors() {
        let raw = Enc::new()
            .msg(1, object_meta("x", &[], Some(1)))
            .map_str(2, "a", "1");
        let body = envelope("v1", "ConfigMap", &raw);
        assert!(decode(&body).is_ok());
        // Every truncation is rejected (or decodes a shorter valid prefix), never panics.
        let mut rejected = 0;
        for n in 0..body.len() {
            if decode(&body[..n]).is_err() {
                rejected += 1;
            }
        }
        assert!(
            rejected > body.len() / 2,
            "{rejected} of {} truncations rejected",
            body.len()
        );
        // The last byte cut off the data map entry: must be an error.
        assert!(decode(&body[..body.len() - 1]).is_err());

        assert_eq!(decode(b"").unwrap_err(), ProtobufError::MissingMagic);
        assert_eq!(
            decode(b"{\"kind\":\"ConfigMap\"}").unwrap_err(),
            ProtobufError::MissingMagic
        );
        assert_eq!(
            decode(b"k8s\0").unwrap_err(),
            ProtobufError::MissingTypeMeta
        );
        assert!(matches!(
            decode(&envelope("v1", "Nope", &Enc::new())).unwrap_err(),
            ProtobufError::UnknownKind { .. }
        ));
        // Varint overflow, invalid wire types, field number 0, huge lengths.
        for junk in [
            &[0xffu8; 12][..],
            &[0x0b, 0x00],
            &[0x00, 0x01],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x12, 0x05, 0x01],
        ] {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(junk);
            assert!(decode(&b).is_err(), "{junk:?}");
        }
        // Wrong wire type for a known field (data map entry sent as varint).
        let wrong = Enc::new().int(2, 1);
        assert!(decode(&envelope("v1", "ConfigMap", &wrong)).is_err());
        // Non-UTF-8 strings are accepted as Go does (replacement character).
        let latin1 = Enc::new().msg(1, Enc::new().bytes(1, &[b'x', 0xe9]));
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &latin1)).unwrap()["metadata"]["name"],
            "x\u{fffd}"
        );
        // Time outside years 0-9999.
        let far = Enc::new().msg(1, Enc::new().msg(8, Enc::new().int(1, i64::MAX)));
        assert!(decode(&envelope("v1", "ConfigMap", &far)).is_err());
        // Error messages are Status-ready.
        let e = decode(&body[..body.len() - 1]).unwrap_err().to_string();
        assert!(
            e.starts_with("object is not a valid protobuf-encoded Kubernetes object: "),
            "{e}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random bodies (xorshift), with and without the magic.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let raw = Enc::new()
            .msg(1, object_meta("x", &[("a", "b")], Some(1)))
            .map_str(2, "a", "1");
        let valid = envelope("v1", "ConfigMap", &raw);
        for round in 0..4000 {
            let mut body = if round % 2 == 0 {
                valid.clone()
            } else {
                MAGIC.to_vec()
            };
            let len = (next() % 64) as usize;
            if round % 2 == 0 {
                // Mutate a valid body.
                for _ in 0..1 + next() % 4 {
                    let i = 4 + (next() as usize) % (body.len() - 4);
                    body[i] = next() as u8;
                }
            } else {
                body.extend((0..len).map(|_| next() as u8));
            }
            let _ = decode(&body);
            for name in ["io.k8s.api.apps.v1.Deployment", "io.k8s.api.core.v1.Pod"] {
                let _ = decode_message(name, body.get(4..).unwrap_or(&[]));
            }
        }
    }

    #[test]
    fn deep_nesting_is_rejected() {
        // JSONSchemaProps.not (28) nested far deeper than MAX_DEPTH.
        let name = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        let mut inner = Enc::new().str(5, "string");
        for _ in 0..(MAX_DEPTH + 10) {
            inner = Enc::new().msg(28, inner);
        }
        assert_eq!(
            decode_message(name, &inner.0).unwrap_err(),
            ProtobufError::TooDeep
        );
        let mut ok = Enc::new().str(5, "string");
        for _ in 0..50 {
            ok = Enc::new().msg(28, ok);
        }
        assert!(decode_message(name, &ok.0).is_ok());
    }
}
