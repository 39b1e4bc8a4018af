//! The scheduler (↔ kube-scheduler): watches nodes and pods through the
//! API, keeps a cache of what is placed where, takes pending pods of its
//! `schedulerName` from a priority queue, filters and scores nodes with
//! Kubernetes' default plugins, preempts lower-priority pods when nothing
//! fits, and binds through `pods/{name}/binding`. It is an API client
//! like any other and never touches the store.
//!
//! Entry point: [`run`], which runs until the future is dropped.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod binder;
pub mod cache;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod schedule;
pub mod selectors;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use skiff_runtime::events::{EventType, Recorder, reference};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::cache::{Cache, NodeChange, PodChange, PodInfo};
use crate::plugins::Snapshot;
use crate::preemption::Candidate;
use crate::queue::{ClusterEvent, Popped, Queue, Timings};
use crate::schedule::{Algorithm, Outcome, fit_message};

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pods with this spec.schedulerName are ours ("default-scheduler").
    pub scheduler_name: String,
    /// First retry delay of a pod that failed; doubles per attempt.
    pub initial_backoff: Duration,
    /// Cap of the per-pod backoff.
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often even without events.
    pub max_in_unschedulable: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let t = Timings::default();
        Config {
            scheduler_name: "default-scheduler".into(),
            initial_backoff: t.initial_backoff,
            max_backoff: t.max_backoff,
            max_in_unschedulable: t.max_in_unschedulable,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding pod {pod} to node {node}: {source}")]
    Bind {
        pod: String,
        node: String,
        source: kube::Error,
    },
    #[error("updating pod {pod}: {source}")]
    UpdatePod { pod: String, source: kube::Error },
}

/// Run the scheduler until the future is dropped.
pub async fn run(client: kube::Client, config: Config) {
    let s = Arc::new(Scheduler::new(client, config));
    tracing::info!(scheduler = %s.config.scheduler_name, "scheduler starting");
    tokio::join!(
        s.watch_nodes(),
        s.watch_pods(),
        s.watch_namespaces(),
        s.flush_loop(),
        s.schedule_loop()
    );
}

struct Scheduler {
    client: kube::Client,
    config: Config,
    cache: Mutex<Cache>,
    queue: Queue,
    algorithm: Mutex<Algorithm>,
    recorder: Recorder,
    nodes_synced: AtomicBool,
    pods_synced: AtomicBool,
    synced: Notify,
}

