//! The eviction manager (↔ pkg/kubelet/eviction's managerImpl): every
//! monitoring pass ([`crate::pressure::MONITOR_INTERVAL`]) the node is
//! measured ([`crate::pressure::Monitor`]); while a hard threshold is
//! crossed, the node's active pods are ranked for the starved resource
//! and ONE is evicted: its containers are killed with a grace period of 0
//! through its pod worker, and it is reported Failed with reason
//! `Evicted`, upstream's message and a DisruptionTarget condition. The
//! next pass waits until that is done (at most 30 s, podCleanupTimeout).
//!
//! - memory (↔ rankMemoryPressure): pods whose working set exceeds their
//!   memory request first, then by priority (lower first), then by the
//!   working set above the request (larger first);
//! - nodefs and imagefs (↔ rankDiskPressureFunc): the same with the
//!   ephemeral storage the pod uses: its containers' writable layers (as
//!   CRI reports them) and their log files. Local volumes (emptyDir) are
//!   not measured, and the writable layers and logs are counted for every
//!   disk signal, as upstream does when the image filesystem is the node
//!   filesystem (skiff's own containerd keeps both under its data
//!   directory);
//! - PIDs (↔ rankPIDPressure): by priority. Upstream then ranks by the
//!   pod's process count; skiff has no per-pod process count (CRI's
//!   container stats carry none), so pods of equal priority are ranked by
//!   QoS class instead (BestEffort, then Burstable, then Guaranteed).
//!
//! Critical pods (priority ≥ 2000000000, static and mirror pods) are never
//! evicted (↔ IsCriticalPod). Before evicting for disk pressure upstream
//! first deletes unused containers and images; skiff has no container or
//! image garbage collector yet, so that step is skipped.
//!
//! The same conditions decide admission ([`admit`], ↔ managerImpl.Admit):
//! under memory pressure only, BestEffort pods are rejected unless they
//! tolerate the memory-pressure taint; under any other pressure every pod
//! is; critical pods always get in.
//!
//! Events, through the kubelet's one recorder: Warning `Evicted` on the
//! pod (its worker records it as the kill starts), Warning
//! `EvictionThresholdMet` on the node each pass a threshold is crossed,
//! and Normal `NodeHasInsufficientMemory` / `NodeHasSufficientMemory`,
//! `NodeHasDiskPressure` / `NodeHasNoDiskPressure` and
//! `NodeHasInsufficientPID` / `NodeHasSufficientPID` when a condition
//! changes (as the node status setters do).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};

use crate::admission::Rejection;
use crate::pressure::{Crossed, Monitor, Pressure, Signal};
use crate::runtime::{LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_UID, Runtime, RuntimeError};
use crate::sync::{EventKind, Kill};

/// The status reason of an evicted or rejected pod (↔ eviction.Reason).
pub const REASON: &str = "Evicted";
/// The priority from which a pod is critical (↔ scheduling.SystemCriticalPriority).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// The grace period of a hard eviction. Upstream asked for 0 and has
/// given 1 s since (immediateEvictionGracePeriodSeconds), because its pod
/// workers read 0 as "the pod's own"; skiff's read 0 as 0.
pub const GRACE_PERIOD_SECONDS: i64 = 0;
/// How long a pass waits for an evicted pod to be killed (podCleanupTimeout).
pub const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The taint a BestEffort pod tolerates to be admitted under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";

/// What is reclaimed (↔ the v1.ResourceName of signalToResource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
    Pids,
}

