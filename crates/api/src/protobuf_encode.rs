//! Encoding of an object's JSON form as a Kubernetes protobuf body: the
//! inverse of [`super::decode`], over the same schema table.
//!
//! kube-apiserver answers a client that asks for
//! `application/vnd.kubernetes.protobuf` (client-go does, for built-in
//! kinds) with `k8s\0` + `runtime.Unknown{typeMeta, raw, contentEncoding: "",
//! contentType: ""}` (k8s.io/apimachinery/pkg/runtime/serializer/protobuf).
//! Fields are written in tag order, as gogo-protobuf's generated marshallers
//! and prost do; map entries in key order, as the generated marshallers sort
//! them.
//!
//! What is written is what the JSON holds: a field absent from the JSON is
//! absent from the wire, a present one is written even when it is a zero
//! value (proto2 presence: `replicas: 0` stays a present 0, which a Go client
//! decodes into a non-nil pointer). Go writes its value-typed fields even when
//! they are zero; for those, absent and zero decode to the same Go value, so
//! the client sees the same object.
//!
//! The special types in reverse: RFC 3339 strings -> `metav1.Time` /
//! `MicroTime` (`null` -> the zero Time, an empty message), Go duration
//! strings -> `metav1.Duration`, quantities -> `{string = 1}`, numbers and
//! strings -> `IntOrString`, any JSON -> the `raw` bytes of
//! `RawExtension` / `FieldsV1` / apiextensions `JSON`, base64 strings ->
//! `bytes`, inline (embedded) Go structs read from the parent's JSON object,
//! and the custom JSON forms of the apiextensions helpers and
//! `ExtraValue`/`Verbs`.

use serde_json::{Map, Value};

use super::{
    Card, Field, MAGIC, MAX_DEPTH, MESSAGES, Message, ProtobufError, Special, Ty, WIRE_FIXED64,
    WIRE_LEN, WIRE_VARINT, kind_index, message_index,
};

/// The full message name of `metav1.WatchEvent`.
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";

/// Whether objects of `api_version` / `kind` have a protobuf encoding (the
/// built-in kinds and the meta.k8s.io ones; not custom resources).
pub fn has_protobuf(api_version: &str, kind: &str) -> bool {
    kind_index(api_version, kind).is_some()
}

/// Encodes an object (with `apiVersion` and `kind`) as a Kubernetes protobuf
/// body: `k8s\0` + `runtime.Unknown`.
pub fn encode(object: &Value) -> Result<Vec<u8>, ProtobufError> {
    let (api_version, kind) = type_meta(object)?;
    let raw = encode_object(object)?;
    Ok(envelope(api_version, kind, &raw))
}

/// The message encoding of an object (its `raw` inside `runtime.Unknown`,
/// and what a list's `items` repeat), from its `apiVersion` and `kind`.
pub fn encode_object(object: &Value) -> Result<Vec<u8>, ProtobufError> {
    let (api_version, kind) = type_meta(object)?;
    let index = kind_index(api_version, kind).ok_or_else(|| not_marshalable(api_version, kind))?;
    let mut out = Vec::with_capacity(256);
    encode_msg(&mut out, index, object, 0)?;
    Ok(out)
}

/// Encodes `value`, the JSON form of the message `message` (a full name such
/// as `io.k8s.api.core.v1.ConfigMap`), as that message.
pub fn encode_message(message: &str, value: &Value) -> Result<Vec<u8>, ProtobufError> {
    let index =
        message_index(message).ok_or_else(|| ProtobufError::UnknownMessage(message.to_string()))?;
    let mut out = Vec::new();
    encode_msg(&mut out, index, value, 0)?;
    Ok(out)
}

/// `k8s\0` + `runtime.Unknown{typeMeta: {apiVersion, kind}, raw,
/// contentEncoding: "", contentType: ""}`, byte for byte as Go's protobuf
/// serializer writes it.
pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(envelope_len(api_version, kind, raw.len()));
    put_envelope_head(&mut out, api_version, kind, raw.len());
    out.extend_from_slice(raw);
    put_envelope_tail(&mut out);
    out
}

/// The size of [`envelope`]'s output for a `raw_len`-byte message.
fn envelope_len(api_version: &str, kind: &str, raw_len: usize) -> usize {
    let type_meta_len = field_len(1, api_version.len()) + field_len(2, kind.len());
    MAGIC.len() + field_len(1, type_meta_len) + field_len(2, raw_len) + 4
}

/// The envelope up to the `raw` bytes (which the caller appends).
fn put_envelope_head(out: &mut Vec<u8>, api_version: &str, kind: &str, raw_len: usize) {
    let type_meta_len = field_len(1, api_version.len()) + field_len(2, kind.len());
    out.extend_from_slice(MAGIC);
    put_key(out, 1, WIRE_LEN);
    put_varint(out, type_meta_len as u64);
    put_bytes(out, 1, api_version.as_bytes());
    put_bytes(out, 2, kind.as_bytes());
    put_key(out, 2, WIRE_LEN);
    put_varint(out, raw_len as u64);
}

/// The envelope after `raw`: empty contentEncoding and contentType.
fn put_envelope_tail(out: &mut Vec<u8>) {
    put_bytes(out, 3, b"");
    put_bytes(out, 4, b"");
}

