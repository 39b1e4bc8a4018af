//! Resource quantities and the effective requests of a pod (↔
//! k8s.io/apimachinery's resource.Quantity and component-helpers'
//! resource.PodRequests).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU a container without a cpu request counts as when scoring (100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A parsed quantity: `mantissa * 10^-scale * multiplier`, where the
/// multiplier is a power of 2 or 10 (or its inverse for n/u/m).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    mantissa: i128,
    /// Digits after the decimal point in the mantissa.
    scale: u32,
    /// Power of two (binary suffixes).
    pow2: u32,
    /// Power of ten (decimal suffixes and exponents); may be negative.
    pow10: i32,
}

fn parse(s: &str) -> Option<Parsed> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let mut mantissa: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        let d = i128::from(c.to_digit(10)?);
        mantissa = mantissa.checked_mul(10)?.checked_add(d)?;
    }
    let scale = u32::try_from(frac_part.len()).ok()?;
    let (pow2, pow10) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))?;
            let exp: i32 = exp.parse().ok()?;
            if !(-30..=30).contains(&exp) {
                return None;
            }
            (0, exp)
        }
    };
    Some(Parsed {
        negative,
        mantissa,
        scale,
        pow2,
        pow10,
    })
}

/// `ceil(q * factor)` as an i64, saturating; None when the quantity does not parse.
fn scaled_ceil(s: &str, factor_pow10: i32) -> Option<i64> {
    let p = parse(s)?;
    let pow10 = p
        .pow10
        .checked_add(factor_pow10)?
        .checked_sub(i32::try_from(p.scale).ok()?)?;
    Some(exact_ceil(&p, pow10).unwrap_or_else(|| approximate_ceil(&p, pow10)))
}

/// `ceil(mantissa * 2^pow2 * 10^pow10)` in i128, None when that overflows.
fn exact_ceil(p: &Parsed, pow10: i32) -> Option<i64> {
    let mut num = p.mantissa.checked_mul(1i128.checked_shl(p.pow2)?)?;
    let mut den: i128 = 1;
    if pow10 >= 0 {
        num = num.checked_mul(10i128.checked_pow(pow10.unsigned_abs())?)?;
    } else {
        den = 10i128.checked_pow(pow10.unsigned_abs())?;
    }
    // den >= 1 and num >= 0: neither the division nor the remainder can
    // overflow, where `num + den - 1` could (a mantissa near i128::MAX).
    let q = if p.negative {
        // ceil of a negative value truncates toward zero
        -(num / den)
    } else if num % den == 0 {
        num / den
    } else {
        num / den + 1
    };
    Some(i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX }))
}

/// The same in floating point, for quantities whose exact computation
/// does not fit an i128 (dozens of digits): such a value is either far
/// beyond i64 (saturated) or known to within a rounding.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn approximate_ceil(p: &Parsed, pow10: i32) -> i64 {
    let pow2 = i32::try_from(p.pow2).unwrap_or(i32::MAX);
    let v = p.mantissa as f64 * 2f64.powi(pow2) * 10f64.powi(pow10);
    if p.negative {
        -(v.floor()) as i64
    } else if p.mantissa > 0 {
        // A positive value, however small, rounds up to at least 1.
        (v.ceil() as i64).max(1)
    } else {
        0
    }
}

/// The value of a quantity in thousandths, rounded up (as Quantity.MilliValue).
pub fn milli_value(q: &Quantity) -> i64 {
    scaled_ceil(&q.0, 3).unwrap_or(0)
}

/// The value of a quantity, rounded up (as Quantity.Value).
pub fn value(q: &Quantity) -> i64 {
    scaled_ceil(&q.0, 0).unwrap_or(0)
}

/// Whether a string is a valid quantity.
pub fn is_valid(s: &str) -> bool {
    parse(s).is_some()
}

/// Resources in scheduler units: milli-CPU, bytes, pod count, and extended
/// (scalar) resources in their integer value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// From a resource list (requests, limits, capacity, allocatable).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = milli_value(q),
            "memory" => self.memory = value(q),
            "ephemeral-storage" => self.ephemeral_storage = value(q),
            "pods" => self.allowed_pods = value(q),
            other => {
                if is_scalar_resource(other) {
                    self.scalar.insert(other.to_string(), value(q));
                }
            }
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.saturating_add(o.allowed_pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(o.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.saturating_sub(o.allowed_pods);
        for (k, v) in &o.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
                if *e == 0 {
                    self.scalar.remove(k);
                }
            }
        }
    }

    /// Each resource the larger of the two.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources, hugepages and attachable volumes: everything that is
