//! The DaemonSet controller (↔ pkg/controller/daemon): one pod per eligible
//! node. A node is eligible when it passes the template's nodeSelector and
//! required node affinity and every NoSchedule/NoExecute taint is tolerated
//! (the daemon pods' default tolerations included); a pod stays on a node
//! as long as its NoExecute taints are tolerated. Pods are created unbound
//! with a required node affinity `matchFields metadata.name In [node]`, so
//! the default scheduler binds them (as Kubernetes does since 1.12).
//! Templates are recorded as ControllerRevisions; pods carry the revision's
//! hash in `controller-revision-hash`; the RollingUpdate strategy replaces
//! old pods within maxUnavailable (or surges within maxSurge), OnDelete
//! only replaces pods someone deleted. The status counts what `kubectl
//! rollout status ds/x` reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use skiff_runtime::events::EventType;
use tokio::time::Instant;

use crate::ctrlutil::{
    self, Cache, Change, Error, ObjKey, Result, WorkQueue, controller_of, informer, is_not_found,
};
use crate::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use crate::workload::{self, Expectations, by_creation, owner_key};

/// The deprecated label with the DaemonSet's generation at pod creation.
pub const POD_TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
const WORKERS: usize = 2;
const RESYNC: Duration = Duration::from_secs(60);
const FAILED_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

struct Controller {
    ctx: crate::Context,
    dss: Cache<DaemonSet>,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
    revisions: Cache<ControllerRevision>,
    queue: Arc<WorkQueue<ObjKey>>,
    expectations: Expectations,
    /// Failed pods per (DaemonSet, node): when last deleted, and the current delay.
    failed_backoff: Mutex<HashMap<(ObjKey, String), (Instant, Duration)>>,
}

/// Run the DaemonSet controller until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let c = Arc::new(Controller {
        ctx: ctx.clone(),
        dss: Cache::default(),
        pods: ctx.informers.get::<Pod>().cache(),
        nodes: ctx.informers.get::<Node>().cache(),
        revisions: ctx.informers.get::<ControllerRevision>().cache(),
        queue: Arc::new(WorkQueue::default()),
        expectations: Expectations::default(),
        failed_backoff: Mutex::default(),
    });
    let ds_informer = {
        let c = c.clone();
        informer::run(
            Api::<DaemonSet>::all(ctx.client.clone()),
            watcher::Config::default(),
            c.dss.clone(),
            move |ch| match ch {
                Change::Apply { new, .. } => c.queue.add(ObjKey::of(new.as_ref())),
                Change::Delete(old) => {
                    let key = ObjKey::of(old.as_ref());
                    c.expectations.forget(&key);
                    c.queue.add(key);
                }
            },
        )
    };
    let pod_informer = {
        let c = c.clone();
        ctx.informers.get::<Pod>().run(move |ch| c.on_pod(ch))
    };
    let node_informer = {
        let c = c.clone();
        ctx.informers.get::<Node>().run(move |ch| c.on_node(ch))
    };
    let rev_informer = {
        let c = c.clone();
        ctx.informers.get::<ControllerRevision>().run(move |ch| {
            let obj = match &ch {
                Change::Apply { new, .. } => new.clone(),
                Change::Delete(old) => old.clone(),
            };
            let ns = obj.namespace().unwrap_or_default();
            if let Some(key) =
                controller_of(&obj.metadata).and_then(|r| owner_key::<DaemonSet>(&ns, r))
            {
                c.queue.add(key);
            }
        })
    };
    let workers = {
        let c = c.clone();
        async move {
            c.dss.wait_synced().await;
            c.pods.wait_synced().await;
            c.nodes.wait_synced().await;
            c.revisions.wait_synced().await;
            let cc = c.clone();
            ctrlutil::run_workers("daemonset", c.queue.clone(), WORKERS, move |key| {
                let c = cc.clone();
                async move { c.sync(&key).await }
            })
            .await
        }
    };
    let resync = {
        let c = c.clone();
        async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                for key in c.dss.keys() {
                    c.queue.add(key);
                }
            }
        }
    };
    tracing::info!(controller = "daemonset", "starting");
    tokio::join!(
        ds_informer,
        pod_informer,
        node_informer,
        rev_informer,
        workers,
        resync
    );
}

