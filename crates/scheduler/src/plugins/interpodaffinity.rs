//! InterPodAffinity (↔ plugins/interpodaffinity): required pod affinity and
//! anti-affinity by topologyKey (both the incoming pod's and the existing
//! pods' anti-affinity) filter; preferred terms score.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::{FilterResult, MAX_NODE_SCORE, Snapshot, Unfit};
use crate::cache::{NodeInfo, PodInfo};
use crate::selectors::{Labels, Op, Requirement, Selector};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Weight of an existing pod's required affinity term when scoring (hardPodAffinityWeight).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityTerm {
    pub selector: Selector,
    pub namespaces: BTreeSet<String>,
    /// Some: namespaces whose labels match also count (an empty selector: all).
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
    pub weight: i32,
}

impl AffinityTerm {
    fn parse(t: &PodAffinityTerm, own_ns: &str, own_labels: &Labels, weight: i32) -> AffinityTerm {
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref());
        if t.label_selector.is_some() && !selector.nothing {
            for key in t.match_label_keys.iter().flatten() {
                if let Some(v) = own_labels.get(key) {
                    selector.reqs.push(Requirement {
                        key: key.clone(),
                        op: Op::In(vec![v.clone()]),
                    });
                }
            }
            for key in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = own_labels.get(key) {
                    selector.reqs.push(Requirement {
                        key: key.clone(),
                        op: Op::NotIn(vec![v.clone()]),
                    });
                }
            }
        }
        let mut namespaces: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(own_ns.to_string());
        }
        AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    fn matches_namespace(&self, ns: &str, ns_labels: &HashMap<String, Labels>) -> bool {
        if self.namespaces.contains(ns) {
            return true;
        }
        match &self.namespace_selector {
            Some(sel) if sel.is_everything() => true,
            Some(sel) => ns_labels.get(ns).is_some_and(|l| sel.matches(l)),
            None => false,
        }
    }

    /// Whether `pod` is selected by this term.
    pub fn matches(&self, pod: &PodInfo, ns_labels: &HashMap<String, Labels>) -> bool {
        self.matches_namespace(&pod.namespace, ns_labels) && self.selector.matches(&pod.labels)
    }
}

/// A pod's inter-pod (anti-)affinity terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAffinity {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
}

