//! PodTopologySpread (↔ plugins/podtopologyspread): DoNotSchedule
//! constraints filter nodes whose domain would exceed maxSkew;
//! ScheduleAnyway constraints score emptier domains higher.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;

use super::tainttoleration::tolerates;
use super::{FilterResult, MAX_NODE_SCORE, Snapshot, Unfit};
use crate::cache::{NodeInfo, PodInfo};
use crate::selectors::{Op, Requirement, Selector};

pub const NAME: &str = "PodTopologySpread";
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// whenUnsatisfiable: DoNotSchedule (true) or ScheduleAnyway.
    pub hard: bool,
    pub selector: Selector,
    pub min_domains: Option<i64>,
    /// nodeAffinityPolicy Honor (default): only nodes the pod could go to count.
    pub honor_node_affinity: bool,
    /// nodeTaintsPolicy Honor: only nodes whose taints the pod tolerates count.
    pub honor_taints: bool,
}

pub fn parse(pod: &Pod) -> Vec<Constraint> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.topology_spread_constraints
        .iter()
        .flatten()
        .map(|c| {
            let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
            if c.label_selector.is_some() && !selector.nothing {
                for key in c.match_label_keys.iter().flatten() {
                    if let Some(v) = labels.get(key) {
                        selector.reqs.push(Requirement {
                            key: key.clone(),
                            op: Op::In(vec![v.clone()]),
                        });
                    }
                }
            }
            Constraint {
                max_skew: i64::from(c.max_skew.max(1)),
                topology_key: c.topology_key.clone(),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                selector,
                min_domains: c.min_domains.map(i64::from),
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

/// Which constraints a pre-computation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Filter,
    Score,
}

#[derive(Clone, Debug, Default)]
pub struct PreState {
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per topology value.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the global minimum (0 below minDomains).
    min: Vec<i64>,
}

fn count_matching(node: &NodeInfo, c: &Constraint, namespace: &str, skip: &str) -> i64 {
    node.pods
        .values()
        .filter(|p| {
            p.namespace == namespace
                && !p.terminating
                && p.key != skip
                && c.selector.matches(&p.labels)
        })
        .count() as i64
}

fn node_counts(pod: &PodInfo, c: &Constraint, node: &NodeInfo) -> bool {
    if c.honor_node_affinity && !pod.node_affinity.matches(&node.name, &node.labels) {
        return false;
    }
    if c.honor_taints
        && node
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .any(|taint| !pod.tolerations.iter().any(|t| tolerates(t, taint)))
    {
        return false;
    }
    true
}

/// Count matching pods per domain; None when the pod has no constraint of this mode.
pub fn pre_filter(pod: &PodInfo, snap: &Snapshot<'_>, mode: Mode) -> Option<PreState> {
    let constraints: Vec<Constraint> = pod
        .spread
        .iter()
        .filter(|c| c.hard == (mode == Mode::Filter))
        .cloned()
        .collect();
    if constraints.is_empty() {
        return None;
    }
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for node in &snap.nodes {
        if !constraints
            .iter()
            .all(|c| node.labels.contains_key(&c.topology_key))
        {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !node_counts(pod, c, node) {
                continue;
            }
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let n = count_matching(node, c, &pod.namespace, &pod.key);
            *counts[i].entry(value.clone()).or_insert(0) += n;
        }
    }
    let min = constraints
        .iter()
        .zip(&counts)
        .map(|(c, domain)| {
            let min = domain.values().copied().min().unwrap_or(0);
            match c.min_domains {
                Some(md) if (domain.len() as i64) < md => 0,
                _ => min,
            }
        })
        .collect();
    Some(PreState {
        constraints,
        counts,
        min,
    })
}

pub fn filter(state: &PreState, pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(value) = node.labels.get(&c.topology_key) else {
            return Err(Unfit::unresolvable(NAME, ERR_MISSING_LABEL));
        };
        let self_match = i64::from(c.selector.matches(&pod.labels));
        let matching = state.counts[i].get(value).copied().unwrap_or(0);
        if matching + self_match - state.min[i] > c.max_skew {
            return Err(Unfit::unschedulable(NAME, ERR_CONSTRAINTS));
        }
    }
    Ok(())
}

/// ScheduleAnyway constraints: fewer matching pods in the node's domains score higher.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo], snap: &Snapshot<'_>) -> Vec<i64> {
    let Some(state) = pre_filter(pod, snap, Mode::Score) else {
        return vec![0; nodes.len()];
    };
    let ignored: Vec<bool> = nodes
        .iter()
        .map(|n| {
            !state
                .constraints
                .iter()
                .all(|c| n.labels.contains_key(&c.topology_key))
        })
        .collect();
    let weights: Vec<f64> = state
        .constraints
        .iter()
        .map(|c| {
            let domains: HashSet<&String> = nodes
                .iter()
                .zip(&ignored)
                .filter(|(_, ig)| !**ig)
                .filter_map(|(n, _)| n.labels.get(&c.topology_key))
                .collect();
            ((domains.len() + 2) as f64).ln()
        })
        .collect();
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let mut s = 0.0;
            for (i, c) in state.constraints.iter().enumerate() {
                if let Some(value) = n.labels.get(&c.topology_key) {
                    let cnt = if c.topology_key == HOSTNAME {
                        count_matching(n, c, &pod.namespace, &pod.key)
                    } else {
                        state.counts[i].get(value).copied().unwrap_or(0)
                    };
                    s += cnt as f64 * weights[i] + (c.max_skew - 1) as f64;
                }
            }
            s.round() as i64
        })
        .collect();
    let considered = raw
        .iter()
        .zip(&ignored)
        .filter(|(_, ig)| !**ig)
        .map(|(s, _)| *s);
    let min = considered.clone().min().unwrap_or(0);
    let max = considered.max().unwrap_or(0);
    raw.iter()
        .zip(&ignored)
        .map(|(s, ig)| {
            if *ig {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node_with, pod};
    use serde_json::json;

    type Case = (
        &'static str,
        PodInfo,
        Vec<NodeInfo>,
        Vec<Option<&'static str>>,
    );

    fn app(name: &str) -> PodInfo {
        pod(json!({"metadata": {"name": name, "labels": {"app": "web"}}}))
    }

    fn spreading(constraints: serde_json::Value) -> PodInfo {
        pod(
            json!({"metadata": {"name": "new", "labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": constraints}}),
        )
    }

    fn constraint(skew: i32, key: &str, when: &str) -> serde_json::Value {
        json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    fn zones(spec: &[(&str, &str, usize)]) -> Vec<NodeInfo> {
        spec.iter()
            .map(|(name, zone, pods)| {
                let labels = if zone.is_empty() {
                    json!({})
                } else {
                    json!({"zone": zone})
                };
                node_with(
                    name,
                    labels,
                    (0..*pods).map(|i| app(&format!("{name}-{i}"))).collect(),
                )
            })
            .collect()
    }

    fn filter_all(p: &PodInfo, nodes: &[NodeInfo]) -> Vec<Option<&'static str>> {
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: nodes.iter().collect(),
            namespaces: &ns,
        };
        let Some(state) = pre_filter(p, &snap, Mode::Filter) else {
            return vec![None; nodes.len()];
        };
        nodes
            .iter()
            .map(|n| {
                filter(&state, p, n).err().map(|e| {
                    if e.reasons[0] == ERR_MISSING_LABEL {
                        "label"
                    } else {
                        "skew"
                    }
                })
            })
            .collect()
    }

    #[test]
    fn filter_table() {
        let cases: Vec<Case> = vec![
            (
                "balanced zones",
                spreading(json!([constraint(1, "zone", "DoNotSchedule")])),
                zones(&[("a", "a", 1), ("b", "b", 1)]),
                vec![None, None],
            ),
            (
                "skewed zones",
                spreading(json!([constraint(1, "zone", "DoNotSchedule")])),
                zones(&[("a", "a", 2), ("b", "b", 1)]),
                vec![Some("skew"), None],
            ),
            (
                "maxSkew 2 allows",
                spreading(json!([constraint(2, "zone", "DoNotSchedule")])),
                zones(&[("a", "a", 2), ("b", "b", 1)]),
                vec![None, None],
            ),
            (
                "missing label",
                spreading(json!([constraint(1, "zone", "DoNotSchedule")])),
                zones(&[("a", "a", 0), ("x", "", 0)]),
                vec![None, Some("label")],
            ),
            (
                "ScheduleAnyway does not filter",
                spreading(json!([constraint(1, "zone", "ScheduleAnyway")])),
                zones(&[("a", "a", 5), ("b", "b", 0)]),
                vec![None, None],
            ),
            (
                "minDomains above domains makes min 0",
                spreading(
                    json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3, "labelSelector": {"matchLabels": {"app": "web"}}}]),
                ),
                zones(&[("a", "a", 1), ("b", "b", 1)]),
                vec![Some("skew"), Some("skew")],
            ),
        ];
        for (what, p, nodes, want) in cases {
            assert_eq!(filter_all(&p, &nodes), want, "{what}");
        }
    }

    #[test]
    fn node_affinity_policy() {
        // Nodes the pod cannot go to do not define the minimum.
        let mut p = spreading(json!([constraint(1, "zone", "DoNotSchedule")]));
        p.node_affinity
            .node_selector
            .insert("pool".into(), "x".into());
        let mut nodes = zones(&[("a", "a", 1), ("b", "b", 0)]);
        nodes[0].labels.insert("pool".into(), "x".into());
        assert_eq!(filter_all(&p, &nodes), vec![None, None]);
    }

    #[test]
    fn score_prefers_emptier_domains() {
        let p = spreading(json!([constraint(1, "zone", "ScheduleAnyway")]));
        let nodes = zones(&[("a", "a", 3), ("b", "b", 0), ("c", "c", 1), ("x", "", 0)]);
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: nodes.iter().collect(),
            namespaces: &ns,
        };
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let s = score(&p, &feasible, &snap);
        assert!(s[1] > s[2] && s[2] > s[0], "{s:?}");
        assert_eq!(s[1], 100);
        assert_eq!(s[3], 0);
    }
}