/// not one of the native resources the scheduler tracks by field.
pub fn is_scalar_resource(name: &str) -> bool {
    !matches!(
        name,
        "cpu" | "memory" | "ephemeral-storage" | "pods" | "storage"
    )
}

fn container_requests(c: &Container) -> Resources {
    match c.resources.as_ref() {
        Some(r) => {
            // Requests default to limits when only limits are given (apiserver
            // defaulting does this too; be tolerant of objects that skipped it).
            let mut out = r
                .limits
                .as_ref()
                .map(Resources::from_list)
                .unwrap_or_default();
            if let Some(req) = r.requests.as_ref() {
                for (name, q) in req {
                    out.set(name, q);
                }
            }
            out.allowed_pods = 0;
            out
        }
        None => Resources::default(),
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The effective requests of a pod: the larger of the app containers' sum
/// (plus sidecars) and each init container's request (plus the sidecars
/// started before it), plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    pod_requests_with(pod, container_requests)
}

/// Requests as scoring counts them: containers without a cpu or memory
/// request count as 100m and 200Mi.
pub fn pod_non_zero_requests(pod: &Pod) -> (i64, i64) {
    let r = pod_requests_with(pod, |c| {
        let mut r = container_requests(c);
        let explicit = |name: &str| {
            c.resources.as_ref().is_some_and(|res| {
                res.requests.as_ref().is_some_and(|m| m.contains_key(name))
                    || res.limits.as_ref().is_some_and(|m| m.contains_key(name))
            })
        };
        if !explicit("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !explicit("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
        r
    });
    (r.milli_cpu, r.memory)
}

fn pod_requests_with(pod: &Pod, requests_of: impl Fn(&Container) -> Resources) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut apps = Resources::default();
    for c in &spec.containers {
        apps.add(&requests_of(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = requests_of(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    apps.add(&sidecars);
    apps.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        let mut o = Resources::from_list(overhead);
        o.allowed_pods = 0;
        apps.add(&o);
    }
    apps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        let cases: &[(&str, i64, i64)] = &[
            ("1", 1000, 1),
            ("100m", 100, 1),
            ("1.5", 1500, 2),
            ("0.1", 100, 1),
            ("250m", 250, 1),
            ("1Ki", 1_024_000, 1024),
            ("32Gi", 32 * (1 << 30) * 1000, 32 * (1 << 30)),
            ("1k", 1_000_000, 1000),
            ("500M", 500_000_000_000, 500_000_000),
            ("1e3", 1_000_000, 1000),
            ("1500u", 2, 1),
            ("10n", 1, 1),
            ("0", 0, 0),
            ("bogus", 0, 0),
        ];
        for (s, milli, val) in cases {
            let q = Quantity((*s).into());
            assert_eq!(milli_value(&q), *milli, "milli of {s}");
            assert_eq!(value(&q), *val, "value of {s}");
        }
        assert!(is_valid("1.5Gi"));
        // Found by tests/fuzz_quantity.rs: a mantissa of i128::MAX (0.17
        // cores) overflowed `num + den - 1` while rounding up.
        let q = Quantity(".170141183460469231731687303715884105727".into());
        assert_eq!(milli_value(&q), 171);
        assert_eq!(value(&q), 1);
        // Found by the same target: where exact arithmetic overflowed, the
        // saturated numerator and denominator made -1.7e-8 round to -1.
        let q = Quantity("-.0000000000000170141183460469231731687303715884105727Ki".into());
        assert_eq!(milli_value(&q), 0);
        assert_eq!(value(&q), 0);
        assert!(!is_valid("1.5.3"));
        assert!(!is_valid("Gi"));
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn pod_requests_rules() {
        // Sum of app containers.
        let p = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m", "nvidia.com/gpu": "1"}}}
        ]}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 300);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.scalar.get("nvidia.com/gpu"), Some(&1));
        // An init container larger than the sum wins for that resource only.
        let p = pod(json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "1Mi"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        }));
        let r = pod_requests(&p);
        assert_eq!((r.milli_cpu, r.memory), (2000, 1 << 30));
        // Sidecars add to the app containers and to later init containers.
        let p = pod(json!({
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "1"}}}
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "overhead": {"cpu": "50m"}
        }));
        assert_eq!(pod_requests(&p).milli_cpu, 1500 + 50);
        // Limits only: requests default to limits.
        let p = pod(json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}));
        assert_eq!(pod_requests(&p).milli_cpu, 1000);
        // Non-zero defaults for scoring.
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        assert_eq!(
            pod_non_zero_requests(&p),
            (1100, 2 * DEFAULT_MEMORY_REQUEST)
        );
        assert!(pod_requests(&pod(json!({"containers": [{"name": "a"}]}))).is_zero());
    }
}
