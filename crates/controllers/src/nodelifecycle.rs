//! The node lifecycle controller (↔ pkg/controller/nodelifecycle) with its
//! NoExecute taint manager (↔ pkg/controller/tainteviction).
//!
//! Node health: a node is healthy while its kubelet renews its Lease in
//! kube-node-lease or posts a new Ready heartbeat. The controller notes
//! (on its own monotonic clock, as Kubernetes does) when it last saw either
//! change; after `node_monitor_grace_period` without one, every condition
//! of the node becomes Unknown ("Kubelet stopped posting node status."),
//! its Ready pods are marked not ready, and a NodeNotReady event is
//! recorded.
//!
//! Taints follow conditions: Ready=Unknown → node.kubernetes.io/unreachable,
//! Ready=False → node.kubernetes.io/not-ready (NoExecute and NoSchedule);
//! pressure conditions, NetworkUnavailable and spec.unschedulable get their
//! NoSchedule taints. They go away when the condition clears.
//!
//! Taint manager: a pod on a node with NoExecute taints is evicted (a
//! graceful delete, with a TaintManagerEviction event) as soon as one taint
//! is not tolerated, else when the shortest tolerationSeconds of the
//! matching tolerations has passed since the taint was added.
//!
//! Every decision is a pure function of the objects and `now`; the loops
//! only feed them and write the results.
//!
//! Not done (as in Kubernetes): zone disruption states and eviction rate
//! limiting; every tainted node evicts at full speed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::loopkit::Store;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use skiff_runtime::events::{EventType, reference};
use tokio::time::Instant;

use crate::loopkit::{self, Key, Outcome, WorkQueue, informer, is_status};

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const NO_EXECUTE: &str = "NoExecute";
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
const CONTROLLER: &str = "nodelifecycle";

/// Conditions whose True status puts a NoSchedule taint on the node.
const CONDITION_TAINTS: [(&str, &str); 4] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];

/// Conditions a kubelet posts, all set Unknown when it goes silent.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

// ---------------------------------------------------------------------------
// Node health (pure).

/// What the kubelet last said: the Ready heartbeat and the Lease renewal.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub ready_heartbeat: Option<Timestamp>,
    pub lease_renewed: Option<Timestamp>,
}

impl Heartbeat {
    pub fn of(node: &Node, lease: Option<&Lease>) -> Heartbeat {
        Heartbeat {
            ready_heartbeat: condition(node, "Ready")
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0),
            lease_renewed: lease
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0),
        }
    }
}

/// When this controller last saw the kubelet's heartbeat change.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub heartbeat: Heartbeat,
    pub probe: Instant,
}

/// Note the current heartbeat: the probe time moves to `now` when it
/// changed (or is seen for the first time, which grants a fresh grace
/// period after a controller restart, as in Kubernetes).
pub fn observe(prev: Option<&Health>, heartbeat: Heartbeat, now: Instant) -> Health {
    match prev {
        Some(h) if h.heartbeat == heartbeat => h.clone(),
        _ => Health {
            heartbeat,
            probe: now,
        },
    }
}

/// The heartbeat is older than the grace period.
pub fn is_stale(probe: Instant, now: Instant, grace: Duration) -> bool {
    now.saturating_duration_since(probe) > grace
}

/// How long until a fresh heartbeat goes stale.
pub fn until_stale(probe: Instant, now: Instant, grace: Duration) -> Duration {
    (probe + grace).saturating_duration_since(now)
}

pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The Ready condition's status ("True", "False", "Unknown"), if posted.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The conditions of a node whose kubelet went silent: every kubelet
/// condition Unknown (added if never posted). `None` if already so.
pub fn unknown_conditions(node: &Node, now: &Time) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

fn is_managed_taint(t: &Taint) -> bool {
    t.key == TAINT_NOT_READY
        || t.key == TAINT_UNREACHABLE
        || (t.effect == NO_SCHEDULE
            && (t.key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, k)| *k == t.key)))
}

