//! NodeName (↔ plugins/nodename): a pod naming a node fits only there.

use super::{FilterResult, Unfit};
use crate::cache::{NodeInfo, PodInfo};

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if !pod.node_name.is_empty() && pod.node_name != node.name {
        return Err(Unfit::unresolvable(NAME, ERR_REASON));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn table() {
        let cases = [("", "n1", true), ("n1", "n1", true), ("n2", "n1", false)];
        for (want_node, node_name, fits) in cases {
            let mut p = pod(json!({"metadata": {"name": "p"}}));
            p.node_name = want_node.into();
            let n = node(json!({"metadata": {"name": node_name}}));
            assert_eq!(filter(&p, &n).is_ok(), fits, "{want_node} on {node_name}");
        }
        let mut p = pod(json!({"metadata": {"name": "p"}}));
        p.node_name = "x".into();
        let err = filter(&p, &node(json!({"metadata": {"name": "n1"}}))).unwrap_err();
        assert_eq!(err.reasons, vec![ERR_REASON.to_string()]);
        assert_eq!(err.code, super::super::Code::UnschedulableAndUnresolvable);
    }
}