impl Resource {
    pub fn of(signal: Signal) -> Resource {
        match signal {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodefsAvailable | Signal::ImagefsAvailable => Resource::EphemeralStorage,
            Signal::NodefsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }

    /// How its quantities are written: bytes in binary units, counts in decimal.
    fn format(self, v: u64) -> String {
        match self {
            Resource::Memory | Resource::EphemeralStorage => binary_si(v),
            Resource::Inodes | Resource::Pids => decimal_si(v),
        }
    }
}

/// `v` with the largest of `suffixes` (powers of `base`) that divides it
/// exactly (↔ resource.Quantity's canonical form).
fn canonical(v: u64, base: u64, suffixes: [&str; 6]) -> String {
    let mut n = v;
    let mut suffix = "";
    for s in suffixes {
        if n == 0 || !n.is_multiple_of(base) {
            break;
        }
        n /= base;
        suffix = s;
    }
    format!("{n}{suffix}")
}

/// A quantity of bytes as resource.Quantity prints a BinarySI one ("52Mi",
/// "1536"); below 1024 as DecimalSI does.
pub fn binary_si(v: u64) -> String {
    if v < 1024 {
        return decimal_si(v);
    }
    canonical(v, 1024, ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
}

/// A count as resource.Quantity prints a DecimalSI one ("5k", "4194004").
pub fn decimal_si(v: u64) -> String {
    canonical(v, 1000, ["k", "M", "G", "T", "P", "E"])
}

/// The pod's priority (spec.priority, 0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the pod is critical (↔ kubelettypes.IsCriticalPod): a static
/// pod, a mirror pod, or of system-critical priority.
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let source = annotations.and_then(|a| a.get(crate::static_pods::SOURCE));
    let is_static = source.is_some_and(|s| s != "api");
    let is_mirror = annotations.is_some_and(|a| a.contains_key(crate::static_pods::MIRROR));
    is_static || is_mirror || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

/// One container's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The working set, bytes.
    pub memory: u64,
    /// Writable layer and logs, bytes; None when not measured.
    pub disk: Option<u64>,
}

/// What a pod uses, by container name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodUsage {
    pub containers: BTreeMap<String, ContainerUsage>,
}

impl PodUsage {
    pub fn memory(&self) -> u64 {
        self.containers
            .values()
            .fold(0u64, |a, c| a.saturating_add(c.memory))
    }

    /// None when no container's disk was measured.
    pub fn disk(&self) -> Option<u64> {
        self.containers
            .values()
            .filter_map(|c| c.disk)
            .reduce(u64::saturating_add)
    }
}

/// Per-pod usage by pod uid.
pub type Usages = HashMap<String, PodUsage>;

/// The pod's request of `resource` in bytes (↔ GetResourceRequestQuantity):
/// the larger of its containers' sum and any init container's, plus its
/// overhead.
pub fn request(pod: &Pod, resource: &str) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let of = |r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| {
        r.and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource))
            .and_then(|q| crate::env::parse_bytes(&q.0))
            .unwrap_or(0)
    };
    let sum = spec
        .containers
        .iter()
        .fold(0u64, |a, c| a.saturating_add(of(c.resources.as_ref())));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| of(c.resources.as_ref()))
        .max()
        .unwrap_or(0);
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get(resource))
        .and_then(|q| crate::env::parse_bytes(&q.0))
        .unwrap_or(0);
    sum.max(init).saturating_add(overhead)
}

/// `true` before `false` (↔ cmpBool).
fn true_first(a: bool, b: bool) -> std::cmp::Ordering {
    b.cmp(&a)
}

fn qos_rank(pod: &Pod) -> u8 {
    match crate::sync::qos_class(pod) {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    }
}

/// Order `pods` for eviction to reclaim `resource`, the first to go first.
/// Pods without usage figures go first, as upstream's ranking puts them.
pub fn rank(resource: Resource, pods: &mut [Pod], usage: &Usages) {
    let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
    // (usage, request) of the starved resource; None when unmeasured.
    let measured = |p: &Pod| -> Option<(u64, u64)> {
        let u = usage.get(&uid(p))?;
        match resource {
            Resource::Memory => Some((u.memory(), request(p, "memory"))),
            Resource::EphemeralStorage | Resource::Inodes => {
                Some((u.disk()?, request(p, "ephemeral-storage")))
            }
            Resource::Pids => None,
        }
    };
    pods.sort_by(|a, b| {
        let by_priority = priority(a).cmp(&priority(b));
        if resource == Resource::Pids {
            return by_priority.then_with(|| qos_rank(a).cmp(&qos_rank(b)));
        }
        let (ma, mb) = (measured(a), measured(b));
        let exceeds = |m: Option<(u64, u64)>| m.is_none_or(|(u, r)| u > r);
        let above =
            |m: Option<(u64, u64)>| m.map(|(u, r)| i128::from(u).saturating_sub(i128::from(r)));
        true_first(exceeds(ma), exceeds(mb))
            .then(by_priority)
            .then_with(|| true_first(ma.is_none(), mb.is_none()))
            // The larger consumer above its request first.
            .then_with(|| above(mb).cmp(&above(ma)))
    });
}