impl PodAffinity {
    pub fn parse(pod: &Pod, namespace: &str) -> PodAffinity {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::parse(t, namespace, &labels, 1))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter(|t| t.weight != 0)
                .map(|t| AffinityTerm::parse(&t.pod_affinity_term, namespace, &labels, t.weight))
                .collect()
        };
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        PodAffinity {
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }

    pub fn has_any(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

type TopologyCounts = HashMap<(String, String), i64>;

/// What the filter needs, counted once per cycle.
#[derive(Clone, Debug, Default)]
pub struct PreState {
    /// Topology pairs of existing pods whose required anti-affinity selects the incoming pod.
    existing_anti_affinity: TopologyCounts,
    /// Topology pairs of pods matching all the incoming pod's required affinity terms.
    affinity: TopologyCounts,
    /// Topology pairs of pods matching one of the incoming pod's required anti-affinity terms.
    anti_affinity: TopologyCounts,
}

fn bump(counts: &mut TopologyCounts, node: &NodeInfo, key: &str, by: i64) {
    if let Some(v) = node.labels.get(key) {
        *counts.entry((key.to_string(), v.clone())).or_insert(0) += by;
    }
}

pub fn pre_filter(pod: &PodInfo, snap: &Snapshot<'_>) -> PreState {
    let mut state = PreState::default();
    for node in &snap.nodes {
        for key in &node.pods_with_required_anti_affinity {
            let Some(existing) = node.pods.get(key) else {
                continue;
            };
            for term in &existing.affinity.required_anti_affinity {
                if term.matches(pod, snap.namespaces) {
                    bump(
                        &mut state.existing_anti_affinity,
                        node,
                        &term.topology_key,
                        1,
                    );
                }
            }
        }
    }
    let a = &pod.affinity;
    if a.required_affinity.is_empty() && a.required_anti_affinity.is_empty() {
        return state;
    }
    for node in &snap.nodes {
        for existing in node.pods.values() {
            if existing.key == pod.key {
                continue;
            }
            if !a.required_affinity.is_empty()
                && a.required_affinity
                    .iter()
                    .all(|t| t.matches(existing, snap.namespaces))
            {
                for t in &a.required_affinity {
                    bump(&mut state.affinity, node, &t.topology_key, 1);
                }
            }
            for t in &a.required_anti_affinity {
                if t.matches(existing, snap.namespaces) {
                    bump(&mut state.anti_affinity, node, &t.topology_key, 1);
                }
            }
        }
    }
    state
}

fn count_at(counts: &TopologyCounts, key: &str, node: &NodeInfo) -> i64 {
    node.labels
        .get(key)
        .and_then(|v| counts.get(&(key.to_string(), v.clone())))
        .copied()
        .unwrap_or(0)
}

pub fn filter(state: &PreState, pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let terms = &pod.affinity.required_affinity;
    if !terms.is_empty() {
        if terms
            .iter()
            .any(|t| !node.labels.contains_key(&t.topology_key))
        {
            return Err(Unfit::unresolvable(NAME, ERR_AFFINITY));
        }
        let exist = terms
            .iter()
            .all(|t| count_at(&state.affinity, &t.topology_key, node) > 0);
        // The first pod of a group with affinity to itself may go anywhere.
        let first_of_group = state.affinity.is_empty()
            && terms.iter().all(|t| {
                t.matches_namespace(&pod.namespace, &HashMap::new())
                    && t.selector.matches(&pod.labels)
            });
        if !exist && !first_of_group {
            return Err(Unfit::unresolvable(NAME, ERR_AFFINITY));
        }
    }
    if !state.anti_affinity.is_empty()
        && pod
            .affinity
            .required_anti_affinity
            .iter()
            .any(|t| count_at(&state.anti_affinity, &t.topology_key, node) > 0)
    {
        return Err(Unfit::unschedulable(NAME, ERR_ANTI_AFFINITY));
    }
    if !state.existing_anti_affinity.is_empty()
        && node.labels.iter().any(|(k, v)| {
            state
                .existing_anti_affinity
                .get(&(k.clone(), v.clone()))
                .is_some_and(|c| *c > 0)
        })
    {
        return Err(Unfit::unschedulable(NAME, ERR_EXISTING_ANTI_AFFINITY));
    }
    Ok(())
}

/// Preferred terms (the incoming pod's against existing pods, and existing
/// pods' against the incoming pod), min-max scaled to 0..=100.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo], snap: &Snapshot<'_>) -> Vec<i64> {
    let a = &pod.affinity;
    let own_preferred = !a.preferred_affinity.is_empty() || !a.preferred_anti_affinity.is_empty();
    let mut topo: TopologyCounts = HashMap::new();
    let mut process = |existing: &PodInfo, node: &NodeInfo| {
        for t in &a.preferred_affinity {
            if t.matches(existing, snap.namespaces) {
                bump(&mut topo, node, &t.topology_key, i64::from(t.weight));
            }
        }
        for t in &a.preferred_anti_affinity {
            if t.matches(existing, snap.namespaces) {
                bump(&mut topo, node, &t.topology_key, -i64::from(t.weight));
            }
        }
        let e = &existing.affinity;
        for t in &e.required_affinity {
            if t.matches(pod, snap.namespaces) {
                bump(&mut topo, node, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
            }
        }
        for t in &e.preferred_affinity {
            if t.matches(pod, snap.namespaces) {
                bump(&mut topo, node, &t.topology_key, i64::from(t.weight));
            }
        }
        for t in &e.preferred_anti_affinity {
            if t.matches(pod, snap.namespaces) {
                bump(&mut topo, node, &t.topology_key, -i64::from(t.weight));
            }
        }
    };
    let mut any = false;
    for node in &snap.nodes {
        if own_preferred {
            for existing in node.pods.values().filter(|p| p.key != pod.key) {
                any = true;
                process(existing, node);
            }
        } else {
            for key in &node.pods_with_affinity {
                if let Some(existing) = node.pods.get(key).filter(|p| p.key != pod.key) {
                    any = true;
                    process(existing, node);
                }
            }
        }
    }
    if !any || topo.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.labels
                .iter()
                .filter_map(|(k, v)| topo.get(&(k.clone(), v.clone())))
                .sum()
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    let diff = max - min;
    raw.into_iter()
        .map(|s| {
            if diff > 0 {
                MAX_NODE_SCORE * (s - min) / diff
            } else {
                0
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

    fn labelled(name: &str, labels: serde_json::Value, affinity: serde_json::Value) -> PodInfo {
        pod(json!({"metadata": {"name": name, "labels": labels}, "spec": {"affinity": affinity}}))
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn run(p: &PodInfo, nodes: &[NodeInfo]) -> Vec<Option<&'static str>> {
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: nodes.iter().collect(),
            namespaces: &ns,
        };
        let state = pre_filter(p, &snap);
        nodes
            .iter()
            .map(|n| {
                filter(&state, p, n)
                    .err()
                    .map(|e| match e.reasons[0].as_str() {
                        ERR_AFFINITY => "affinity",
                        ERR_ANTI_AFFINITY => "anti",
                        ERR_EXISTING_ANTI_AFFINITY => "existing",
                        _ => "other",
                    })
            })
            .collect()
    }

    #[test]
    fn filter_table() {
        let zone = |z: &str| json!({"zone": z, "kubernetes.io/hostname": "h"});
        let db = labelled("db", json!({"app": "db"}), json!(null));
        let web_anti_web = labelled(
            "web-0",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}),
        );
        let cases: Vec<Case> = vec![
            (
                "affinity to db's zone",
                labelled(
                    "p",
                    json!({}),
                    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
                ),
                vec![
                    node_with("a", zone("a"), vec![db.clone()]),
                    node_with("b", zone("b"), vec![]),
                    node_with("c", json!({}), vec![]),
                ],
                vec![None, Some("affinity"), Some("affinity")],
            ),
            (
                "first of a self-affine group",
                labelled(
                    "p",
                    json!({"app": "cache"}),
                    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}),
                ),
                vec![
                    node_with("a", zone("a"), vec![db.clone()]),
                    node_with("b", zone("b"), vec![]),
                ],
                vec![None, None],
            ),
            (
                "no match and not self-affine",
                labelled(
                    "p",
                    json!({}),
                    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}),
                ),
                vec![node_with("a", zone("a"), vec![db.clone()])],
                vec![Some("affinity")],
            ),
            (
                "anti-affinity to db's zone",
                labelled(
                    "p",
                    json!({}),
                    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
                ),
                vec![
                    node_with("a", zone("a"), vec![db.clone()]),
                    node_with("a2", zone("a"), vec![]),
                    node_with("b", zone("b"), vec![]),
                ],
                vec![Some("anti"), Some("anti"), None],
            ),
            (
                "existing pod's anti-affinity",
                labelled("web-1", json!({"app": "web"}), json!(null)),
                vec![
                    node_with("a", zone("a"), vec![web_anti_web.clone()]),
                    node_with("b", zone("b"), vec![]),
                ],
                vec![Some("existing"), None],
            ),
            (
                "other namespace does not count",
                labelled(
                    "p",
                    json!({}),
                    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
                ),
                vec![node_with(
                    "a",
                    zone("a"),
                    vec![pod(
                        json!({"metadata": {"name": "db", "namespace": "other", "labels": {"app": "db"}}}),
                    )],
                )],
                vec![None],
            ),
            (
                "namespaceSelector {} covers all namespaces",
                labelled(
                    "p",
                    json!({}),
                    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {}, "topologyKey": "zone"}]}}),
                ),
                vec![node_with(
                    "a",
                    zone("a"),
                    vec![pod(
                        json!({"metadata": {"name": "db", "namespace": "other", "labels": {"app": "db"}}}),
                    )],
                )],
                vec![Some("anti")],
            ),
        ];
        for (what, p, nodes, want) in cases {
            assert_eq!(run(&p, &nodes), want, "{what}");
        }
    }

    #[test]
    fn preferred_score() {
        let db = labelled("db", json!({"app": "db"}), json!(null));
        let p = labelled(
            "p",
            json!({}),
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term("db", "zone")}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": term("web", "zone")}]}
            }),
        );
        let web = labelled("web", json!({"app": "web"}), json!(null));
        let nodes = [
            node_with("a", json!({"zone": "a"}), vec![db]),
            node_with("b", json!({"zone": "b"}), vec![]),
            node_with("c", json!({"zone": "c"}), vec![web]),
        ];
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: nodes.iter().collect(),
            namespaces: &ns,
        };
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        assert_eq!(score(&p, &feasible, &snap), vec![100, 33, 0]);
        let plain = labelled("q", json!({}), json!(null));
        assert_eq!(score(&plain, &feasible, &snap), vec![0, 0, 0]);
    }
}