impl Controller {
    /// The DaemonSet `pod` is controlled by, if it is one we know (same uid).
    fn owner_of(&self, pod: &Pod) -> Option<ObjKey> {
        let ns = pod.namespace().unwrap_or_default();
        let r = controller_of(&pod.metadata)?;
        let key = owner_key::<DaemonSet>(&ns, r)?;
        let ds = self.dss.get(&key)?;
        (ds.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(key)
    }

    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for ds in self.dss.list_namespace(&ns) {
            if ds
                .spec
                .as_ref()
                .is_some_and(|s| workload::selects(&s.selector, pod.metadata.labels.as_ref()))
            {
                self.queue.add(ObjKey::of(ds.as_ref()));
            }
        }
    }

    fn on_pod(&self, ch: Change<Pod>) {
        match ch {
            Change::Apply { old, new } => {
                if old
                    .as_ref()
                    .is_some_and(|o| o.metadata.resource_version == new.metadata.resource_version)
                {
                    return;
                }
                if new.metadata.deletion_timestamp.is_some() {
                    self.pod_deleted(&new);
                    return;
                }
                match self.owner_of(&new) {
                    Some(key) => {
                        if old.is_none() {
                            self.expectations.creation_observed(&key);
                        }
                        self.queue.add(key);
                    }
                    None if controller_of(&new.metadata).is_none() => self.enqueue_matching(&new),
                    None => {}
                }
                if let Some(old) = old
                    && controller_of(&old.metadata).map(|r| &r.uid)
                        != controller_of(&new.metadata).map(|r| &r.uid)
                    && let Some(key) = self.owner_of(&old)
                {
                    self.queue.add(key);
                }
            }
            Change::Delete(pod) => self.pod_deleted(&pod),
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        if let Some(key) = self.owner_of(pod) {
            self.expectations.deletion_observed(&key, &ObjKey::of(pod));
            self.queue.add(key);
        }
    }

    fn on_node(&self, ch: Change<Node>) {
        let relevant = match &ch {
            Change::Apply {
                old: Some(old),
                new,
            } => {
                let spec = |n: &Node| n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable));
                old.metadata.labels != new.metadata.labels || spec(old) != spec(new)
            }
            _ => true,
        };
        if relevant {
            for key in self.dss.keys() {
                self.queue.add(key);
            }
        }
    }

    async fn event(&self, ds: &DaemonSet, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .record(&skiff_runtime::events::reference(ds), kind, reason, message)
            .await;
    }

    async fn sync(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(ds) = self.dss.get(key) else {
            self.expectations.forget(key);
            self.failed_backoff
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|(k, _), _| k != key);
            return Ok(None);
        };
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(None);
        };
        if ctrlutil::selector_is_empty(&spec.selector) {
            self.event(
                &ds,
                EventType::Warning,
                "SelectingAll",
                "This daemon set is selecting all pods. A non-empty selector is required.",
            )
            .await;
            return Ok(None);
        }
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let client = &self.ctx.client;
        let revs = workload::claim(
            client,
            ds.as_ref(),
            &spec.selector,
            self.revisions.list_namespace(&key.namespace),
        )
        .await?;
        let (cur, old) = self.construct_history(&ds, revs).await?;
        let hash = revision_hash(&ds, &cur);
        let pods = workload::claim(
            client,
            ds.as_ref(),
            &spec.selector,
            self.pods.list_namespace(&key.namespace),
        )
        .await?;
        let node_pods = pods_by_node(&pods);
        let nodes = self.nodes.list();
        let mut requeue = None;
        if self.expectations.satisfied(key) {
            let plan = self.manage(key, &ds, &nodes, &node_pods, &hash);
            requeue = plan.requeue;
            for (pod, msg) in &plan.failed {
                tracing::info!(daemonset = %key, pod = %pod, "{msg}");
                self.event(&ds, EventType::Warning, "FailedDaemonPod", msg)
                    .await;
            }
            self.sync_nodes(key, &ds, &plan.delete, &plan.create, &hash)
                .await?;
            if self.expectations.satisfied(key) && update_strategy(&ds) == "RollingUpdate" {
                let now = jiff::Timestamp::now();
                let (delete, create) = rolling_update(&ds, &nodes, &node_pods, &hash, now)?;
                self.sync_nodes(key, &ds, &delete, &create, &hash).await?;
            }
            self.cleanup_history(&ds, &old, &pods).await?;
        }
        let now = jiff::Timestamp::now();
        let status = calculate_status(&ds, &nodes, &node_pods, &hash, now);
        if ds.status.as_ref() != Some(&status) {
            workload::write_status(client, ds.as_ref(), |d| d.status = Some(status.clone()))
                .await?;
        }
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let available_later =
            ctrlutil::next_availability(pods.iter().map(|p| p.as_ref()), min_ready, now);
        Ok(match (requeue, available_later) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The current revision (created, deduplicated or renumbered as needed)
    /// and the old ones (↔ constructHistory).
    async fn construct_history(
        &self,
        ds: &DaemonSet,
        revs: Vec<Arc<ControllerRevision>>,
    ) -> Result<(ControllerRevision, Vec<ControllerRevision>)> {
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let data = history::template_patch(&template);
        let (mut current, old): (Vec<ControllerRevision>, Vec<ControllerRevision>) = revs
            .iter()
            .map(|r| (**r).clone())
            .partition(|r| history::equal_data(r, &data));
        let next = history::max_revision(&old) + 1;
        let cur = if current.is_empty() {
            self.snapshot(ds, &data, next).await?
        } else {
            // Keep the newest equal revision, drop the duplicates (↔ dedupCurHistories).
            history::sort_revisions(&mut current);
            let keep = current
                .pop()
                .ok_or_else(|| Error::Other("no current revision".into()))?;
            for dup in &current {
                let ns = dup.namespace().unwrap_or_default();
                match history::api(&self.ctx.client, &ns)
                    .delete(&dup.name_any(), &Default::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if keep.revision < next {
                history::renumber(&self.ctx.client, &keep, next).await?
            } else {
                keep
            }
        };
        Ok((cur, old))
    }

    /// Create the revision of the current template; a name taken by another
    /// template bumps status.collisionCount (↔ snapshot).
    async fn snapshot(
        &self,
        ds: &DaemonSet,
        data: &serde_json::Value,
        revision: i64,
    ) -> Result<ControllerRevision> {
        let ns = ds.namespace().unwrap_or_default();
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = history::hash_data(&serde_json::to_value(&template)?, collision);
        let name = format!("{}-{}", ds.name_any(), hash);
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.clone());
        let rev = history::new_revision(ds, name.clone(), &hash, labels, data.clone(), revision);
        let api = history::api(&self.ctx.client, &ns);
        match api.create(&PostParams::default(), &rev).await {
            Ok(created) => Ok(created),
            Err(e) if ctrlutil::is_already_exists(&e) => {
                let existing = api.get(&name).await?;
                if history::equal_data(&existing, data) {
                    return Ok(existing);
                }
                let ds_api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), &ns);
                let mut fresh = ds_api.get(&ds.name_any()).await?;
                let fresh_collision = fresh.status.as_ref().and_then(|s| s.collision_count);
                if fresh_collision != collision {
                    return Err(Error::Other(format!(
                        "stale collision count of DaemonSet {}; retrying",
                        ds.name_any()
                    )));
                }
                let status = fresh.status.get_or_insert_with(Default::default);
                status.collision_count = Some(collision.unwrap_or(0) + 1);
                ds_api
                    .replace_status(&ds.name_any(), &PostParams::default(), &fresh)
                    .await?;
                Err(Error::Other(format!(
                    "hash collision for the revision {name} of DaemonSet {}; retrying",
                    ds.name_any()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What should change on each node (↔ manage + podsShouldBeOnNode).
    fn manage(
        &self,
        key: &ObjKey,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        node_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Plan {
        let mut plan = Plan::default();
        let surge = allows_surge(ds);
        let now_ts = jiff::Timestamp::now();
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let node_names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        for node in nodes {
            let name = node.name_any();
            let (should_run, should_continue) = node_should_run(ds, node);
            let pods = node_pods.get(&name);
            match pods {
                None if should_run => plan.create.push(name.clone()),
                Some(pods) if should_continue => {
                    let mut running = Vec::new();
                    for pod in pods {
                        if pod.metadata.deletion_timestamp.is_some() {
                            continue;
                        }
                        match workload::phase(pod) {
                            "Failed" => {
                                let now = Instant::now();
                                match self.failed_backoff_check(key, &name, now) {
                                    Some(wait) => {
                                        plan.requeue = Some(
                                            plan.requeue.map_or(wait, |r: Duration| r.min(wait)),
                                        )
                                    }
                                    None => {
                                        let msg = format!(
                                            "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                                            pod.namespace().unwrap_or_default(),
                                            pod.name_any()
                                        );
                                        plan.failed.push((pod.name_any(), msg));
                                        plan.delete.push(pod.clone());
                                    }
                                }
                            }
                            "Succeeded" => plan.delete.push(pod.clone()),
                            _ => running.push(pod.clone()),
                        }
                    }
                    if running.len() <= 1 {
                        continue;
                    }
                    running.sort_by(|a, b| by_scheduled_then_creation(a, b));
                    if !surge {
                        plan.delete.extend(running.into_iter().skip(1));
                        continue;
                    }
                    // Surge: keep the oldest new and the oldest old pod; the
                    // old one goes once the new one is available (or if it is not ready).
                    let mut oldest_new: Option<Arc<Pod>> = None;
                    let mut oldest_old: Option<Arc<Pod>> = None;
                    for pod in running {
                        let is_new = pod_hash(&pod) == Some(hash);
                        let slot = if is_new {
                            &mut oldest_new
                        } else {
                            &mut oldest_old
                        };
                        if slot.is_none() {
                            *slot = Some(pod);
                        } else {
                            plan.delete.push(pod);
                        }
                    }
                    if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                        && (!ctrlutil::pod_is_ready(&old)
                            || ctrlutil::pod_is_available(&new, min_ready, now_ts))
                    {
                        plan.delete.push(old);
                    }
                }
                Some(pods) if !should_continue => {
                    plan.delete.extend(
                        pods.iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .cloned(),
                    );
                }
                _ => {}
            }
        }
        // Unbound pods aimed at nodes that no longer exist.
        for (node, pods) in node_pods {
            if node_names.contains(node) {
                continue;
            }
            plan.delete.extend(
                pods.iter()
                    .filter(|p| {
                        workload::node_name(p).is_empty() && p.metadata.deletion_timestamp.is_none()
                    })
                    .cloned(),
            );
        }
        plan
    }

    /// Whether the failed pod on `node` must wait (how long), else record a deletion.
    fn failed_backoff_check(&self, key: &ObjKey, node: &str, now: Instant) -> Option<Duration> {
        let mut map = self
            .failed_backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry_key = (key.clone(), node.to_string());
        match map.get(&entry_key).copied() {
            Some((last, delay)) if now.duration_since(last) < delay => {
                Some(delay - now.duration_since(last))
            }
            Some((last, delay)) if now.duration_since(last) < FAILED_BACKOFF_MAX * 2 => {
                map.insert(entry_key, (now, (delay * 2).min(FAILED_BACKOFF_MAX)));
                None
            }
            _ => {
                map.insert(entry_key, (now, FAILED_BACKOFF_INITIAL));
                None
            }
        }
    }

    /// Create daemon pods on `create` nodes and delete `delete` pods (↔ syncNodes).
    async fn sync_nodes(
        &self,
        key: &ObjKey,
        ds: &DaemonSet,
        delete: &[Arc<Pod>],
        create: &[String],
        hash: &str,
    ) -> Result<()> {
        if delete.is_empty() && create.is_empty() {
            return Ok(());
        }
        let create = &create[..create.len().min(workload::BURST)];
        let delete = &delete[..delete.len().min(workload::BURST)];
        self.expectations.expect(
            key,
            create.len(),
            delete.iter().map(|p| ObjKey::of(p.as_ref())),
        );
        tracing::debug!(daemonset = %key, create = create.len(), delete = delete.len(), "syncing nodes");
        let generation = ds.metadata.generation.unwrap_or(0);
        let (created, create_err) = workload::slow_start(create.len(), |i| {
            let pod = new_daemon_pod(ds, &create[i], hash, generation);
            async move { Ok(workload::create_pod(&self.ctx, ds, &pod).await?.is_some()) }
        })
        .await;
        for _ in created..create.len() {
            self.expectations.creation_observed(key);
        }
        let results = futures::future::join_all(delete.iter().map(|p| async move {
            let r = workload::delete_pod(&self.ctx, ds, p).await;
            if !matches!(r, Ok(true)) {
                self.expectations
                    .deletion_observed(key, &ObjKey::of(p.as_ref()));
            }
            r
        }))
        .await;
        if let Some(e) = create_err {
            return Err(e);
        }
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// Delete old revisions beyond revisionHistoryLimit that no pod uses (↔ cleanupHistory).
    async fn cleanup_history(
        &self,
        ds: &DaemonSet,
        old: &[ControllerRevision],
        pods: &[Arc<Pod>],
    ) -> Result<()> {
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let live_hashes: HashSet<&str> = pods.iter().filter_map(|p| pod_hash(p)).collect();
        let live: HashSet<String> = old
            .iter()
            .filter(|r| {
                r.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
                    .is_some_and(|h| live_hashes.contains(h.as_str()))
            })
            .map(|r| r.name_any())
            .collect();
        history::truncate(&self.ctx.client, old, &live, limit).await
    }
}

/// What one sync decided for the nodes.
#[derive(Default)]
struct Plan {
    create: Vec<String>,
    delete: Vec<Arc<Pod>>,
    /// Failed pods being deleted, with the event message.
    failed: Vec<(String, String)>,
    requeue: Option<Duration>,
}

fn update_strategy(ds: &DaemonSet) -> &str {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// The template hash of the current revision.
fn revision_hash(ds: &DaemonSet, cur: &ControllerRevision) -> String {
    cur.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_else(|| {
            cur.name_any()
                .strip_prefix(&format!("{}-", ds.name_any()))
                .map(str::to_string)
                .unwrap_or_else(|| cur.name_any())
        })
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// Bound pods first, then oldest (↔ podByCreationTimestampAndPhase).
fn by_scheduled_then_creation(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    workload::node_name(a)
        .is_empty()
        .cmp(&workload::node_name(b).is_empty())
        .then_with(|| by_creation(a, b))
}

/// The node a daemon pod is for: spec.nodeName, else its matchFields
/// `metadata.name In [node]` term (↔ GetTargetNodeName).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for term in terms {
        for req in term.match_fields.iter().flatten() {
            if req.key == "metadata.name" && req.operator == "In" {
                let values = req.values.as_deref().unwrap_or_default();
                return (values.len() == 1).then(|| values[0].clone());
            }
        }
    }
    None
}

fn pods_by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut map: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods {
        match target_node(pod) {
            Some(node) => map.entry(node).or_default().push(pod.clone()),
            None => tracing::debug!(pod = %pod.name_any(), "daemon pod without a target node"),
        }
    }
    map
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// The tolerations every daemon pod gets (↔ AddOrUpdateDaemonPodTolerations).
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t = vec![
        toleration(TAINT_NOT_READY, "NoExecute"),
        toleration(TAINT_UNREACHABLE, "NoExecute"),
        toleration(TAINT_DISK_PRESSURE, "NoSchedule"),
        toleration(TAINT_MEMORY_PRESSURE, "NoSchedule"),
        toleration(TAINT_PID_PRESSURE, "NoSchedule"),
        toleration(TAINT_UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        t.push(toleration(TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    t
}

/// Add the default tolerations, replacing ones with the same key, operator,
/// value and effect (↔ AddOrUpdateTolerationInPodSpec).
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in default_tolerations(host_network) {
        let same = |x: &Toleration| {
            x.key == t.key
                && x.operator.as_deref().unwrap_or("Equal")
                    == t.operator.as_deref().unwrap_or("Equal")
                && x.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("")
                && x.effect == t.effect
        };
        match tolerations.iter_mut().find(|x| same(x)) {
            Some(existing) => *existing = t,
            None => tolerations.push(t),
        }
    }
}

/// Whether a toleration tolerates a taint (↔ Toleration.ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint passing `filter` that no toleration tolerates.
pub fn untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> Option<bool> {
    let values = r.values.as_deref().unwrap_or_default();
    Some(match r.operator.as_str() {
        "In" if !values.is_empty() => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" if !values.is_empty() => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" if values.is_empty() => value.is_some(),
        "DoesNotExist" if values.is_empty() => value.is_none(),
        "Gt" | "Lt" if values.len() == 1 => {
            let bound: i64 = values[0].parse().ok()?;
            let Some(v) = value.and_then(|v| v.parse::<i64>().ok()) else {
                return Some(false);
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => return None,
    })
}

/// Whether a node selector term selects `node` (an empty or invalid term selects nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    let name = node.name_any();
    exprs.iter().all(|r| {
        requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)) == Some(true)
    }) && fields
        .iter()
        .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)) == Some(true))
}

/// nodeSelector and required node affinity (↔ GetRequiredNodeAffinity(pod).Match(node)).
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    if let Some(sel) = &spec.node_selector
        && !sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        return false;
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        Some(required) => required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Whether a daemon pod should be placed on `node`, and whether one there
/// may keep running (↔ NodeShouldRunDaemonPod).
pub fn node_should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let Some(template_spec) = ds.spec.as_ref().and_then(|s| s.template.spec.clone()) else {
        return (false, false);
    };
    let mut spec = template_spec;
    add_default_tolerations(&mut spec);
    let name = node.name_any();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    if !node_matches(&spec, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated_taint(taints, tolerations, |t| {
        t.effect == "NoSchedule" || t.effect == "NoExecute"
    })
    .is_some()
    {
        let keeps = untolerated_taint(taints, tolerations, |t| t.effect == "NoExecute").is_none();
        return (false, keeps);
    }
    (true, true)
}

/// Require exactly `node` (↔ ReplaceDaemonSetPodNodeNameNodeAffinity).
pub fn replace_node_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let required = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(required);
    affinity
}

/// The daemon pod for `node` (↔ CreatePodTemplate + CreatePodsOnNode).
pub fn new_daemon_pod(ds: &DaemonSet, node: &str, hash: &str, generation: i64) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = workload::pod_from_template(ds, &template);
    pod.metadata.generate_name = Some(format!("{}-", ds.name_any()));
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.to_string());
    labels.insert(POD_TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    add_default_tolerations(spec);
    spec.affinity = Some(replace_node_affinity(spec.affinity.take(), node));
    pod
}

fn allows_surge(ds: &DaemonSet) -> bool {
    surge_param(ds).is_some_and(|s| match s {
        IntOrString::Int(i) => *i > 0,
        IntOrString::String(s) => s.trim_end_matches('%').parse::<i32>().is_ok_and(|v| v > 0),
    })
}

fn surge_param(ds: &DaemonSet) -> Option<&IntOrString> {
    ds.spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .max_surge
        .as_ref()
}

/// An int or a percentage of `total` (↔ GetScaledValueFromIntOrPercent).
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "invalid value for IntOrString: invalid value {s:?}"
                    ))
                })?;
            let product = pct * i64::from(total);
            let v = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// maxSurge and maxUnavailable against the desired number of nodes (↔ updatedDesiredNodeCounts).
fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> Result<(i32, i32)> {
    let ru = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref());
    let surge = match ru.and_then(|r| r.max_surge.as_ref()) {
        Some(v) => scaled(v, desired, true)?,
        None => 0,
    };
    let unavailable = match ru.and_then(|r| r.max_unavailable.as_ref()) {
        Some(v) => scaled(v, desired, true)?,
        None => 1,
    };
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// The new and the old pod found on one node.
type NewAndOld<'a> = (Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>);

/// The new and old pods on one node; None if there is more than one of either (↔ findUpdatedPodsOnNode).
fn updated_pods_on_node<'a>(pods: &'a [Arc<Pod>], hash: &str) -> Option<NewAndOld<'a>> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_none()
            && !matches!(workload::phase(p), "Failed" | "Succeeded")
    }) {
        let slot = if pod_hash(pod) == Some(hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod);
    }
    Some((new, old))
}

/// Which old pods to delete and on which nodes to surge (↔ rollingUpdate).
fn rolling_update(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    node_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: jiff::Timestamp,
) -> Result<(Vec<Arc<Pod>>, Vec<String>)> {
    let desired = i32::try_from(nodes.iter().filter(|n| node_should_run(ds, n).0).count())
        .unwrap_or(i32::MAX);
    let (max_surge, max_unavailable) = surge_and_unavailable(ds, desired)?;
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let available = |p: &Pod| ctrlutil::pod_is_available(p, min_ready, now);
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut delete = Vec::new();
        let mut candidates = Vec::new();
        for pods in node_pods.values() {
            let Some((new, old)) = updated_pods_on_node(pods, hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        delete.push(old.clone());
                    } else {
                        candidates.push(old.clone());
                    }
                }
            }
        }
        let remaining = usize::try_from((max_unavailable - unavailable).max(0))
            .unwrap_or(0)
            .min(candidates.len());
        delete.extend(candidates.into_iter().take(remaining));
        return Ok((delete, Vec::new()));
    }
    let mut surging = 0;
    let mut delete = Vec::new();
    let mut allowed = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in node_pods {
        let Some((new, old)) = updated_pods_on_node(pods, hash) else {
            surging += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old) {
                    allowed.push(node.clone());
                } else {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    delete.push(old.clone());
                } else {
                    surging += 1;
                }
            }
        }
    }
    let remaining = usize::try_from((max_surge - surging).max(0))
        .unwrap_or(0)
        .min(candidates.len());
    allowed.extend(candidates.into_iter().take(remaining));
    Ok((delete, allowed))
}

