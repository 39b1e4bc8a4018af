//! The pod workers' manager (↔ kubelet's syncLoop, podWorkers and status
//! manager): watches the pods bound to this node, runs one worker task per
//! pod, writes pods/status, finishes deletions, and removes what the
//! runtime runs for pods that no longer exist.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use skiff_runtime::events::{EventType, Recorder};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::env::Lookup;
use crate::runtime::{ContainerState, LABEL_NODE, LABEL_POD_UID, Runtime};
use crate::status_code;
use crate::sync::{EventKind, Kill, PodWorker, Settings, grace_period, remove_pod};

/// How often pods nobody claims are looked for.
pub const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often the runtime is relisted for container state changes (↔ the kubelet's PLEG).
pub const RELIST_INTERVAL: Duration = Duration::from_secs(1);

/// How many API requests the pod workers make at once (status writes,
/// events, deletions, configMap/secret/token reads), as the kubelet bounds
/// its own with kubeAPIQPS/Burst. Over HTTP/1.1 every concurrent request
/// needs its own connection, and the client's pool keeps every connection
/// it ever opened: without a bound a burst of pods left ~100 idle TLS
/// connections (and their buffers) in the agent and the API server.
pub const API_CONCURRENCY: usize = 8;

pub struct Shared {
    pub client: kube::Client,
    /// Permits for the workers' API requests ([`API_CONCURRENCY`]).
    pub api_slots: Arc<tokio::sync::Semaphore>,
    pub runtime: Arc<dyn Runtime>,
    pub settings: Arc<Settings>,
    pub recorder: Recorder,
    pub lookup: Box<dyn Lookup>,
    /// The node's conditions (admission under pressure, [`crate::eviction::admit`]).
    pub pressure: watch::Receiver<crate::pressure::Pressure>,
}

/// What the eviction manager asks of the pod workers' manager.
pub enum Command {
    /// The active pods ([`crate::eviction::Pods::active`]).
    Active(tokio::sync::oneshot::Sender<Vec<Pod>>),
    /// Have pod `uid`'s worker carry out `kill`; `found` says whether a
    /// worker has it, `done` is notified once it did.
    Evict {
        uid: String,
        kill: Kill,
        found: tokio::sync::oneshot::Sender<bool>,
        done: Arc<tokio::sync::Notify>,
    },
}

/// The eviction manager's way to the pod workers ([`run`]'s commands).
pub struct WorkerPods {
    pub tx: tokio::sync::mpsc::Sender<Command>,
}

#[async_trait::async_trait]
impl crate::eviction::Pods for WorkerPods {
    async fn active(&self) -> Vec<Pod> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Command::Active(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    async fn evict(&self, pod: &Pod, kill: Kill) -> bool {
        let (found, answer) = tokio::sync::oneshot::channel();
        let done = Arc::new(tokio::sync::Notify::new());
        let command = Command::Evict {
            uid: uid_of(pod),
            kill,
            found,
            done: done.clone(),
        };
        if self.tx.send(command).await.is_err() || !answer.await.unwrap_or(false) {
            return false;
        }
        if tokio::time::timeout(crate::eviction::POD_CLEANUP_TIMEOUT, done.notified())
            .await
            .is_err()
        {
            tracing::warn!(pod = %key_of(pod), "eviction manager: timed out waiting for the pod to be killed");
        }
        true
    }
}

#[async_trait::async_trait]
impl crate::eviction::NodeEvents for Shared {
    async fn node_event(&self, kind: EventKind, reason: &str, message: &str) {
        let kind = match kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        };
        let reference = crate::eviction::node_reference(&self.settings.node_name);
        let Ok(_permit) = self.api_slots.acquire().await else {
            return;
        };
        self.recorder
            .record(&reference, kind, reason, message)
            .await;
    }
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn key_of(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Watch this node's pods and run their workers, and answer the eviction
/// manager's `commands`, until dropped.
pub async fn run(shared: Arc<Shared>, mut commands: tokio::sync::mpsc::Receiver<Command>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.settings.node_name);
    let mut stream = watcher::watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers = Workers::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut listed = false;
    let mut sweep = tokio::time::interval(ORPHAN_SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut relist = tokio::time::interval(RELIST_INTERVAL);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pleg = Pleg::default();
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Init) => seen.clear(),
                    Ok(Event::InitApply(p)) => {
                        seen.insert(uid_of(&p));
                        workers.dispatch(&shared, p);
                    }
                    Ok(Event::InitDone) => {
                        for (uid, (_, tx)) in &workers.senders {
                            if !seen.contains(uid) {
                                tx.send_modify(|u| u.pod = None);
                            }
                        }
                        if !listed {
                            listed = true;
                            // Restart safety: what runs for pods that are gone goes.
                            let claimed: HashSet<String> = workers.senders.keys().cloned().collect();
                            remove_orphans(shared.runtime.as_ref(), &shared.settings.node_name, &claimed, &shared.settings.cgroup_root).await;
                remove_orphaned_volumes(&shared, &claimed);
                        }
                    }
                    Ok(Event::Apply(p)) => workers.dispatch(&shared, p),
                    Ok(Event::Delete(p)) => {
                        if let Some((_, tx)) = workers.senders.get(&uid_of(&p)) {
                            tx.send_modify(|u| u.pod = None);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
            }
            Some(done) = workers.tasks.join_next(), if !workers.tasks.is_empty() => {
                match done {
                    Ok((uid, generation)) => {
                        if workers.senders.get(&uid).is_some_and(|(g, _)| *g == generation) {
                            workers.senders.remove(&uid);
                            workers.rejected.remove(&uid);
                            workers.evicted.remove(&uid);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "a pod worker panicked"),
                }
            }
            Some(command) = commands.recv() => workers.command(command),
            _ = relist.tick(), if listed => {
                for uid in pleg.relist(shared.runtime.as_ref(), &shared.settings.node_name).await {
                    if let Some((_, tx)) = workers.senders.get(&uid) {
                        // Wake the worker: its containers changed.
                        tx.send_modify(|u| u.pokes += 1);
                    }
                }
            }
            _ = sweep.tick(), if listed => {
                let claimed: HashSet<String> = workers.senders.keys().cloned().collect();
                remove_orphans(shared.runtime.as_ref(), &shared.settings.node_name, &claimed, &shared.settings.cgroup_root).await;
                remove_orphaned_volumes(&shared, &claimed);
            }
        }
    }
}

/// Pod lifecycle event generator: one relist of the node's sandboxes and
/// containers per interval instead of every worker polling the runtime.
#[derive(Default)]
struct Pleg {
    last: HashMap<String, Vec<(String, String)>>,
}

impl Pleg {
    /// The pod uids whose sandboxes or containers changed state since the last relist.
    async fn relist(&mut self, runtime: &dyn Runtime, node: &str) -> Vec<String> {
        let mine: crate::runtime::Labels = [(LABEL_NODE.to_string(), node.to_string())].into();
        let (sandboxes, containers) = match (
            runtime.list_sandboxes(&mine).await,
            runtime.list_containers(&mine).await,
        ) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "relisting the runtime failed");
                return Vec::new();
            }
        };
        let mut now: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for s in sandboxes {
            if let Some(uid) = s.labels.get(LABEL_POD_UID) {
                now.entry(uid.clone())
                    .or_default()
                    .push((s.id, format!("{:?}", s.state)));
            }
        }
        for c in containers {
            if let Some(uid) = c.labels.get(LABEL_POD_UID) {
                now.entry(uid.clone())
                    .or_default()
                    .push((c.id, format!("{:?}", c.state)));
            }
        }
        for v in now.values_mut() {
            v.sort();
        }
        let mut changed: Vec<String> = now
            .iter()
            .filter(|(uid, v)| self.last.get(*uid) != Some(*v))
            .map(|(uid, _)| uid.clone())
            .collect();
        changed.extend(
            self.last
                .keys()
                .filter(|uid| !now.contains_key(*uid))
                .cloned(),
        );
        self.last = now;
        changed
    }
}

