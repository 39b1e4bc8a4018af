//! The node's side (↔ the kubelet's node status manager and node lease
//! controller): registration with capacity from /proc, addresses and
//! nodeInfo; the Lease renewed every 10 s; conditions refreshed.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Error, status_code};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
pub const NODE_STATUS_INTERVAL: Duration = Duration::from_secs(60);
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";

/// What the machine looks like.
#[derive(Clone, Debug)]
pub struct MachineInfo {
    pub cpus: usize,
    /// Bytes.
    pub memory: u64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// MemTotal from /proc/meminfo text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// PRETTY_NAME from /etc/os-release text.
pub fn parse_os_release(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(
        line.trim_start_matches("PRETTY_NAME=")
            .trim_matches('"')
            .to_string(),
    )
}

impl MachineInfo {
    pub fn read() -> MachineInfo {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t))
            .unwrap_or(0);
        let machine_id = read_trimmed("/etc/machine-id")
            .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
            .unwrap_or_default();
        MachineInfo {
            cpus,
            memory,
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid")
                .unwrap_or_else(|| machine_id.clone()),
            machine_id,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".into()),
        }
    }
}

/// The address the node is reached at: the source address of the default
/// route (a UDP connect only looks the route up; nothing is sent), else loopback.
pub fn default_node_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// The kubelet's four conditions; Ready as given.
pub fn conditions(ready: bool, heartbeat: &Time, transition: &Time) -> Value {
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
        if ready {
            c(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            c(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime is not ready",
            )
        },
    ])
}

/// What goes into the Node object.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub ip: IpAddr,
    pub max_pods: u32,
    pub runtime_version: String,
    pub machine: MachineInfo,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The port the kubelet API listens on (status.daemonEndpoints).
    pub kubelet_port: u16,
}

pub fn node_status(n: &NodeSpec, ready: bool, heartbeat: &Time, transition: &Time) -> Value {
    let resources = json!({
        "cpu": n.machine.cpus.to_string(),
        "memory": format!("{}Ki", n.machine.memory / 1024),
        "pods": n.max_pods.to_string(),
    });
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(ready, heartbeat, transition),
        "addresses": [{"type": "InternalIP", "address": n.ip.to_string()}, {"type": "Hostname", "address": n.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": n.kubelet_port}},
        "nodeInfo": {
            "machineID": n.machine.machine_id,
            "systemUUID": n.machine.system_uuid,
            "bootID": n.machine.boot_id,
            "kernelVersion": n.machine.kernel_version,
            "osImage": n.machine.os_image,
            "containerRuntimeVersion": n.runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": crate::image::go_arch(),
        },
    })
}

pub fn node_object(n: &NodeSpec, ready: bool, now: &Time) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": crate::image::go_arch(),
    });
    for (k, v) in &n.labels {
        labels[k] = json!(v);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {},
        "status": node_status(n, ready, now, now),
    })
}

/// Registration, lease and heartbeats of one node.
pub struct NodeAgent {
    client: kube::Client,
    pub spec: NodeSpec,
    uid: Mutex<Option<String>>,
    started: Time,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NodeAgent {
    pub fn new(client: kube::Client, spec: NodeSpec) -> NodeAgent {
        NodeAgent {
            client,
            spec,
            uid: Mutex::new(None),
            started: skiff_runtime::now_time(),
        }
    }

    /// Create the Node, or take over an existing one; the Node as stored.
    pub async fn register(&self) -> Result<Node, Error> {
        let name = self.spec.name.clone();
        let api: Api<Node> = Api::all(self.client.clone());
        let obj = node_object(&self.spec, true, &skiff_runtime::now_time());
        let node: Node = serde_json::from_value(obj.clone()).map_err(|e| Error::Register {
            node: name.clone(),
            source: kube::Error::SerdeError(e),
        })?;
        let node = match api.create(&PostParams::default(), &node).await {
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
        *lock(&self.uid) = node.metadata.uid.clone();
        Ok(node)
    }

    /// Register, retrying until it works.
    pub async fn register_until_done(&self) -> Node {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.register().await {
                Ok(n) => {
                    tracing::info!(node = %self.spec.name, "node registered");
                    return n;
                }
                Err(e) => tracing::warn!(error = %e, "node registration failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    pub async fn renew_lease(&self) -> Result<(), Error> {
        let name = self.spec.name.as_str();
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let now = skiff_runtime::now_micro();
        let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => {
                let uid = lock(&self.uid).clone();
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
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(error = %e, "lease renewal failed");
            }
        }
    }

    /// The Node's spec.podCIDR, if set.
    pub async fn pod_cidr(&self) -> Option<String> {
        let api: Api<Node> = Api::all(self.client.clone());
        match api.get_opt(&self.spec.name).await {
            Ok(n) => n
                .and_then(|n| n.spec)
                .and_then(|s| s.pod_cidr)
                .filter(|c| !c.is_empty()),
            Err(e) => {
                tracing::debug!(error = %e, "reading the node's podCIDR failed");
                None
            }
        }
    }

    /// Refresh the conditions; re-register when the Node was deleted.
    pub async fn heartbeat(&self, ready: bool) -> Result<(), Error> {
        let name = self.spec.name.clone();
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions(ready, &skiff_runtime::now_time(), &self.started)}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => self.register().await.map(|_| ()),
            Err(source) => Err(Error::NodeStatus { node: name, source }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc() {
        assert_eq!(
            parse_meminfo("MemTotal:       24683656 kB\nMemFree: 1 kB\n"),
            Some(24683656 * 1024)
        );
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let m = MachineInfo::read();
        assert!(m.cpus >= 1);
        assert!(m.memory > 0);
    }

    #[test]
    fn node_object_is_a_node() {
        let spec = NodeSpec {
            name: "n1".into(),
            ip: "192.168.1.5".parse().unwrap(),
            max_pods: 110,
            runtime_version: "containerd://1.6.20".into(),
            machine: MachineInfo::read(),
            labels: Default::default(),
            kubelet_port: 40123,
        };
        let v = node_object(&spec, true, &skiff_runtime::now_time());
        let n: Node = serde_json::from_value(v.clone()).unwrap();
        let st = n.status.unwrap();
        assert_eq!(
            st.node_info.unwrap().container_runtime_version,
            "containerd://1.6.20"
        );
        assert_eq!(st.capacity.unwrap()["pods"].0, "110");
        assert_eq!(v["status"]["conditions"][3]["status"], "True");
        assert_eq!(v["status"]["addresses"][0]["address"], "192.168.1.5");
        assert_eq!(
            st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            40123
        );
    }
}