/// The taints a node's conditions call for, or `None` if it has them.
/// Other taints are kept as they are; kept managed taints keep their
/// timeAdded; new NoExecute taints get `now`.
pub fn desired_taints(node: &Node, now: &Time) -> Option<Vec<Taint>> {
    let existing = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut want: Vec<(&str, &str)> = Vec::new();
    let ready = ready_status(node);
    match ready {
        Some("True") => {}
        Some("False") => want.extend([
            (TAINT_NOT_READY, NO_SCHEDULE),
            (TAINT_NOT_READY, NO_EXECUTE),
        ]),
        Some(_) => want.extend([
            (TAINT_UNREACHABLE, NO_SCHEDULE),
            (TAINT_UNREACHABLE, NO_EXECUTE),
        ]),
        None => {}
    }
    for (type_, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == "True") {
            want.push((key, NO_SCHEDULE));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        want.push((TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    }
    let wanted = |t: &Taint| want.iter().any(|(k, e)| *k == t.key && *e == t.effect);
    let mut taints: Vec<Taint> = existing
        .iter()
        .filter(|t| {
            // Without a Ready condition the ready taints (the kubelet's own
            // not-ready:NoSchedule at registration) are left alone.
            let ready_taint = t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE;
            !is_managed_taint(t) || wanted(t) || (ready.is_none() && ready_taint)
        })
        .cloned()
        .collect();
    for (key, effect) in &want {
        if !taints.iter().any(|t| t.key == *key && t.effect == *effect) {
            taints.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                value: None,
                time_added: (*effect == NO_EXECUTE).then(|| now.clone()),
            });
        }
    }
    (taints != existing).then_some(taints)
}

// ---------------------------------------------------------------------------
// Taint-based eviction (pure).

/// Whether a toleration tolerates a taint (↔ Toleration.ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// What the taint manager does with a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Every NoExecute taint is tolerated forever (or there are none).
    Never,
    Now,
    At(Timestamp),
}

/// When a pod must leave a node with these taints (each with the time it
/// was added): now if one NoExecute taint is not tolerated (or tolerated
/// for 0 s), else when the first tolerationSeconds runs out (each taint's
/// first matching toleration counts, as in Kubernetes).
pub fn eviction(
    taints: &[(Taint, Timestamp)],
    tolerations: &[Toleration],
    now: Timestamp,
) -> Eviction {
    let mut deadline: Option<Timestamp> = None;
    for (taint, since) in taints.iter().filter(|(t, _)| t.effect == NO_EXECUTE) {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        match toleration.toleration_seconds {
            None => {}
            Some(s) if s <= 0 => return Eviction::Now,
            Some(s) => {
                if let Ok(at) = since.checked_add(SignedDuration::from_secs(s)) {
                    deadline = Some(deadline.map_or(at, |d| d.min(at)));
                }
            }
        }
    }
    match deadline {
        None => Eviction::Never,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == NO_EXECUTE)
        .cloned()
        .collect()
}

fn taint_id(node: &str, t: &Taint) -> String {
    format!(
        "{node}\u{0}{}\u{0}{}\u{0}{}",
        t.key,
        t.value.as_deref().unwrap_or(""),
        t.effect
    )
}

// ---------------------------------------------------------------------------
// The controller.

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Work {
    Node(String),
    Pod(Key),
}

struct Controller {
    ctx: crate::Context,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    queue: Arc<WorkQueue<Work>>,
    health: HashMap<String, Health>,
    last_ready: HashMap<String, String>,
    /// When NoExecute taints without timeAdded were first seen.
    first_seen: HashMap<String, Timestamp>,
}

fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// How often every node is looked at (↔ --node-monitor-period, 5 s).
fn monitor_period(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

pub async fn run(ctx: crate::Context) {
    let client = ctx.client.clone();
    let queue = Arc::new(WorkQueue::<Work>::new());

    // Pods: those on nodes with NoExecute taints go to the taint manager.
    let q = queue.clone();
    let (pods, pod_informer) = ctx.informers.get::<Pod>().informer(move |ev, _| {
        if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = ev
            && pod_node(pod).is_some()
            && pod.metadata.deletion_timestamp.is_none()
        {
            q.add(Work::Pod(Key::of(pod)));
        }
    });
    let q = queue.clone();
    let pod_store = pods.clone();
    let (nodes, node_informer) = ctx.informers.get::<Node>().informer(move |ev, old| {
        let Some(node) = loopkit::event_object(ev) else {
            return;
        };
        let name = node.metadata.name.clone().unwrap_or_default();
        q.add(Work::Node(name.clone()));
        let deleted = matches!(ev, watcher::Event::Delete(_));
        if !deleted && old.as_deref().map(no_execute_taints) != Some(no_execute_taints(node)) {
            for pod in pod_store
                .state()
                .iter()
                .filter(|p| pod_node(p) == Some(name.as_str()))
            {
                q.add(Work::Pod(Key::of(pod.as_ref())));
            }
        }
    });
    let q = queue.clone();
    let (leases, lease_informer) = informer(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
        move |ev, _| {
            if let Some(lease) = loopkit::event_object(ev) {
                q.add(Work::Node(lease.metadata.name.clone().unwrap_or_default()));
            }
        },
    );
    let period = monitor_period(ctx.config.node_monitor_grace_period);
    let q = queue.clone();
    let node_store = nodes.clone();
    let monitor = async move {
        let mut tick = loopkit::ticker(period);
        loop {
            tick.tick().await;
            node_store
                .state()
                .iter()
                .for_each(|n| q.add(Work::Node(n.metadata.name.clone().unwrap_or_default())));
        }
    };
    let worker = async {
        if !(loopkit::wait_ready(&nodes).await
            && loopkit::wait_ready(&leases).await
            && loopkit::wait_ready(&pods).await)
        {
            return;
        }
        let mut c = Controller {
            ctx: ctx.clone(),
            nodes: nodes.clone(),
            leases: leases.clone(),
            pods: pods.clone(),
            queue: queue.clone(),
            health: HashMap::new(),
            last_ready: HashMap::new(),
            first_seen: HashMap::new(),
        };
        loop {
            let work = queue.next().await;
            let outcome = match &work {
                Work::Node(name) => {
                    crate::loopkit::guarded(CONTROLLER, name, c.reconcile_node(name)).await
                }
                Work::Pod(key) => {
                    crate::loopkit::guarded(CONTROLLER, key, c.reconcile_pod(key)).await
                }
            };
            c.queue.finish(CONTROLLER, work, outcome);
        }
    };
    tokio::join!(pod_informer, node_informer, lease_informer, monitor, worker);
}

impl Controller {
    async fn reconcile_node(&mut self, name: &str) -> Outcome {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            self.health.remove(name);
            self.last_ready.remove(name);
            let prefix = format!("{name}\u{0}");
            self.first_seen.retain(|k, _| !k.starts_with(&prefix));
            return Ok(None);
        };
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let lease = self
            .leases
            .get(&ObjectRef::new(name).within(LEASE_NAMESPACE));
        let now = Instant::now();
        let health = observe(
            self.health.get(name),
            Heartbeat::of(&node, lease.as_deref()),
            now,
        );
        let probe = health.probe;
        self.health.insert(name.to_string(), health);
        let grace = self.ctx.config.node_monitor_grace_period;
        let wall_now = Time(Timestamp::now());

        let mut node = (*node).clone();
        if is_stale(probe, now, grace)
            && let Some(conditions) = unknown_conditions(&node, &wall_now)
        {
            let mut updated = node.clone();
            updated
                .status
                .get_or_insert_with(Default::default)
                .conditions = Some(conditions);
            updated.metadata.managed_fields = None;
            node = api
                .replace_status(name, &PostParams::default(), &updated)
                .await?;
            tracing::info!(
                node = name,
                "node stopped posting status: conditions set to Unknown"
            );
        }

        // Ready transitions: events, and pods of a node that is not ready stop being ready.
        let ready = ready_status(&node).unwrap_or("").to_string();
        let previous = self.last_ready.insert(name.to_string(), ready.clone());
        if previous.as_deref() == Some("True") && ready != "True" {
            let message = format!("Node {name} status is now: NodeNotReady");
            self.ctx
                .recorder
                .record(
                    &reference(&node),
                    EventType::Normal,
                    "NodeNotReady",
                    &message,
                )
                .await;
        } else if previous.is_some_and(|p| p != "True") && ready == "True" {
            let message = format!("Node {name} status is now: NodeReady");
            self.ctx
                .recorder
                .record(&reference(&node), EventType::Normal, "NodeReady", &message)
                .await;
        }
        if !ready.is_empty() && ready != "True" {
            self.mark_pods_not_ready(name, &wall_now).await?;
        }

        if let Some(taints) = desired_taints(&node, &wall_now) {
            let mut updated = node.clone();
            updated.spec.get_or_insert_with(Default::default).taints =
                (!taints.is_empty()).then_some(taints);
            updated.metadata.managed_fields = None;
            api.replace(name, &PostParams::default(), &updated).await?;
            tracing::info!(node = name, ready, "node taints updated");
        }
        Ok((!is_stale(probe, now, grace))
            .then(|| until_stale(probe, now, grace) + Duration::from_millis(20)))
    }

    async fn mark_pods_not_ready(&self, node: &str, now: &Time) -> Result<(), loopkit::Error> {
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| pod_node(p) == Some(node) && crate::endpoints::is_pod_ready(p))
            .collect();
        for pod in pods {
            let key = Key::of(pod.as_ref());
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
            let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
            match api
                .patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %key, node, "marked pod not ready: its node is not ready");
                    self.ctx
                        .recorder
                        .record(
                            &reference(pod.as_ref()),
                            EventType::Warning,
                            "NodeNotReady",
                            "Node is not ready",
                        )
                        .await;
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn reconcile_pod(&mut self, key: &Key) -> Outcome {
        let Some(pod) = self.pods.get(&key.object_ref()) else {
            return Ok(None);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(node_name) = pod_node(&pod) else {
            return Ok(None);
        };
        let Some(node) = self.nodes.get(&ObjectRef::new(node_name)) else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let taints: Vec<(Taint, Timestamp)> = no_execute_taints(&node)
            .into_iter()
            .map(|t| {
                let since = match &t.time_added {
                    Some(time) => time.0,
                    None => *self
                        .first_seen
                        .entry(taint_id(node_name, &t))
                        .or_insert(now),
                };
                (t, since)
            })
            .collect();
        let live: BTreeSet<String> = taints.iter().map(|(t, _)| taint_id(node_name, t)).collect();
        let prefix = format!("{node_name}\u{0}");
        self.first_seen
            .retain(|k, _| !k.starts_with(&prefix) || live.contains(k));

        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match eviction(&taints, &tolerations, now) {
            Eviction::Never => Ok(None),
            Eviction::At(at) => {
                let wait = at.duration_since(now).unsigned_abs();
                Ok(Some(wait + Duration::from_millis(20)))
            }
            Eviction::Now => {
                let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
                let message = format!("Marking for deletion Pod {key}");
                self.ctx
                    .recorder
                    .record(
                        &reference(pod.as_ref()),
                        EventType::Normal,
                        "TaintManagerEviction",
                        &message,
                    )
                    .await;
                let condition = serde_json::json!({"status": {"conditions": [{
                    "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": Time(now)}]}});
                if let Err(e) = api
                    .patch_status(
                        &key.name,
                        &PatchParams::default(),
                        &Patch::Strategic(&condition),
                    )
                    .await
                {
                    tracing::debug!(pod = %key, error = %e, "could not add the DisruptionTarget condition");
                }
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(pod = %key, node = node_name, "evicted pod from a NoExecute-tainted node")
                    }
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn cond(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            last_heartbeat_time: Some(Time(ts(0))),
            ..Default::default()
        }
    }

    fn node(conditions: Vec<NodeCondition>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(Time(ts(-100))),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(conditions),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    fn toleration(
        key: Option<&str>,
        op: &str,
        value: Option<&str>,
        effect: Option<&str>,
        seconds: Option<i64>,
    ) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(op.into()),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn heartbeats_move_the_probe_only_when_they_change() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(40);
        let lease = |secs: i64| Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(ts(secs))),
                ..Default::default()
            }),
            ..Default::default()
        };
        let n = node(vec![cond("Ready", "True")], vec![]);
        let first = observe(None, Heartbeat::of(&n, Some(&lease(0))), t0);
        assert_eq!(first.probe, t0);
        // Same heartbeat later: the probe stays, and goes stale after the grace period.
        let later = t0 + Duration::from_secs(30);
        let same = observe(Some(&first), Heartbeat::of(&n, Some(&lease(0))), later);
        assert_eq!(same.probe, t0);
        let cases = [
            (Duration::from_secs(39), false),
            (Duration::from_secs(40), false),
            (Duration::from_secs(41), true),
        ];
        for (elapsed, stale) in cases {
            assert_eq!(
                is_stale(same.probe, t0 + elapsed, grace),
                stale,
                "{elapsed:?}"
            );
        }
        assert_eq!(
            until_stale(t0, t0 + Duration::from_secs(30), grace),
            Duration::from_secs(10)
        );
        assert_eq!(
            until_stale(t0, t0 + Duration::from_secs(50), grace),
            Duration::ZERO
        );
        // A renewed lease, or a new Ready heartbeat, moves it.
        let renewed = observe(Some(&same), Heartbeat::of(&n, Some(&lease(10))), later);
        assert_eq!(renewed.probe, later);
        let mut posted = n.clone();
        if let Some(c) = posted.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].last_heartbeat_time = Some(Time(ts(20)));
        }
        let t2 = later + Duration::from_secs(5);
        assert_eq!(
            observe(Some(&renewed), Heartbeat::of(&posted, Some(&lease(10))), t2).probe,
            t2
        );
    }

    #[test]
    fn silent_kubelet_conditions_become_unknown() {
        let now = Time(ts(100));
        let n = node(
            vec![cond("Ready", "True"), cond("MemoryPressure", "False")],
            vec![],
        );
        let conditions = unknown_conditions(&n, &now).expect("a change");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(now.clone()));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(ts(0))),
            "the heartbeat is kept"
        );
        let never = conditions
            .iter()
            .find(|c| c.type_ == "DiskPressure")
            .expect("DiskPressure added");
        assert_eq!(never.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conditions.len(), 4);
        // Already Unknown: nothing to write.
        let mut done = n.clone();
        done.status.get_or_insert_with(Default::default).conditions = Some(conditions);
        assert!(unknown_conditions(&done, &now).is_none());
        // Never posted at all.
        let fresh = node(vec![], vec![]);
        let c = unknown_conditions(&fresh, &now).expect("a change");
        assert!(c.iter().all(|c| c.status == "Unknown"
            && c.message.as_deref() == Some("Kubelet never posted node status.")));
    }

    #[test]
    fn taints_follow_conditions() {
        let now = Time(ts(100));
        let keys = |taints: &Option<Vec<Taint>>| -> Option<Vec<String>> {
            taints.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| format!("{}:{}", t.key, t.effect))
                    .collect()
            })
        };
        let custom = taint("example.com/dedicated", NO_SCHEDULE);
        let cases: Vec<(&str, Node, Option<Vec<&str>>)> = vec![
            (
                "ready, untainted",
                node(vec![cond("Ready", "True")], vec![]),
                None,
            ),
            (
                "unknown gets unreachable",
                node(vec![cond("Ready", "Unknown")], vec![custom.clone()]),
                Some(vec![
                    "example.com/dedicated:NoSchedule",
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute",
                ]),
            ),
            (
                "false swaps unreachable for not-ready",
                node(
                    vec![cond("Ready", "False")],
                    vec![
                        taint(TAINT_UNREACHABLE, NO_SCHEDULE),
                        taint(TAINT_UNREACHABLE, NO_EXECUTE),
                    ],
                ),
                Some(vec![
                    "node.kubernetes.io/not-ready:NoSchedule",
                    "node.kubernetes.io/not-ready:NoExecute",
                ]),
            ),
            (
                "recovered loses them, keeps others",
                node(
                    vec![cond("Ready", "True")],
                    vec![custom.clone(), taint(TAINT_NOT_READY, NO_EXECUTE)],
                ),
                Some(vec!["example.com/dedicated:NoSchedule"]),
            ),
            (
                "already right",
                node(
                    vec![cond("Ready", "Unknown")],
                    vec![
                        taint(TAINT_UNREACHABLE, NO_SCHEDULE),
                        taint(TAINT_UNREACHABLE, NO_EXECUTE),
                    ],
                ),
                None,
            ),
            (
                "no Ready condition keeps the kubelet's taint",
                node(vec![], vec![taint(TAINT_NOT_READY, NO_SCHEDULE)]),
                None,
            ),
            (
                "pressure",
                node(
                    vec![
                        cond("Ready", "True"),
                        cond("MemoryPressure", "True"),
                        cond("DiskPressure", "False"),
                    ],
                    vec![],
                ),
                Some(vec!["node.kubernetes.io/memory-pressure:NoSchedule"]),
            ),
        ];
        for (name, n, want) in cases {
            let got = desired_taints(&n, &now);
            assert_eq!(
                keys(&got),
                want.map(|w| w.into_iter().map(String::from).collect()),
                "{name}"
            );
        }
        let mut cordoned = node(vec![cond("Ready", "True")], vec![]);
        cordoned
            .spec
            .get_or_insert_with(Default::default)
            .unschedulable = Some(true);
        assert_eq!(
            keys(&desired_taints(&cordoned, &now)),
            Some(vec![format!("{TAINT_UNSCHEDULABLE}:NoSchedule")])
        );
        // New NoExecute taints are stamped; existing ones keep their stamp.
        let got =
            desired_taints(&node(vec![cond("Ready", "Unknown")], vec![]), &now).unwrap_or_default();
        let ne = got
            .iter()
            .find(|t| t.effect == NO_EXECUTE)
            .expect("NoExecute");
        assert_eq!(ne.time_added, Some(now.clone()));
        assert!(
            got.iter()
                .find(|t| t.effect == NO_SCHEDULE)
                .is_some_and(|t| t.time_added.is_none())
        );
        let mut stamped = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        stamped.time_added = Some(Time(ts(5)));
        let got = desired_taints(
            &node(vec![cond("Ready", "Unknown")], vec![stamped.clone()]),
            &now,
        )
        .unwrap_or_default();
        assert!(got.contains(&stamped));
    }

    #[test]
    fn toleration_matching() {
        let mut valued = taint("k", NO_EXECUTE);
        valued.value = Some("v".into());
        let cases = [
            (
                toleration(Some("k"), "Equal", Some("v"), Some(NO_EXECUTE), None),
                true,
            ),
            (
                toleration(Some("k"), "Equal", Some("w"), Some(NO_EXECUTE), None),
                false,
            ),
            (toleration(Some("k"), "Exists", None, None, None), true),
            (toleration(Some("other"), "Exists", None, None, None), false),
            (toleration(None, "Exists", None, None, None), true),
            (
                toleration(Some("k"), "Exists", None, Some(NO_SCHEDULE), None),
                false,
            ),
            (toleration(Some("k"), "Bogus", None, None, None), false),
        ];
        for (t, want) in cases {
            assert_eq!(tolerates(&t, &valued), want, "{t:?}");
        }
    }

    #[test]
    fn eviction_times() {
        let added = ts(0);
        let unreachable = (taint(TAINT_UNREACHABLE, NO_EXECUTE), added);
        let custom = (taint("example.com/x", NO_EXECUTE), ts(10));
        let no_schedule = (taint("example.com/y", NO_SCHEDULE), added);
        let tol = |key: &str, secs: Option<i64>| {
            toleration(Some(key), "Exists", None, Some(NO_EXECUTE), secs)
        };
        type Case = (
            &'static str,
            Vec<(Taint, Timestamp)>,
            Vec<Toleration>,
            i64,
            Eviction,
        );
        let cases: Vec<Case> = vec![
            ("no taints", vec![], vec![], 0, Eviction::Never),
            (
                "NoSchedule taints do not evict",
                vec![no_schedule.clone()],
                vec![],
                0,
                Eviction::Never,
            ),
            (
                "not tolerated",
                vec![unreachable.clone()],
                vec![],
                0,
                Eviction::Now,
            ),
            (
                "tolerated forever",
                vec![unreachable.clone()],
                vec![tol(TAINT_UNREACHABLE, None)],
                1000,
                Eviction::Never,
            ),
            (
                "tolerated for 300 s: waiting",
                vec![unreachable.clone()],
                vec![tol(TAINT_UNREACHABLE, Some(300))],
                100,
                Eviction::At(ts(300)),
            ),
            (
                "tolerated for 300 s: over",
                vec![unreachable.clone()],
                vec![tol(TAINT_UNREACHABLE, Some(300))],
                300,
                Eviction::Now,
            ),
            (
                "zero seconds",
                vec![unreachable.clone()],
                vec![tol(TAINT_UNREACHABLE, Some(0))],
                0,
                Eviction::Now,
            ),
            (
                "negative seconds",
                vec![unreachable.clone()],
                vec![tol(TAINT_UNREACHABLE, Some(-5))],
                0,
                Eviction::Now,
            ),
            (
                "the earliest deadline wins",
                vec![unreachable.clone(), custom.clone()],
                vec![
                    tol(TAINT_UNREACHABLE, Some(300)),
                    tol("example.com/x", Some(5)),
                ],
                0,
                Eviction::At(ts(15)),
            ),
            (
                "one taint untolerated",
                vec![unreachable.clone(), custom.clone()],
                vec![tol(TAINT_UNREACHABLE, None)],
                0,
                Eviction::Now,
            ),
            (
                "first matching toleration counts",
                vec![unreachable.clone()],
                vec![
                    tol(TAINT_UNREACHABLE, None),
                    tol(TAINT_UNREACHABLE, Some(1)),
                ],
                100,
                Eviction::Never,
            ),
            (
                "wildcard",
                vec![unreachable.clone(), custom],
                vec![toleration(None, "Exists", None, None, Some(60))],
                0,
                Eviction::At(ts(60)),
            ),
        ];
        for (name, taints, tolerations, now, want) in cases {
            assert_eq!(eviction(&taints, &tolerations, ts(now)), want, "{name}");
        }
    }

    #[test]
    fn monitor_period_bounds() {
        assert_eq!(
            monitor_period(Duration::from_secs(40)),
            Duration::from_secs(5)
        );
        assert_eq!(
            monitor_period(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            monitor_period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }
}
