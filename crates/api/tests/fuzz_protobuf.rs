//! Fuzz targets for the protobuf decoder (what kubectl's typed clients send
//! as `application/vnd.kubernetes.protobuf`): arbitrary and mutated bytes
//! are an error, never a panic, and valid objects survive encode → decode.

mod fuzz_support;

use std::collections::BTreeMap;

use fuzz_support::fuzz;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use proptest::prelude::*;
use serde_json::Value;
use skiff_api::protobuf::{MAGIC, decode, decode_message, decode_watch_event, encode};

const MESSAGES: [&str; 6] = [
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.ConfigMap",
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.core.v1.Service",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
];

/// A non-empty string: Go writes an empty string field as absent in JSON
/// (`omitempty`), so "" does not survive the round trip there either.
fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![3 => "[a-z0-9-]{1,8}", 1 => "\\PC{1,8}"]
}

/// A map value, which may be empty.
fn map_value() -> impl Strategy<Value = String> + Clone {
    prop_oneof![3 => "[a-z0-9-]{0,8}", 1 => "\\PC{0,8}"]
}

/// Protobuf has no absent-versus-empty for maps and repeated fields (Go's
/// decoder gives nil for both): the generators leave them out when empty.
fn non_empty<T: std::fmt::Debug, C: IntoIterator<Item = T> + Clone + std::fmt::Debug>(
    c: Option<C>,
) -> Option<C> {
    c.filter(|c| c.clone().into_iter().next().is_some())
}

fn string_map() -> impl Strategy<Value = Option<BTreeMap<String, String>>> + Clone {
    prop::option::of(prop::collection::btree_map(text(), map_value(), 0..4)).prop_map(non_empty)
}

fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        text(),
        prop::option::of(text()),
        string_map(),
        string_map(),
        prop::option::of(any::<i64>()),
        prop::option::of(prop::collection::vec(text(), 0..3)),
    )
        .prop_map(
            |(name, namespace, labels, annotations, generation, finalizers)| ObjectMeta {
                name: Some(name),
                namespace,
                labels,
                annotations,
                generation,
                finalizers: non_empty(finalizers),
                ..Default::default()
            },
        )
}

fn quantity() -> impl Strategy<Value = Quantity> {
    prop_oneof!["[0-9]{1,4}(m|Mi|Gi|k|)", "\\PC{0,6}",].prop_map(Quantity)
}

fn container() -> impl Strategy<Value = core::Container> {
    (
        text(),
        prop::option::of(text()),
        prop::option::of(prop::collection::vec(text(), 0..3)),
        prop::option::of(prop::collection::vec(
            (any::<i32>(), prop::option::of(any::<i32>())).prop_map(|(p, h)| core::ContainerPort {
                container_port: p,
                host_port: h,
                ..Default::default()
            }),
            0..3,
        )),
        prop::option::of(prop::collection::btree_map(text(), quantity(), 0..3)),
        prop::option::of(prop::collection::vec(
            (text(), prop::option::of(text())).prop_map(|(name, value)| core::EnvVar {
                name,
                value,
                ..Default::default()
            }),
            0..3,
        )),
    )
        .prop_map(
            |(name, image, command, ports, limits, env)| core::Container {
                name,
                image,
                command: non_empty(command),
                ports: non_empty(ports),
                env: non_empty(env),
                resources: non_empty(limits).map(|l| core::ResourceRequirements {
                    limits: Some(l),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
}

fn pod() -> impl Strategy<Value = Value> {
    (
        meta(),
        prop::collection::vec(container(), 1..3),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i32>()),
        string_map(),
    )
        .prop_map(
            |(metadata, containers, deadline, grace, priority, selector)| {
                let pod = core::Pod {
                    metadata,
                    spec: Some(core::PodSpec {
                        containers,
                        active_deadline_seconds: deadline,
                        termination_grace_period_seconds: grace,
                        priority,
                        node_selector: selector,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                serde_json::to_value(&pod).unwrap_or(Value::Null)
            },
        )
}

fn config_map() -> impl Strategy<Value = Value> {
    (
        meta(),
        string_map(),
        prop::option::of(prop::collection::btree_map(
            text(),
            any::<Vec<u8>>().prop_map(ByteString),
            0..3,
        )),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(metadata, data, binary_data, immutable)| {
            let cm = core::ConfigMap {
                metadata,
                data,
                binary_data: non_empty(binary_data),
                immutable,
            };
            serde_json::to_value(&cm).unwrap_or(Value::Null)
        })
}

fn deployment() -> impl Strategy<Value = Value> {
    (
        meta(),
        prop::option::of(any::<i32>()),
        string_map(),
        container(),
    )
        .prop_map(|(metadata, replicas, labels, container)| {
            let d = apps::Deployment {
                metadata,
                spec: Some(apps::DeploymentSpec {
                    replicas,
                    selector: LabelSelector {
                        match_labels: labels.clone(),
                        ..Default::default()
                    },
                    template: core::PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels,
                            ..Default::default()
                        }),
                        spec: Some(core::PodSpec {
                            containers: vec![container],
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            };
            serde_json::to_value(&d).unwrap_or(Value::Null)
        })
}

fn valid_object() -> impl Strategy<Value = Value> {
    prop_oneof![pod(), config_map(), deployment()]
}

/// Valid objects: encode → decode gives the object back.
#[test]
fn fuzz_protobuf_round_trip() {
    fuzz("protobuf/round_trip", 512, valid_object(), |obj| {
        let body = encode(&obj).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
        let back = decode(&body).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
        prop_assert_eq!(back, obj);
        Ok(())
    });
}

/// Arbitrary bytes, with and without the `k8s\0` prefix, as a body and as
/// the message of each of a few kinds.
#[test]
fn fuzz_protobuf_arbitrary_bytes() {
    fuzz(
        "protobuf/arbitrary_bytes",
        4096,
        prop::collection::vec(any::<u8>(), 0..256),
        |bytes| {
            let _ = decode(&bytes);
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&bytes);
            let _ = decode(&body);
            for m in MESSAGES {
                let _ = decode_message(m, &bytes);
            }
            let _ = decode_watch_event(&bytes);
            Ok(())
        },
    );
}

/// Valid bodies with a few bytes changed, inserted or cut off: near-valid
/// input reaches far deeper than random bytes.
#[test]
fn fuzz_protobuf_mutated() {
    fuzz(
        "protobuf/mutated",
        1024,
        (
            valid_object(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        ),
        |(obj, edits)| {
            let Ok(mut body) = encode(&obj) else {
                return Ok(());
            };
            for (at, byte, how) in edits {
                if body.is_empty() {
                    break;
                }
                let i = at.index(body.len());
                match how {
                    0 => body[i] = byte,
                    1 => body.insert(i, byte),
                    _ => body.truncate(i),
                }
            }
            let _ = decode(&body);
            Ok(())
        },
    );
}

/// Deeply nested length-delimited fields: refused past the depth limit,
/// never a stack overflow.
#[test]
fn fuzz_protobuf_deep_nesting() {
    fuzz(
        "protobuf/deep_nesting",
        128,
        (
            prop::collection::vec(1u32..40, 1..400),
            0usize..MESSAGES.len(),
        ),
        |(tags, m)| {
            let mut msg: Vec<u8> = Vec::new();
            for tag in tags.iter().rev() {
                let mut outer = Vec::new();
                put_varint(&mut outer, u64::from(tag << 3 | 2));
                put_varint(&mut outer, msg.len() as u64);
                outer.extend_from_slice(&msg);
                msg = outer;
            }
            let _ = decode_message(MESSAGES[m], &msg);
            Ok(())
        },
    );
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
