//! TaintToleration (↔ plugins/tainttoleration): NoSchedule and NoExecute
//! taints a pod does not tolerate rule the node out; untolerated
//! PreferNoSchedule taints lower its score.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{FilterResult, Unfit, default_normalize};
use crate::cache::{NodeInfo, PodInfo};

pub const NAME: &str = "TaintToleration";

/// Whether a toleration tolerates a taint (v1.Toleration.ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The message Kubernetes gives for an untolerated taint.
pub fn reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let untolerated = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !pod.tolerations.iter().any(|t| tolerates(t, taint)));
    match untolerated {
        Some(taint) => Err(Unfit::unresolvable(NAME, reason(taint))),
        None => Ok(()),
    }
}

/// Fewer untolerated PreferNoSchedule taints score higher.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let prefer: Vec<&Toleration> = pod
        .tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.taints
                .iter()
                .filter(|taint| taint.effect == "PreferNoSchedule")
                .filter(|taint| !prefer.iter().any(|t| tolerates(t, taint)))
                .count() as i64
        })
        .collect();
    default_normalize(&mut scores, true);
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use serde_json::json;

    fn taint(v: serde_json::Value) -> Taint {
        serde_json::from_value(v).unwrap()
    }
    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_matching() {
        let t = taint(json!({"key": "k", "value": "v", "effect": "NoSchedule"}));
        let cases = [
            (
                json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}),
                true,
            ),
            (json!({"key": "k", "value": "v"}), true),
            (json!({"key": "k", "value": "w"}), false),
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"key": "other", "operator": "Exists"}), false),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "k", "operator": "Bogus"}), false),
        ];
        for (tol, want) in cases {
            assert_eq!(tolerates(&toleration(tol.clone()), &t), want, "{tol}");
        }
    }

    #[test]
    fn filter_table() {
        let cp = json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"});
        let cases = [
            (json!([]), json!([]), None),
            (
                json!([cp]),
                json!([]),
                Some("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
            ),
            (
                json!([cp]),
                json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]),
                None,
            ),
            (
                json!([{"key": "gpu", "value": "true", "effect": "NoExecute"}]),
                json!([]),
                Some("node(s) had untolerated taint {gpu: true}"),
            ),
            (
                json!([{"key": "soft", "effect": "PreferNoSchedule"}]),
                json!([]),
                None,
            ),
        ];
        for (taints, tolerations, want) in cases {
            let p = pod(json!({"metadata": {"name": "p"}, "spec": {"tolerations": tolerations}}));
            let n = node(json!({"metadata": {"name": "n"}, "spec": {"taints": taints}}));
            let got = filter(&p, &n).err().map(|e| {
                assert_eq!(e.code, super::super::Code::UnschedulableAndUnresolvable);
                e.reasons[0].clone()
            });
            assert_eq!(
                got.as_deref(),
                want,
                "taints {taints} tolerations {tolerations}"
            );
        }
    }

    #[test]
    fn score_prefers_fewer_soft_taints() {
        let soft = |k: &str| json!({"key": k, "effect": "PreferNoSchedule"});
        let n0 = node(json!({"metadata": {"name": "n0"}}));
        let n1 = node(json!({"metadata": {"name": "n1"}, "spec": {"taints": [soft("a")]}}));
        let n2 =
            node(json!({"metadata": {"name": "n2"}, "spec": {"taints": [soft("a"), soft("b")]}}));
        let p = pod(json!({"metadata": {"name": "p"}}));
        assert_eq!(score(&p, &[&n0, &n1, &n2]), vec![100, 50, 0]);
        let tolerant = pod(
            json!({"metadata": {"name": "p"}, "spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}}),
        );
        assert_eq!(score(&tolerant, &[&n0, &n1, &n2]), vec![100, 100, 0]);
    }
}
