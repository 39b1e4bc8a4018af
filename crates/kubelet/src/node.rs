//! The node's side (↔ the kubelet's node status manager and node lease
//! controller): registration with capacity from /proc, addresses and
//! nodeInfo; the Lease renewed every 10 s; conditions refreshed (the
//! pressure conditions from [`crate::pressure`]), each lastTransitionTime
//! changed only when its status changes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::pressure::Pressure;
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

/// What the kubelet's four conditions say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    /// The container runtime answers.
    pub ready: bool,
    pub pressure: Pressure,
}

impl NodeHealth {
    /// Ready, without pressure.
    pub const READY: NodeHealth = NodeHealth {
        ready: true,
        pressure: Pressure {
            memory: false,
            disk: false,
            pid: false,
        },
    };
}

/// Each condition's status as last reported and its lastTransitionTime,
/// which changes only when the status does.
#[derive(Debug, Default)]
pub struct Transitions(BTreeMap<&'static str, (bool, Time)>);

impl Transitions {
    /// The lastTransitionTime of `kind` reported as `status` at `now`.
    fn time(&mut self, kind: &'static str, status: bool, now: &Time) -> Time {
        match self.0.get(kind) {
            Some((s, t)) if *s == status => t.clone(),
            _ => {
                self.0.insert(kind, (status, now.clone()));
                now.clone()
            }
        }
    }
}

/// (type, status, reason, message) of the kubelet's conditions, as its
/// node status setters word them.
fn condition_table(h: NodeHealth) -> [(&'static str, bool, &'static str, &'static str); 4] {
    let p = h.pressure;
    [
        if p.memory {
            (
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            (
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if p.disk {
            (
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            (
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if p.pid {
            (
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            (
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
        if h.ready {
            (
                "Ready",
                true,
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            (
                "Ready",
                false,
                "KubeletNotReady",
                "container runtime is not ready",
            )
        },
    ]
}

/// The kubelet's four conditions at `heartbeat`, with their transition
/// times kept in `transitions`.
pub fn conditions(health: NodeHealth, heartbeat: &Time, transitions: &mut Transitions) -> Value {
    let list: Vec<Value> = condition_table(health)
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let transition = transitions.time(kind, status, heartbeat);
            json!({
                "type": kind,
                "status": if status { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": transition,
            })
        })
        .collect();
    Value::Array(list)
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

pub fn node_status(
    n: &NodeSpec,
    health: NodeHealth,
    heartbeat: &Time,
    transitions: &mut Transitions,
) -> Value {
    let resources = json!({
        "cpu": n.machine.cpus.to_string(),
        "memory": format!("{}Ki", n.machine.memory / 1024),
        "pods": n.max_pods.to_string(),
    });
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(health, heartbeat, transitions),
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

pub fn node_object(
    n: &NodeSpec,
    health: NodeHealth,
    now: &Time,
    transitions: &mut Transitions,
) -> Value {
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
        "status": node_status(n, health, now, transitions),
    })
}

/// Registration, lease and heartbeats of one node.
pub struct NodeAgent {
    client: kube::Client,
    pub spec: NodeSpec,
    uid: Mutex<Option<String>>,
    /// The conditions as last reported, and their transition times.
    reported: Mutex<(NodeHealth, Transitions)>,
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
            reported: Mutex::new((NodeHealth::READY, Transitions::default())),
        }
    }

    /// Create the Node, or take over an existing one; the Node as stored.
    pub async fn register(&self) -> Result<Node, Error> {
        let name = self.spec.name.clone();
        let api: Api<Node> = Api::all(self.client.clone());
        let obj = {
            let mut reported = lock(&self.reported);
            let (health, transitions) = &mut *reported;
            node_object(&self.spec, *health, &skiff_runtime::now_time(), transitions)
        };
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

    /// Whether `health` differs from what was last reported (the status
    /// is then posted at once rather than at the next heartbeat).
    pub fn changed(&self, health: NodeHealth) -> bool {
        lock(&self.reported).0 != health
    }

    /// Refresh the conditions; re-register when the Node was deleted.
    pub async fn heartbeat(&self, health: NodeHealth) -> Result<(), Error> {
        let name = self.spec.name.clone();
        let api: Api<Node> = Api::all(self.client.clone());
        let conditions = {
            let mut reported = lock(&self.reported);
            reported.0 = health;
            conditions(health, &skiff_runtime::now_time(), &mut reported.1)
        };
        let patch = json!({"status": {"conditions": conditions}});
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
        let v = node_object(
            &spec,
            NodeHealth::READY,
            &skiff_runtime::now_time(),
            &mut Transitions::default(),
        );
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

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn find<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
        conditions
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
    }

    #[test]
    fn pressure_conditions_say_true_with_the_kubelets_reasons() {
        let now = time("2024-01-01T00:00:00Z");
        let none = conditions(NodeHealth::READY, &now, &mut Transitions::default());
        for (kind, reason, message) in [
            (
                "MemoryPressure",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ] {
            let c = find(&none, kind);
            assert_eq!(c["status"], "False", "{kind}");
            assert_eq!(c["reason"], reason);
            assert_eq!(c["message"], message);
        }
        let all = NodeHealth {
            ready: true,
            pressure: Pressure {
                memory: true,
                disk: true,
                pid: true,
            },
        };
        let v = conditions(all, &now, &mut Transitions::default());
        for (kind, reason, message) in [
            (
                "MemoryPressure",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "DiskPressure",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            ),
            (
                "PIDPressure",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
        ] {
            let c = find(&v, kind);
            assert_eq!(c["status"], "True", "{kind}");
            assert_eq!(c["reason"], reason);
            assert_eq!(c["message"], message);
        }
        assert_eq!(find(&v, "Ready")["status"], "True");
        // Each pressure on its own.
        let disk = NodeHealth {
            ready: true,
            pressure: Pressure {
                disk: true,
                ..Pressure::default()
            },
        };
        let v = conditions(disk, &now, &mut Transitions::default());
        assert_eq!(find(&v, "MemoryPressure")["status"], "False");
        assert_eq!(find(&v, "DiskPressure")["status"], "True");
        assert_eq!(find(&v, "PIDPressure")["status"], "False");
        // They parse as NodeConditions.
        let _: Vec<k8s_openapi::api::core::v1::NodeCondition> = serde_json::from_value(v).unwrap();
    }

    #[test]
    fn transition_times_change_only_on_a_transition() {
        let t0 = time("2024-01-01T00:00:00Z");
        let t1 = time("2024-01-01T00:01:00Z");
        let t2 = time("2024-01-01T00:02:00Z");
        let t3 = time("2024-01-01T00:03:00Z");
        let mut tr = Transitions::default();
        let memory = NodeHealth {
            ready: true,
            pressure: Pressure {
                memory: true,
                ..Pressure::default()
            },
        };
        let v = conditions(NodeHealth::READY, &t0, &mut tr);
        assert_eq!(find(&v, "MemoryPressure")["lastTransitionTime"], json!(t0));
        let v = conditions(NodeHealth::READY, &t1, &mut tr);
        assert_eq!(find(&v, "MemoryPressure")["lastTransitionTime"], json!(t0));
        assert_eq!(find(&v, "MemoryPressure")["lastHeartbeatTime"], json!(t1));
        let v = conditions(memory, &t2, &mut tr);
        assert_eq!(find(&v, "MemoryPressure")["lastTransitionTime"], json!(t2));
        // The others did not change.
        assert_eq!(find(&v, "DiskPressure")["lastTransitionTime"], json!(t0));
        assert_eq!(find(&v, "Ready")["lastTransitionTime"], json!(t0));
        let v = conditions(NodeHealth::READY, &t3, &mut tr);
        assert_eq!(find(&v, "MemoryPressure")["lastTransitionTime"], json!(t3));
        assert_eq!(find(&v, "MemoryPressure")["status"], "False");
        let not_ready = NodeHealth {
            ready: false,
            ..NodeHealth::READY
        };
        let v = conditions(not_ready, &t3, &mut tr);
        assert_eq!(find(&v, "Ready")["lastTransitionTime"], json!(t3));
        assert_eq!(find(&v, "Ready")["reason"], "KubeletNotReady");
    }
}
