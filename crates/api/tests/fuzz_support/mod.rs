//! Shared by the `fuzz_*` targets: a bounded proptest runner that reports
//! its executions, and generators of JSON values.
//!
//! Each target runs `cases` generated inputs (raise every target at once
//! with `PROPTEST_CASES=100000`), shrinks a failure to a minimal input and
//! writes no persistence file: a failure found here becomes a named
//! regression test beside the target.

#![allow(dead_code)]

use std::cell::Cell;
use std::io::Write;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value};

/// Runs `test` on `cases` inputs from `strategy` (or `PROPTEST_CASES` of
/// them), then prints the executions and their rate to the real stderr, so
/// that they show in CI's log even though the test harness captures output.
pub fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        // Skipped inputs (prop_assume) must not end a run early.
        max_global_rejects: cases.saturating_mul(4),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let runs = Cell::new(0u64);
    let start = Instant::now();
    let result = runner.run(&strategy, |v| {
        runs.set(runs.get() + 1);
        test(v)
    });
    let secs = start.elapsed().as_secs_f64();
    let runs = runs.get();
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {runs} executions in {secs:.2} s ({:.0}/s)",
        runs as f64 / secs.max(1e-9)
    );
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
}

/// Keys that the patch code treats specially, plus a few plain ones, so
/// that random maps hit directives and collide between document and patch.
pub fn key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => "[a-c]".prop_map(String::from),
        1 => Just("name".to_string()),
        1 => Just("$patch".to_string()),
        1 => Just("$retainKeys".to_string()),
        1 => Just("$setElementOrder/a".to_string()),
        1 => Just("$deleteFromPrimitiveList/a".to_string()),
        1 => "\\PC{0,4}",
    ]
}

pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop_oneof![
            Just("delete"),
            Just("replace"),
            Just("merge"),
            Just("a"),
            Just("b"),
            Just(""),
        ]
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,8}".prop_map(Value::String),
    ]
}

/// Random JSON values, nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    json_value_with(key())
}

pub fn json_value_with(
    key: impl Strategy<Value = String> + Clone + 'static,
) -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Random JSON objects (what a document or a merge patch must be).
pub fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), json_value()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}
