//! Fuzz targets for the small parsers of client input: label and field
//! selectors and Go durations. No string panics them, and what a client
//! writes in their syntax means what Kubernetes says it means.

mod fuzz_support;

use std::collections::BTreeMap;

use fuzz_support::{fuzz, json_value};
use proptest::prelude::*;
use serde_json::json;
use skiff_api::duration::{parse_go, parse_go_std};
use skiff_api::selector::{FieldSelector, LabelSelector, field_value};

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// A label selector requirement, as a model and in its query-string form.
#[derive(Clone, Debug)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl Req {
    fn render(&self, sp: &str) -> String {
        match self {
            Req::Eq(k, v) => format!("{k}{sp}={sp}{v}"),
            Req::NotEq(k, v) => format!("{k}{sp}!={sp}{v}"),
            Req::In(k, vs) => format!("{k} in{sp}({})", vs.join(",")),
            Req::NotIn(k, vs) => format!("{k} notin{sp}({})", vs.join(&format!(",{sp}"))),
            Req::Exists(k) => k.clone(),
            Req::NotExists(k) => format!("!{k}"),
            Req::Gt(k, n) => format!("{k}>{n}"),
            Req::Lt(k, n) => format!("{k}<{n}"),
        }
    }

    /// labels.Selector.Matches as Kubernetes defines it.
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let int = |k: &str| labels.get(k).and_then(|v| v.parse::<i64>().ok());
        match self {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
            Req::Gt(k, n) => int(k).is_some_and(|x| x > *n),
            Req::Lt(k, n) => int(k).is_some_and(|x| x < *n),
        }
    }
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-c]".prop_map(String::from),
        1 => "[a-z0-9]([a-z0-9.-]{0,6}[a-z0-9])?/[a-z]{1,3}".prop_map(String::from),
    ]
}

fn label_value() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => "[x-z0-9]{1,2}".prop_map(String::from),
        1 => "-?[0-9]{1,3}".prop_map(String::from),
    ]
}