/// The running workers: a channel to each (the pod's latest version, or
/// None once it is gone from the API) and their tasks.
#[derive(Default)]
struct Workers {
    senders: HashMap<String, (u64, watch::Sender<Update>)>,
    tasks: JoinSet<(String, u64)>,
    generation: u64,
    /// Pods not admitted (they count for no later admission).
    rejected: HashSet<String>,
    /// Pods being evicted.
    evicted: HashSet<String>,
}

impl Workers {
    fn dispatch(&mut self, shared: &Arc<Shared>, pod: Pod) {
        let uid = uid_of(&pod);
        if uid.is_empty() {
            return;
        }
        if let Some((_, tx)) = self.senders.get(&uid)
            && !tx.is_closed()
        {
            tx.send_modify(|u| u.pod = Some(pod));
            return;
        }
        let rejection = self.admit(&uid, &pod, *shared.pressure.borrow());
        if rejection.is_some() {
            self.rejected.insert(uid.clone());
        } else {
            self.rejected.remove(&uid);
        }
        let (tx, rx) = watch::channel(Update {
            pod: Some(pod),
            pokes: 0,
            kill: None,
        });
        self.generation += 1;
        let generation = self.generation;
        self.senders.insert(uid.clone(), (generation, tx));
        let shared = shared.clone();
        self.tasks.spawn(async move {
            // A panic in one pod's worker is that pod's: the worker starts
            // again after a backoff, and every other pod keeps being served.
            let mut delay = Duration::from_secs(1);
            loop {
                let run = worker(shared.clone(), uid.clone(), rx.clone(), rejection.clone());
                match skiff_runtime::panics::catch("kubelet pod worker", &uid, run).await {
                    Ok(uid) => return (uid, generation),
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Active(answer) => {
                let active = self
                    .senders
                    .iter()
                    .filter(|(uid, _)| {
                        !self.rejected.contains(*uid) && !self.evicted.contains(*uid)
                    })
                    .filter_map(|(_, (_, tx))| tx.borrow().pod.clone())
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && !crate::sync::is_terminal(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            )
                    })
                    .collect();
                let _ = answer.send(active);
            }
            Command::Evict {
                uid,
                kill,
                found,
                done,
            } => {
                let Some((_, tx)) = self.senders.get(&uid).filter(|(_, tx)| !tx.is_closed()) else {
                    let _ = found.send(false);
                    return;
                };
                self.evicted.insert(uid);
                tx.send_modify(|u| {
                    u.kill = Some((kill, done));
                    u.pokes += 1;
                });
                let _ = found.send(true);
            }
        }
    }

    /// Admission of a pod new to this agent (↔ HandlePodAdditions' canAdmitPod:
    /// the eviction manager's handler, then the predicates) against the other
    /// active pods; pods already running or finished are not judged again
    /// (an agent restart).
    fn admit(
        &self,
        uid: &str,
        pod: &Pod,
        pressure: crate::pressure::Pressure,
    ) -> Option<crate::admission::Rejection> {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Running" | "Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let others: Vec<Pod> = self
            .senders
            .iter()
            .filter(|(other, _)| other.as_str() != uid && !self.rejected.contains(*other))
            .filter_map(|(_, (_, tx))| tx.borrow().pod.clone())
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect();
        let rejection =
            crate::eviction::admit(pod, pressure).or_else(|| crate::admission::admit(pod, &others));
        if let Some(r) = &rejection {
            tracing::info!(pod = %key_of(pod), reason = %r.reason, "pod not admitted");
        }
        rejection
    }
}

/// One pod's worker task; returns the pod's uid when the pod is gone.
/// What a worker is told: the pod's latest version (None once it is gone
/// from the API), and a counter the relist bumps when its containers change.
#[derive(Clone, Debug)]
struct Update {
    pod: Option<Pod>,
    pokes: u64,
    /// An eviction: the kill, and what to notify once it is carried out.
    kill: Option<(Kill, Arc<tokio::sync::Notify>)>,
}

/// Whether the pod changed in a way that needs a sync now: not our own
/// status writes coming back (as the kubelet ignores status-only updates).
fn needs_sync(before: Option<&Pod>, after: Option<&Pod>) -> bool {
    match (before, after) {
        (Some(a), Some(b)) => {
            a.spec != b.spec
                || a.metadata.deletion_timestamp != b.metadata.deletion_timestamp
                || a.metadata.labels != b.metadata.labels
                || a.metadata.annotations != b.metadata.annotations
        }
        _ => true,
    }
}

async fn worker(
    shared: Arc<Shared>,
    uid: String,
    mut rx: watch::Receiver<Update>,
    rejection: Option<crate::admission::Rejection>,
) -> String {
    let mut w = PodWorker::new(shared.runtime.clone(), shared.settings.clone());
    if let Some(r) = rejection {
        w.reject(&r.reason, &r.message);
    }
    // Probe results that change wake a sync; probe events are recorded as they come.
    let (probe_results, probe_events) = w.probe_signals();
    let mut written: Option<Value> = None;
    let mut last: Option<Pod> = None;
    // An eviction being carried out: notified after the next sync.
    let mut killed: Option<Arc<tokio::sync::Notify>> = None;
    loop {
        let update = rx.borrow_and_update().clone();
        let pokes = update.pokes;
        let current = update.pod;
        if let Some((kill, done)) = update.kill
            && killed.is_none()
        {
            w.kill(kill);
            killed = Some(done);
        }
        let notify = |killed: &Option<Arc<tokio::sync::Notify>>| {
            if let Some(done) = killed {
                done.notify_one();
            }
        };
        let requeue = match current {
            None => {
                // Gone from the API without us (force deletion): kill what runs.
                if let Some(p) = &last {
                    match w.terminate(p, 0).await {
                        Ok(()) => {
                            record_events(&shared, p, &mut w).await;
                            notify(&killed);
                            tracing::info!(pod = %key_of(p), "pod removed");
                            return uid;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, pod = %key_of(p), "removing a deleted pod's containers failed; retrying")
                        }
                    }
                    Duration::from_secs(2)
                } else {
                    notify(&killed);
                    return uid;
                }
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                let grace = grace_period(&pod, None);
                tracing::info!(pod = %key_of(&pod), grace, "terminating pod");
                let result = w.terminate(&pod, grace).await;
                record_events(&shared, &pod, &mut w).await;
                match result {
                    Ok(()) => match delete_pod(&shared, &pod).await {
                        Ok(()) => {
                            notify(&killed);
                            tracing::info!(pod = %key_of(&pod), "pod terminated and deleted");
                            return uid;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, pod = %key_of(&pod), "deleting a terminated pod failed; retrying")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, pod = %key_of(&pod), "terminating a pod failed; retrying")
                    }
                }
                last = Some(pod);
                Duration::from_secs(2)
            }
            Some(pod) => {
                let requeue = match w.sync(&pod, shared.lookup.as_ref()).await {
                    Ok(r) => {
                        record_events(&shared, &pod, &mut w).await;
                        if written.as_ref() != Some(&r.status) {
                            match patch_status(&shared, &pod, &r.status).await {
                                Ok(()) => written = Some(r.status),
                                Err(e) => {
                                    tracing::warn!(error = %e, pod = %key_of(&pod), "writing the pod status failed")
                                }
                            }
                        }
                        // An eviction is done once the kill's status was written.
                        notify(&killed);
                        r.requeue
                    }
                    Err(e) => {
                        record_events(&shared, &pod, &mut w).await;
                        tracing::warn!(error = %e, pod = %key_of(&pod), "pod sync failed; retrying");
                        Duration::from_secs(2)
                    }
                };
                last = Some(pod);
                requeue
            }
        };
        let deadline = tokio::time::Instant::now() + requeue;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return uid;
                    }
                    let u = rx.borrow();
                    if u.pokes != pokes || needs_sync(last.as_ref(), u.pod.as_ref()) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = probe_results.notified() => break,
                _ = probe_events.notified() => {
                    if let Some(p) = &last {
                        record_events(&shared, p, &mut w).await;
                    }
                }
            }
        }
    }
}

