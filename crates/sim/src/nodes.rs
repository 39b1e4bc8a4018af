//! The nodes' side (↔ the kubelet's node status manager and node lease
//! controller): registration, Leases every 10 s, condition heartbeats.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Error, SimConfig, status_code};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
pub const NODE_STATUS_INTERVAL: Duration = Duration::from_secs(60);
pub const KUBELET_VERSION: &str = "v1.33.0-skiff-sim";
/// How many API calls the simulation makes at once.
pub const CONCURRENCY: usize = 16;

/// The shared state of a simulation.
pub struct Sim {
    pub client: kube::Client,
    pub config: SimConfig,
    /// Node name → uid, once registered.
    uids: Mutex<HashMap<String, String>>,
    /// When the simulation started (the conditions' lastTransitionTime).
    started: Time,
}

/// The InternalIP of node `i` (100.64.0.0/10, as a carrier-grade NAT range nobody routes).
pub fn node_ip(i: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    Ipv4Addr::from(base.wrapping_add((i as u32 % (1 << 22)) + 1))
}

/// The kubelet's four conditions, all healthy.
pub fn conditions(heartbeat: &Time, transition: &Time) -> Value {
    let c = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition});
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    pub fn new(client: kube::Client, config: SimConfig) -> Sim {
        Sim {
            client,
            config,
            uids: Mutex::default(),
            started: skiff_runtime::now_time(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.config.nodes)
            .map(|i| self.config.node_name(i))
            .collect()
    }

    fn status(&self, i: usize) -> Value {
        let name = self.config.node_name(i);
        let resources = json!({
            "cpu": self.config.cpu,
            "memory": self.config.memory,
            "pods": self.config.pods.to_string(),
            "ephemeral-storage": "100Gi",
        });
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions(&skiff_runtime::now_time(), &self.started),
            "addresses": [{"type": "InternalIP", "address": node_ip(i).to_string()}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("skiff-sim-{i:08x}"),
                "systemUUID": format!("00000000-0000-0000-0000-{i:012x}"),
                "bootID": format!("00000000-0000-0000-0001-{i:012x}"),
                "kernelVersion": "6.0.0-skiff-sim",
                "osImage": "skiff hollow node",
                "containerRuntimeVersion": "sim://1.0.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        })
    }

    /// The Node object of node `i`.
    pub fn node_object(&self, i: usize) -> Value {
        let name = self.config.node_name(i);
        let mut labels = json!({
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "sim",
        });
        for (k, v) in &self.config.labels {
            labels[k] = json!(v);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "skiff.dev/hollow-node": "true"}},
            "spec": {},
            "status": self.status(i),
        })
    }

    /// Create node `i`, or take over an existing one (labels and status).
    async fn register(&self, i: usize) -> Result<(), Error> {
        let name = self.config.node_name(i);
        let api: Api<Node> = Api::all(self.client.clone());
        let obj = self.node_object(i);
        let node: Node = serde_json::from_value(obj.clone()).map_err(|e| Error::Register {
            node: name.clone(),
            source: kube::Error::SerdeError(e),
        })?;
        let created = match api.create(&PostParams::default(), &node).await {
            Ok(n) => n,
            Err(e) if status_code(&e) == Some(409) => {
                let patch = json!({"metadata": {"labels": obj["metadata"]["labels"]}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| Error::Register {
                        node: name.clone(),
                        source,
                    })?;
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": obj["status"]})),
                )
                .await
                .map_err(|source| Error::Register {
                    node: name.clone(),
                    source,
                })?
            }
            Err(source) => return Err(Error::Register { node: name, source }),
        };
        if let Some(uid) = created.metadata.uid {
            lock(&self.uids).insert(name, uid);
        }
        Ok(())
    }

    /// Register every node, retrying failures until all are there.
    pub async fn register_all(&self) {
        let mut pending: Vec<usize> = (0..self.config.nodes).collect();
        let mut delay = Duration::from_millis(200);
        while !pending.is_empty() {
            let results: Vec<(usize, Result<(), Error>)> = futures::stream::iter(pending.clone())
                .map(|i| async move { (i, self.register(i).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            pending.clear();
            for (i, r) in results {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "node registration failed; retrying");
                    pending.push(i);
                }
            }
            if !pending.is_empty() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tracing::info!(nodes = self.config.nodes, "hollow nodes registered");
    }

    /// Renew (or create) node `i`'s Lease.
    async fn renew_lease(&self, name: &str) -> Result<(), Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let now = skiff_runtime::now_micro();
        let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => {
                let uid = lock(&self.uids).get(name).cloned();
                let owner = uid.map(
                    |uid| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]),
                );
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now},
                });
                let lease: Lease = serde_json::from_value(lease).map_err(|e| Error::Lease {
                    node: name.into(),
                    source: kube::Error::SerdeError(e),
                })?;
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(e) if status_code(&e) == Some(409) => Ok(()),
                    Err(source) => Err(Error::Lease {
                        node: name.into(),
                        source,
                    }),
                }
            }
            Err(source) => Err(Error::Lease {
                node: name.into(),
                source,
            }),
        }
    }

    pub async fn lease_loop(&self) {
        let mut tick = tokio::time::interval(LEASE_RENEW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            futures::stream::iter(self.names())
                .for_each_concurrent(CONCURRENCY, |name| async move {
                    if let Err(e) = self.renew_lease(&name).await {
                        tracing::warn!(error = %e, "lease renewal failed");
                    }
                })
                .await;
        }
    }

    /// Refresh node `i`'s conditions; re-register it when it was deleted.
    async fn heartbeat(&self, i: usize) -> Result<(), Error> {
        let name = self.config.node_name(i);
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions(&skiff_runtime::now_time(), &self.started)}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => self.register(i).await,
            Err(source) => Err(Error::NodeStatus { node: name, source }),
        }
    }

    pub async fn heartbeat_loop(&self) {
        let mut tick = tokio::time::interval(NODE_STATUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and registration just wrote the status.
        tick.tick().await;
        loop {
            tick.tick().await;
            futures::stream::iter(0..self.config.nodes)
                .for_each_concurrent(CONCURRENCY, |i| async move {
                    if let Err(e) = self.heartbeat(i).await {
                        tracing::warn!(error = %e, "node heartbeat failed");
                    }
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_are_distinct() {
        assert_eq!(node_ip(0), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(node_ip(255), Ipv4Addr::new(100, 64, 1, 0));
        assert_ne!(node_ip(1), node_ip(2));
    }

    #[test]
    fn conditions_are_kubelet_like() {
        let t = skiff_runtime::now_time();
        let c = conditions(&t, &t);
        let ready = c
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(c.as_array().unwrap().len(), 4);
    }

    #[test]
    fn names_and_indices() {
        let cfg = SimConfig {
            nodes: 3,
            ..Default::default()
        };
        assert_eq!(cfg.node_name(2), "sim-node-2");
        assert_eq!(cfg.node_index("sim-node-2"), Some(2));
        assert_eq!(cfg.node_index("sim-node-3"), None);
        assert_eq!(cfg.node_index("sim-node-02"), None);
        assert_eq!(cfg.node_index("other-1"), None);
    }
}