fn requirement() -> impl Strategy<Value = Req> {
    let set = prop::collection::vec(label_value(), 1..4);
    prop_oneof![
        (label_key(), label_value()).prop_map(|(k, v)| Req::Eq(k, v)),
        (label_key(), label_value()).prop_map(|(k, v)| Req::NotEq(k, v)),
        (label_key(), set.clone()).prop_map(|(k, v)| Req::In(k, v)),
        (label_key(), set).prop_map(|(k, v)| Req::NotIn(k, v)),
        label_key().prop_map(Req::Exists),
        label_key().prop_map(Req::NotExists),
        (label_key(), -100i64..100).prop_map(|(k, n)| Req::Gt(k, n)),
        (label_key(), -100i64..100).prop_map(|(k, n)| Req::Lt(k, n)),
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(label_key(), label_value(), 0..4)
}

/// What a selector written by a client means: parsing its rendering and
/// matching it agrees with Kubernetes' definition, and a rendering with
/// blanks parses to the same selector.
#[test]
fn fuzz_label_selector_model() {
    fuzz(
        "label_selector/model",
        1024,
        (
            prop::collection::vec(requirement(), 1..4),
            prop::collection::vec(labels(), 1..4),
        ),
        |(reqs, label_sets)| {
            let text = reqs
                .iter()
                .map(|r| r.render(""))
                .collect::<Vec<_>>()
                .join(",");
            let spaced = reqs
                .iter()
                .map(|r| format!(" {} ", r.render(" ")))
                .collect::<Vec<_>>()
                .join(",");
            let sel = LabelSelector::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            let sel_spaced = LabelSelector::parse(&spaced)
                .map_err(|e| TestCaseError::fail(format!("{spaced:?}: {e}")))?;
            prop_assert_eq!(&sel, &sel_spaced);
            for labels in &label_sets {
                let want = reqs.iter().all(|r| r.matches(labels));
                prop_assert_eq!(sel.matches(labels), want, "{} on {:?}", text, labels);
            }
            Ok(())
        },
    );
}

/// Arbitrary strings, and strings made of the selector syntax's own
/// characters: an error or a selector, never a panic.
#[test]
fn fuzz_label_selector_strings() {
    fuzz(
        "label_selector/strings",
        2048,
        prop_oneof![
            "\\PC{0,24}",
            "[a-c!=<>(), inot0-9-]{0,24}",
            any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        |s| {
            if let Ok(sel) = LabelSelector::parse(&s) {
                let _ = sel.matches(&BTreeMap::from([("a".into(), "1".into())]));
                let _ = sel.matches_object(&json!({"metadata": {"labels": {"a": "b"}}}));
            }
            Ok(())
        },
    );
}

/// metav1.LabelSelector objects from a request body or a stored object.
#[test]
fn fuzz_label_selector_objects() {
    let expr_key = prop_oneof![
        Just("matchLabels"),
        Just("matchExpressions"),
        Just("key"),
        Just("operator"),
        Just("values"),
        Just("In"),
        Just("NotIn"),
        Just("Exists"),
        Just("DoesNotExist"),
        Just("a"),
    ]
    .prop_map(String::from);
    fuzz(
        "label_selector/objects",
        1024,
        prop_oneof![json_value(), fuzz_support::json_value_with(expr_key),],
        |v| {
            if let Ok(sel) = LabelSelector::from_object(&v) {
                let _ = sel.matches_object(&v);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

#[test]
fn fuzz_field_selector() {
    let field = prop_oneof![
        Just("metadata.name"),
        Just("metadata.namespace"),
        Just("spec.nodeName"),
        Just("status.phase"),
        Just("spec.hostNetwork"),
        Just("spec.bogus"),
    ];
    let part = (
        field,
        prop_oneof![Just("="), Just("=="), Just("!=")],
        "[a-c]{0,2}",
    )
        .prop_map(|(f, op, v)| format!("{f}{op}{v}"));
    fuzz(
        "field_selector/parse_match",
        1024,
        (
            prop_oneof![
                prop::collection::vec(part, 0..4).prop_map(|p| p.join(",")),
                "\\PC{0,24}",
                "[a-z.=!, ]{0,24}",
            ],
            json_value(),
        ),
        |(s, obj)| {
            for (group, kind, namespaced) in [
                ("", "Pod", true),
                ("", "Event", true),
                ("", "Node", false),
                ("apps", "Deployment", true),
            ] {
                if let Ok(sel) = FieldSelector::parse(&s, group, kind, namespaced) {
                    let _ = sel.name();
                    let _ = sel.matches_object(&obj);
                    let pod = json!({"metadata": {"name": "a", "namespace": "b"},
                        "spec": {"nodeName": "c", "hostNetwork": true}, "status": {"phase": obj}});
                    let _ = sel.matches_object(&pod);
                }
            }
            let _ = field_value(&obj, &s);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Go durations
// ---------------------------------------------------------------------------

const UNITS: [(&str, i128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Durations a client writes ("1h30m", "-1.5s", "250ms"): parsed to the
/// nanoseconds Go's time.ParseDuration gives, or refused when they overflow.
#[test]
fn fuzz_go_duration_model() {
    // (whole part, fraction digits (at most what the unit can hold), unit)
    let component = (0u64..u64::MAX, 0usize..UNITS.len(), "[0-9]{0,3}");
    fuzz(
        "duration/model",
        2048,
        (
            prop_oneof![Just(""), Just("-"), Just("+")],
            prop::collection::vec(
                (
                    prop_oneof![0u64..100, component.0.clone()],
                    component.1,
                    component.2,
                ),
                1..4,
            ),
        ),
        |(sign, parts)| {
            let mut text = sign.to_string();
            let mut total: Option<i128> = Some(0);
            for (whole, unit, frac) in &parts {
                let (name, nanos) = UNITS[*unit];
                text.push_str(&whole.to_string());
                if !frac.is_empty() {
                    text.push('.');
                    text.push_str(frac);
                }
                text.push_str(name);
                // Three fraction digits are exact for every unit but ns and µs.
                let scale = 10i128.pow(u32::try_from(frac.len()).unwrap_or(0));
                let f: i128 = if frac.is_empty() {
                    0
                } else {
                    frac.parse().unwrap_or(0)
                };
                let frac_nanos = if nanos >= 1_000_000 {
                    f * nanos / scale
                } else {
                    0
                };
                total = total
                    .and_then(|t| t.checked_add(i128::from(*whole) * nanos + frac_nanos))
                    .filter(|t| *t <= i128::from(i64::MAX) + 1);
            }
            prop_assume!(nanos_exact(&parts));
            let want = total
                .map(|t| if sign == "-" { -t } else { t })
                .and_then(|t| i64::try_from(t).ok());
            prop_assert_eq!(parse_go(&text), want, "{}", text);
            Ok(())
        },
    );
}

/// Whether the model above is exact for these components (fractions of
/// ns and µs are truncated differently by Go's float arithmetic).
fn nanos_exact(parts: &[(u64, usize, String)]) -> bool {
    parts
        .iter()
        .all(|(_, unit, frac)| frac.is_empty() || UNITS[*unit].1 >= 1_000_000)
}

#[test]
fn fuzz_go_duration_strings() {
    fuzz(
        "duration/strings",
        4096,
        prop_oneof![
            "\\PC{0,16}",
            "[-+0-9.nuµμmsh]{0,24}",
            any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        |s| {
            let _ = parse_go(&s);
            let _ = parse_go_std(&s);
            Ok(())
        },
    );
}
