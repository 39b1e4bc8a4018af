//! NodeUnschedulable (↔ plugins/nodeunschedulable): cordoned nodes
//! (spec.unschedulable) take only pods tolerating
//! node.kubernetes.io/unschedulable:NoSchedule.

use k8s_openapi::api::core::v1::Taint;

use super::tainttoleration::tolerates;
use super::{FilterResult, Unfit};
use crate::cache::{NodeInfo, PodInfo};

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_KEY.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
        return Ok(());
    }
    Err(Unfit::unresolvable(NAME, ERR_REASON))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn table() {
        let cases = [
            (json!(null), json!([]), true),
            (json!(true), json!([]), false),
            (json!(false), json!([]), true),
            (
                json!(true),
                json!([{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]),
                true,
            ),
            (json!(true), json!([{"operator": "Exists"}]), true),
            (
                json!(true),
                json!([{"key": TAINT_KEY, "operator": "Exists", "effect": "NoExecute"}]),
                false,
            ),
        ];
        for (unsched, tolerations, fits) in cases {
            let p = pod(json!({"metadata": {"name": "p"}, "spec": {"tolerations": tolerations}}));
            let n = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": unsched}}));
            let got = filter(&p, &n);
            assert_eq!(
                got.is_ok(),
                fits,
                "unschedulable={unsched} tolerations={tolerations}"
            );
            if let Err(e) = got {
                assert_eq!(e.reasons, vec![ERR_REASON.to_string()]);
            }
        }
    }
}
