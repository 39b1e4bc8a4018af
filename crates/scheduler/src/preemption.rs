//! Priority preemption (↔ plugins/defaultpreemption and
//! framework/preemption): when no node fits a pod, find a node where
//! evicting lower-priority pods makes it fit, evicting as few and as
//! unimportant pods as possible.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::{NodeInfo, PodInfo};
use crate::plugins::{self, Code, CycleState, Snapshot, Unfit};
use crate::schedule::fit_message;

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NEVER: &str = "not eligible due to preemptionPolicy=Never.";
pub const TERMINATING: &str = "not eligible due to a terminating pod on the nominated node.";

/// A node and the pods to evict from it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// Why preemption found nothing: the message after "preemption: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoCandidate(pub String);

/// Find the best node to preempt on, given each node's filter verdict.
pub fn preempt(
    pod: &PodInfo,
    snap: &Snapshot<'_>,
    statuses: &BTreeMap<String, Unfit>,
) -> Result<Candidate, NoCandidate> {
    if pod.preemption_never {
        return Err(NoCandidate(NEVER.into()));
    }
    // Victims on the nominated node are still terminating: wait for them.
    if let Some(nn) = pod.nominated_node.as_deref()
        && statuses
            .get(nn)
            .is_some_and(|u| u.code == Code::Unschedulable)
        && let Some(node) = snap.nodes.iter().find(|n| n.name == nn)
        && node
            .pods
            .values()
            .any(|p| p.terminating && p.priority < pod.priority)
    {
        return Err(NoCandidate(TERMINATING.into()));
    }
    let mut node_statuses: Vec<Unfit> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for node in &snap.nodes {
        match statuses.get(&node.name) {
            Some(u) if u.code == Code::Unschedulable => match select_victims(pod, node, snap) {
                Ok(victims) => candidates.push(Candidate {
                    node: node.name.clone(),
                    victims,
                }),
                Err(u) => node_statuses.push(u),
            },
            _ => node_statuses.push(Unfit::unresolvable("", NOT_HELPFUL)),
        }
    }
    if candidates.is_empty() {
        return Err(NoCandidate(fit_message(
            snap.nodes.len(),
            &node_statuses,
            None,
        )));
    }
    candidates.sort_by_key(|c| {
        let highest = c
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum();
        (highest, sum, c.victims.len())
    });
    Ok(candidates.swap_remove(0))
}

/// More important first: higher priority, then started earlier.
fn importance_order(a: &Arc<PodInfo>, b: &Arc<PodInfo>) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.started.cmp(&b.started))
        .then(a.key.cmp(&b.key))
}

/// Whether the pod fits `node` (a what-if copy standing in for its original in `snap`).
fn fits_on(pod: &PodInfo, node: &NodeInfo, snap: &Snapshot<'_>) -> Result<(), Unfit> {
    let nodes: Vec<&NodeInfo> = snap
        .nodes
        .iter()
        .map(|n| if n.name == node.name { node } else { *n })
        .collect();
    let what_if = Snapshot {
        nodes,
        namespaces: snap.namespaces,
    };
    let state = CycleState::new(pod, &what_if);
    plugins::run_filters(&state, pod, node)
}

