//! Fuzz targets for request body decoding (`request::decode_body`, which
//! every create, update and patch goes through, and the YAML decoder behind
//! it): arbitrary and adversarial bodies (deep nesting, alias bombs, huge
//! numbers) get a 4xx, never a panic, and stay within the decoder's bound
//! on what aliases may expand to; JSON and YAML renderings of a value
//! decode back to it.

#[path = "../../api/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::fuzz;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Number, Value};
use skiff_apiserver::request::decode_body;

const MEDIA: [&str; 8] = [
    "application/json",
    "",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/yaml",
    "application/apply-patch+yaml",
    "application/vnd.kubernetes.protobuf",
    "text/plain",
];

/// The YAML decoder's allowance of values beyond one per byte (yaml.rs).
const ALIAS_ALLOWANCE: usize = 100_000;

/// Decodes `body` as every media type: a value or a 4xx, never a panic.
fn decode_all(body: &[u8]) -> Result<(), TestCaseError> {
    for media in MEDIA {
        if let Err(e) = decode_body(body, media) {
            prop_assert!(
                (400..500).contains(&e.code),
                "{media}: {} {}",
                e.code,
                e.message
            );
        }
    }
    Ok(())
}

fn nodes(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(nodes).sum::<usize>() + 1,
        Value::Object(m) => m.values().map(nodes).sum::<usize>() + m.len() + 1,
        _ => 1,
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Binary fractions: serde_json (without float_roundtrip) may read
        // the last digit of an arbitrary f64 back differently.
        any::<i32>().prop_filter_map("finite", |n| {
            Number::from_f64(f64::from(n) / 8.0).map(Value::Number)
        }),
        "\\PC{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("yes"),
            Just("no"),
            Just("~"),
            Just("null"),
            Just("1e3"),
            Just("0x10"),
            Just("*a"),
            Just("&a"),
            Just("- x"),
            Just(": "),
            Just("#"),
            Just("'"),
            Just("\""),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,6}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn fuzz_decode_arbitrary_bytes() {
    fuzz(
        "decode_body/arbitrary_bytes",
        2048,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[\\[\\]{}:,\"'&*!<>| \n\t-0-9a-z.]{0,64}".prop_map(String::into_bytes),
        ],
        |body| decode_all(&body),
    );
}

/// A value written as JSON and as YAML decodes back to itself.
#[test]
fn fuzz_decode_round_trip() {
    fuzz("decode_body/round_trip", 512, json_value(), |v| {
        let json = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back =
            decode_body(&json, "application/json").map_err(|e| TestCaseError::fail(e.message))?;
        prop_assert_eq!(&back, &v);
        let yaml = serde_yaml::to_string(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = decode_body(yaml.as_bytes(), "application/yaml")
            .map_err(|e| TestCaseError::fail(format!("{yaml:?}: {}", e.message)))?;
        prop_assert_eq!(&back, &v, "{:?}", yaml);
        Ok(())
    });
}

/// Deep nesting, in JSON and YAML flow and block styles.
#[test]
fn fuzz_decode_deep_nesting() {
    fuzz(
        "decode_body/deep_nesting",
        64,
        (1usize..4_000, 0u8..5),
        |(depth, style)| {
            let body = match style {
                0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
                1 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
                2 => format!("{}1", "- ".repeat(depth)),
                3 => (0..depth.min(300)).fold(String::new(), |mut s, i| {
                    s.push_str(&" ".repeat(i));
                    s.push_str("a:\n");
                    s
                }),
                _ => format!("{}{}", "[{a: ".repeat(depth), "}]".repeat(depth)),
            };
            decode_all(body.as_bytes())
        },
    );
}

/// Aliases of aliases (the "billion laughs"): refused or bounded.
#[test]
fn fuzz_decode_alias_expansion() {
    fuzz(
        "decode_body/alias_expansion",
        64,
        (1usize..12, 1usize..12, any::<bool>()),
        |(levels, fanout, flow)| {
            let mut doc = String::from("a0: &a0 [x, y]\n");
            for l in 1..=levels {
                let refs = vec![format!("*a{}", l - 1); fanout];
                if flow {
                    doc.push_str(&format!("a{l}: &a{l} [{}]\n", refs.join(", ")));
                } else {
                    doc.push_str(&format!("a{l}: &a{l}\n"));
                    for r in &refs {
                        doc.push_str(&format!("  - {r}\n"));
                    }
                }
            }
            decode_all(doc.as_bytes())?;
            if let Ok(v) = decode_body(doc.as_bytes(), "application/yaml") {
                // What the decoder promises: aliases expand to at most one
                // value per byte plus a fixed allowance (map keys are not
                // values it counts, hence the factor 2).
                prop_assert!(nodes(&v) <= 2 * (doc.len() + ALIAS_ALLOWANCE));
            }
            Ok(())
        },
    );
}

/// Numbers JSON and YAML can write but a JSON value may not hold.
#[test]
fn fuzz_decode_huge_numbers() {
    fuzz(
        "decode_body/huge_numbers",
        512,
        (
            prop_oneof![
                "-?[0-9]{1,400}",
                "-?[0-9]{1,30}\\.[0-9]{1,30}[eE][-+]?[0-9]{1,6}",
                "0x[0-9a-f]{1,40}",
                "0o[0-7]{1,40}",
                Just("1e400".to_string()),
                Just("-.inf".to_string()),
                Just(".nan".to_string()),
                Just("!!int 99999999999999999999999".to_string()),
                Just("!!float 1e999".to_string()),
                Just("!!binary aGVsbG8=".to_string()),
            ],
            any::<bool>(),
        ),
        |(n, as_key)| {
            let body = if as_key {
                format!("{n}: v\n")
            } else {
                format!("spec:\n  replicas: {n}\n  list: [{n}, {n}]\n")
            };
            decode_all(body.as_bytes())?;
            decode_all(format!("{{\"a\": {n}}}").as_bytes())
        },
    );
}
