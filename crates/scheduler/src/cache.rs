//! The scheduler's view of the cluster (↔ pkg/scheduler/backend/cache):
//! nodes with the pods bound or assumed on them, and what those pods
//! request, kept incrementally as watch events arrive so a scheduling
//! decision never sums over all pods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

use crate::plugins::{interpodaffinity, nodeaffinity, nodeports, podtopologyspread};
use crate::resources::{self, Resources};
use crate::selectors::Labels;

/// A pod with everything the plugins need parsed once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Pod,
    /// namespace/name
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub priority: i32,
    /// creationTimestamp in nanoseconds (queue order among equal priorities).
    pub created: i128,
    /// status.startTime in nanoseconds, or created (preemption order).
    pub started: i128,
    pub requests: Resources,
    /// (milli-CPU, memory) with the scoring defaults for unset requests.
    pub non_zero: (i64, i64),
    pub host_ports: Vec<nodeports::HostPort>,
    pub tolerations: Vec<Toleration>,
    pub node_affinity: nodeaffinity::NodeAffinity,
    pub affinity: interpodaffinity::PodAffinity,
    pub spread: Vec<podtopologyspread::Constraint>,
    /// spec.nodeName ("" when unscheduled).
    pub node_name: String,
    pub nominated_node: Option<String>,
    pub scheduler_name: String,
    pub terminating: bool,
    pub preemption_never: bool,
}