/// What a scheduling cycle decided.
enum Decision {
    Skip,
    Bind(String),
    Unschedulable {
        message: String,
        plugins: BTreeSet<&'static str>,
        preempt: Option<Candidate>,
        clear_nomination: bool,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Scheduler {
    fn new(client: kube::Client, config: Config) -> Scheduler {
        let timings = Timings {
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            max_in_unschedulable: config.max_in_unschedulable,
        };
        Scheduler {
            recorder: Recorder::new(client.clone(), &config.scheduler_name, None),
            client,
            config,
            cache: Mutex::default(),
            queue: Queue::new(timings),
            algorithm: Mutex::new(Algorithm::new()),
            nodes_synced: AtomicBool::new(false),
            pods_synced: AtomicBool::new(false),
            synced: Notify::new(),
        }
    }

    fn mark_synced(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        self.synced.notify_waiters();
    }

    async fn wait_synced(&self) {
        loop {
            let notified = self.synced.notified();
            if self.nodes_synced.load(Ordering::SeqCst) && self.pods_synced.load(Ordering::SeqCst) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    // ---- watches ----

    async fn watch_nodes(self: &Arc<Self>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut stream = watcher(api).boxed();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => seen.clear(),
                Ok(Event::InitApply(n)) => {
                    seen.insert(n.metadata.name.clone().unwrap_or_default());
                    self.on_node(n);
                }
                Ok(Event::InitDone) => {
                    {
                        let mut cache = lock(&self.cache);
                        for name in cache.node_names() {
                            if !seen.contains(&name) {
                                cache.remove_node(&name);
                            }
                        }
                    }
                    self.mark_synced(&self.nodes_synced);
                    self.queue.move_all(ClusterEvent::NodeChanged);
                }
                Ok(Event::Apply(n)) => self.on_node(n),
                Ok(Event::Delete(n)) => {
                    lock(&self.cache).remove_node(n.metadata.name.as_deref().unwrap_or_default())
                }
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            }
        }
    }

    fn on_node(&self, node: Node) {
        let change = lock(&self.cache).set_node(node);
        if matches!(change, NodeChange::Added | NodeChange::Changed) {
            self.queue.move_all(ClusterEvent::NodeChanged);
        }
    }

    async fn watch_pods(self: &Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher(api).boxed();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => seen.clear(),
                Ok(Event::InitApply(p)) => {
                    let info = PodInfo::new(p);
                    seen.insert(info.key.clone());
                    self.on_pod(info);
                }
                Ok(Event::InitDone) => {
                    {
                        let mut cache = lock(&self.cache);
                        for key in cache.pod_keys() {
                            if !seen.contains(&key) && !cache.is_assumed(&key) {
                                cache.remove_pod(&key);
                            }
                        }
                    }
                    self.queue.retain(&seen);
                    self.mark_synced(&self.pods_synced);
                    self.queue.move_all(ClusterEvent::AssignedPodDeleted);
                }
                Ok(Event::Apply(p)) => self.on_pod(PodInfo::new(p)),
                Ok(Event::Delete(p)) => self.on_pod_deleted(&PodInfo::new(p).key),
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    }

    fn on_pod(&self, info: PodInfo) {
        let key = info.key.clone();
        if !info.node_name.is_empty() {
            if info.is_terminal() {
                let freed = lock(&self.cache).remove_pod(&key).is_some();
                self.queue.delete(&key);
                if freed {
                    self.queue.move_all(ClusterEvent::AssignedPodDeleted);
                }
                return;
            }
            let change = lock(&self.cache).add_or_update_pod(Arc::new(info));
            self.queue.delete(&key);
            if matches!(change, PodChange::Added | PodChange::LabelsChanged) {
                self.queue
                    .move_all(ClusterEvent::AssignedPodAddedOrRelabelled);
            }
            return;
        }
        if info.scheduler_name != self.config.scheduler_name {
            return;
        }
        let gated = info
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if info.is_terminal() || info.terminating || gated {
            self.queue.delete(&key);
            return;
        }
        if lock(&self.cache).is_assumed(&key) {
            // Its binding is in flight; the watch has not caught up yet.
            return;
        }
        self.queue.add_or_update(Arc::new(info));
    }

    fn on_pod_deleted(&self, key: &str) {
        let freed = lock(&self.cache).remove_pod(key).is_some();
        self.queue.delete(key);
        if freed {
            self.queue.move_all(ClusterEvent::AssignedPodDeleted);
        }
    }

    async fn watch_namespaces(self: &Arc<Self>) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut stream = watcher(api).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Apply(ns) | Event::InitApply(ns)) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    let labels = ns.metadata.labels.clone().unwrap_or_default();
                    let changed = lock(&self.cache)
                        .namespaces
                        .insert(name, labels.clone())
                        .is_some_and(|old| old != labels);
                    if changed {
                        self.queue.move_all(ClusterEvent::NamespaceChanged);
                    }
                }
                Ok(Event::Delete(ns)) => {
                    lock(&self.cache)
                        .namespaces
                        .remove(ns.metadata.name.as_deref().unwrap_or_default());
                }
                Ok(Event::Init | Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
            }
        }
    }

    async fn flush_loop(self: &Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.queue.flush();
        }
    }

    // ---- scheduling ----

    async fn schedule_loop(self: &Arc<Self>) {
        self.wait_synced().await;
        tracing::info!("scheduler caches synced");
        let mut binds: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                popped = self.queue.pop() => {
                    // A panic in one pod's cycle is that pod's: it is
                    // retried with backoff and the others keep being scheduled.
                    let (pod, attempts) = (popped.pod.clone(), popped.attempts);
                    let cycle = self.schedule_one(popped, &mut binds);
                    if skiff_runtime::panics::catch("scheduler", &pod.key, cycle).await.is_err() {
                        self.queue.backoff(pod, attempts.saturating_add(1));
                    }
                }
                Some(joined) = binds.join_next(), if !binds.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "a binding task failed");
                    }
                }
            }
        }
    }

    /// The synchronous part: decide under the cache lock, assume on success.
    fn decide(&self, pod: &PodInfo) -> Decision {
        let mut cache = lock(&self.cache);
        if cache.contains_pod(&pod.key) {
            // Bound (or being bound) since it was queued.
            return Decision::Skip;
        }
        let outcome = {
            let snap = Snapshot {
                nodes: cache.snapshot(),
                namespaces: &cache.namespaces,
            };
            let nominated_nodes = self.queue.nominated_nodes();
            let nominated = |node: &str| {
                if nominated_nodes.contains_key(node) {
                    self.queue.nominated_pods(node, &pod.key)
                } else {
                    Vec::new()
                }
            };
            match lock(&self.algorithm).schedule(pod, &snap, &nominated) {
                Outcome::Fit(node) => Ok(node),
                Outcome::NoFit { num_nodes: 0, .. } => Err(Decision::Unschedulable {
                    message: schedule::NO_NODES.into(),
                    plugins: BTreeSet::new(),
                    preempt: None,
                    clear_nomination: false,
                }),
                Outcome::NoFit {
                    num_nodes,
                    diagnosis,
                } => {
                    let plugins = diagnosis.plugins();
                    Err(match preemption::preempt(pod, &snap, &diagnosis.statuses) {
                        Ok(candidate) => Decision::Unschedulable {
                            message: fit_message(num_nodes, diagnosis.statuses.values(), None),
                            plugins,
                            preempt: Some(candidate),
                            clear_nomination: false,
                        },
                        Err(preemption::NoCandidate(why)) => Decision::Unschedulable {
                            message: fit_message(
                                num_nodes,
                                diagnosis.statuses.values(),
                                Some(&format!("preemption: {why}")),
                            ),
                            plugins,
                            preempt: None,
                            // Victims still terminating: keep waiting on the nominated node.
                            clear_nomination: pod.nominated_node.is_some()
                                && why != preemption::TERMINATING,
                        },
                    })
                }
            }
        };
        match outcome {
            Ok(node) => {
                cache.assume(pod, &node);
                Decision::Bind(node)
            }
            Err(d) => d,
        }
    }

    async fn schedule_one(self: &Arc<Self>, popped: Popped, binds: &mut JoinSet<()>) {
        let pod = popped.pod.clone();
        match self.decide(&pod) {
            Decision::Skip => self.queue.done(&pod.key),
            Decision::Bind(node) => {
                self.queue.done(&pod.key);
                let s = self.clone();
                binds.spawn(async move { s.bind(popped, node).await });
            }
            Decision::Unschedulable {
                message,
                mut plugins,
                preempt,
                clear_nomination,
            } => {
                tracing::debug!(pod = %pod.key, %message, "unschedulable");
                self.recorder
                    .record(
                        &reference(&pod.pod),
                        EventType::Warning,
                        "FailedScheduling",
                        &message,
                    )
                    .await;
                let nominate = match &preempt {
                    Some(c) => Some(Some(c.node.clone())),
                    None if clear_nomination => Some(None),
                    None => None,
                };
                if let Err(e) = self
                    .mark_unschedulable(&pod, &message, nominate.clone())
                    .await
                {
                    tracing::warn!(error = %e, "could not update the PodScheduled condition");
                }
                if let Some(n) = nominate {
                    self.queue.nominate(&pod.key, n);
                }
                if let Some(c) = preempt {
                    plugins.insert(queue::PREEMPTION);
                    self.evict_victims(&pod, &c).await;
                }
                self.queue.unschedulable(&pod.key, plugins);
            }
        }
    }

    async fn bind(self: Arc<Self>, popped: Popped, node: String) {
        let pod = popped.pod;
        match binder::bind(&self.client, &pod, &node).await {
            Ok(()) => {
                tracing::debug!(pod = %pod.key, %node, "bound");
                let msg = format!(
                    "Successfully assigned {}/{} to {}",
                    pod.namespace, pod.name, node
                );
                self.recorder
                    .record(&reference(&pod.pod), EventType::Normal, "Scheduled", &msg)
                    .await;
            }
            Err(source) => {
                let code = status_code(&source);
                let err = Error::Bind {
                    pod: pod.key.clone(),
                    node: node.clone(),
                    source,
                };
                tracing::warn!(error = %err, "binding failed");
                lock(&self.cache).forget(&pod.key);
                self.queue.move_all(ClusterEvent::AssignedPodDeleted);
                match code {
                    // Gone, or bound by someone else: the watch tells the rest.
                    Some(404 | 409) => {}
                    _ => {
                        let msg = format!("Binding rejected: {err}");
                        self.recorder
                            .record(
                                &reference(&pod.pod),
                                EventType::Warning,
                                "FailedScheduling",
                                &msg,
                            )
                            .await;
                        self.queue.backoff(pod, popped.attempts);
                    }
                }
            }
        }
    }

    /// PodScheduled=False/Unschedulable with the message (and
    /// nominatedNodeName when preemption set or cleared it), through the
    /// status subresource; skipped when nothing would change.
    async fn mark_unschedulable(
        &self,
        pod: &PodInfo,
        message: &str,
        nominate: Option<Option<String>>,
    ) -> Result<(), Error> {
        let current = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .cloned();
        let same = current.as_ref().is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        });
        let nomination_changes = nominate
            .as_ref()
            .is_some_and(|n| n.as_ref() != pod.nominated_node.as_ref());
        if same && !nomination_changes {
            return Ok(());
        }
        let transition = match &current {
            Some(c) if c.status == "False" => c
                .last_transition_time
                .clone()
                .unwrap_or_else(skiff_runtime::now_time),
            _ => skiff_runtime::now_time(),
        };
        let mut status = json!({"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": transition,
        }]});
        if let Some(n) = nominate {
            status["nominatedNodeName"] = json!(n);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        api.patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": status})),
        )
        .await
        .map_err(|source| Error::UpdatePod {
            pod: pod.key.clone(),
            source,
        })?;
        Ok(())
    }

    /// Delete the victims gracefully, with a DisruptionTarget condition and
    /// a Preempted event on each, as kube-scheduler does.
    async fn evict_victims(&self, preemptor: &PodInfo, c: &Candidate) {
        for v in &c.victims {
            tracing::info!(victim = %v.key, preemptor = %preemptor.key, node = %c.node, "preempting");
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &v.namespace);
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", self.config.scheduler_name),
                "lastTransitionTime": skiff_runtime::now_time(),
            }]}});
            if let Err(e) = api
                .patch_status(
                    &v.name,
                    &PatchParams::default(),
                    &Patch::Strategic(condition),
                )
                .await
            {
                tracing::debug!(error = %e, victim = %v.key, "could not set DisruptionTarget");
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(v.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&v.name, &dp).await {
                Ok(_) => {
                    let msg = format!("Preempted by pod {} on node {}", preemptor.uid, c.node);
                    self.recorder
                        .record(&reference(&v.pod), EventType::Normal, "Preempted", &msg)
                        .await;
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(error = %e, victim = %v.key, "could not delete preemption victim")
                }
            }
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}
