//! Fuzz targets for the three patch types and server-side apply: no input
//! panics, JSON patch output stays within its promised growth, and a merge
//! patch computed from two objects turns the first into the second.

mod fuzz_support;

use fuzz_support::{fuzz, json_object, json_value, json_value_with};
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use skiff_api::apply::{apply, record_update};
use skiff_api::patch::{
    MAX_JSON_PATCH_COPY_BYTES, PatchSchema, json_patch, merge_patch, patch_schema_for,
    strategic_merge_patch,
};

const NOW: &str = "2026-01-01T00:00:00Z";

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

// ---------------------------------------------------------------------------
// JSON patch
// ---------------------------------------------------------------------------

fn pointer() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("a"),
        Just("b"),
        Just("c"),
        Just("0"),
        Just("1"),
        Just("-"),
        Just("~0"),
        Just("~1"),
        Just(""),
        Just("01"),
        Just("99999999999999999999999"),
    ];
    prop::collection::vec(seg, 0..4).prop_map(|segs| {
        segs.iter().fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(s);
            acc
        })
    })
}

/// One JSON patch operation, mostly well formed, sometimes not.
fn operation() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        Just("add"),
        Just("remove"),
        Just("replace"),
        Just("move"),
        Just("copy"),
        Just("test"),
        Just("bogus"),
    ];
    (
        op,
        pointer(),
        prop::option::of(pointer()),
        prop::option::of(json_value()),
    )
        .prop_map(|(op, path, from, value)| {
            let mut m = Map::new();
            m.insert("op".into(), op.into());
            m.insert("path".into(), path.into());
            if let Some(f) = from {
                m.insert("from".into(), f.into());
            }
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            Value::Object(m)
        })
}

fn json_doc() -> impl Strategy<Value = Value> {
    // Keys that the pointers above name, so that operations find their paths.
    json_value_with(prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("~".to_string()),
        Just("/".to_string()),
        Just(String::new()),
    ])
}

#[test]
fn fuzz_json_patch_operations() {
    fuzz(
        "json_patch/operations",
        512,
        (
            json_doc(),
            prop::collection::vec(operation(), 0..8),
            json_value(),
        ),
        |(doc, ops, junk)| {
            let patch = Value::Array(ops);
            if let Ok(out) = json_patch(&doc, &patch) {
                // Growth: what the patch carries, plus at most the copy limit.
                prop_assert!(
                    size(&out) <= size(&doc) + size(&patch) + MAX_JSON_PATCH_COPY_BYTES,
                    "{} -> {}",
                    size(&doc),
                    size(&out)
                );
            }
            // Anything that is not a list of operations is an error, not a panic.
            let _ = json_patch(&doc, &junk);
            Ok(())
        },
    );
}

/// Copy and add operations that copy the document into itself: bounded by
/// the copy limit, or refused.
#[test]
fn fuzz_json_patch_copy_growth() {
    let target = prop_oneof![Just("/a/-"), Just("/b"), Just("/c"), Just("/a/0"), Just("")];
    let from = prop_oneof![Just(""), Just("/a"), Just("/b"), Just("/c")];
    fuzz(
        "json_patch/copy_growth",
        64,
        (0usize..20_000, prop::collection::vec((from, target), 1..40)),
        |(len, ops)| {
            let doc = json!({"a": ["x".repeat(len)], "b": {}, "c": 1});
            let patch = Value::Array(
                ops.iter()
                    .map(|(f, t)| json!({"op": "copy", "from": f, "path": t}))
                    .collect(),
            );
            if let Ok(out) = json_patch(&doc, &patch) {
                prop_assert!(size(&out) <= size(&doc) + size(&patch) + MAX_JSON_PATCH_COPY_BYTES);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// JSON merge patch
// ---------------------------------------------------------------------------

/// RFC 7386's counterpart: the merge patch that turns `a` into `b`.
fn create_merge_patch(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut p = Map::new();
            for k in a.keys() {
                if !b.contains_key(k) {
                    p.insert(k.clone(), Value::Null);
                }
            }
            for (k, bv) in b {
                match a.get(k) {
                    Some(av) if av == bv => {}
                    Some(av) => {
                        p.insert(k.clone(), create_merge_patch(av, bv));
                    }
                    None => {
                        p.insert(k.clone(), bv.clone());
                    }
                }
            }
            Value::Object(p)
        }
        (_, b) => b.clone(),
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

fn without_nulls(mut v: Value) -> Value {
    fn prune(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(prune);
            }
            Value::Array(a) => {
                a.retain(|v| !v.is_null());
                a.iter_mut().for_each(prune);
            }
            _ => {}
        }
    }
    prune(&mut v);
    v
}

#[test]
fn fuzz_merge_patch() {
    fuzz(
        "merge_patch/arbitrary",
        512,
        (json_value(), json_value()),
        |(doc, patch)| {
            let _ = merge_patch(&doc, &patch);
            Ok(())
        },
    );
}

#[test]
fn fuzz_merge_patch_round_trip() {
    fuzz(
        "merge_patch/create_then_apply",
        512,
        (json_object(), json_object()),
        |(a, b)| {
            // A merge patch cannot say "set to null": b holds no null.
            let b = without_nulls(b);
            prop_assume!(!has_null(&b));
            let patch = create_merge_patch(&a, &b);
            let out = merge_patch(&a, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(out, b);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------

fn pod_key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        Just("metadata"),
        Just("labels"),
        Just("finalizers"),
        Just("spec"),
        Just("containers"),
        Just("initContainers"),
        Just("volumes"),
        Just("tolerations"),
        Just("name"),
        Just("image"),
        Just("env"),
        Just("value"),
        Just("ports"),
        Just("containerPort"),
        Just("protocol"),
        Just("key"),
        Just("$patch"),
        Just("$retainKeys"),
        Just("$setElementOrder/containers"),
        Just("$setElementOrder/env"),
        Just("$setElementOrder/ports"),
        Just("$setElementOrder/finalizers"),
        Just("$deleteFromPrimitiveList/finalizers"),
    ]
    .prop_map(String::from)
}

/// A container, well formed or with random fields and directives.
fn container() -> impl Strategy<Value = Value> {
    let name = prop_oneof![Just("a"), Just("b"), Just("c")];
    let env = prop::collection::vec(
        (
            prop_oneof![Just("X"), Just("Y")],
            prop::option::of("[a-z]{0,2}"),
        )
            .prop_map(|(n, v)| json!({"name": n, "value": v})),
        0..3,
    );
    let ports = prop::collection::vec(
        (1i64..4, prop_oneof![Just("TCP"), Just("UDP")])
            .prop_map(|(p, proto)| json!({"containerPort": p, "protocol": proto})),
        0..3,
    );
    (
        name,
        prop::option::of("[a-z]{1,3}"),
        env,
        ports,
        prop::collection::vec((pod_key(), json_value_with(pod_key())), 0..2),
    )
        .prop_map(|(name, image, env, ports, extra)| {
            let mut c = json!({"name": name, "image": image, "env": env, "ports": ports});
            if let Some(m) = c.as_object_mut() {
                m.extend(extra);
            }
            c
        })
}

/// A pod-shaped document or patch: the merged lists (containers by name,
/// env by name, ports by containerPort, finalizers as a primitive list)
/// with random directives and random values mixed in.
fn pod_like() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(container(), 0..4),
        prop::collection::vec(prop_oneof![Just("f1"), Just("f2"), Just("f3")], 0..3),
        prop::collection::vec((pod_key(), json_value_with(pod_key())), 0..3),
        prop::collection::vec((pod_key(), json_value_with(pod_key())), 0..2),
    )
        .prop_map(|(containers, finalizers, spec_extra, top_extra)| {
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "finalizers": finalizers},
                "spec": {"containers": containers},
            });
            if let Some(spec) = pod["spec"].as_object_mut() {
                spec.extend(spec_extra);
            }
            if let Some(m) = pod.as_object_mut() {
                m.extend(top_extra);
            }
            pod
        })
}