fn nanos(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i128> {
    t.map(|t| t.0.as_nanosecond())
}

impl PodInfo {
    pub fn new(pod: Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        let created = nanos(meta.creation_timestamp.as_ref()).unwrap_or(0);
        let started =
            nanos(pod.status.as_ref().and_then(|s| s.start_time.as_ref())).unwrap_or(created);
        let spec = pod.spec.as_ref();
        let requests = resources::pod_requests(&pod);
        let non_zero = resources::pod_non_zero_requests(&pod);
        PodInfo {
            key: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            created,
            started,
            requests,
            non_zero,
            host_ports: nodeports::parse(&pod),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            node_affinity: nodeaffinity::NodeAffinity::parse(&pod),
            affinity: interpodaffinity::PodAffinity::parse(&pod, &namespace),
            spread: podtopologyspread::parse(&pod),
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            nominated_node: pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            scheduler_name: spec
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| "default-scheduler".into()),
            terminating: meta.deletion_timestamp.is_some(),
            preemption_never: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
            namespace,
            name,
            pod,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }
}

/// A node and what is placed on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// None while pods are known on a node the cache has not seen yet.
    pub node: Option<Arc<Node>>,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// Sum of the pods' requests; allowed_pods holds the pod count.
    pub requested: Resources,
    pub non_zero_requested: (i64, i64),
    pub pods: BTreeMap<String, Arc<PodInfo>>,
    /// Pods with any (anti-)affinity term, required or preferred.
    pub pods_with_affinity: BTreeSet<String>,
    pub pods_with_required_anti_affinity: BTreeSet<String>,
    pub used_ports: BTreeMap<nodeports::HostPort, usize>,
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }

    /// Replace the node object; true when something the scheduler looks at changed.
    pub fn set_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        let taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default();
        let changed = self.node.is_none()
            || self.labels != labels
            || self.taints != taints
            || self.unschedulable != unschedulable
            || self.allocatable != allocatable;
        self.name = name;
        self.labels = labels;
        self.taints = taints;
        self.unschedulable = unschedulable;
        self.allocatable = allocatable;
        self.node = Some(Arc::new(node));
        changed
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        if let Some(old) = self.pods.get(&pod.key).cloned() {
            self.account(&old, false);
        }
        self.account(&pod, true);
        self.pods.insert(pod.key.clone(), pod);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let pod = self.pods.remove(key)?;
        self.account(&pod, false);
        self.pods_with_affinity.remove(key);
        self.pods_with_required_anti_affinity.remove(key);
        Some(pod)
    }

    fn account(&mut self, pod: &PodInfo, add: bool) {
        if add {
            self.requested.add(&pod.requests);
            self.requested.allowed_pods += 1;
            self.non_zero_requested.0 += pod.non_zero.0;
            self.non_zero_requested.1 += pod.non_zero.1;
            for p in &pod.host_ports {
                *self.used_ports.entry(p.clone()).or_insert(0) += 1;
            }
            if pod.affinity.has_any() {
                self.pods_with_affinity.insert(pod.key.clone());
            } else {
                self.pods_with_affinity.remove(&pod.key);
            }
            if pod.affinity.required_anti_affinity.is_empty() {
                self.pods_with_required_anti_affinity.remove(&pod.key);
            } else {
                self.pods_with_required_anti_affinity
                    .insert(pod.key.clone());
            }
        } else {
            self.requested.sub(&pod.requests);
            self.requested.allowed_pods -= 1;
            self.non_zero_requested.0 -= pod.non_zero.0;
            self.non_zero_requested.1 -= pod.non_zero.1;
            for p in &pod.host_ports {
                if let Some(c) = self.used_ports.get_mut(p) {
                    *c -= 1;
                    if *c == 0 {
                        self.used_ports.remove(p);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct PodState {
    node: String,
    assumed: bool,
}

/// What a node update meant to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Labels, taints, unschedulable or allocatable changed.
    Changed,
    /// Only things the scheduler ignores (status conditions, heartbeats).
    Unchanged,
}

/// What adding or updating a bound pod did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodChange {
    Added,
    LabelsChanged,
    Updated,
}

#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<String, PodState>,
    /// Namespace labels, for namespaceSelector in affinity terms.
    pub namespaces: HashMap<String, Labels>,
}

impl Cache {
    pub fn set_node(&mut self, node: Node) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.nodes.get_mut(&name) {
            Some(info) => {
                let added = info.node.is_none();
                let changed = info.set_node(node);
                if added {
                    NodeChange::Added
                } else if changed {
                    NodeChange::Changed
                } else {
                    NodeChange::Unchanged
                }
            }
            None => {
                self.nodes.insert(name, NodeInfo::new(node));
                NodeChange::Added
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            if info.pods.is_empty() {
                self.nodes.remove(name);
            } else {
                // Keep the pods accounted until they go; the node is gone.
                info.node = None;
            }
        }
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.node.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Add or update a pod bound to a node (confirms an assumed pod).
    pub fn add_or_update_pod(&mut self, pod: Arc<PodInfo>) -> PodChange {
        let node = pod.node_name.clone();
        let mut change = PodChange::Added;
        if let Some(state) = self.pods.get(&pod.key).cloned() {
            let old = self
                .nodes
                .get_mut(&state.node)
                .and_then(|n| n.remove_pod(&pod.key));
            if let Some(old) = old {
                change = if state.assumed {
                    PodChange::Added
                } else if old.labels != pod.labels || state.node != node {
                    PodChange::LabelsChanged
                } else {
                    PodChange::Updated
                };
            }
            self.cleanup_node(&state.node);
        }
        self.nodes
            .entry(node.clone())
            .or_insert_with(|| NodeInfo {
                name: node.clone(),
                ..Default::default()
            })
            .add_pod(pod.clone());
        self.pods.insert(
            pod.key.clone(),
            PodState {
                node,
                assumed: false,
            },
        );
        change
    }

    /// Remove a pod; returns it when it was on a node.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let state = self.pods.remove(key)?;
        let pod = self
            .nodes
            .get_mut(&state.node)
            .and_then(|n| n.remove_pod(key));
        self.cleanup_node(&state.node);
        pod
    }

    fn cleanup_node(&mut self, name: &str) {
        if self
            .nodes
            .get(name)
            .is_some_and(|n| n.node.is_none() && n.pods.is_empty())
        {
            self.nodes.remove(name);
        }
    }

    /// Place a pod on a node before the binding is confirmed by the watch.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        let mut assumed = pod.clone();
        assumed.node_name = node.to_string();
        let key = assumed.key.clone();
        self.remove_pod(&key);
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeInfo {
                name: node.to_string(),
                ..Default::default()
            })
            .add_pod(Arc::new(assumed));
        self.pods.insert(
            key,
            PodState {
                node: node.to_string(),
                assumed: true,
            },
        );
    }

    /// Undo an assumption whose binding failed.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|s| s.assumed) {
            self.remove_pod(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|s| s.assumed)
    }

    pub fn contains_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// The nodes the scheduler may place pods on, in name order.
    pub fn snapshot(&self) -> Vec<&NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some()).collect()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn pod(v: serde_json::Value) -> PodInfo {
        let mut v = v;
        if v.pointer("/metadata/namespace").is_none() {
            v["metadata"]["namespace"] = "default".into();
        }
        if v.pointer("/spec/containers").is_none() {
            v["spec"]["containers"] = serde_json::json!([{"name": "c", "image": "nginx"}]);
        }
        PodInfo::new(serde_json::from_value(v).unwrap())
    }

    pub fn node(v: serde_json::Value) -> NodeInfo {
        let mut v = v;
        if v.pointer("/status/allocatable").is_none() {
            v["status"]["allocatable"] =
                serde_json::json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
        }
        NodeInfo::new(serde_json::from_value(v).unwrap())
    }

    /// A node named `name` with these labels and pods on it.
    pub fn node_with(name: &str, labels: serde_json::Value, pods: Vec<PodInfo>) -> NodeInfo {
        let mut n = node(serde_json::json!({"metadata": {"name": name, "labels": labels}}));
        for mut p in pods {
            p.node_name = name.into();
            n.add_pod(Arc::new(p));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use serde_json::json;

    fn requesting(name: &str, cpu: &str) -> PodInfo {
        pod(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        )
    }

    #[test]
    fn incremental_accounting() {
        let mut cache = Cache::default();
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"}}})).unwrap();
        assert_eq!(cache.set_node(n.clone()), NodeChange::Added);
        assert_eq!(cache.set_node(n), NodeChange::Unchanged);
        let mut a = requesting("a", "1");
        a.node_name = "n1".into();
        assert_eq!(
            cache.add_or_update_pod(Arc::new(a.clone())),
            PodChange::Added
        );
        cache.assume(&requesting("b", "500m"), "n1");
        let info = &cache.nodes["n1"];
        assert_eq!(info.requested.milli_cpu, 1500);
        assert_eq!(info.requested.memory, 2 << 30);
        assert_eq!(info.requested.allowed_pods, 2);
        assert_eq!(info.used_ports.values().sum::<usize>(), 2);
        assert!(cache.is_assumed("default/b"));
        // Updating a pod replaces its contribution.
        let mut a2 = requesting("a", "2");
        a2.node_name = "n1".into();
        assert_eq!(cache.add_or_update_pod(Arc::new(a2)), PodChange::Updated);
        assert_eq!(cache.nodes["n1"].requested.milli_cpu, 2500);
        cache.forget("default/b");
        assert_eq!(cache.nodes["n1"].requested.milli_cpu, 2000);
        assert!(cache.remove_pod("default/a").is_some());
        let info = &cache.nodes["n1"];
        assert_eq!(info.requested, Resources::default());
        assert!(info.used_ports.is_empty());
        // A pod on an unknown node keeps a placeholder that is not schedulable.
        let mut c = requesting("c", "1");
        c.node_name = "ghost".into();
        cache.add_or_update_pod(Arc::new(c));
        assert_eq!(cache.snapshot().len(), 1);
        cache.remove_pod("default/c");
        assert!(!cache.nodes.contains_key("ghost"));
    }

    #[test]
    fn node_changes_that_matter() {
        let mut cache = Cache::default();
        let n = |labels: serde_json::Value, cond: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}, "status": {"allocatable": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": cond}]}})).unwrap()
        };
        cache.set_node(n(json!({"a": "1"}), "True"));
        assert_eq!(
            cache.set_node(n(json!({"a": "1"}), "False")),
            NodeChange::Unchanged
        );
        assert_eq!(
            cache.set_node(n(json!({"a": "2"}), "False")),
            NodeChange::Changed
        );
        cache.remove_node("n1");
        assert!(cache.nodes.is_empty());
    }
}