async fn record_events(shared: &Shared, pod: &Pod, w: &mut PodWorker) {
    let events = w.take_events();
    if events.is_empty() {
        return;
    }
    let Ok(_permit) = shared.api_slots.acquire().await else {
        return;
    };
    for e in events {
        let mut reference = skiff_runtime::events::reference(pod);
        reference.field_path = e.field_path.clone();
        let kind = match e.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        };
        shared
            .recorder
            .record(&reference, kind, &e.reason, &e.message)
            .await;
    }
}

async fn patch_status(shared: &Shared, pod: &Pod, status: &Value) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let _permit = shared.api_slots.acquire().await;
    let patch = json!({"status": status});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The last step of a graceful deletion: the kubelet's delete with gracePeriodSeconds=0.
async fn delete_pod(shared: &Shared, pod: &Pod) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let _permit = shared.api_slots.acquire().await;
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Stop and remove the sandboxes and containers of this node's agent
/// whose pod uid nobody claims.
/// Volumes of pods that no longer exist (deleted while the agent was down).
fn remove_orphaned_volumes(shared: &Shared, claimed: &HashSet<String>) {
    for uid in crate::volumes::remove_orphaned(
        &shared.settings.log_root,
        claimed,
        shared.settings.mounter.as_ref(),
    ) {
        tracing::info!(pod_uid = %uid, "removed the volumes of a pod that no longer exists");
    }
}