#[test]
fn fuzz_strategic_merge_patch() {
    let pod = patch_schema_for::<Pod>();
    let unknown = PatchSchema::unknown();
    fuzz(
        "strategic_merge_patch/pod_like",
        384,
        (pod_like(), pod_like(), json_value_with(pod_key())),
        |(doc, patch, junk)| {
            let _ = strategic_merge_patch(&doc, &patch, &pod);
            let _ = strategic_merge_patch(&doc, &patch, &unknown);
            let _ = strategic_merge_patch(&doc, &junk, &pod);
            let _ = strategic_merge_patch(&junk, &patch, &pod);
            Ok(())
        },
    );
}

#[test]
fn fuzz_strategic_merge_patch_arbitrary() {
    let pod = patch_schema_for::<Pod>();
    fuzz(
        "strategic_merge_patch/arbitrary",
        384,
        (json_value(), json_value()),
        |(doc, patch)| {
            let _ = strategic_merge_patch(&doc, &patch, &pod);
            let _ = strategic_merge_patch(&doc, &patch, &PatchSchema::unknown());
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Server-side apply
// ---------------------------------------------------------------------------

#[test]
fn fuzz_server_side_apply() {
    fuzz(
        "apply/pod_like",
        256,
        (
            prop::option::of(pod_like()),
            pod_like(),
            pod_like(),
            any::<bool>(),
            prop::option::of(json_value()),
        ),
        |(live, first, second, force, managed)| {
            // Stored objects and apply configurations without nulls: a null
            // in a configuration asks to remove a field, which another
            // manager may own (a conflict, not a no-op).
            let mut live = live.map(without_nulls);
            let (first, second) = (without_nulls(first), without_nulls(second));
            if let (Some(meta), Some(mf)) = (
                live.as_mut()
                    .and_then(|l| l.get_mut("metadata"))
                    .and_then(Value::as_object_mut),
                managed,
            ) {
                // Whatever a client stored as managedFields.
                meta.insert("managedFields".into(), mf);
            }
            let Ok(after_a) = apply(live.as_ref(), &first, "a", false, NOW) else {
                return Ok(());
            };
            // Applying the same configuration again changes nothing. (When
            // the applier ended up owning nothing, e.g. a configuration of
            // empty lists only, the object has no managedFields and the
            // second apply seeds "before-first-apply" from it, as for any
            // object that predates field tracking.)
            let again = apply(Some(&after_a), &first, "a", false, NOW)
                .map_err(|e| TestCaseError::fail(e.message()))?;
            let owned = after_a
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty());
            if owned {
                prop_assert_eq!(&again, &after_a);
            }
            let after_b = apply(Some(&after_a), &second, "b", force, NOW);
            if let Ok(b) = &after_b {
                let _ = apply(Some(b), &first, "a", true, NOW);
                let _ = record_update(Some(b), &second, "c", NOW);
            }
            let _ = record_update(live.as_ref(), &first, "c", NOW);
            Ok(())
        },
    );
}

#[test]
fn fuzz_server_side_apply_arbitrary() {
    fuzz(
        "apply/arbitrary",
        256,
        (prop::option::of(json_value()), json_value(), json_value()),
        |(live, applied, new)| {
            let _ = apply(live.as_ref(), &applied, "m", false, NOW);
            let _ = apply(live.as_ref(), &applied, "m", true, NOW);
            let _ = record_update(live.as_ref(), &new, "m", NOW);
            Ok(())
        },
    );
}
