//! NodePorts (↔ plugins/nodeports): a host port (protocol, IP, port) can
//! be used by one pod per node; 0.0.0.0 conflicts with every IP.

use k8s_openapi::api::core::v1::Pod;

use super::{FilterResult, Unfit};
use crate::cache::{NodeInfo, PodInfo};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    pub port: i32,
    pub ip: String,
}

const ANY_IP: &str = "0.0.0.0";

/// The host ports of a pod's containers (and sidecar init containers).
pub fn parse(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|hp| *hp > 0)?;
            Some(HostPort {
                protocol: p
                    .protocol
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "TCP".into()),
                port,
                ip: p
                    .host_ip
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| ANY_IP.into()),
            })
        })
        .collect()
}

fn conflicts(a: &HostPort, b: &HostPort) -> bool {
    a.protocol == b.protocol
        && a.port == b.port
        && (a.ip == b.ip || a.ip == ANY_IP || b.ip == ANY_IP)
}

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if pod.host_ports.is_empty() || node.used_ports.is_empty() {
        return Ok(());
    }
    let clash = pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.keys().any(|used| conflicts(want, used)));
    if clash {
        Err(Unfit::unschedulable(NAME, ERR_REASON))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::{node_with, pod};
    use serde_json::json;

    fn with_ports(ports: serde_json::Value) -> PodInfo {
        pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": ports}]}}),
        )
    }

    #[test]
    fn table() {
        let cases = [
            (
                "no ports",
                json!([]),
                json!([{"containerPort": 80, "hostPort": 80}]),
                true,
            ),
            (
                "container port only",
                json!([{"containerPort": 80}]),
                json!([{"containerPort": 80}]),
                true,
            ),
            (
                "same port",
                json!([{"containerPort": 80, "hostPort": 80}]),
                json!([{"containerPort": 80, "hostPort": 80}]),
                false,
            ),
            (
                "other port",
                json!([{"containerPort": 80, "hostPort": 80}]),
                json!([{"containerPort": 80, "hostPort": 81}]),
                true,
            ),
            (
                "other protocol",
                json!([{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]),
                json!([{"containerPort": 53, "hostPort": 53}]),
                true,
            ),
            (
                "distinct IPs",
                json!([{"containerPort": 80, "hostPort": 80, "hostIP": "10.0.0.1"}]),
                json!([{"containerPort": 80, "hostPort": 80, "hostIP": "10.0.0.2"}]),
                true,
            ),
            (
                "any IP clashes",
                json!([{"containerPort": 80, "hostPort": 80, "hostIP": "10.0.0.1"}]),
                json!([{"containerPort": 80, "hostPort": 80}]),
                false,
            ),
        ];
        for (what, new_ports, used_ports, fits) in cases {
            let n = node_with("n", json!({}), vec![with_ports(used_ports)]);
            let got = filter(&with_ports(new_ports), &n);
            assert_eq!(got.is_ok(), fits, "{what}");
            if let Err(e) = got {
                assert_eq!(e.reasons, vec![ERR_REASON.to_string()]);
                assert_eq!(e.code, super::super::Code::Unschedulable);
            }
        }
    }
}