/// A list body (`k8s\0` + `runtime.Unknown` of `<Kind>List{metadata = 1;
/// items = 2}`) from the list's metadata (ListMeta JSON) and the items'
/// message encodings ([`encode_object`]), which are copied, not re-encoded.
pub fn encode_list<'a>(
    api_version: &str,
    list_kind: &str,
    list_meta: &Value,
    items: impl IntoIterator<Item = &'a [u8]> + Clone,
) -> Result<Vec<u8>, ProtobufError> {
    let index = kind_index(api_version, list_kind)
        .ok_or_else(|| not_marshalable(api_version, list_kind))?;
    let msg = MESSAGES
        .get(index)
        .ok_or_else(|| ProtobufError::UnknownMessage(format!("#{index}")))?;
    let meta_field = msg.2.iter().find(|f| f.0 == 1 && f.1 == "metadata");
    let items_field = msg
        .2
        .iter()
        .find(|f| f.0 == 2 && f.1 == "items" && f.2 == Card::Repeated);
    let (Some(Field(_, _, _, Ty::Message(meta_index))), Some(_)) = (meta_field, items_field) else {
        return Err(encode_err(
            msg.0,
            "not a list message (metadata = 1, items = 2)",
        ));
    };
    let mut meta = Vec::new();
    encode_msg(&mut meta, usize::from(*meta_index), list_meta, 1)?;
    let mut raw_len = field_len(1, meta.len());
    for item in items.clone() {
        raw_len = raw_len.saturating_add(field_len(2, item.len()));
    }
    // Written in place: the items are copied once.
    let mut out = Vec::with_capacity(envelope_len(api_version, list_kind, raw_len));
    put_envelope_head(&mut out, api_version, list_kind, raw_len);
    put_bytes(&mut out, 1, &meta);
    for item in items {
        put_bytes(&mut out, 2, item);
    }
    put_envelope_tail(&mut out);
    Ok(out)
}

/// The `metav1.WatchEvent{type, object: RawExtension{raw: object}}` message
/// of a watch stream in protobuf, where `object` is the object's full body
/// ([`encode`] / [`envelope`]). Go's watch encoder writes the event with the
/// raw serializer: no `k8s\0` magic and no `runtime.Unknown` around it.
pub fn watch_event(event_type: &str, object: &[u8]) -> Vec<u8> {
    let ext_len = field_len(1, object.len());
    let mut out = Vec::with_capacity(field_len(1, event_type.len()) + field_len(2, ext_len));
    put_bytes(&mut out, 1, event_type.as_bytes());
    put_key(&mut out, 2, WIRE_LEN);
    put_varint(&mut out, ext_len as u64);
    put_bytes(&mut out, 1, object);
    out
}

/// A whole watch frame ([`frame`] of [`watch_event`] of [`envelope`]) for
/// an object's message encoding `raw`, written with one allocation.
pub fn watch_frame(event_type: &str, api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let object_len = envelope_len(api_version, kind, raw.len());
    let ext_len = field_len(1, object_len);
    let event_len = field_len(1, event_type.len()) + field_len(2, ext_len);
    let mut out = Vec::with_capacity(event_len + 4);
    out.extend_from_slice(&u32::try_from(event_len).unwrap_or(u32::MAX).to_be_bytes());
    put_bytes(&mut out, 1, event_type.as_bytes());
    put_key(&mut out, 2, WIRE_LEN);
    put_varint(&mut out, ext_len as u64);
    put_key(&mut out, 1, WIRE_LEN);
    put_varint(&mut out, object_len as u64);
    put_envelope_head(&mut out, api_version, kind, raw.len());
    out.extend_from_slice(raw);
    put_envelope_tail(&mut out);
    out
}

/// One frame of a length-delimited protobuf stream (apimachinery's
/// `LengthDelimitedFramer`): a 4-byte big-endian length, then the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(message.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Decodes one watch event message (a frame's payload, without the length)
/// into `(type, object)`.
pub fn decode_watch_event(message: &[u8]) -> Result<(String, Value), ProtobufError> {
    let v = super::decode_message(WATCH_EVENT, message)?;
    let event_type = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let object = v.get("object").cloned().unwrap_or(Value::Null);
    Ok((event_type, object))
}

fn type_meta(object: &Value) -> Result<(&str, &str), ProtobufError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    match (api_version, kind) {
        (Some(v), Some(k)) if !v.is_empty() && !k.is_empty() => Ok((v, k)),
        _ => Err(ProtobufError::MissingTypeMeta),
    }
}

fn not_marshalable(api_version: &str, kind: &str) -> ProtobufError {
    ProtobufError::NotMarshalable {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    }
}

