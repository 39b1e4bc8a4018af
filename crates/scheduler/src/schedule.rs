//! One scheduling decision (↔ pkg/scheduler/schedule_one.go): filter the
//! nodes (stopping once enough feasible ones are found on big clusters),
//! score the feasible ones, pick the best; or explain why none fits in
//! Kubernetes' words.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cache::{NodeInfo, PodInfo};
use crate::plugins::{self, CycleState, Snapshot, Unfit};

/// Why no node fits: each node's verdict.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub statuses: BTreeMap<String, Unfit>,
}

impl Diagnosis {
    /// The plugins that rejected at least one node.
    pub fn plugins(&self) -> BTreeSet<&'static str> {
        self.statuses.values().map(|u| u.plugin).collect()
    }
}

/// "no nodes available to schedule pods" (ErrNoNodesAvailable).
pub const NO_NODES: &str = "no nodes available to schedule pods";

/// The FailedScheduling message, built as FitError.Error() does:
/// `0/N nodes are available: <count> <reason>, ... .` with the
/// "<count> <reason>" strings sorted, then the preemption message.
pub fn fit_message<'a>(
    num_nodes: usize,
    statuses: impl IntoIterator<Item = &'a Unfit>,
    post_filter: Option<&str>,
) -> String {
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for u in statuses {
        for r in &u.reasons {
            *histogram.entry(r.as_str()).or_insert(0) += 1;
        }
    }
    let mut reasons: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    let mut msg = format!("0/{num_nodes} nodes are available:");
    if !reasons.is_empty() {
        msg.push_str(&format!(" {}.", reasons.join(", ")));
    }
    if let Some(p) = post_filter.filter(|p| !p.is_empty()) {
        // The preemption message already ends a sentence; Kubernetes' events
        // show it with a single full stop.
        msg.push(' ');
        msg.push_str(p);
        if !p.ends_with('.') {
            msg.push('.');
        }
    }
    msg
}

/// How many feasible nodes to find before scoring (numFeasibleNodesToFind
/// with the adaptive percentage).
pub fn feasible_nodes_to_find(num_nodes: usize) -> usize {
    const MIN: usize = 100;
    if num_nodes < MIN {
        return num_nodes;
    }
    let percentage = 50usize.saturating_sub(num_nodes / 125).max(5);
    (num_nodes * percentage / 100).max(MIN)
}

/// Filter one node, with the pods nominated to it that are at least as
/// important as the pod counted as if already there.
pub fn filter_node(
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    nominated: &[Arc<PodInfo>],
) -> Result<(), Unfit> {
    let relevant: Vec<&Arc<PodInfo>> = nominated
        .iter()
        .filter(|n| n.priority >= pod.priority && n.key != pod.key)
        .collect();
    if relevant.is_empty() {
        return plugins::run_filters(state, pod, node);
    }
    let mut with = node.clone();
    for n in relevant {
        let mut placed = (**n).clone();
        placed.node_name = node.name.clone();
        with.add_pod(Arc::new(placed));
    }
    plugins::run_filters(state, pod, &with)
}

/// The outcome of one scheduling attempt.
#[derive(Debug)]
pub enum Outcome {
    /// The chosen node.
    Fit(String),
    /// No node fits.
    NoFit {
        num_nodes: usize,
        diagnosis: Diagnosis,
    },
}

/// Everything the algorithm needs besides the cluster.
pub struct Algorithm {
    /// Where the next search starts (round robin across cycles).
    next_start: usize,
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::new()
    }
}

impl Algorithm {
    pub fn new() -> Algorithm {
        Algorithm { next_start: 0 }
    }

