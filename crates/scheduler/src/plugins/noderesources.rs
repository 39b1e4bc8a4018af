//! NodeResourcesFit (↔ plugins/noderesources/fit.go and
//! least_allocated.go): a pod's requests must fit in what the node's
//! allocatable leaves after the requests of the pods already there; nodes
//! with more room left score higher.

use super::{Code, FilterResult, MAX_NODE_SCORE, Unfit};
use crate::cache::{NodeInfo, PodInfo};

pub const NAME: &str = "NodeResourcesFit";

/// One resource a node lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insufficient {
    pub resource: String,
    pub reason: String,
    /// The request exceeds the node's whole allocatable: preemption cannot help.
    pub unresolvable: bool,
}

fn insufficient(resource: &str, reason: String, unresolvable: bool) -> Insufficient {
    Insufficient {
        resource: resource.into(),
        reason,
        unresolvable,
    }
}

/// Every resource the node lacks for the pod, in Kubernetes' order.
pub fn fits_request(pod: &PodInfo, node: &NodeInfo) -> Vec<Insufficient> {
    let mut out = Vec::new();
    let alloc = &node.allocatable;
    let used = &node.requested;
    if used.allowed_pods + 1 > alloc.allowed_pods {
        out.push(insufficient(
            "pods",
            "Too many pods".into(),
            alloc.allowed_pods < 1,
        ));
    }
    let req = &pod.requests;
    if req.is_zero() {
        return out;
    }
    let native = [
        ("cpu", req.milli_cpu, alloc.milli_cpu, used.milli_cpu),
        ("memory", req.memory, alloc.memory, used.memory),
        (
            "ephemeral-storage",
            req.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        ),
    ];
    for (name, want, have, taken) in native {
        if want > 0 && want > have.saturating_sub(taken) {
            out.push(insufficient(
                name,
                format!("Insufficient {name}"),
                want > have,
            ));
        }
    }
    for (name, want) in &req.scalar {
        if *want == 0 {
            continue;
        }
        let have = alloc.scalar.get(name).copied().unwrap_or(0);
        let taken = used.scalar.get(name).copied().unwrap_or(0);
        if *want > have.saturating_sub(taken) {
            out.push(insufficient(
                name,
                format!("Insufficient {name}"),
                *want > have,
            ));
        }
    }
    out
}

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let lacking = fits_request(pod, node);
    if lacking.is_empty() {
        return Ok(());
    }
    let code = if lacking.iter().any(|i| i.unresolvable) {
        Code::UnschedulableAndUnresolvable
    } else {
        Code::Unschedulable
    };
    Err(Unfit {
        plugin: NAME,
        code,
        reasons: lacking.into_iter().map(|i| i.reason).collect(),
    })
}

fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// LeastAllocated: the mean over cpu and memory of the share left free
/// after placing the pod (with the scoring defaults for unset requests).
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = least_allocated(
        node.non_zero_requested.0 + pod.non_zero.0,
        node.allocatable.milli_cpu,
    );
    let mem = least_allocated(
        node.non_zero_requested.1 + pod.non_zero.1,
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use serde_json::json;
    use std::sync::Arc;

    type Case = (
        &'static str,
        serde_json::Value,
        Vec<PodInfo>,
        Vec<&'static str>,
        Option<Code>,
    );

    fn requesting(name: &str, requests: serde_json::Value) -> PodInfo {
        pod(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]}}),
        )
    }

    fn node_alloc(alloc: serde_json::Value, pods: Vec<PodInfo>) -> NodeInfo {
        let mut n = node(json!({"metadata": {"name": "n"}, "status": {"allocatable": alloc}}));
        for p in pods {
            n.add_pod(Arc::new(p));
        }
        n
    }

    #[test]
    fn filter_table() {
        let alloc = json!({"cpu": "2", "memory": "4Gi", "pods": "3", "ephemeral-storage": "10Gi", "example.com/gpu": "2"});
        let cases: Vec<Case> = vec![
            (
                "fits",
                json!({"cpu": "1", "memory": "1Gi"}),
                vec![],
                vec![],
                None,
            ),
            (
                "no requests",
                json!({}),
                vec![requesting("a", json!({"cpu": "2"}))],
                vec![],
                None,
            ),
            (
                "cpu used up",
                json!({"cpu": "1"}),
                vec![requesting("a", json!({"cpu": "1500m"}))],
                vec!["Insufficient cpu"],
                Some(Code::Unschedulable),
            ),
            (
                "cpu above allocatable",
                json!({"cpu": "3"}),
                vec![],
                vec!["Insufficient cpu"],
                Some(Code::UnschedulableAndUnresolvable),
            ),
            (
                "cpu and memory",
                json!({"cpu": "1", "memory": "4Gi"}),
                vec![requesting("a", json!({"cpu": "1500m", "memory": "1Gi"}))],
                vec!["Insufficient cpu", "Insufficient memory"],
                Some(Code::Unschedulable),
            ),
            (
                "ephemeral",
                json!({"ephemeral-storage": "11Gi"}),
                vec![],
                vec!["Insufficient ephemeral-storage"],
                Some(Code::UnschedulableAndUnresolvable),
            ),
            (
                "extended fits",
                json!({"example.com/gpu": "2"}),
                vec![],
                vec![],
                None,
            ),
            (
                "extended used",
                json!({"example.com/gpu": "1"}),
                vec![requesting("a", json!({"example.com/gpu": "2"}))],
                vec!["Insufficient example.com/gpu"],
                Some(Code::Unschedulable),
            ),
            (
                "extended absent",
                json!({"other.com/fpga": "1"}),
                vec![],
                vec!["Insufficient other.com/fpga"],
                Some(Code::UnschedulableAndUnresolvable),
            ),
            (
                "too many pods",
                json!({"cpu": "100m"}),
                vec![
                    requesting("a", json!({})),
                    requesting("b", json!({})),
                    requesting("c", json!({})),
                ],
                vec!["Too many pods"],
                Some(Code::Unschedulable),
            ),
        ];
        for (what, req, pods, want, code) in cases {
            let n = node_alloc(alloc.clone(), pods);
            let got = filter(&requesting("new", req), &n);
            match got {
                Ok(()) => assert!(want.is_empty(), "{what}: fit, wanted {want:?}"),
                Err(e) => {
                    assert_eq!(e.reasons, want, "{what}");
                    assert_eq!(Some(e.code), code, "{what}");
                }
            }
        }
    }

    #[test]
    fn init_container_max_rule() {
        let n = node_alloc(json!({"cpu": "2", "memory": "4Gi", "pods": "10"}), vec![]);
        let p = |init: &str| {
            pod(json!({"metadata": {"name": "p"}, "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": init}}}],
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}, {"name": "b", "resources": {"requests": {"cpu": "500m"}}}]
            }}))
        };
        assert!(filter(&p("2"), &n).is_ok(), "init 2 <= 2");
        assert!(filter(&p("3"), &n).is_err(), "init 3 > 2");
        assert_eq!(
            p("1").requests.milli_cpu,
            1500,
            "apps sum wins over a smaller init"
        );
    }

    #[test]
    fn least_allocated_score() {
        let alloc = json!({"cpu": "4", "memory": "4Gi", "pods": "10"});
        let empty = node_alloc(alloc.clone(), vec![]);
        let half = node_alloc(
            alloc,
            vec![requesting("a", json!({"cpu": "2", "memory": "2Gi"}))],
        );
        let p = requesting("new", json!({"cpu": "1", "memory": "1Gi"}));
        assert_eq!(score(&p, &empty), 75);
        assert_eq!(score(&p, &half), 25);
        // No requests: the defaults (100m, 200Mi) count.
        let bare = requesting("bare", json!({}));
        assert_eq!(score(&bare, &empty), (97 + 95) / 2);
    }
}