pub async fn remove_orphans(
    runtime: &dyn Runtime,
    node: &str,
    claimed: &HashSet<String>,
    cgroup_root: &str,
) {
    let mine: crate::runtime::Labels = [(LABEL_NODE.to_string(), node.to_string())].into();
    let mut uids: HashSet<String> = HashSet::new();
    match runtime.list_sandboxes(&mine).await {
        Ok(sbs) => uids.extend(
            sbs.into_iter()
                .filter_map(|s| s.labels.get(LABEL_POD_UID).cloned()),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "listing sandboxes for cleanup failed");
            return;
        }
    }
    match runtime.list_containers(&mine).await {
        Ok(cs) => uids.extend(
            cs.into_iter()
                .filter_map(|c| c.labels.get(LABEL_POD_UID).cloned()),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "listing containers for cleanup failed");
            return;
        }
    }
    for uid in uids.into_iter().filter(|u| !claimed.contains(u)) {
        tracing::info!(pod_uid = %uid, "removing the containers of a pod that no longer exists");
        if let Ok(cs) = runtime
            .list_containers(&[(LABEL_POD_UID.to_string(), uid.clone())].into())
            .await
        {
            for c in cs.iter().filter(|c| c.state == ContainerState::Running) {
                let _ = runtime.stop_container(&c.id, 10).await;
            }
        }
        match remove_pod(runtime, &uid).await {
            Ok(()) if !cgroup_root.is_empty() => {
                crate::sync::remove_pod_cgroups_soon(cgroup_root, &uid).await
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, pod_uid = %uid, "removing an orphaned pod failed"),
        }
    }
    if !cgroup_root.is_empty() {
        sweep_pod_cgroups(cgroup_root, claimed);
    }
}