/// The fewest lower-priority pods whose removal lets the pod fit on the node.
pub fn select_victims(
    pod: &PodInfo,
    node: &NodeInfo,
    snap: &Snapshot<'_>,
) -> Result<Vec<Arc<PodInfo>>, Unfit> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Unfit::unresolvable("", NO_VICTIMS));
    }
    let mut trial = node.clone();
    for p in &potential {
        trial.remove_pod(&p.key);
    }
    fits_on(pod, &trial, snap)?;
    // Give back as many of the most important pods as still lets the pod fit.
    potential.sort_by(importance_order);
    let mut victims = Vec::new();
    for p in potential {
        trial.add_pod(p.clone());
        if fits_on(pod, &trial, snap).is_err() {
            trial.remove_pod(&p.key);
            victims.push(p);
        }
    }
    Ok(victims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node_with, pod};
    use serde_json::json;
    use std::collections::HashMap;

    fn cpu_pod(name: &str, priority: i32, cpu: &str) -> PodInfo {
        pod(
            json!({"metadata": {"name": name}, "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    fn run(p: &PodInfo, nodes: &[NodeInfo]) -> Result<Candidate, NoCandidate> {
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: nodes.iter().collect(),
            namespaces: &ns,
        };
        let state = CycleState::new(p, &snap);
        let statuses: BTreeMap<String, Unfit> = nodes
            .iter()
            .filter_map(|n| {
                plugins::run_filters(&state, p, n)
                    .err()
                    .map(|u| (n.name.clone(), u))
            })
            .collect();
        preempt(p, &snap, &statuses)
    }

    fn victims(c: &Candidate) -> Vec<String> {
        let mut v: Vec<String> = c.victims.iter().map(|p| p.name.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn picks_fewest_least_important_victims() {
        // 4 cpu nodes. n1: two low pods and a high one of 1 cpu each; n2: one mid pod of 3 cpu.
        let nodes = vec![
            node_with(
                "n1",
                json!({}),
                vec![
                    cpu_pod("low-a", 0, "1"),
                    cpu_pod("low-b", 0, "1"),
                    cpu_pod("high", 2000, "1"),
                ],
            ),
            node_with("n2", json!({}), vec![cpu_pod("mid", 500, "3")]),
        ];
        let c = run(&cpu_pod("new", 1000, "2"), &nodes).unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(
            victims(&c),
            ["low-b"],
            "one low pod is enough; the other is reprieved"
        );
    }

    #[test]
    fn higher_priority_pods_are_never_victims() {
        let nodes = vec![node_with("n1", json!({}), vec![cpu_pod("high", 2000, "4")])];
        let err = run(&cpu_pod("new", 1000, "1"), &nodes).unwrap_err();
        assert_eq!(err.0, format!("0/1 nodes are available: 1 {NO_VICTIMS}."));
    }

    #[test]
    fn unresolvable_nodes_are_not_helped() {
        let mut tainted = node_with("n1", json!({}), vec![cpu_pod("low", 0, "1")]);
        tainted.taints = vec![
            serde_json::from_value(json!({"key": "dedicated", "effect": "NoSchedule"})).unwrap(),
        ];
        let full = node_with("n2", json!({}), vec![cpu_pod("low2", 0, "4")]);
        let c = run(&cpu_pod("new", 1000, "1"), &[tainted.clone(), full]).unwrap();
        assert_eq!(c.node, "n2");
        let err = run(&cpu_pod("new", 1000, "1"), &[tainted]).unwrap_err();
        assert_eq!(err.0, format!("0/1 nodes are available: 1 {NOT_HELPFUL}."));
    }

    #[test]
    fn even_evicting_everything_is_not_enough() {
        let nodes = vec![node_with("n1", json!({}), vec![cpu_pod("low", 0, "1")])];
        // 5 cpu on a 4 cpu node: NodeResourcesFit says unresolvable, so preemption does not try.
        let err = run(&cpu_pod("new", 1000, "5"), &nodes).unwrap_err();
        assert_eq!(err.0, format!("0/1 nodes are available: 1 {NOT_HELPFUL}."));
    }

    #[test]
    fn never_policy_and_terminating_victims() {
        let nodes = vec![node_with("n1", json!({}), vec![cpu_pod("low", 0, "4")])];
        let mut p = cpu_pod("new", 1000, "1");
        p.preemption_never = true;
        assert_eq!(run(&p, &nodes).unwrap_err().0, NEVER);
        let mut low = cpu_pod("low", 0, "4");
        low.terminating = true;
        let nodes = vec![node_with("n1", json!({}), vec![low])];
        let mut p = cpu_pod("new", 1000, "1");
        p.nominated_node = Some("n1".into());
        assert_eq!(run(&p, &nodes).unwrap_err().0, TERMINATING);
    }
}