    /// Find a node for the pod. `nominated` gives the pods nominated to a node.
    pub fn schedule(
        &mut self,
        pod: &PodInfo,
        snap: &Snapshot<'_>,
        nominated: &dyn Fn(&str) -> Vec<Arc<PodInfo>>,
    ) -> Outcome {
        let n = snap.nodes.len();
        if n == 0 {
            return Outcome::NoFit {
                num_nodes: 0,
                diagnosis: Diagnosis::default(),
            };
        }
        let state = CycleState::new(pod, snap);
        // A pod nominated by an earlier preemption tries its node first.
        if let Some(nn) = pod.nominated_node.as_deref()
            && let Some(node) = snap.nodes.iter().find(|x| x.name == nn)
            && filter_node(&state, pod, node, &nominated(nn)).is_ok()
        {
            return Outcome::Fit(nn.to_string());
        }
        let want = feasible_nodes_to_find(n);
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut diagnosis = Diagnosis::default();
        let start = self.next_start % n;
        let mut visited = 0;
        for i in 0..n {
            let node = snap.nodes[(start + i) % n];
            visited += 1;
            match filter_node(&state, pod, node, &nominated(&node.name)) {
                Ok(()) => {
                    feasible.push(node);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(u) => {
                    diagnosis.statuses.insert(node.name.clone(), u);
                }
            }
        }
        self.next_start = (start + visited) % n;
        if feasible.is_empty() {
            return Outcome::NoFit {
                num_nodes: n,
                diagnosis,
            };
        }
        if feasible.len() == 1 {
            return Outcome::Fit(feasible[0].name.clone());
        }
        let scores = plugins::score_nodes(pod, &feasible, snap);
        Outcome::Fit(select_host(&feasible, &scores))
    }
}

/// The highest score; ties broken at random (reservoir sampling).
fn select_host(nodes: &[&NodeInfo], scores: &[i64]) -> String {
    let mut best = 0usize;
    let mut ties = 1u32;
    for i in 1..nodes.len() {
        if scores[i] > scores[best] {
            best = i;
            ties = 1;
        } else if scores[i] == scores[best] {
            ties += 1;
            if rand::random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    nodes[best].name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use crate::plugins::Code;
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn message_as_kubernetes_builds_it() {
        let cpu = Unfit::unschedulable("NodeResourcesFit", "Insufficient cpu");
        let taint = Unfit::unresolvable(
            "TaintToleration",
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        );
        let not_helpful = Unfit::unresolvable("", "Preemption is not helpful for scheduling");
        let post = format!(
            "preemption: {}",
            fit_message(3, [&not_helpful, &not_helpful, &not_helpful], None)
        );
        assert_eq!(
            fit_message(3, [&taint, &cpu, &taint], Some(&post)),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        let both = Unfit {
            plugin: "NodeResourcesFit",
            code: Code::Unschedulable,
            reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
        };
        assert_eq!(
            fit_message(2, [&both, &cpu], None),
            "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."
        );
        // Sorted as strings, counts included, as Kubernetes does.
        let ports = Unfit::unschedulable(
            "NodePorts",
            "node(s) didn't have free ports for the requested pod ports",
        );
        let many: Vec<&Unfit> = std::iter::repeat_n(&ports, 10)
            .chain([&cpu, &cpu])
            .collect();
        assert_eq!(
            fit_message(12, many, None),
            "0/12 nodes are available: 10 node(s) didn't have free ports for the requested pod ports, 2 Insufficient cpu."
        );
    }

    #[test]
    fn feasible_counts() {
        let cases = [
            (0, 0),
            (50, 50),
            (99, 99),
            (100, 100),
            (1000, 420),
            (5000, 500),
            (6000, 300),
            (20000, 1000),
        ];
        for (nodes, want) in cases {
            assert_eq!(feasible_nodes_to_find(nodes), want, "{nodes}");
        }
    }

    #[test]
    fn picks_the_fitting_least_allocated_node() {
        let big = node(
            json!({"metadata": {"name": "big"}, "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}}),
        );
        let small = node(
            json!({"metadata": {"name": "small"}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}),
        );
        let tiny = node(
            json!({"metadata": {"name": "tiny"}, "status": {"allocatable": {"cpu": "500m", "memory": "4Gi", "pods": "110"}}}),
        );
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: vec![&big, &small, &tiny],
            namespaces: &ns,
        };
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        let mut alg = Algorithm::new();
        for _ in 0..5 {
            match alg.schedule(&p, &snap, &|_| Vec::new()) {
                Outcome::Fit(n) => assert_eq!(n, "big"),
                other => panic!("{other:?}"),
            }
        }
        let huge = pod(
            json!({"metadata": {"name": "h"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}}),
        );
        match alg.schedule(
            &huge,
            &Snapshot {
                nodes: vec![&small, &tiny],
                namespaces: &ns,
            },
            &|_| Vec::new(),
        ) {
            Outcome::NoFit {
                num_nodes,
                diagnosis,
            } => {
                assert_eq!(num_nodes, 2);
                assert_eq!(
                    fit_message(num_nodes, diagnosis.statuses.values(), None),
                    "0/2 nodes are available: 2 Insufficient cpu."
                );
                assert_eq!(diagnosis.plugins(), BTreeSet::from(["NodeResourcesFit"]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nominated_pods_hold_their_room() {
        let n1 = node(
            json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}),
        );
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: vec![&n1],
            namespaces: &ns,
        };
        let req = |name: &str, prio: i32| {
            pod(
                json!({"metadata": {"name": name}, "spec": {"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}}),
            )
        };
        let high = Arc::new(req("high", 100));
        let nominated = |_: &str| vec![high.clone()];
        let mut alg = Algorithm::new();
        assert!(matches!(
            alg.schedule(&req("low", 0), &snap, &nominated),
            Outcome::NoFit { .. }
        ));
        // Higher priority than the nominated pod: not held back.
        assert!(matches!(
            alg.schedule(&req("higher", 1000), &snap, &nominated),
            Outcome::Fit(_)
        ));
    }
}