/// Why a pod is evicted (↔ evictionMessage): "The node was low on
/// resource: memory. Threshold quantity: 100Mi, available: 52Mi.
/// Container app was using 1Gi, request is 0, has larger consumption of
/// memory. "
pub fn message(resource: Resource, pod: &Pod, usage: &Usages, crossed: &[Crossed]) -> String {
    let mut m = format!("The node was low on resource: {}. ", resource.name());
    if let Some(c) = crossed.iter().find(|c| Resource::of(c.signal) == resource) {
        m.push_str(&format!(
            "Threshold quantity: {}, available: {}. ",
            resource.format(c.threshold),
            resource.format(c.available)
        ));
    }
    let Some(u) = pod.metadata.uid.as_ref().and_then(|uid| usage.get(uid)) else {
        return m;
    };
    let Some(spec) = pod.spec.as_ref() else {
        return m;
    };
    let key = match resource {
        Resource::Memory => "memory",
        Resource::EphemeralStorage => "ephemeral-storage",
        Resource::Inodes | Resource::Pids => return m,
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let Some(cu) = u.containers.get(&c.name) else {
            continue;
        };
        let used = match resource {
            Resource::Memory => Some(cu.memory),
            _ => cu.disk,
        };
        let requested = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(key));
        let request_bytes = requested
            .and_then(|q| crate::env::parse_bytes(&q.0))
            .unwrap_or(0);
        if let Some(used) = used.filter(|used| *used > request_bytes) {
            m.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                c.name,
                binary_si(used),
                requested.map(|q| q.0.as_str()).unwrap_or("0"),
                resource.name()
            ));
        }
    }
    m
}

/// What evicting a pod asks of its worker: a kill with grace period 0,
/// Failed with reason Evicted and `message`, a DisruptionTarget condition,
/// and a Warning `Evicted` event.
pub fn kill(message: &str) -> Kill {
    Kill {
        reason: REASON.into(),
        message: message.into(),
        event: EventKind::Warning,
        grace: Some(GRACE_PERIOD_SECONDS),
        condition: Some(("DisruptionTarget".into(), "TerminationByKubelet".into())),
    }
}

/// Whether `tolerations` tolerate the NoSchedule taint `key` (no value)
/// (↔ TolerationsTolerateTaint).
fn tolerates(pod: &Pod, key: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoSchedule");
            let exists = t.operator.as_deref() == Some("Exists");
            let key_ok = match t.key.as_deref() {
                None | Some("") => exists,
                Some(k) => k == key,
            };
            let value_ok = exists || t.value.as_deref().unwrap_or_default().is_empty();
            effect_ok && key_ok && value_ok
        })
}

/// The node conditions as upstream writes them in messages ("[MemoryPressure DiskPressure]").
fn condition_list(p: Pressure) -> String {
    let names: Vec<&str> = [
        (p.memory, "MemoryPressure"),
        (p.disk, "DiskPressure"),
        (p.pid, "PIDPressure"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    format!("[{}]", names.join(" "))
}

/// Admission under node pressure (↔ managerImpl.Admit).
pub fn admit(pod: &Pod, pressure: Pressure) -> Option<Rejection> {
    if pressure == Pressure::default() || is_critical(pod) {
        return None;
    }
    let only_memory = pressure.memory && !pressure.disk && !pressure.pid;
    if only_memory
        && (crate::sync::qos_class(pod) != "BestEffort" || tolerates(pod, TAINT_MEMORY_PRESSURE))
    {
        return None;
    }
    Some(Rejection {
        reason: REASON.into(),
        // ↔ rejectPod's "Pod was rejected: " and nodeConditionMessageFmt.
        message: format!(
            "Pod was rejected: The node had condition: {}. ",
            condition_list(pressure)
        ),
    })
}

/// The pods the eviction manager acts on (the pod workers, or a fake).
#[async_trait::async_trait]
pub trait Pods: Send + Sync {
    /// The node's active pods: admitted, not finished, not being deleted,
    /// not already evicted.
    async fn active(&self) -> Vec<Pod>;
    /// Have the pod's worker carry out `kill`, and wait until it did (at
    /// most [`POD_CLEANUP_TIMEOUT`]). False if no worker has the pod.
    async fn evict(&self, pod: &Pod, kill: Kill) -> bool;
}

/// Per-pod usage (the runtime's container stats, or a fake).
#[async_trait::async_trait]
pub trait Usage: Send + Sync {
    /// Usage of this node's pods by uid; disk figures only `with_disk`.
    async fn usage(&self, with_disk: bool) -> Result<Usages, RuntimeError>;
}

/// Where node events go (the kubelet's recorder, or a fake).
#[async_trait::async_trait]
pub trait NodeEvents: Send + Sync {
    async fn node_event(&self, kind: EventKind, reason: &str, message: &str);
}

/// The reference node events are recorded against (↔ the kubelet's nodeRef).
pub fn node_reference(node: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..Default::default()
    }
}

/// Usage from the runtime's container stats (what `/stats/summary` and
/// `kubectl top` report): working sets, writable layers, and the sizes of
/// the containers' log files under `<log_root>/<ns>_<name>_<uid>/<container>/`.
pub struct RuntimeUsage {
    pub runtime: Arc<dyn Runtime>,
    pub node: String,
    pub log_root: PathBuf,
}

/// Bytes of the files in `dir` (the container's log and its rotations).
fn dir_bytes(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .fold(0u64, |a, m| a.saturating_add(m.len())),
    )
}

