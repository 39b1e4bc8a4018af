//! NodeAffinity (↔ plugins/nodeaffinity): spec.nodeSelector and required
//! node affinity filter; preferred node affinity scores.

use k8s_openapi::api::core::v1::Pod;

use super::{FilterResult, Unfit, default_normalize};
use crate::cache::{NodeInfo, PodInfo};
use crate::selectors::{Labels, NodeTerm};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAffinity {
    pub node_selector: Labels,
    /// Required terms, ORed; None when the pod has none.
    pub required: Option<Vec<NodeTerm>>,
    pub preferred: Vec<(i32, NodeTerm)>,
}

impl NodeAffinity {
    pub fn parse(pod: &Pod) -> NodeAffinity {
        let spec = pod.spec.as_ref();
        let node_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        NodeAffinity {
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            required: node_affinity
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|ns| ns.node_selector_terms.iter().map(NodeTerm::parse).collect()),
            preferred: node_affinity
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|terms| {
                    terms
                        .iter()
                        .filter(|t| t.weight != 0)
                        .map(|t| (t.weight, NodeTerm::parse(&t.preference)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// nodeSelector and required affinity both hold for the node.
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if !self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
        match &self.required {
            Some(terms) => terms.iter().any(|t| t.matches(node_name, labels)),
            None => true,
        }
    }
}

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if pod.node_affinity.matches(&node.name, &node.labels) {
        Ok(())
    } else {
        Err(Unfit::unresolvable(NAME, ERR_REASON))
    }
}

/// Sum of the weights of the preferred terms a node matches, scaled to 0..=100.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            pod.node_affinity
                .preferred
                .iter()
                .filter(|(_, t)| t.matches(&n.name, &n.labels))
                .map(|(w, _)| i64::from(*w))
                .sum()
        })
        .collect();
    default_normalize(&mut scores, false);
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn filter_table() {
        let zone_a = json!({"zone": "a", "disk": "ssd"});
        let zone_b = json!({"zone": "b"});
        let required = |terms: serde_json::Value| json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
        let cases = [
            ("no constraint", json!({}), json!(null), &zone_a, true),
            (
                "selector match",
                json!({"disk": "ssd"}),
                json!(null),
                &zone_a,
                true,
            ),
            (
                "selector miss",
                json!({"disk": "ssd"}),
                json!(null),
                &zone_b,
                false,
            ),
            (
                "required In",
                json!({}),
                required(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]),
                ),
                &zone_a,
                true,
            ),
            (
                "required In miss",
                json!({}),
                required(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]),
                ),
                &zone_b,
                false,
            ),
            (
                "terms are ORed",
                json!({}),
                required(json!([
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}
                ])),
                &zone_b,
                true,
            ),
            (
                "empty terms match nothing",
                json!({}),
                required(json!([])),
                &zone_a,
                false,
            ),
            (
                "both must hold",
                json!({"disk": "ssd"}),
                required(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
                ),
                &zone_a,
                false,
            ),
            (
                "matchFields name",
                json!({}),
                required(
                    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]),
                ),
                &zone_b,
                true,
            ),
        ];
        for (what, selector, affinity, labels, fits) in cases {
            let p = pod(
                json!({"metadata": {"name": "p"}, "spec": {"nodeSelector": selector, "affinity": affinity}}),
            );
            let n = node(json!({"metadata": {"name": "n", "labels": labels}}));
            let got = filter(&p, &n);
            assert_eq!(got.is_ok(), fits, "{what}");
            if let Err(e) = got {
                assert_eq!(e.reasons, vec![ERR_REASON.to_string()]);
            }
        }
    }

    #[test]
    fn preferred_score() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}}),
        );
        let n1 = node(json!({"metadata": {"name": "n1", "labels": {"zone": "a", "disk": "ssd"}}}));
        let n2 = node(json!({"metadata": {"name": "n2", "labels": {"zone": "a"}}}));
        let n3 = node(json!({"metadata": {"name": "n3", "labels": {"disk": "hdd"}}}));
        let n4 = node(json!({"metadata": {"name": "n4"}}));
        assert_eq!(score(&p, &[&n1, &n2, &n3, &n4]), vec![100, 80, 20, 0]);
    }
}