/// Remove the empty cgroupfs directories of pods nobody claims.
fn sweep_pod_cgroups(root: &str, claimed: &HashSet<String>) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut uids = HashSet::new();
    for c in controllers.flatten() {
        let Ok(pods) = std::fs::read_dir(c.path().join(root.trim_start_matches('/'))) else {
            continue;
        };
        for p in pods.flatten() {
            if let Some(uid) = p.file_name().to_str().and_then(|n| n.strip_prefix("pod"))
                && !claimed.contains(uid)
                && p.path().is_dir()
            {
                uids.insert(uid.to_string());
            }
        }
    }
    for uid in uids {
        crate::sync::remove_pod_cgroups(root, &uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, uid: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn add(workers: &mut Workers, pod: Pod) -> watch::Receiver<Update> {
        let (tx, rx) = watch::channel(Update {
            pod: Some(pod.clone()),
            pokes: 0,
            kill: None,
        });
        workers.senders.insert(uid_of(&pod), (0, tx));
        rx
    }

    fn active(workers: &mut Workers) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        workers.command(Command::Active(tx));
        let mut names: Vec<String> = rx
            .try_recv()
            .unwrap()
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_eviction_manager_sees_active_pods_and_evicts_through_their_workers() {
        let mut workers = Workers::default();
        let a = add(&mut workers, running("a", "uid-a", "Running"));
        let _b = add(&mut workers, running("b", "uid-b", "Pending"));
        let _done = add(&mut workers, running("done", "uid-done", "Succeeded"));
        let _rejected = add(&mut workers, running("rejected", "uid-rejected", "Pending"));
        workers.rejected.insert("uid-rejected".into());
        let mut deleting = running("deleting", "uid-deleting", "Running");
        deleting.metadata.deletion_timestamp = Some(skiff_runtime::now_time());
        let _deleting = add(&mut workers, deleting);
        assert_eq!(active(&mut workers), ["a", "b"]);

        let done = Arc::new(tokio::sync::Notify::new());
        let (found, mut answer) = tokio::sync::oneshot::channel();
        workers.command(Command::Evict {
            uid: "uid-a".into(),
            kill: crate::eviction::kill("low"),
            found,
            done: done.clone(),
        });
        assert!(answer.try_recv().unwrap());
        // The worker is told (and woken), and the pod is no longer active.
        let update = a.borrow().clone();
        assert_eq!(update.pokes, 1);
        assert_eq!(update.kill.unwrap().0.reason, "Evicted");
        assert_eq!(active(&mut workers), ["b"]);
        // No worker, no eviction.
        let (found, mut answer) = tokio::sync::oneshot::channel();
        workers.command(Command::Evict {
            uid: "uid-gone".into(),
            kill: crate::eviction::kill("low"),
            found,
            done,
        });
        assert!(!answer.try_recv().unwrap());
    }

    #[test]
    fn admission_rejects_best_effort_pods_under_memory_pressure() {
        let workers = Workers::default();
        let pod = running("new", "uid-new", "Pending");
        let memory = crate::pressure::Pressure {
            memory: true,
            ..Default::default()
        };
        let r = workers.admit("uid-new", &pod, memory).unwrap();
        assert_eq!(r.reason, "Evicted");
        assert_eq!(
            r.message,
            "Pod was rejected: The node had condition: [MemoryPressure]. "
        );
        assert_eq!(
            workers.admit("uid-new", &pod, crate::pressure::Pressure::default()),
            None
        );
        // A pod already running is not judged again (an agent restart).
        let old = running("old", "uid-old", "Running");
        assert_eq!(workers.admit("uid-old", &old, memory), None);
    }

    #[test]
    fn status_only_updates_do_not_need_a_sync() {
        let a: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"containers": [{"name": "c"}]}})).unwrap();
        let mut b = a.clone();
        b.metadata.resource_version = Some("2".into());
        b.status = Some(serde_json::from_value(json!({"phase": "Running"})).unwrap());
        assert!(!needs_sync(Some(&a), Some(&b)));
        let mut c = b.clone();
        c.metadata.deletion_timestamp = Some(skiff_runtime::now_time());
        assert!(needs_sync(Some(&b), Some(&c)));
        assert!(needs_sync(Some(&a), None));
        assert!(needs_sync(None, Some(&a)));
    }
}