#[async_trait::async_trait]
impl Usage for RuntimeUsage {
    async fn usage(&self, with_disk: bool) -> Result<Usages, RuntimeError> {
        let mine: crate::runtime::Labels = [(LABEL_NODE.to_string(), self.node.clone())].into();
        let stats = self.runtime.container_stats(&mine).await?;
        let log_dirs: HashMap<String, PathBuf> = if with_disk {
            std::fs::read_dir(&self.log_root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    // `<ns>_<name>_<uid>` (names have no `_`); the pods'
                    // volume directories, `<uid>`, are beside them.
                    let name = e.file_name().into_string().ok()?;
                    let mut parts = name.splitn(3, '_');
                    let uid = parts.nth(2)?.to_string();
                    Some((uid, e.path()))
                })
                .collect()
        } else {
            HashMap::new()
        };
        let mut out = Usages::new();
        for s in stats {
            let (Some(uid), Some(name)) = (
                s.labels.get(LABEL_POD_UID),
                s.labels.get(LABEL_CONTAINER_NAME),
            ) else {
                continue;
            };
            let c = out
                .entry(uid.clone())
                .or_default()
                .containers
                .entry(name.clone())
                .or_default();
            c.memory = c.memory.saturating_add(s.working_set_bytes);
            if with_disk && let Some(layer) = s.writable_layer_bytes {
                c.disk = Some(c.disk.unwrap_or(0).saturating_add(layer));
            }
        }
        if with_disk {
            for (uid, pod) in out.iter_mut() {
                let Some(dir) = log_dirs.get(uid) else {
                    continue;
                };
                for (name, c) in pod.containers.iter_mut() {
                    if let Some(logs) = dir_bytes(&dir.join(name)) {
                        c.disk = Some(c.disk.unwrap_or(0).saturating_add(logs));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The node condition events for a change from `before` to `now`.
pub fn condition_events(before: Pressure, now: Pressure) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut one = |b: bool, n: bool, on: &'static str, off: &'static str| {
        if b != n {
            out.push(if n { on } else { off });
        }
    };
    one(
        before.memory,
        now.memory,
        "NodeHasInsufficientMemory",
        "NodeHasSufficientMemory",
    );
    one(
        before.disk,
        now.disk,
        "NodeHasDiskPressure",
        "NodeHasNoDiskPressure",
    );
    one(
        before.pid,
        now.pid,
        "NodeHasInsufficientPID",
        "NodeHasSufficientPID",
    );
    out
}

/// The eviction manager of one node.
pub struct Manager {
    pub node: String,
    pub pods: Arc<dyn Pods>,
    pub usage: Arc<dyn Usage>,
    pub events: Arc<dyn NodeEvents>,
}

impl Manager {
    /// Measure every [`crate::pressure::MONITOR_INTERVAL`] (the first time at
    /// once), publish the conditions through `monitor` and evict while a
    /// threshold is crossed, until dropped.
    pub async fn run(self, mut monitor: Monitor) {
        let mut tick = tokio::time::interval(crate::pressure::MONITOR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Pressure::default();
        loop {
            let now = tick.tick().await;
            let Some((crossed, _, pressure)) = monitor.pass(now).await else {
                continue;
            };
            for reason in condition_events(reported, pressure) {
                let message = format!("Node {} status is now: {reason}", self.node);
                self.events
                    .node_event(EventKind::Normal, reason, &message)
                    .await;
            }
            reported = pressure;
            self.synchronize(&crossed).await;
        }
    }

    /// One pass over the thresholds crossed now: evict at most one pod
    /// (↔ synchronize). The pod evicted, if any.
    pub async fn synchronize(&self, crossed: &[Crossed]) -> Option<Pod> {
        // Memory first (crossed is in that order).
        let first = crossed.first()?;
        let resource = Resource::of(first.signal);
        tracing::info!(
            resource = resource.name(),
            signal = first.signal.name(),
            "eviction manager: attempting to reclaim"
        );
        self.events
            .node_event(
                EventKind::Warning,
                "EvictionThresholdMet",
                &format!("Attempting to reclaim {}", resource.name()),
            )
            .await;
        // Upstream deletes unused containers and images first for disk
        // signals; skiff has no garbage collector for them.
        let mut pods = self.pods.active().await;
        if pods.is_empty() {
            tracing::warn!(
                "eviction manager: eviction thresholds have been met, but no pods are active to evict"
            );
            return None;
        }
        let with_disk = matches!(resource, Resource::EphemeralStorage | Resource::Inodes);
        let usage = match self.usage.usage(with_disk).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "eviction manager: no pod usage; ranking without it");
                Usages::new()
            }
        };
        // A stable order before ranking, so that ties are decided the same way.
        pods.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        rank(resource, &mut pods, &usage);
        for pod in pods {
            if is_critical(&pod) {
                tracing::debug!(pod = ?pod.metadata.name, "eviction manager: cannot evict a critical pod");
                continue;
            }
            let message = message(resource, &pod, &usage, crossed);
            tracing::info!(
                namespace = ?pod.metadata.namespace,
                pod = ?pod.metadata.name,
                %message,
                "eviction manager: evicting pod"
            );
            if self.pods.evict(&pod, kill(&message)).await {
                return Some(pod);
            }
        }
        tracing::warn!("eviction manager: unable to evict any pods from the node");
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    const MI: u64 = 1024 * 1024;

    fn pod(name: &str, priority: i32, requests: Option<&str>) -> Pod {
        let resources = match requests {
            Some(m) => json!({"requests": {"memory": m}, "limits": {"memory": "10Gi"}}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"priority": priority, "containers": [{"name": "app", "image": "i", "resources": resources}]},
        }))
        .unwrap()
    }

    fn using(entries: &[(&str, u64, Option<u64>)]) -> Usages {
        entries
            .iter()
            .map(|(name, memory, disk)| {
                (
                    format!("uid-{name}"),
                    PodUsage {
                        containers: [(
                            "app".to_string(),
                            ContainerUsage {
                                memory: *memory,
                                disk: *disk,
                            },
                        )]
                        .into(),
                    },
                )
            })
            .collect()
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn quantities_are_written_as_resource_quantity_does() {
        assert_eq!(binary_si(100 * MI), "100Mi");
        assert_eq!(binary_si(52 * MI), "52Mi");
        assert_eq!(binary_si(1024 * MI), "1Gi");
        assert_eq!(binary_si(1536), "1536");
        assert_eq!(binary_si(53_248 * 1024), "52Mi");
        assert_eq!(binary_si(12_345 * 1024), "12345Ki");
        assert_eq!(binary_si(0), "0");
        assert_eq!(binary_si(1000), "1k");
        assert_eq!(decimal_si(5000), "5k");
        assert_eq!(decimal_si(4_194_004), "4194004");
        assert_eq!(decimal_si(3_000_000), "3M");
    }

    #[test]
    fn memory_ranks_by_exceeding_requests_then_priority_then_usage() {
        let mut pods = vec![
            pod("guaranteed-within", 0, Some("1Gi")),
            pod("high-over", 1000, Some("100Mi")),
            pod("low-small", 0, None),
            pod("low-big", 0, None),
            pod("unmeasured", 5000, Some("1Gi")),
        ];
        let usage = using(&[
            ("guaranteed-within", 500 * MI, None),
            ("high-over", 900 * MI, None),
            ("low-small", 10 * MI, None),
            ("low-big", 300 * MI, None),
        ]);
        rank(Resource::Memory, &mut pods, &usage);
        // Over their requests first (no stats counts as over), by priority,
        // then the larger consumer above its request; within its request last.
        assert_eq!(
            names(&pods),
            [
                "low-big",
                "low-small",
                "high-over",
                "unmeasured",
                "guaranteed-within"
            ]
        );
    }

    #[test]
    fn disk_ranks_by_ephemeral_storage() {
        let mut pods = vec![pod("a", 0, None), pod("b", 0, None), pod("c", -10, None)];
        let usage = using(&[
            ("a", 0, Some(10 * MI)),
            ("b", 0, Some(20 * MI)),
            ("c", 0, Some(MI)),
        ]);
        rank(Resource::EphemeralStorage, &mut pods, &usage);
        assert_eq!(names(&pods), ["c", "b", "a"]);
    }

    #[test]
    fn pids_rank_by_priority_then_qos() {
        let mut pods = vec![
            pod("burstable", 0, Some("1Gi")),
            pod("besteffort", 0, None),
            pod("important", 100, None),
            pod("unimportant", -1, Some("1Gi")),
        ];
        rank(Resource::Pids, &mut pods, &Usages::new());
        assert_eq!(
            names(&pods),
            ["unimportant", "besteffort", "burstable", "important"]
        );
    }

    #[test]
    fn requests_count_init_containers_and_overhead() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "overhead": {"memory": "10Mi"},
            "initContainers": [{"name": "i", "resources": {"requests": {"memory": "500Mi"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"memory": "200Mi"}}}]}}))
        .unwrap();
        assert_eq!(request(&p, "memory"), 510 * MI);
        assert_eq!(request(&p, "ephemeral-storage"), 0);
    }

    #[test]
    fn the_message_is_upstreams() {
        let p = pod("web", 0, None);
        let usage = using(&[("web", 1024 * MI, None)]);
        let crossed = [Crossed {
            signal: Signal::MemoryAvailable,
            threshold: 100 * MI,
            available: 52 * MI,
        }];
        assert_eq!(
            message(Resource::Memory, &p, &usage, &crossed),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi. \
             Container app was using 1Gi, request is 0, has larger consumption of memory. "
        );
        // Within its request: no container sentence.
        let within = pod("web", 0, Some("2Gi"));
        assert_eq!(
            message(Resource::Memory, &within, &usage, &crossed),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi. "
        );
        // Over a request: the request as written.
        let over = pod("web", 0, Some("512Mi"));
        assert!(
            message(Resource::Memory, &over, &usage, &crossed).ends_with(
                "Container app was using 1Gi, request is 512Mi, has larger consumption of memory. "
            )
        );
        // Disk, and PIDs (no container figures).
        let disk = [Crossed {
            signal: Signal::NodefsAvailable,
            threshold: 10 * 1024 * MI,
            available: 5 * 1024 * MI,
        }];
        let usage = using(&[("web", 0, Some(3 * 1024 * MI))]);
        assert_eq!(
            message(Resource::EphemeralStorage, &p, &usage, &disk),
            "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi, available: 5Gi. \
             Container app was using 3Gi, request is 0, has larger consumption of ephemeral-storage. "
        );
        let pids = [Crossed {
            signal: Signal::PidAvailable,
            threshold: 5000,
            available: 1200,
        }];
        assert_eq!(
            message(Resource::Pids, &p, &Usages::new(), &pids),
            "The node was low on resource: pids. Threshold quantity: 5k, available: 1200. "
        );
    }

    #[test]
    fn critical_pods_are_recognized() {
        assert!(!is_critical(&pod("p", 1_999_999_999, None)));
        assert!(is_critical(&pod("p", SYSTEM_CRITICAL_PRIORITY, None)));
        assert!(is_critical(&pod("p", 2_000_001_000, None)));
        let mut mirror = pod("m", 0, None);
        mirror.metadata.annotations =
            Some([(crate::static_pods::MIRROR.to_string(), "x".to_string())].into());
        assert!(is_critical(&mirror));
        let mut from_api = pod("a", 0, None);
        from_api.metadata.annotations =
            Some([(crate::static_pods::SOURCE.to_string(), "api".to_string())].into());
        assert!(!is_critical(&from_api));
        let mut from_file = pod("f", 0, None);
        from_file.metadata.annotations =
            Some([(crate::static_pods::SOURCE.to_string(), "file".to_string())].into());
        assert!(is_critical(&from_file));
    }

    #[test]
    fn admission_under_pressure_is_upstreams() {
        let none = Pressure::default();
        let memory = Pressure {
            memory: true,
            ..none
        };
        let disk = Pressure { disk: true, ..none };
        let both = Pressure {
            memory: true,
            pid: true,
            ..none
        };
        let best_effort = pod("be", 0, None);
        let burstable = pod("bu", 0, Some("1Gi"));
        let critical = pod("c", SYSTEM_CRITICAL_PRIORITY, None);
        assert_eq!(admit(&best_effort, none), None);
        let r = admit(&best_effort, memory).unwrap();
        assert_eq!(r.reason, "Evicted");
        assert_eq!(
            r.message,
            "Pod was rejected: The node had condition: [MemoryPressure]. "
        );
        assert_eq!(admit(&burstable, memory), None);
        assert_eq!(admit(&critical, memory), None);
        // A BestEffort pod tolerating the memory-pressure taint gets in;
        // a toleration of another taint does not help.
        let mut tolerant = best_effort.clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![
            serde_json::from_value(
                json!({"key": TAINT_MEMORY_PRESSURE, "operator": "Exists", "effect": "NoSchedule"}),
            )
            .unwrap(),
        ]);
        assert_eq!(admit(&tolerant, memory), None);
        let mut other = best_effort.clone();
        other.spec.as_mut().unwrap().tolerations = Some(vec![
            serde_json::from_value(
                json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}),
            )
            .unwrap(),
        ]);
        assert!(admit(&other, memory).is_some());
        // Any other condition rejects every pod but critical ones.
        assert_eq!(
            admit(&burstable, disk).unwrap().message,
            "Pod was rejected: The node had condition: [DiskPressure]. "
        );
        assert!(admit(&tolerant, disk).is_some());
        assert_eq!(
            admit(&burstable, both).unwrap().message,
            "Pod was rejected: The node had condition: [MemoryPressure PIDPressure]. "
        );
        assert_eq!(admit(&critical, both), None);
    }

    #[test]
    fn condition_changes_make_upstreams_node_events() {
        let none = Pressure::default();
        let memory = Pressure {
            memory: true,
            ..none
        };
        let disk_pid = Pressure {
            disk: true,
            pid: true,
            ..none
        };
        assert!(condition_events(none, none).is_empty());
        assert_eq!(
            condition_events(none, memory),
            ["NodeHasInsufficientMemory"]
        );
        assert_eq!(
            condition_events(memory, disk_pid),
            [
                "NodeHasSufficientMemory",
                "NodeHasDiskPressure",
                "NodeHasInsufficientPID"
            ]
        );
        assert_eq!(
            condition_events(disk_pid, none),
            ["NodeHasNoDiskPressure", "NodeHasSufficientPID"]
        );
    }

    /// Pods and evictions set and seen by the test.
    #[derive(Default)]
    struct FakePods {
        active: Mutex<Vec<Pod>>,
        evicted: Mutex<Vec<(String, Kill)>>,
    }

    #[async_trait::async_trait]
    impl Pods for FakePods {
        async fn active(&self) -> Vec<Pod> {
            self.active.lock().unwrap().clone()
        }
        async fn evict(&self, pod: &Pod, kill: Kill) -> bool {
            let name = pod.metadata.name.clone().unwrap();
            self.active
                .lock()
                .unwrap()
                .retain(|p| p.metadata.name.as_ref() != Some(&name));
            self.evicted.lock().unwrap().push((name, kill));
            true
        }
    }

    struct FakeUsage(Usages);

    #[async_trait::async_trait]
    impl Usage for FakeUsage {
        async fn usage(&self, _with_disk: bool) -> Result<Usages, RuntimeError> {
            Ok(self.0.clone())
        }
    }

    #[derive(Default)]
    struct FakeEvents(Mutex<Vec<(EventKind, String, String)>>);

    #[async_trait::async_trait]
    impl NodeEvents for FakeEvents {
        async fn node_event(&self, kind: EventKind, reason: &str, message: &str) {
            self.0
                .lock()
                .unwrap()
                .push((kind, reason.into(), message.into()));
        }
    }

    struct FakeMeasure(Mutex<crate::pressure::Observations>);

    impl crate::pressure::Measure for FakeMeasure {
        fn observe(&self) -> crate::pressure::Observations {
            *self.0.lock().unwrap()
        }
    }

    fn manager(pods: Vec<Pod>, usage: Usages) -> (Manager, Arc<FakePods>, Arc<FakeEvents>) {
        let fake = Arc::new(FakePods {
            active: Mutex::new(pods),
            ..Default::default()
        });
        let events = Arc::new(FakeEvents::default());
        let m = Manager {
            node: "node-1".into(),
            pods: fake.clone(),
            usage: Arc::new(FakeUsage(usage)),
            events: events.clone(),
        };
        (m, fake, events)
    }

    fn memory_crossed() -> Vec<Crossed> {
        vec![Crossed {
            signal: Signal::MemoryAvailable,
            threshold: 100 * MI,
            available: 52 * MI,
        }]
    }

    #[tokio::test]
    async fn one_pod_per_pass_and_never_a_critical_one() {
        let critical = pod("critical", SYSTEM_CRITICAL_PRIORITY, None);
        let (m, fake, events) = manager(
            vec![critical, pod("small", 0, None), pod("big", 0, None)],
            using(&[
                ("critical", 4096 * MI, None),
                ("small", MI, None),
                ("big", 1024 * MI, None),
            ]),
        );
        // Nothing crossed: nothing happens.
        assert!(m.synchronize(&[]).await.is_none());
        assert!(events.0.lock().unwrap().is_empty());
        let evicted = m.synchronize(&memory_crossed()).await.unwrap();
        assert_eq!(evicted.metadata.name.as_deref(), Some("big"));
        {
            let e = fake.evicted.lock().unwrap();
            assert_eq!(e.len(), 1, "one pod per pass");
            let kill = &e[0].1;
            assert_eq!(kill.reason, "Evicted");
            assert_eq!(kill.grace, Some(0));
            assert_eq!(kill.event, EventKind::Warning);
            assert_eq!(
                kill.condition,
                Some(("DisruptionTarget".into(), "TerminationByKubelet".into()))
            );
            assert_eq!(
                kill.message,
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi. \
                 Container app was using 1Gi, request is 0, has larger consumption of memory. "
            );
        }
        assert_eq!(
            events.0.lock().unwrap().as_slice(),
            [(
                EventKind::Warning,
                "EvictionThresholdMet".to_string(),
                "Attempting to reclaim memory".to_string()
            )]
        );
        let next = m.synchronize(&memory_crossed()).await.unwrap();
        assert_eq!(next.metadata.name.as_deref(), Some("small"));
        // Only the critical pod is left: it stays.
        assert!(m.synchronize(&memory_crossed()).await.is_none());
        let evicted: Vec<String> = fake
            .evicted
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(evicted, ["big", "small"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_evicts_each_pass_and_reports_condition_changes() {
        let healthy = crate::pressure::Observations {
            memory_available: Some(4096 * MI),
            ..Default::default()
        };
        let measure = Arc::new(FakeMeasure(Mutex::new(healthy)));
        let (m, fake, events) = manager(
            vec![pod("a", 0, None), pod("b", 0, None)],
            using(&[("a", 10 * MI, None), ("b", 20 * MI, None)]),
        );
        let (tx, mut rx) = tokio::sync::watch::channel(Pressure::default());
        let monitor = Monitor::new(measure.clone(), crate::pressure::Thresholds::default(), tx);
        let task = tokio::spawn(m.run(monitor));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(fake.evicted.lock().unwrap().is_empty());
        measure.0.lock().unwrap().memory_available = Some(52 * MI);
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("measured at 10 s")
            .unwrap();
        assert!(rx.borrow_and_update().memory);
        // The pass that saw it evicted one pod, the larger consumer.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let evicted = |f: &FakePods| -> Vec<String> {
            f.evicted
                .lock()
                .unwrap()
                .iter()
                .map(|(n, _)| n.clone())
                .collect()
        };
        assert_eq!(evicted(&fake), ["b"]);
        // The next pass, 10 s later, the other.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(evicted(&fake), ["b", "a"]);
        // Memory back: no more eviction; the condition stays for 5 min.
        measure.0.lock().unwrap().memory_available = Some(4096 * MI);
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!rx.borrow_and_update().memory);
        let reasons: Vec<String> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r, _)| r.clone())
            .collect();
        assert_eq!(
            reasons,
            [
                "NodeHasInsufficientMemory",
                "EvictionThresholdMet",
                "EvictionThresholdMet",
                "NodeHasSufficientMemory"
            ]
        );
        assert_eq!(
            events.0.lock().unwrap()[0].2,
            "Node node-1 status is now: NodeHasInsufficientMemory"
        );
        task.abort();
    }
}
