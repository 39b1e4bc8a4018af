//! The scheduling plugins (↔ pkg/scheduler/framework/plugins), one file
//! each, and what they share: the verdict of a filter and the per-cycle
//! state computed before filtering.

pub mod balancedallocation;
pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod podtopologyspread;
pub mod tainttoleration;

use std::collections::HashMap;

use crate::cache::{NodeInfo, PodInfo};
use crate::selectors::Labels;

/// Scores are normalised to 0..=MAX_NODE_SCORE per plugin.
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node cannot take a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Preempting pods on the node may help.
    Unschedulable,
    /// Preemption cannot help (taints, affinity, node name, ...).
    UnschedulableAndUnresolvable,
}

/// The verdict of a failed filter: the plugin, its code and its reasons
/// (what the FailedScheduling histogram counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfit {
    pub plugin: &'static str,
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Unfit {
    pub fn new(plugin: &'static str, code: Code, reason: impl Into<String>) -> Unfit {
        Unfit {
            plugin,
            code,
            reasons: vec![reason.into()],
        }
    }

    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Unfit {
        Unfit::new(plugin, Code::Unschedulable, reason)
    }

    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Unfit {
        Unfit::new(plugin, Code::UnschedulableAndUnresolvable, reason)
    }
}

pub type FilterResult = Result<(), Unfit>;

/// What every plugin reads in one cycle: the schedulable nodes and the
/// namespaces' labels.
pub struct Snapshot<'a> {
    pub nodes: Vec<&'a NodeInfo>,
    pub namespaces: &'a HashMap<String, Labels>,
}

/// State computed once per pod per cycle by the PreFilter step.
pub struct CycleState {
    pub interpod: interpodaffinity::PreState,
    pub spread: Option<podtopologyspread::PreState>,
}

impl CycleState {
    pub fn new(pod: &PodInfo, snap: &Snapshot<'_>) -> CycleState {
        CycleState {
            interpod: interpodaffinity::pre_filter(pod, snap),
            spread: podtopologyspread::pre_filter(pod, snap, podtopologyspread::Mode::Filter),
        }
    }
}

/// Run every filter in Kubernetes' default order; the first that fails decides.
pub fn run_filters(state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    nodeunschedulable::filter(pod, node)?;
    nodename::filter(pod, node)?;
    tainttoleration::filter(pod, node)?;
    nodeaffinity::filter(pod, node)?;
    nodeports::filter(pod, node)?;
    noderesources::filter(pod, node)?;
    if let Some(s) = &state.spread {
        podtopologyspread::filter(s, pod, node)?;
    }
    interpodaffinity::filter(&state.interpod, pod, node)?;
    Ok(())
}

/// Scale raw scores to 0..=MAX_NODE_SCORE by the maximum (reverse: fewer is better).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

/// Weighted total score of each feasible node (Kubernetes' default weights).
pub fn score_nodes(pod: &PodInfo, nodes: &[&NodeInfo], snap: &Snapshot<'_>) -> Vec<i64> {
    let mut total = vec![0i64; nodes.len()];
    let mut add = |scores: Vec<i64>, weight: i64| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };
    add(
        nodes.iter().map(|n| noderesources::score(pod, n)).collect(),
        1,
    );
    add(
        nodes
            .iter()
            .map(|n| balancedallocation::score(pod, n))
            .collect(),
        1,
    );
    add(tainttoleration::score(pod, nodes), 3);
    add(nodeaffinity::score(pod, nodes), 2);
    add(podtopologyspread::score(pod, nodes, snap), 2);
    add(interpodaffinity::score(pod, nodes, snap), 2);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        let cases: &[(&[i64], bool, &[i64])] = &[
            (&[0, 5, 10], false, &[0, 50, 100]),
            (&[0, 5, 10], true, &[100, 50, 0]),
            (&[0, 0], false, &[0, 0]),
            (&[0, 0], true, &[100, 100]),
        ];
        for (input, reverse, want) in cases {
            let mut s = input.to_vec();
            default_normalize(&mut s, *reverse);
            assert_eq!(&s, want);
        }
    }
}
