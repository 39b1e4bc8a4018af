//! How pods reach the cluster DNS: the `kube-dns` Service in kube-system
//! (ClusterIP 10.43.0.10 by default, as k3s's CoreDNS) has no selector;
//! every node's DNS server publishes itself in an EndpointSlice of its own
//! (`kube-dns-<node>`, owned by the Node so that the garbage collector
//! removes it with the Node), and the service proxy sends queries for the
//! ClusterIP to one of them, as for any other Service.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

pub const NAMESPACE: &str = "kube-system";
pub const SERVICE: &str = "kube-dns";
const MANAGER: &str = "skiff-dns";

/// The kube-dns Service, as k3s's CoreDNS manifest declares it.
pub fn service(cluster_ip: IpAddr) -> Result<Service, serde_json::Error> {
    serde_json::from_value(json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"}},
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ]
        }
    }))
}

/// This node's EndpointSlice of kube-dns: its DNS server at `addr`.
pub fn endpoint_slice(node: &Node, addr: SocketAddr) -> Result<EndpointSlice, serde_json::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{SERVICE}-{name}"),
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE, "endpointslice.kubernetes.io/managed-by": MANAGER},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid.clone().unwrap_or_default()}],
        },
        "addressType": family,
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": name}],
        "ports": [
            {"name": "dns", "port": addr.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": addr.port(), "protocol": "TCP"},
        ]
    }))
}

/// Create the kube-dns Service unless it exists.
pub async fn ensure_service(client: &kube::Client, cluster_ip: IpAddr) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    // Look first: creating it again would fail on its ClusterIP (422), not on its name.
    if api.get_opt(SERVICE).await?.is_some() {
        return Ok(());
    }
    let svc = service(cluster_ip).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Publish (server-side apply) this node's DNS address in its EndpointSlice.
pub async fn publish(
    client: &kube::Client,
    node_name: &str,
    addr: SocketAddr,
) -> Result<(), kube::Error> {
    let node = Api::<Node>::all(client.clone()).get(node_name).await?;
    let slice = endpoint_slice(&node, addr).map_err(kube::Error::SerdeError)?;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let name = slice.metadata.name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(&slice).map_err(kube::Error::SerdeError)?;
    value["apiVersion"] = json!("discovery.k8s.io/v1");
    value["kind"] = json!("EndpointSlice");
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_slice_points_at_its_dns_server_and_is_owned_by_the_node() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "uid": "u-1"}}))
            .unwrap_or_default();
        let s = endpoint_slice(
            &node,
            "192.168.1.5:5353"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        )
        .unwrap_or_default();
        assert_eq!(s.metadata.name.as_deref(), Some("kube-dns-n1"));
        assert_eq!(
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str),
            Some("kube-dns")
        );
        assert_eq!(
            s.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
        assert_eq!(s.endpoints[0].addresses, vec!["192.168.1.5".to_string()]);
        let ports: Vec<_> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            vec![
                ("dns".into(), Some(5353), Some("UDP".into())),
                ("dns-tcp".into(), Some(5353), Some("TCP".into()))
            ]
        );
        let svc =
            service("10.43.0.10".parse().unwrap_or_else(|_| unreachable!())).unwrap_or_default();
        assert_eq!(
            svc.spec.and_then(|s| s.selector),
            None,
            "selectorless: the endpoints are published by the nodes"
        );
    }
}
