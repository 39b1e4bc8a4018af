//! Fuzz target for resource quantity parsing (`resources.requests.cpu:
//! "500m"`), which the scheduler applies to every pod a client creates: no
//! string panics it, and the values agree with exact arithmetic.

#[path = "../../api/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::fuzz;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use proptest::prelude::*;
use skiff_scheduler::resources::{is_valid, milli_value, value};

fn suffix_strategy() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(""),
        Just("n"),
        Just("u"),
        Just("m"),
        Just("k"),
        Just("M"),
        Just("G"),
        Just("T"),
        Just("P"),
        Just("E"),
        Just("Ki"),
        Just("Mi"),
        Just("Gi"),
        Just("Ti"),
        Just("Pi"),
        Just("Ei"),
        Just("e3"),
        Just("E-3"),
        Just("e30"),
        Just("e-30"),
    ]
}

fn quantity_text() -> impl Strategy<Value = String> {
    let suffix = suffix_strategy();
    prop_oneof![
        (
            prop_oneof![Just(""), Just("-"), Just("+")],
            "[0-9]{1,45}",
            prop::option::of("[0-9]{0,45}"),
            suffix
        )
            .prop_map(|(sign, int, frac, suffix)| match frac {
                Some(f) => format!("{sign}{int}.{f}{suffix}"),
                None => format!("{sign}{int}{suffix}"),
            }),
        // Mantissas at the edge of what the parser holds, with the decimal
        // point anywhere (leading zeros make the scale large, not the value).
        (
            prop_oneof![Just(""), Just("-")],
            prop_oneof![
                (0u128..1_000_000_000_000).prop_map(|d| i128::MAX as u128 - d),
                any::<u64>().prop_map(u128::from),
            ],
            0usize..50,
            0usize..45,
            suffix_strategy(),
        )
            .prop_map(|(sign, m, zeros, point, suffix)| {
                let digits = format!("{}{m}", "0".repeat(zeros));
                let point = point.min(digits.len());
                format!("{sign}{}.{}{suffix}", &digits[..point], &digits[point..])
            }),
        "[-+0-9.eEkmMGTPinu ]{0,24}",
        "\\PC{0,12}",
    ]
}

#[test]
fn fuzz_quantity_strings() {
    fuzz("quantity/strings", 4096, quantity_text(), |s| {
        let valid = is_valid(&s);
        let q = Quantity(s);
        let (milli, whole) = (milli_value(&q), value(&q));
        if valid {
            // Rounded up: the whole value is at least a thousandth of the
            // milli value (to within f64's precision for quantities of more
            // digits than an i128 computes exactly).
            let slack = i128::from(milli.unsigned_abs() >> 40);
            prop_assert!(
                i128::from(whole) * 1000 >= i128::from(milli) - slack
                    || whole == i64::MAX
                    || milli == i64::MIN,
                "{:?}: value {} milli {}",
                q.0,
                whole,
                milli
            );
        }
        Ok(())
    });
}

/// Small decimal quantities against exact integer arithmetic.
#[test]
fn fuzz_quantity_exact() {
    let suffixes: [(&str, i128, i128); 7] = [
        ("", 1000, 1),
        ("m", 1, 1),
        ("k", 1_000_000, 1),
        ("Ki", 1_024_000, 1),
        ("Mi", 1_048_576_000, 1),
        ("u", 1, 1000),
        ("n", 1, 1_000_000),
    ];
    fuzz(
        "quantity/exact",
        4096,
        (any::<bool>(), 0u64..1_000_000_000, 0usize..suffixes.len()),
        |(neg, n, s)| {
            let (suffix, mul, div) = suffixes[s];
            let text = format!("{}{n}{suffix}", if neg { "-" } else { "" });
            // milli = ceil(n * mul / div), negated toward zero when negative.
            let exact = i128::from(n) * mul;
            let milli = if neg {
                -(exact / div)
            } else {
                (exact + div - 1) / div
            };
            let milli = i64::try_from(milli).unwrap_or(i64::MAX);
            prop_assert_eq!(milli_value(&Quantity(text.clone())), milli, "{}", text);
            Ok(())
        },
    );
}