/// The status from the nodes and their daemon pods (↔ updateDaemonSetStatus).
fn calculate_status(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    node_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: jiff::Timestamp,
) -> DaemonSetStatus {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) =
        (0, 0, 0, 0, 0, 0);
    for node in nodes {
        let (should_run, _) = node_should_run(ds, node);
        let pods = node_pods
            .get(&node.name_any())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let scheduled = !pods.is_empty();
        if should_run {
            desired += 1;
            if scheduled {
                current += 1;
                let mut sorted: Vec<&Arc<Pod>> = pods.iter().collect();
                sorted.sort_by(|a, b| by_scheduled_then_creation(a, b));
                let pod = sorted[0];
                if ctrlutil::pod_is_ready(pod) {
                    ready += 1;
                    if ctrlutil::pod_is_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if pod_hash(pod) == Some(hash) {
                    updated += 1;
                }
            }
        } else if scheduled {
            misscheduled += 1;
        }
    }
    let mut status = ds.status.clone().unwrap_or_default();
    status.desired_number_scheduled = desired;
    status.current_number_scheduled = current;
    status.number_misscheduled = misscheduled;
    status.number_ready = ready;
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(updated);
    status.number_unavailable = Some((desired - available).max(0));
    status.observed_generation = ds.metadata.generation;
    status
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(v: serde_json::Value) -> DaemonSet {
        let mut base = json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "u1", "generation": 1},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
            }
        });
        merge(&mut base, v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = ds(json!({}));
        let zone_a = node("a", json!({"zone": "a"}), json!([]));
        let zone_b = node("b", json!({"zone": "b"}), json!([]));
        let no_schedule = node(
            "c",
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        let no_execute = node(
            "d",
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]),
        );
        let not_ready = node(
            "e",
            json!({}),
            json!([{"key": TAINT_NOT_READY, "effect": "NoExecute"}]),
        );
        let unschedulable = node(
            "f",
            json!({}),
            json!([{"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}]),
        );
        let net = node(
            "g",
            json!({}),
            json!([{"key": TAINT_NETWORK_UNAVAILABLE, "effect": "NoSchedule"}]),
        );
        let with_selector =
            ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"zone": "a"}}}}}));
        let with_affinity = ds(
            json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}}}}),
        );
        let tolerant = ds(
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}}}}),
        );
        let host_net = ds(json!({"spec": {"template": {"spec": {"hostNetwork": true}}}}));
        let cases = [
            (&plain, &zone_a, (true, true)),
            (&plain, &no_schedule, (false, true)),
            (&plain, &no_execute, (false, false)),
            (&plain, &not_ready, (true, true)),
            (&plain, &unschedulable, (true, true)),
            (&plain, &net, (false, true)),
            (&host_net, &net, (true, true)),
            (&with_selector, &zone_a, (true, true)),
            (&with_selector, &zone_b, (false, false)),
            (&with_affinity, &zone_a, (false, false)),
            (&with_affinity, &zone_b, (true, true)),
            (&tolerant, &no_schedule, (true, true)),
            (&tolerant, &no_execute, (true, true)),
        ];
        for (i, (d, n, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                node_should_run(d, n),
                want,
                "case {i}: node {}",
                n.name_any()
            );
        }
    }

    #[test]
    fn toleration_matching() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        let cases = [
            (t(json!({"key": "k", "value": "v"})), true),
            (
                t(json!({"key": "k", "operator": "Equal", "value": "w"})),
                false,
            ),
            (t(json!({"key": "k", "operator": "Exists"})), true),
            (t(json!({"operator": "Exists"})), true),
            (
                t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
                false,
            ),
            (t(json!({"key": "other", "operator": "Exists"})), false),
        ];
        for (tol, want) in cases {
            assert_eq!(tolerates(&tol, &taint), want, "{tol:?}");
        }
    }

    #[test]
    fn daemon_pods_target_their_node_and_tolerate_defaults() {
        let d = ds(json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}
        }}}}));
        let pod = new_daemon_pod(&d, "n1", "abc", 3);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(
            labels
                .get(CONTROLLER_REVISION_HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            labels
                .get(POD_TEMPLATE_GENERATION_LABEL)
                .map(String::as_str),
            Some("3")
        );
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        let spec = pod.spec.unwrap();
        let terms = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert!(terms[0].match_expressions.is_none());
        let tol = spec.tolerations.unwrap();
        assert_eq!(tol.len(), 6, "{tol:?}");
        let not_ready = tol
            .iter()
            .find(|t| t.key.as_deref() == Some(TAINT_NOT_READY))
            .unwrap();
        assert_eq!(
            not_ready.toleration_seconds, None,
            "the default replaces the template's"
        );
        assert!(
            tol.iter()
                .all(|t| t.key.as_deref() != Some(TAINT_NETWORK_UNAVAILABLE))
        );
    }

    #[test]
    fn scaled_values() {
        let cases = [
            (IntOrString::Int(2), 10, true, 2),
            (IntOrString::String("25%".into()), 10, true, 3),
            (IntOrString::String("25%".into()), 10, false, 2),
            (IntOrString::String("100%".into()), 3, true, 3),
            (IntOrString::String("0%".into()), 3, true, 0),
        ];
        for (v, total, up, want) in cases {
            assert_eq!(scaled(&v, total, up).unwrap(), want, "{v:?} of {total}");
        }
        assert!(scaled(&IntOrString::String("x".into()), 3, true).is_err());
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": "agent", CONTROLLER_REVISION_HASH_LABEL: hash}},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let d = ds(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}}}),
        );
        let nodes: Vec<Arc<Node>> = ["n0", "n1", "n2"]
            .iter()
            .map(|n| Arc::new(node(n, json!({}), json!([]))))
            .collect();
        let mut by_node = BTreeMap::new();
        by_node.insert("n0".to_string(), vec![pod("p0", "n0", "old", true)]);
        by_node.insert("n1".to_string(), vec![pod("p1", "n1", "old", true)]);
        by_node.insert("n2".to_string(), vec![pod("p2", "n2", "old", false)]);
        let now = jiff::Timestamp::now();
        // The unavailable old pod goes first, beyond the budget.
        let (delete, create) = rolling_update(&d, &nodes, &by_node, "new", now).unwrap();
        let names: Vec<String> = delete.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["p2", "p0"]);
        assert!(create.is_empty());
        // A new pod not yet ready uses the budget.
        by_node.insert("n2".to_string(), vec![pod("p2b", "n2", "new", false)]);
        let (delete, _) = rolling_update(&d, &nodes, &by_node, "new", now).unwrap();
        assert!(delete.is_empty());
        by_node.insert("n2".to_string(), vec![pod("p2b", "n2", "new", true)]);
        let (delete, _) = rolling_update(&d, &nodes, &by_node, "new", now).unwrap();
        assert_eq!(delete.len(), 1);
    }

    #[test]
    fn rolling_update_surges() {
        let d = ds(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}}),
        );
        let nodes: Vec<Arc<Node>> = ["n0", "n1"]
            .iter()
            .map(|n| Arc::new(node(n, json!({}), json!([]))))
            .collect();
        let mut by_node = BTreeMap::new();
        by_node.insert("n0".to_string(), vec![pod("p0", "n0", "old", true)]);
        by_node.insert("n1".to_string(), vec![pod("p1", "n1", "old", true)]);
        let now = jiff::Timestamp::now();
        let (delete, create) = rolling_update(&d, &nodes, &by_node, "new", now).unwrap();
        assert!(delete.is_empty());
        assert_eq!(create, ["n0"]);
        by_node.insert(
            "n0".to_string(),
            vec![pod("p0", "n0", "old", true), pod("p0b", "n0", "new", true)],
        );
        let (delete, create) = rolling_update(&d, &nodes, &by_node, "new", now).unwrap();
        assert_eq!(
            delete.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["p0"]
        );
        // An available new pod frees its surge slot: the next node surges.
        assert_eq!(create, ["n1"]);
    }

    #[test]
    fn status_counts_per_node() {
        let d = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"run": "yes"}}}}}));
        let nodes = vec![
            Arc::new(node("n0", json!({"run": "yes"}), json!([]))),
            Arc::new(node("n1", json!({"run": "yes"}), json!([]))),
            Arc::new(node("n2", json!({"run": "no"}), json!([]))),
        ];
        let mut by_node = BTreeMap::new();
        by_node.insert("n0".to_string(), vec![pod("p0", "n0", "h", true)]);
        by_node.insert("n2".to_string(), vec![pod("p2", "n2", "old", true)]);
        let s = calculate_status(&d, &nodes, &by_node, "h", jiff::Timestamp::now());
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_misscheduled,
                s.number_ready
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(
            (
                s.number_available,
                s.updated_number_scheduled,
                s.number_unavailable
            ),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(s.observed_generation, Some(1));
    }
}
