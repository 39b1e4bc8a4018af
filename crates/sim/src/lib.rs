//! Hollow nodes (↔ kwok): simulated Nodes that behave, as seen through
//! the API, like kubelets. Each node is registered with its capacity,
//! kubelet-like conditions, addresses and nodeInfo; renews its Lease in
//! kube-node-lease; refreshes its conditions' heartbeats; and the pods
//! bound to it become Running and Ready (Job pods then Succeeded), while
//! pods being deleted are removed as a kubelet does once their containers
//! stopped. Everything goes through the API; nothing runs.
//!
//! Entry point: [`run`], which runs until the future is dropped.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod nodes;
pub mod pods;

use std::collections::BTreeMap;
use std::sync::Arc;

/// How many hollow nodes, and what they look like.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    /// Node names are `{prefix}{index}` ("sim-node-0", ...).
    pub prefix: String,
    /// Capacity and allocatable cpu ("8").
    pub cpu: String,
    /// Capacity and allocatable memory ("32Gi").
    pub memory: String,
    /// Pods per node (110).
    pub pods: u32,
    /// Extra node labels (beside kubernetes.io/hostname and type=sim).
    pub labels: BTreeMap<String, String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            prefix: "sim-node-".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
        }
    }
}

impl SimConfig {
    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// The index of a node of this simulation, if `name` is one.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix(&self.prefix)?.parse().ok()?;
        (i < self.nodes && self.node_name(i) == name).then_some(i)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("updating the status of node {node}: {source}")]
    NodeStatus { node: String, source: kube::Error },
    #[error("renewing the lease of node {node}: {source}")]
    Lease { node: String, source: kube::Error },
    #[error("updating pod {pod}: {source}")]
    Pod { pod: String, source: kube::Error },
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Run the hollow nodes until the future is dropped.
pub async fn run(client: kube::Client, config: SimConfig) {
    let sim = Arc::new(nodes::Sim::new(client, config));
    tracing::info!(nodes = sim.config.nodes, prefix = %sim.config.prefix, "hollow nodes starting");
    sim.register_all().await;
    tokio::join!(
        sim.lease_loop(),
        sim.heartbeat_loop(),
        pods::run(sim.clone())
    );
}
