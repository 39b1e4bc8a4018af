//! Pod admission on the node (↔ the kubelet's lifecycle.predicateAdmitHandler
//! with the scheduler's NodePorts filter): a pod whose hostPorts collide with
//! those of a pod already admitted here is rejected, Failed with the
//! predicate's name as the reason, so that its controller replaces it
//! (the scheduler does not see pods bound by name, nor races).

use k8s_openapi::api::core::v1::Pod;

/// Why a pod was not admitted: the pod status' reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

/// (protocol, host IP, port) of each hostPort of `pod`.
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((protocol, ip, port))
        })
        .collect()
}

/// Whether two hostPorts collide (↔ HostPortInfo.CheckConflict): same
/// protocol and port, and the same address or either one the wildcard.
fn collide(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

/// Admit `pod` next to `admitted` (the node's other active pods), or say why not.
pub fn admit<'a>(pod: &Pod, admitted: impl IntoIterator<Item = &'a Pod>) -> Option<Rejection> {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return None;
    }
    let taken: Vec<_> = admitted.into_iter().flat_map(host_ports).collect();
    let conflict = wanted.iter().any(|w| taken.iter().any(|t| collide(w, t)));
    conflict.then(|| Rejection {
        reason: "NodePorts".into(),
        // ↔ rejectPod's "Pod was rejected: " and PredicateFailureError.Error().
        message: "Pod was rejected: Predicate NodePorts failed".into(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "ports": ports}]}}))
        .unwrap()
    }

    #[test]
    fn host_ports_collide_by_protocol_port_and_address() {
        let web = pod(json!([{"containerPort": 80, "hostPort": 21017}]));
        let same = pod(json!([{"containerPort": 8080, "hostPort": 21017, "protocol": "TCP"}]));
        let rejection = admit(&same, [&web]).unwrap();
        assert_eq!(rejection.reason, "NodePorts");
        assert_eq!(
            rejection.message,
            "Pod was rejected: Predicate NodePorts failed"
        );
        // Another protocol, another port, or no hostPort at all: admitted.
        assert_eq!(
            admit(
                &pod(json!([{"containerPort": 80, "hostPort": 21017, "protocol": "UDP"}])),
                [&web]
            ),
            None
        );
        assert_eq!(
            admit(
                &pod(json!([{"containerPort": 80, "hostPort": 21018}])),
                [&web]
            ),
            None
        );
        assert_eq!(admit(&pod(json!([{"containerPort": 80}])), [&web]), None);
        // Two specific addresses do not collide; the wildcard collides with any.
        let a = pod(json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "10.0.0.1"}]));
        let b = pod(json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "10.0.0.2"}]));
        let any = pod(json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "0.0.0.0"}]));
        assert_eq!(admit(&b, [&a]), None);
        assert!(admit(&any, [&a]).is_some());
        assert!(admit(&a, [&any]).is_some());
        assert_eq!(admit(&web, std::iter::empty()), None);
    }
}