fn encode_err(message: &'static str, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::Unencodable {
        message,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Wire format.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits, at least 1.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u64) {
    put_varint(out, (u64::from(tag) << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, WIRE_LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encoded size of a length-delimited field with a `len`-byte payload.
fn field_len(tag: u32, len: usize) -> usize {
    varint_len(u64::from(tag) << 3) + varint_len(len as u64) + len
}

/// Writes a length-delimited field whose payload `write` appends to `out`,
/// then puts the length before it (one reserved byte, shifted when the
/// length needs more).
fn put_nested(
    out: &mut Vec<u8>,
    tag: u32,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), ProtobufError>,
) -> Result<(), ProtobufError> {
    put_key(out, tag, WIRE_LEN);
    let at = out.len();
    out.push(0);
    write(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        if let Some(b) = out.get_mut(at) {
            *b = len as u8;
        }
    } else {
        let mut prefix = Vec::with_capacity(10);
        put_varint(&mut prefix, len as u64);
        out.splice(at..at + 1, prefix);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Messages.

fn encode_msg(
    out: &mut Vec<u8>,
    index: usize,
    value: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let msg = MESSAGES
        .get(index)
        .ok_or_else(|| ProtobufError::UnknownMessage(format!("#{index}")))?;
    if msg.1 != Special::None {
        return encode_special(out, msg, value, depth);
    }
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Null => return Ok(()),
        other => {
            return Err(encode_err(
                msg.0,
                format!("expected an object, got {}", json_type(other)),
            ));
        }
    };
    let fields = msg.2;
    if fields.windows(2).all(|w| w[0].0 < w[1].0) {
        for field in fields {
            encode_field(out, msg, field, obj, value, depth)?;
        }
    } else {
        let mut sorted: Vec<&Field> = fields.iter().collect();
        sorted.sort_by_key(|f| f.0);
        for field in sorted {
            encode_field(out, msg, field, obj, value, depth)?;
        }
    }
    Ok(())
}

fn encode_field(
    out: &mut Vec<u8>,
    msg: &Message,
    field: &Field,
    obj: &Map<String, Value>,
    whole: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    if field.2 == Card::Embedded {
        // An inline Go struct: its fields are the parent's JSON object's.
        let Ty::Message(i) = field.3 else {
            return Err(encode_err(
                msg.0,
                format!("embedded field {} is not a message", field.1),
            ));
        };
        return put_nested(out, field.0, |out| {
            encode_msg(out, usize::from(i), whole, depth + 1)
        });
    }
    let Some(v) = obj.get(field.1) else {
        return Ok(());
    };
    match field.2 {
        Card::Repeated => match v {
            Value::Array(items) => {
                for item in items {
                    encode_value(out, msg, field, item, depth)?;
                }
                Ok(())
            }
            Value::Null => Ok(()),
            other => Err(encode_err(
                msg.0,
                format!(
                    "field {} must be an array, got {}",
                    field.1,
                    json_type(other)
                ),
            )),
        },
        Card::Map => match v {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, val) in entries {
                    put_nested(out, field.0, |out| {
                        put_bytes(out, 1, k.as_bytes());
                        let entry = Field(2, field.1, Card::Optional, field.3);
                        if val.is_null() {
                            encode_zero(out, msg, &entry, depth)
                        } else {
                            encode_value(out, msg, &entry, val, depth)
                        }
                    })?;
                }
                Ok(())
            }
            Value::Null => Ok(()),
            other => Err(encode_err(
                msg.0,
                format!(
                    "field {} must be an object, got {}",
                    field.1,
                    json_type(other)
                ),
            )),
        },
        _ => {
            if v.is_null() {
                // A null pointer is an absent field; a null value-typed Time
                // (creationTimestamp) is the zero Time: an empty message.
                if let Ty::Message(i) = field.3
                    && matches!(
                        MESSAGES.get(usize::from(i)).map(|m| m.1),
                        Some(Special::Time | Special::MicroTime)
                    )
                {
                    put_bytes(out, field.0, b"");
                }
                return Ok(());
            }
            encode_value(out, msg, field, v, depth)
        }
    }
}

/// A map entry's value when the JSON has `null`: the type's zero value.
fn encode_zero(
    out: &mut Vec<u8>,
    msg: &Message,
    field: &Field,
    depth: usize,
) -> Result<(), ProtobufError> {
    let zero = match field.3 {
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 | Ty::Double => Value::from(0),
        Ty::Message(_) => return put_nested(out, field.0, |_| Ok(())),
    };
    encode_value(out, msg, field, &zero, depth)
}

/// Writes one occurrence of `field` (key and value).
fn encode_value(
    out: &mut Vec<u8>,
    msg: &Message,
    field: &Field,
    v: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    let wrong = |want: &str| {
        encode_err(
            msg.0,
            format!("field {} must be {want}, got {}", field.1, json_type(v)),
        )
    };
    match field.3 {
        Ty::String => {
            let s = v.as_str().ok_or_else(|| wrong("a string"))?;
            put_bytes(out, field.0, s.as_bytes());
        }
        Ty::Bytes => {
            let s = v.as_str().ok_or_else(|| wrong("a base64 string"))?;
            let b = base64_decode(s).ok_or_else(|| {
                encode_err(msg.0, format!("field {} is not valid base64", field.1))
            })?;
            put_bytes(out, field.0, &b);
        }
        Ty::Bool => {
            let b = v.as_bool().ok_or_else(|| wrong("a boolean"))?;
            put_key(out, field.0, WIRE_VARINT);
            put_varint(out, u64::from(b));
        }
        Ty::Int32 => {
            let n = integer(v).ok_or_else(|| wrong("an integer"))?;
            let n = i32::try_from(n).map_err(|_| {
                encode_err(
                    msg.0,
                    format!("field {} value {n} overflows int32", field.1),
                )
            })?;
            put_key(out, field.0, WIRE_VARINT);
            // Negative int32 values are sign-extended to 64 bits, as Go writes them.
            put_varint(out, i64::from(n) as u64);
        }
        Ty::Int64 => {
            let n = integer(v).ok_or_else(|| wrong("an integer"))?;
            put_key(out, field.0, WIRE_VARINT);
            put_varint(out, n as u64);
        }
        Ty::Double => {
            let f = v.as_f64().ok_or_else(|| wrong("a number"))?;
            put_key(out, field.0, WIRE_FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Ty::Message(i) => {
            put_nested(out, field.0, |out| {
                encode_msg(out, usize::from(i), v, depth + 1)
            })?;
        }
    }
    Ok(())
}

/// A JSON number that is an integer (also `3.0`, as Go's decoder accepts).
fn integer(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Some(f as i64)
    } else {
        None
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The fields of a message with a custom JSON form, from that form.
fn encode_special(
    out: &mut Vec<u8>,
    msg: &Message,
    v: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    let name = msg.0;
    let sub = |tag: u32| -> Result<usize, ProtobufError> {
        match msg.2.iter().find(|f| f.0 == tag).map(|f| f.3) {
            Some(Ty::Message(i)) => Ok(usize::from(i)),
            _ => Err(encode_err(name, format!("no message field {tag}"))),
        }
    };
    let put_int = |out: &mut Vec<u8>, tag: u32, n: i64| {
        put_key(out, tag, WIRE_VARINT);
        put_varint(out, n as u64);
    };
    match msg.1 {
        Special::None => Err(encode_err(name, "not a message with a custom JSON form")),
        Special::Time | Special::MicroTime => {
            let Some(s) = v.as_str() else {
                if v.is_null() {
                    return Ok(());
                }
                return Err(encode_err(
                    name,
                    format!("expected a time string, got {}", json_type(v)),
                ));
            };
            let (seconds, nanos) = parse_rfc3339(s)
                .ok_or_else(|| encode_err(name, format!("{s:?} is not an RFC 3339 time")))?;
            let nanos = if msg.1 == Special::Time {
                0
            } else {
                nanos / 1000 * 1000
            };
            put_int(out, 1, seconds);
            put_int(out, 2, nanos);
            Ok(())
        }
        Special::Duration => {
            let s = v.as_str().ok_or_else(|| {
                encode_err(
                    name,
                    format!("expected a duration string, got {}", json_type(v)),
                )
            })?;
            let nanos = crate::duration::parse_go(s)
                .ok_or_else(|| encode_err(name, format!("{s:?} is not a duration")))?;
            put_int(out, 1, nanos);
            Ok(())
        }
        Special::Quantity => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(encode_err(
                        name,
                        format!("expected a quantity, got {}", json_type(other)),
                    ));
                }
            };
            put_bytes(out, 1, s.as_bytes());
            Ok(())
        }
        Special::IntOrString => {
            match v {
                Value::String(s) => {
                    put_int(out, 1, 1);
                    put_int(out, 2, 0);
                    put_bytes(out, 3, s.as_bytes());
                }
                Value::Number(_) => {
                    let n = integer(v)
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| encode_err(name, format!("{v} is not an int32")))?;
                    put_int(out, 1, 0);
                    put_int(out, 2, i64::from(n));
                    put_bytes(out, 3, b"");
                }
                other => {
                    return Err(encode_err(
                        name,
                        format!("expected a number or a string, got {}", json_type(other)),
                    ));
                }
            }
            Ok(())
        }
        Special::RawJson => {
            if !v.is_null() {
                let raw = serde_json::to_vec(v).map_err(|e| encode_err(name, e.to_string()))?;
                put_bytes(out, 1, &raw);
            }
            Ok(())
        }
        Special::SchemaOrArray | Special::SchemaOrStringArray => match v {
            Value::Array(items) => {
                if msg.1 == Special::SchemaOrArray {
                    let schema = sub(2)?;
                    for item in items {
                        put_nested(out, 2, |out| encode_msg(out, schema, item, depth + 1))?;
                    }
                } else {
                    for item in items {
                        let s = item.as_str().ok_or_else(|| {
                            encode_err(name, format!("expected strings, got {}", json_type(item)))
                        })?;
                        put_bytes(out, 2, s.as_bytes());
                    }
                }
                Ok(())
            }
            Value::Null => Ok(()),
            other => {
                let schema = sub(1)?;
                put_nested(out, 1, |out| encode_msg(out, schema, other, depth + 1))
            }
        },
        Special::SchemaOrBool => match v {
            Value::Bool(b) => {
                put_int(out, 1, i64::from(*b));
                Ok(())
            }
            Value::Null => Ok(()),
            other => {
                let schema = sub(2)?;
                put_int(out, 1, 1);
                put_nested(out, 2, |out| encode_msg(out, schema, other, depth + 1))
            }
        },
        Special::StringList => match v {
            Value::Array(items) => {
                for item in items {
                    let s = item.as_str().ok_or_else(|| {
                        encode_err(name, format!("expected strings, got {}", json_type(item)))
                    })?;
                    put_bytes(out, 1, s.as_bytes());
                }
                Ok(())
            }
            Value::Null => Ok(()),
            other => Err(encode_err(
                name,
                format!("expected an array of strings, got {}", json_type(other)),
            )),
        },
    }
}

