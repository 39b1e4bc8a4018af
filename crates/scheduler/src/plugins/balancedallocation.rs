//! NodeResourcesBalancedAllocation (↔ plugins/noderesources/
//! balanced_allocation.go): prefer nodes whose cpu and memory would be
//! used in similar proportions after placing the pod.

use super::MAX_NODE_SCORE;
use crate::cache::{NodeInfo, PodInfo};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

fn fraction(requested: i64, capacity: i64) -> f64 {
    if capacity <= 0 {
        return 1.0;
    }
    (requested as f64 / capacity as f64).min(1.0)
}

/// (1 - standard deviation of the cpu and memory fractions) * 100.
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = fraction(
        node.requested.milli_cpu + pod.requests.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = fraction(
        node.requested.memory + pod.requests.memory,
        node.allocatable.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn table() {
        let requesting = |cpu: &str, mem: &str| {
            pod(
                json!({"metadata": {"name": format!("p{cpu}{mem}")}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
            )
        };
        let n = |pods: Vec<PodInfo>| {
            let mut n = node(
                json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}),
            );
            for p in pods {
                n.add_pod(Arc::new(p));
            }
            n
        };
        let cases = [
            ("balanced", vec![], requesting("1", "1Gi"), 100),
            ("cpu heavy", vec![], requesting("4", "0"), 50),
            (
                "evens out",
                vec![requesting("2", "0")],
                requesting("0", "2Gi"),
                100,
            ),
            (
                "skews",
                vec![requesting("2", "0")],
                requesting("2", "0"),
                50,
            ),
        ];
        for (what, existing, p, want) in cases {
            assert_eq!(score(&p, &n(existing)), want, "{what}");
        }
    }
}
