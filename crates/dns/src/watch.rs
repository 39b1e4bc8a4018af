//! Keeps the record set in step with the cluster: watchers of Services and
//! discovery.k8s.io/v1 EndpointSlices (as CoreDNS's kubernetes plugin's
//! informers). A relist replaces the whole set once it is complete. And
//! keeps every Node's addresses in the source ACL ([`watch_node_addresses`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::acl::Acl;
use crate::records::Records;

/// Watches Services and EndpointSlices in all namespaces into `records`
/// until the streams end (they retry with backoff, so: until dropped).
pub async fn watch(client: kube::Client, records: Records) {
    let services = {
        let records = records.clone();
        let api: Api<Service> = Api::all(client.clone());
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        async move {
            let mut relist: Vec<Service> = Vec::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(s)) => records.apply_service(&s),
                    Ok(Event::Delete(s)) => records.delete_service(&s),
                    Ok(Event::Init) => relist.clear(),
                    Ok(Event::InitApply(s)) => relist.push(s),
                    Ok(Event::InitDone) => {
                        records.replace_services(&std::mem::take(&mut relist));
                        tracing::debug!(services = records.service_count(), "services listed");
                    }
                    Err(e) => tracing::warn!(error = %e, "watching services"),
                }
            }
        }
    };
    let slices = {
        let api: Api<EndpointSlice> = Api::all(client);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        async move {
            let mut relist: Vec<EndpointSlice> = Vec::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(s)) => records.apply_endpoint_slice(&s),
                    Ok(Event::Delete(s)) => records.delete_endpoint_slice(&s),
                    Ok(Event::Init) => relist.clear(),
                    Ok(Event::InitApply(s)) => relist.push(s),
                    Ok(Event::InitDone) => {
                        records.replace_endpoint_slices(&std::mem::take(&mut relist))
                    }
                    Err(e) => tracing::warn!(error = %e, "watching endpointslices"),
                }
            }
        }
    };
    futures::join!(services, slices);
}

/// A Node's InternalIP and ExternalIP addresses (unparsable and
/// unspecified ones left out).
pub fn node_addresses(node: &Node) -> Vec<IpAddr> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .collect()
}

/// Watches Nodes and keeps their addresses in `acl`: a pod on another
/// node reaches this node's server through the kube-dns ClusterIP,
/// masqueraded to its own node's address as it leaves the pod network.
/// Until the streams end (they retry with backoff, so: until dropped).
pub async fn watch_node_addresses(client: kube::Client, acl: Acl) {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let mut relist: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let publish = |nodes: &HashMap<String, Vec<IpAddr>>| {
        acl.set_addresses(nodes.values().flatten().copied().collect::<HashSet<_>>());
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(n)) => {
                nodes.insert(
                    n.metadata.name.clone().unwrap_or_default(),
                    node_addresses(&n),
                );
                publish(&nodes);
            }
            Ok(Event::Delete(n)) => {
                nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                publish(&nodes);
            }
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(n)) => {
                relist.insert(
                    n.metadata.name.clone().unwrap_or_default(),
                    node_addresses(&n),
                );
            }
            Ok(Event::InitDone) => {
                nodes = std::mem::take(&mut relist);
                publish(&nodes);
                tracing::debug!(
                    nodes = nodes.len(),
                    "node addresses listed for the DNS source ACL"
                );
            }
            Err(e) => tracing::warn!(error = %e, "watching nodes"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_nodes_internal_and_external_addresses() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.1.11"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "not-an-ip"},
                {"type": "InternalIP", "address": "0.0.0.0"},
            ]}
        }))
        .unwrap();
        let want: Vec<IpAddr> = ["192.168.1.11", "203.0.113.7", "fd00::11"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(node_addresses(&node), want);
        assert!(node_addresses(&Node::default()).is_empty());
    }
}