// ---------------------------------------------------------------------------
// Value parsing (the inverse of the decoder's formatting).

/// `2006-01-02T15:04:05Z`, with an optional fraction and a `Z` or `±hh:mm`
/// offset, to (seconds since the epoch, nanoseconds).
fn parse_rfc3339(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let (h, m, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if sep(i, b".,") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let o = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + h * 3600 + m * 60 + sec - offset, nanos))
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Standard base64 (padding optional, as Go's JSON decoder of `[]byte`
/// also ignores `\r` and `\n`).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            b'\r' | b'\n' => continue,
            _ => return None,
        };
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 || bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }

    #[test]
    fn nested_lengths_are_shifted() {
        for n in [0usize, 1, 127, 128, 20_000] {
            let mut out = vec![7u8];
            put_nested(&mut out, 2, |o| {
                o.extend(std::iter::repeat_n(0xaa, n));
                Ok(())
            })
            .unwrap();
            let mut want = vec![7u8];
            put_bytes(&mut want, 2, &vec![0xaa; n]);
            assert_eq!(out, want, "{n}");
        }
    }

    #[test]
    fn times_and_durations_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some((1_700_000_000, 0))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456Z"),
            Some((1_700_000_000, 123_456_000))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some((1_700_000_000, 0))
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some((-1, 0)));
        for bad in [
            "",
            "2023-11-14",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
            "x023-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for (s, n) in [
            ("0s", 0),
            ("0", 0),
            ("5s", 5_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1h0m0s", 3_600_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1.5ms", 1_500_000),
            ("2.5µs", 2_500),
            ("2.5us", 2_500),
            ("7ns", 7),
            ("-5s", -5_000_000_000),
        ] {
            assert_eq!(crate::duration::parse_go(s), Some(n), "{s}");
            if s != "0" && s != "2.5us" {
                assert_eq!(super::super::go_duration(n), s);
            }
        }
        for bad in ["", "5", "s", "5x", "1.s5", "9999999999999999h"] {
            assert_eq!(crate::duration::parse_go(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64_round_trip() {
        for b in [
            &b""[..],
            b"v",
            b"ab",
            b"abc",
            &[0xde, 0xad, 0xbe, 0xef, 0x00],
        ] {
            assert_eq!(base64_decode(&super::super::base64(b)).unwrap(), b);
        }
        assert_eq!(base64_decode("dg").unwrap(), b"v");
        assert_eq!(base64_decode("d*=="), None);
        assert_eq!(base64_decode("dg==dg"), None);
    }

    use serde_json::json;

    /// `decode(encode(x)) == x`, and the envelope's type meta.
    fn round_trip(v: &Value) {
        let body = encode(v).unwrap();
        assert!(body.starts_with(MAGIC));
        assert_eq!(super::super::decode(&body).unwrap(), *v);
    }

    fn object_meta(name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            FieldsV1, ManagedFieldsEntry, OwnerReference, Time,
        };
        let t = Time(jiff::Timestamp::from_second(1_700_000_000).unwrap());
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some("0b5e6a3c-1111-2222-3333-444455556666".into()),
            resource_version: Some("42".into()),
            generation: Some(3),
            creation_timestamp: Some(t.clone()),
            deletion_timestamp: Some(t.clone()),
            deletion_grace_period_seconds: Some(0),
            labels: Some(
                [
                    ("app".to_string(), "web".to_string()),
                    ("empty".into(), String::new()),
                ]
                .into(),
            ),
            annotations: Some([("a/b".to_string(), "x\ny".to_string())].into()),
            finalizers: Some(vec!["kubernetes".into()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-1".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }]),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                operation: Some("Update".into()),
                api_version: Some("v1".into()),
                time: Some(t),
                fields_type: Some("FieldsV1".into()),
                fields_v1: Some(FieldsV1(
                    json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}),
                )),
                subresource: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn k8s_openapi_objects_round_trip() {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::apps::v1 as apps;
        use k8s_openapi::api::coordination::v1 as coordination;
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime};
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

        let container = core::Container {
            name: "web".into(),
            image: Some("nginx:1.25".into()),
            command: Some(vec!["/bin/sh".into(), "-c".into(), "exec nginx".into()]),
            ports: Some(vec![core::ContainerPort {
                container_port: 8080,
                host_port: Some(-1),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            env: Some(vec![core::EnvVar {
                name: "POD_IP".into(),
                value_from: Some(core::EnvVarSource {
                    field_ref: Some(core::ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            resources: Some(core::ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".into(), Quantity("500m".into())),
                        ("memory".into(), Quantity("128Mi".into())),
                    ]
                    .into(),
                ),
                requests: Some([("cpu".into(), Quantity("0".into()))].into()),
                ..Default::default()
            }),
            readiness_probe: Some(core::Probe {
                http_get: Some(core::HTTPGetAction {
                    path: Some("/healthz".into()),
                    port: IntOrString::String("http".into()),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                termination_grace_period_seconds: Some(0),
                ..Default::default()
            }),
            liveness_probe: Some(core::Probe {
                tcp_socket: Some(core::TCPSocketAction {
                    port: IntOrString::Int(8080),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = core::Pod {
            metadata: object_meta("web-0"),
            spec: Some(core::PodSpec {
                containers: vec![container.clone()],
                init_containers: Some(vec![container.clone()]),
                volumes: Some(vec![core::Volume {
                    name: "cfg".into(),
                    config_map: Some(core::ConfigMapVolumeSource {
                        name: "cm".into(),
                        default_mode: Some(0o644),
                        optional: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                tolerations: Some(vec![core::Toleration {
                    key: Some("node.kubernetes.io/not-ready".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(300),
                    ..Default::default()
                }]),
                node_selector: Some([("kubernetes.io/os".into(), "linux".into())].into()),
                automount_service_account_token: Some(false),
                termination_grace_period_seconds: Some(30),
                priority: Some(-5),
                overhead: Some([("cpu".into(), Quantity("10m".into()))].into()),
                ..Default::default()
            }),
            status: Some(core::PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.42.0.7".into()),
                pod_ips: Some(vec![core::PodIP {
                    ip: "10.42.0.7".into(),
                }]),
                start_time: object_meta("x").creation_timestamp,
                conditions: Some(vec![core::PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: object_meta("x").creation_timestamp,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let deployment = apps::Deployment {
            metadata: object_meta("web"),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                selector: LabelSelector {
                    match_labels: Some([("app".into(), "web".into())].into()),
                    ..Default::default()
                },
                template: core::PodTemplateSpec {
                    metadata: Some(object_meta("tmpl")),
                    spec: Some(core::PodSpec {
                        containers: vec![container],
                        ..Default::default()
                    }),
                },
                strategy: Some(apps::DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String("25%".into())),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus {
                replicas: Some(3),
                ..Default::default()
            }),
        };
        let secret = core::Secret {
            metadata: object_meta("s"),
            data: Some(
                [
                    ("k".into(), ByteString(vec![0, 1, 2, 255])),
                    ("e".into(), ByteString(vec![])),
                ]
                .into(),
            ),
            type_: Some("Opaque".into()),
            immutable: Some(true),
            ..Default::default()
        };
        let service = core::Service {
            metadata: object_meta("svc"),
            spec: Some(core::ServiceSpec {
                cluster_ip: Some("10.43.0.10".into()),
                cluster_ips: Some(vec!["10.43.0.10".into()]),
                ports: Some(vec![core::ServicePort {
                    name: Some("dns".into()),
                    port: 53,
                    target_port: Some(IntOrString::Int(53)),
                    protocol: Some("UDP".into()),
                    node_port: Some(30053),
                    ..Default::default()
                }]),
                session_affinity_config: Some(core::SessionAffinityConfig {
                    client_ip: Some(core::ClientIPConfig {
                        timeout_seconds: Some(10800),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let lease = coordination::Lease {
            metadata: object_meta("node-1"),
            spec: Some(coordination::LeaseSpec {
                holder_identity: Some("node-1".into()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(
                    jiff::Timestamp::new(1_700_000_000, 123_456_000).unwrap(),
                )),
                ..Default::default()
            }),
        };
        let event = core::Event {
            metadata: object_meta("e"),
            involved_object: core::ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web-0".into()),
                ..Default::default()
            },
            count: Some(2),
            first_timestamp: object_meta("x").creation_timestamp,
            event_time: Some(MicroTime(
                jiff::Timestamp::new(1_700_000_001, 5_000).unwrap(),
            )),
            reason: Some("Started".into()),
            ..Default::default()
        };
        let crd = apiext::CustomResourceDefinition {
            metadata: object_meta("widgets.example.com"),
            spec: apiext::CustomResourceDefinitionSpec {
                group: "example.com".into(),
                names: apiext::CustomResourceDefinitionNames {
                    kind: "Widget".into(),
                    plural: "widgets".into(),
                    ..Default::default()
                },
                scope: "Namespaced".into(),
                versions: vec![apiext::CustomResourceDefinitionVersion {
                    name: "v1".into(),
                    served: true,
                    storage: true,
                    schema: Some(apiext::CustomResourceValidation {
                        open_api_v3_schema: Some(apiext::JSONSchemaProps {
                            type_: Some("object".into()),
                            maximum: Some(10.5),
                            x_kubernetes_preserve_unknown_fields: Some(true),
                            additional_properties: Some(apiext::JSONSchemaPropsOrBool::Bool(false)),
                            properties: Some(
                                [(
                                    "list".into(),
                                    apiext::JSONSchemaProps {
                                        type_: Some("array".into()),
                                        items: Some(apiext::JSONSchemaPropsOrArray::Schema(
                                            Box::new(apiext::JSONSchemaProps {
                                                type_: Some("string".into()),
                                                enum_: Some(vec![
                                                    apiext::JSON(json!("a")),
                                                    apiext::JSON(json!({"b": [1, null]})),
                                                ]),
                                                ..Default::default()
                                            }),
                                        )),
                                        ..Default::default()
                                    },
                                )]
                                .into(),
                            ),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            status: None,
        };
        let objects = [
            serde_json::to_value(&pod).unwrap(),
            serde_json::to_value(&deployment).unwrap(),
            serde_json::to_value(&secret).unwrap(),
            serde_json::to_value(&service).unwrap(),
            serde_json::to_value(&lease).unwrap(),
            serde_json::to_value(&event).unwrap(),
            serde_json::to_value(&crd).unwrap(),
        ];
        for v in &objects {
            round_trip(v);
        }
        // A null creationTimestamp (the zero Time) is an empty message.
        round_trip(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "creationTimestamp": null}, "data": {"a": "1"}}),
        );
        // Durations and the apiextensions helpers' other forms.
        round_trip(
            &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}}),
        );
        let schema_name =
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        for v in [
            json!({"type": "object", "additionalProperties": {"type": "string"}, "items": [{"type": "integer"}, {"type": "string"}]}),
            json!({"dependencies": {"a": ["b", "c"], "d": {"type": "object"}}}),
            json!({"default": {"x": [1, 2]}, "example": "s"}),
        ] {
            let raw = encode_message(schema_name, &v).unwrap();
            assert_eq!(super::super::decode_message(schema_name, &raw).unwrap(), v);
        }
        let user = "io.k8s.api.authentication.v1.UserInfo";
        let v = json!({"username": "alice", "extra": {"scopes": ["a", "b"]}});
        assert_eq!(
            super::super::decode_message(user, &encode_message(user, &v).unwrap()).unwrap(),
            v
        );
        let d = "io.k8s.apimachinery.pkg.apis.meta.v1.Duration";
        for s in ["0s", "1m30s", "1.5ms", "-5s"] {
            assert_eq!(
                super::super::decode_message(d, &encode_message(d, &json!(s)).unwrap()).unwrap(),
                s
            );
        }
    }

    #[test]
    fn bytes_of_a_config_map() {
        // Written field by field: the envelope as Go writes it, fields in tag
        // order, map entries sorted by key, proto2 presence.
        let v = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "creationTimestamp": "1970-01-01T00:00:01Z", "labels": {"b": "2", "a": "1"}},
            "data": {"k": "v"},
            "immutable": false,
        });
        let body = encode(&v).unwrap();
        let meta: &[u8] = &[
            0x0a, 0x01, b'x', // name
            0x42, 0x04, 0x08, 0x01, 0x10, 0x00, // creationTimestamp {seconds 1, nanos 0}
            0x5a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'1', // labels a=1
            0x5a, 0x06, 0x0a, 0x01, b'b', 0x12, 0x01, b'2', // labels b=2
        ];
        let mut raw = vec![0x0a, meta.len() as u8];
        raw.extend_from_slice(meta);
        raw.extend_from_slice(&[0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']); // data
        raw.extend_from_slice(&[0x20, 0x00]); // immutable: false (present)
        let mut want = b"k8s\0".to_vec();
        want.extend_from_slice(&[0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
        want.extend_from_slice(b"ConfigMap");
        want.extend_from_slice(&[0x12, raw.len() as u8]);
        want.extend_from_slice(&raw);
        want.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
        assert_eq!(body, want);
    }

    #[test]
    fn lists_and_watch_events() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "5"}, "data": {"k": "v"}});
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "resourceVersion": "6"}});
        let items = [encode_object(&a).unwrap(), encode_object(&b).unwrap()];
        let list = encode_list(
            "v1",
            "ConfigMapList",
            &json!({"resourceVersion": "7", "continue": "c", "remainingItemCount": 0}),
            items.iter().map(Vec::as_slice),
        )
        .unwrap();
        let strip = |mut v: Value| {
            if let Some(o) = v.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
            v
        };
        assert_eq!(
            super::super::decode(&list).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMapList",
                "metadata": {"resourceVersion": "7", "continue": "c", "remainingItemCount": 0},
                "items": [strip(a.clone()), strip(b.clone())]})
        );
        // An empty list still has its metadata.
        let empty = encode_list(
            "apps/v1",
            "DeploymentList",
            &json!({"resourceVersion": "1"}),
            std::iter::empty::<&[u8]>(),
        )
        .unwrap();
        assert_eq!(
            super::super::decode(&empty).unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "1"}})
        );
        assert!(matches!(
            encode_list("v1", "ConfigMap", &json!({}), std::iter::empty::<&[u8]>()),
            Err(ProtobufError::Unencodable { .. })
        ));

        let event = watch_event("ADDED", &encode(&a).unwrap());
        let framed = frame(&event);
        assert_eq!(
            watch_frame("ADDED", "v1", "ConfigMap", &encode_object(&a).unwrap()),
            framed
        );
        assert_eq!(framed[..4], (event.len() as u32).to_be_bytes());
        assert!(
            !event.starts_with(MAGIC),
            "the event itself has no envelope"
        );
        let (t, obj) = decode_watch_event(&framed[4..]).unwrap();
        assert_eq!((t.as_str(), obj), ("ADDED", a));
    }

    #[test]
    fn what_cannot_be_encoded() {
        assert!(has_protobuf("v1", "Pod"));
        assert!(has_protobuf("meta.k8s.io/v1", "PartialObjectMetadataList"));
        assert!(has_protobuf("v1", "Status"));
        assert!(!has_protobuf("example.com/v1", "Widget"));
        assert!(!has_protobuf("meta.k8s.io/v1", "Table"));
        assert!(matches!(
            encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})),
            Err(ProtobufError::NotMarshalable { .. })
        ));
        assert_eq!(
            encode(&json!({"kind": "Pod"})).unwrap_err(),
            ProtobufError::MissingTypeMeta
        );
        for bad in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": "nope"}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "binaryData": {"a": "!!"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"creationTimestamp": "yesterday"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"priority": 4_294_967_296_u64}}),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": {}}}),
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"targetPort": true}]}}),
        ] {
            assert!(
                matches!(encode(&bad), Err(ProtobufError::Unencodable { .. })),
                "{bad}"
            );
        }
    }

    /// The same object encoded by prost (an independent protobuf
    /// implementation) from message definitions written from the upstream
    /// generated.proto files, compared byte for byte.
    mod prost_cross_check {
        use super::*;
        use std::collections::BTreeMap;

        #[derive(Clone, PartialEq, prost::Message)]
        struct Unknown {
            #[prost(message, optional, tag = "1")]
            type_meta: Option<TypeMeta>,
            #[prost(bytes = "vec", optional, tag = "2")]
            raw: Option<Vec<u8>>,
            #[prost(string, optional, tag = "3")]
            content_encoding: Option<String>,
            #[prost(string, optional, tag = "4")]
            content_type: Option<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct TypeMeta {
            #[prost(string, optional, tag = "1")]
            api_version: Option<String>,
            #[prost(string, optional, tag = "2")]
            kind: Option<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Time {
            #[prost(int64, optional, tag = "1")]
            seconds: Option<i64>,
            #[prost(int32, optional, tag = "2")]
            nanos: Option<i32>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct OwnerReference {
            #[prost(string, optional, tag = "1")]
            kind: Option<String>,
            #[prost(string, optional, tag = "3")]
            name: Option<String>,
            #[prost(string, optional, tag = "4")]
            uid: Option<String>,
            #[prost(string, optional, tag = "5")]
            api_version: Option<String>,
            #[prost(bool, optional, tag = "6")]
            controller: Option<bool>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct ObjectMeta {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
            #[prost(string, optional, tag = "3")]
            namespace: Option<String>,
            #[prost(string, optional, tag = "5")]
            uid: Option<String>,
            #[prost(string, optional, tag = "6")]
            resource_version: Option<String>,
            #[prost(int64, optional, tag = "7")]
            generation: Option<i64>,
            #[prost(message, optional, tag = "8")]
            creation_timestamp: Option<Time>,
            #[prost(btree_map = "string, string", tag = "11")]
            labels: BTreeMap<String, String>,
            #[prost(message, repeated, tag = "13")]
            owner_references: Vec<OwnerReference>,
            #[prost(string, repeated, tag = "14")]
            finalizers: Vec<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Quantity {
            #[prost(string, optional, tag = "1")]
            string: Option<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct IntOrString {
            #[prost(int64, optional, tag = "1")]
            r#type: Option<i64>,
            #[prost(int32, optional, tag = "2")]
            int_val: Option<i32>,
            #[prost(string, optional, tag = "3")]
            str_val: Option<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct HttpGetAction {
            #[prost(string, optional, tag = "1")]
            path: Option<String>,
            #[prost(message, optional, tag = "2")]
            port: Option<IntOrString>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct ProbeHandler {
            #[prost(message, optional, tag = "2")]
            http_get: Option<HttpGetAction>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Probe {
            #[prost(message, optional, tag = "1")]
            handler: Option<ProbeHandler>,
            #[prost(int32, optional, tag = "4")]
            period_seconds: Option<i32>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct ContainerPort {
            #[prost(int32, optional, tag = "3")]
            container_port: Option<i32>,
            #[prost(string, optional, tag = "4")]
            protocol: Option<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct ResourceRequirements {
            #[prost(btree_map = "string, message", tag = "1")]
            limits: BTreeMap<String, Quantity>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Container {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
            #[prost(string, optional, tag = "2")]
            image: Option<String>,
            #[prost(string, repeated, tag = "3")]
            command: Vec<String>,
            #[prost(message, repeated, tag = "6")]
            ports: Vec<ContainerPort>,
            #[prost(message, optional, tag = "8")]
            resources: Option<ResourceRequirements>,
            #[prost(message, optional, tag = "11")]
            readiness_probe: Option<Probe>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct PodSpec {
            #[prost(message, repeated, tag = "2")]
            containers: Vec<Container>,
            #[prost(string, optional, tag = "3")]
            restart_policy: Option<String>,
            #[prost(int64, optional, tag = "4")]
            termination_grace_period_seconds: Option<i64>,
            #[prost(bool, optional, tag = "21")]
            automount_service_account_token: Option<bool>,
            #[prost(int32, optional, tag = "25")]
            priority: Option<i32>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct PodStatus {
            #[prost(string, optional, tag = "1")]
            phase: Option<String>,
            #[prost(message, optional, tag = "7")]
            start_time: Option<Time>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Pod {
            #[prost(message, optional, tag = "1")]
            metadata: Option<ObjectMeta>,
            #[prost(message, optional, tag = "2")]
            spec: Option<PodSpec>,
            #[prost(message, optional, tag = "3")]
            status: Option<PodStatus>,
        }

        #[test]
        fn pod_bytes_match_prost() {
            let v = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "web-0", "namespace": "default", "uid": "u-1", "resourceVersion": "42",
                    "generation": 1, "creationTimestamp": "2023-11-14T22:13:20Z",
                    "labels": {"tier": "front", "app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u-0", "controller": true}],
                    "finalizers": ["a", "b"],
                },
                "spec": {
                    "containers": [{
                        "name": "web", "image": "nginx", "command": ["nginx", "-g", "daemon off;"],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
                        "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 0},
                    }, {"name": "sidecar", "image": "busybox", "readinessProbe": {"httpGet": {"port": 8080}}}],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "automountServiceAccountToken": false,
                    "priority": -1,
                },
                "status": {"phase": "Pending", "startTime": "2023-11-14T22:13:21Z"},
            });
            let ios_str = |s: &str| IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some(s.into()),
            };
            let ios_int = |n: i32| IntOrString {
                r#type: Some(0),
                int_val: Some(n),
                str_val: Some(String::new()),
            };
            let time = |s: i64| Time {
                seconds: Some(s),
                nanos: Some(0),
            };
            let pod = Pod {
                metadata: Some(ObjectMeta {
                    name: Some("web-0".into()),
                    namespace: Some("default".into()),
                    uid: Some("u-1".into()),
                    resource_version: Some("42".into()),
                    generation: Some(1),
                    creation_timestamp: Some(time(1_700_000_000)),
                    labels: [
                        ("tier".into(), "front".into()),
                        ("app".into(), "web".into()),
                    ]
                    .into(),
                    owner_references: vec![OwnerReference {
                        kind: Some("ReplicaSet".into()),
                        name: Some("web".into()),
                        uid: Some("u-0".into()),
                        api_version: Some("apps/v1".into()),
                        controller: Some(true),
                    }],
                    finalizers: vec!["a".into(), "b".into()],
                }),
                spec: Some(PodSpec {
                    containers: vec![
                        Container {
                            name: Some("web".into()),
                            image: Some("nginx".into()),
                            command: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
                            ports: vec![
                                ContainerPort {
                                    container_port: Some(80),
                                    protocol: Some("TCP".into()),
                                },
                                ContainerPort {
                                    container_port: Some(443),
                                    protocol: None,
                                },
                            ],
                            resources: Some(ResourceRequirements {
                                limits: [
                                    (
                                        "memory".into(),
                                        Quantity {
                                            string: Some("128Mi".into()),
                                        },
                                    ),
                                    (
                                        "cpu".into(),
                                        Quantity {
                                            string: Some("500m".into()),
                                        },
                                    ),
                                ]
                                .into(),
                            }),
                            readiness_probe: Some(Probe {
                                handler: Some(ProbeHandler {
                                    http_get: Some(HttpGetAction {
                                        path: Some("/".into()),
                                        port: Some(ios_str("http")),
                                    }),
                                }),
                                period_seconds: Some(0),
                            }),
                        },
                        Container {
                            name: Some("sidecar".into()),
                            image: Some("busybox".into()),
                            readiness_probe: Some(Probe {
                                handler: Some(ProbeHandler {
                                    http_get: Some(HttpGetAction {
                                        path: None,
                                        port: Some(ios_int(8080)),
                                    }),
                                }),
                                period_seconds: None,
                            }),
                            ..Default::default()
                        },
                    ],
                    restart_policy: Some("Always".into()),
                    termination_grace_period_seconds: Some(30),
                    automount_service_account_token: Some(false),
                    priority: Some(-1),
                }),
                status: Some(PodStatus {
                    phase: Some("Pending".into()),
                    start_time: Some(time(1_700_000_001)),
                }),
            };
            let unknown = Unknown {
                type_meta: Some(TypeMeta {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                }),
                raw: Some(prost::Message::encode_to_vec(&pod)),
                content_encoding: Some(String::new()),
                content_type: Some(String::new()),
            };
            let mut want = MAGIC.to_vec();
            want.extend(prost::Message::encode_to_vec(&unknown));
            assert_eq!(encode(&v).unwrap(), want);
        }
    }
}
