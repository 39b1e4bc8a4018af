//! The ReplicaSet and ReplicationController controllers (↔
//! pkg/controller/replicaset): keep `spec.replicas` active pods matching the
//! selector, adopting orphans and releasing pods that stopped matching,
//! creating in slow-start batches and deleting the least valuable pods
//! first, with expectations so a burst of watch events never acts twice.
//! Both kinds share the logic; a ReplicationController's selector is a map.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition};
use k8s_openapi::api::core::v1::{
    Pod, PodTemplateSpec, ReplicationController, ReplicationControllerCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use skiff_runtime::events::EventType;

use crate::ctrlutil::{
    self, Cache, Change, Error, Expectations, ObjKey, Result, WorkQueue, controller_of,
    controller_ref, is_not_found, pod_is_active, pod_is_available, pod_is_ready,
};

/// At most this many pods are created or deleted in one sync (↔ BurstReplicas).
pub const BURST_REPLICAS: usize = 500;
/// Creations start with batches of this size and double (↔ SlowStartInitialBatchSize).
const SLOW_START_INITIAL_BATCH: usize = 1;
const WORKERS: usize = 4;
const RESYNC: Duration = Duration::from_secs(60);

/// Run the ReplicaSet and ReplicationController controllers.
pub async fn run(ctx: crate::Context) {
    tokio::join!(
        run_kind::<ReplicaSet>(ctx.clone()),
        run_kind::<ReplicationController>(ctx)
    );
}

/// The condition shared by ReplicaSetStatus and ReplicationControllerStatus.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

/// The status shared by both kinds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Vec<Condition>,
}

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    fn desired_replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    /// Whether the selector is missing or empty (such an object manages nothing).
    fn selector_is_empty(&self) -> bool;
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool;
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
    fn status_view(&self) -> Status;
    fn set_status(&mut self, status: &Status);
}

impl Replicated for ReplicaSet {
    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn selector_is_empty(&self) -> bool {
        self.spec
            .as_ref()
            .is_none_or(|s| ctrlutil::selector_is_empty(&s.selector))
    }
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.spec.as_ref().is_some_and(|s| {
            !ctrlutil::selector_is_empty(&s.selector)
                && ctrlutil::selector_matches(&s.selector, labels)
        })
    }
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_view(&self) -> Status {
        let s = self.status.clone().unwrap_or_default();
        Status {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| Condition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect(),
        }
    }
    fn set_status(&mut self, st: &Status) {
        let mut status = self.status.clone().unwrap_or_default();
        status.replicas = st.replicas;
        status.fully_labeled_replicas = Some(st.fully_labeled_replicas);
        status.ready_replicas = Some(st.ready_replicas);
        status.available_replicas = Some(st.available_replicas);
        status.observed_generation = Some(st.observed_generation);
        status.conditions = (!st.conditions.is_empty()).then(|| {
            st.conditions
                .iter()
                .map(|c| ReplicaSetCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect()
        });
        self.status = Some(status);
    }
}

impl Replicated for ReplicationController {
    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn selector_is_empty(&self) -> bool {
        self.spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none_or(BTreeMap::is_empty)
    }
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(sel) if !sel.is_empty() => ctrlutil::map_selector_matches(sel, labels),
            _ => false,
        }
    }
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_view(&self) -> Status {
        let s = self.status.clone().unwrap_or_default();
        Status {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| Condition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect(),
        }
    }
    fn set_status(&mut self, st: &Status) {
        let mut status = self.status.clone().unwrap_or_default();
        status.replicas = st.replicas;
        status.fully_labeled_replicas = Some(st.fully_labeled_replicas);
        status.ready_replicas = Some(st.ready_replicas);
        status.available_replicas = Some(st.available_replicas);
        status.observed_generation = Some(st.observed_generation);
        status.conditions = (!st.conditions.is_empty()).then(|| {
            st.conditions
                .iter()
                .map(|c| ReplicationControllerCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect()
        });
        self.status = Some(status);
    }
}

struct Controller<W: Replicated> {
    ctx: crate::Context,
    name: &'static str,
    owners: Cache<W>,
    pods: Cache<Pod>,
    queue: Arc<WorkQueue<ObjKey>>,
    expectations: Expectations,
}

async fn run_kind<W: Replicated>(ctx: crate::Context) {
    let name = if W::kind(&()) == "ReplicaSet" {
        "replicaset"
    } else {
        "replicationcontroller"
    };
    let c = Arc::new(Controller::<W> {
        ctx: ctx.clone(),
        name,
        owners: ctx.informers.get::<W>().cache(),
        pods: ctx.informers.get::<Pod>().cache(),
        queue: Arc::new(WorkQueue::default()),
        expectations: Expectations::default(),
    });
    let owners_informer = {
        let c = c.clone();
        ctx.informers
            .get::<W>()
            .run(move |change| c.on_owner(change))
    };
    let pods_informer = {
        let c = c.clone();
        ctx.informers
            .get::<Pod>()
            .run(move |change| c.on_pod(change))
    };
    let workers = {
        let c = c.clone();
        async move {
            c.owners.wait_synced().await;
            c.pods.wait_synced().await;
            let cc = c.clone();
            ctrlutil::run_workers(name, c.queue.clone(), WORKERS, move |key| {
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
                for key in c.owners.keys() {
                    c.queue.add(key);
                }
            }
        }
    };
    tracing::info!(controller = name, "starting");
    tokio::join!(owners_informer, pods_informer, workers, resync);
}

impl<W: Replicated> Controller<W> {
    fn on_owner(&self, change: Change<W>) {
        match change {
            Change::Apply { new, .. } => self.queue.add(ObjKey::of(new.as_ref())),
            Change::Delete(old) => {
                let key = ObjKey::of(old.as_ref());
                self.expectations.forget(&key);
                self.queue.add(key);
            }
        }
    }

    /// The owner `r` points at, if it is one of ours and still the same object.
    fn resolve(&self, namespace: &str, r: &OwnerReference) -> Option<ObjKey> {
        if r.kind != W::kind(&()) || r.api_version != W::api_version(&()) {
            return None;
        }
        let key = ObjKey::new(namespace, &r.name);
        let owner = self.owners.get(&key)?;
        (owner.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(key)
    }

    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for owner in self.owners.list_namespace(&ns) {
            if owner.selects(pod.metadata.labels.as_ref()) {
                self.queue.add(ObjKey::of(owner.as_ref()));
            }
        }
    }

    fn on_pod(&self, change: Change<Pod>) {
        match change {
            Change::Apply { old: None, new } => {
                if new.metadata.deletion_timestamp.is_some() {
                    // A restarted informer may see a pod already being deleted.
                    self.pod_deleted(&new);
                    return;
                }
                let ns = new.namespace().unwrap_or_default();
                match controller_of(&new.metadata) {
                    Some(r) => {
                        if let Some(key) = self.resolve(&ns, r) {
                            self.expectations.creation_observed(&key);
                            self.queue.add(key);
                        }
                    }
                    None => self.enqueue_matching(&new),
                }
            }
            Change::Apply {
                old: Some(old),
                new,
            } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let ns = new.namespace().unwrap_or_default();
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if new.metadata.deletion_timestamp.is_some() {
                    self.pod_deleted(&new);
                    if labels_changed {
                        self.pod_deleted(&old);
                    }
                    return;
                }
                let cur = controller_of(&new.metadata);
                let prev = controller_of(&old.metadata);
                let ref_changed = cur.map(|r| &r.uid) != prev.map(|r| &r.uid);
                if ref_changed
                    && let Some(p) = prev
                    && let Some(key) = self.resolve(&ns, p)
                {
                    self.queue.add(key);
                }
                match cur {
                    Some(r) => {
                        if let Some(key) = self.resolve(&ns, r) {
                            self.queue.add(key);
                        }
                    }
                    None => {
                        if labels_changed || ref_changed {
                            self.enqueue_matching(&new);
                        }
                    }
                }
            }
            Change::Delete(pod) => self.pod_deleted(&pod),
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        if let Some(r) = controller_of(&pod.metadata)
            && let Some(key) = self.resolve(&ns, r)
        {
            self.expectations.deletion_observed(&key, &ObjKey::of(pod));
            self.queue.add(key);
        }
    }

    fn api(&self, namespace: &str) -> Api<W> {
        Api::namespaced(self.ctx.client.clone(), namespace)
    }

    fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), namespace)
    }

    async fn sync(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(owner) = self.owners.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let needs_sync = self.expectations.satisfied(key);
        if owner.selector_is_empty() {
            tracing::warn!(controller = self.name, key = %key, "empty selector: managing no pods");
            return Ok(None);
        }
        let active: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| pod_is_active(p))
            .collect();
        let claimed = self.claim_pods(&owner, active).await?;
        let mut manage_err = None;
        if needs_sync
            && owner.meta().deletion_timestamp.is_none()
            && let Err(e) = self.manage_replicas(key, &owner, &claimed).await
        {
            manage_err = Some(e);
        }
        let now = jiff::Timestamp::now();
        let status = calculate_status(owner.as_ref(), &claimed, manage_err.as_ref(), now);
        self.update_status(&owner, status).await?;
        if let Some(e) = manage_err {
            return Err(e);
        }
        // Wake up when a ready pod becomes available (minReadySeconds).
        Ok(ctrlutil::next_availability(
            claimed.iter().map(|p| p.as_ref()),
            owner.min_ready_seconds(),
            now,
        ))
    }

    /// Adopt matching orphans, release owned pods that stopped matching
    /// (↔ PodControllerRefManager.ClaimPods); returns the pods we own.
    async fn claim_pods(&self, owner: &Arc<W>, pods: Vec<Arc<Pod>>) -> Result<Vec<Arc<Pod>>> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let deleting = owner.meta().deletion_timestamp.is_some();
        let ns = owner.namespace().unwrap_or_default();
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        for pod in pods {
            let matches = owner.selects(pod.metadata.labels.as_ref());
            match controller_of(&pod.metadata) {
                Some(r) if r.uid != uid => {}
                Some(_) => {
                    if matches {
                        claimed.push(pod);
                    } else if !deleting {
                        self.release(&ns, &pod, &uid).await?;
                    }
                }
                None => {
                    if deleting || !matches || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let allowed = match can_adopt {
                        Some(a) => a,
                        None => {
                            let a = self.can_adopt(owner).await?;
                            can_adopt = Some(a);
                            a
                        }
                    };
                    if !allowed {
                        continue;
                    }
                    if let Some(adopted) = self.adopt(&ns, owner, &pod).await? {
                        claimed.push(Arc::new(adopted));
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// A fresh read: adopt only for the same, live object (↔ RecheckDeletionTimestamp).
    async fn can_adopt(&self, owner: &W) -> Result<bool> {
        let ns = owner.namespace().unwrap_or_default();
        match self.api(&ns).get(&owner.name_any()).await {
            Ok(fresh) => {
                Ok(fresh.meta().uid == owner.meta().uid
                    && fresh.meta().deletion_timestamp.is_none())
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn adopt(&self, ns: &str, owner: &W, pod: &Pod) -> Result<Option<Pod>> {
        let patch = json!({"metadata": {"ownerReferences": [controller_ref(owner)], "uid": pod.metadata.uid}});
        match self
            .pod_api(ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(p) => {
                tracing::debug!(controller = self.name, pod = %pod.name_any(), owner = %owner.name_any(), "adopted pod");
                Ok(Some(p))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, ns: &str, pod: &Pod, owner_uid: &str) -> Result<()> {
        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": pod.metadata.uid}});
        match self
            .pod_api(ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(controller = self.name, pod = %pod.name_any(), "released pod");
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn manage_replicas(&self, key: &ObjKey, owner: &Arc<W>, pods: &[Arc<Pod>]) -> Result<()> {
        let desired = usize::try_from(owner.desired_replicas().max(0)).unwrap_or(0);
        if pods.len() < desired {
            let count = (desired - pods.len()).min(BURST_REPLICAS);
            let template = owner
                .pod_template()
                .ok_or_else(|| Error::Other("the pod template is missing".into()))?;
            self.expectations.expect_creations(key, count);
            tracing::debug!(controller = self.name, key = %key, need = desired, creating = count, "too few replicas");
            let (created, err) = slow_start_batch(count, SLOW_START_INITIAL_BATCH, || {
                self.create_pod(owner, template)
            })
            .await;
            for _ in created..count {
                // Never attempted (or failed): the informer will not see them.
                self.expectations.creation_observed(key);
            }
            return err.map_or(Ok(()), Err);
        }
        if pods.len() > desired {
            let count = (pods.len() - desired).min(BURST_REPLICAS);
            let related = self.related_pods(owner, pods);
            let victims = pods_to_delete(pods, &related, count);
            self.expectations
                .expect_deletions(key, victims.iter().map(|p| ObjKey::of(p.as_ref())));
            tracing::debug!(controller = self.name, key = %key, need = desired, deleting = count, "too many replicas");
            let results =
                futures::future::join_all(victims.iter().map(|p| self.delete_pod(key, owner, p)))
                    .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Pods of the owner's siblings (ReplicaSets with the same controller),
    /// used to spread deletions across nodes (↔ getIndirectlyRelatedPods).
    fn related_pods(&self, owner: &W, own: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
        let ns = owner.namespace().unwrap_or_default();
        let Some(parent) = controller_of(owner.meta()) else {
            return own.to_vec();
        };
        let siblings: Vec<String> = self
            .owners
            .list_namespace(&ns)
            .iter()
            .filter(|o| controller_of(o.meta()).is_some_and(|r| r.uid == parent.uid))
            .filter_map(|o| o.meta().uid.clone())
            .collect();
        self.pods
            .list_namespace(&ns)
            .into_iter()
            .filter(|p| {
                pod_is_active(p)
                    && controller_of(&p.metadata).is_some_and(|r| siblings.contains(&r.uid))
            })
            .collect()
    }

    /// Create one pod from the template; Ok(false) when the namespace is going away.
    async fn create_pod(&self, owner: &W, template: &PodTemplateSpec) -> Result<bool> {
        let ns = owner.namespace().unwrap_or_default();
        let tmeta = template.metadata.clone().unwrap_or_default();
        if tmeta.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            return Err(Error::Other("unable to create pods, no labels".into()));
        }
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", owner.name_any())),
                namespace: Some(ns.clone()),
                labels: tmeta.labels,
                annotations: tmeta.annotations,
                finalizers: tmeta.finalizers,
                owner_references: Some(vec![controller_ref(owner)]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        let reference = skiff_runtime::events::reference(owner);
        match self.pod_api(&ns).create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let msg = format!("Created pod: {}", created.name_any());
                self.ctx
                    .recorder
                    .record(&reference, EventType::Normal, "SuccessfulCreate", &msg)
                    .await;
                Ok(true)
            }
            Err(e) if ctrlutil::is_namespace_terminating(&e) => Ok(false),
            Err(e) => {
                let msg = format!("Error creating: {e}");
                self.ctx
                    .recorder
                    .record(&reference, EventType::Warning, "FailedCreate", &msg)
                    .await;
                Err(e.into())
            }
        }
    }

    async fn delete_pod(&self, key: &ObjKey, owner: &W, pod: &Pod) -> Result<()> {
        let ns = pod.namespace().unwrap_or_default();
        let reference = skiff_runtime::events::reference(owner);
        match self
            .pod_api(&ns)
            .delete(&pod.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {
                let msg = format!("Deleted pod: {}", pod.name_any());
                self.ctx
                    .recorder
                    .record(&reference, EventType::Normal, "SuccessfulDelete", &msg)
                    .await;
                Ok(())
            }
            Err(e) => {
                // The informer will not observe this deletion.
                self.expectations.deletion_observed(key, &ObjKey::of(pod));
                if is_not_found(&e) {
                    return Ok(());
                }
                let msg = format!("Error deleting: {e}");
                self.ctx
                    .recorder
                    .record(&reference, EventType::Warning, "FailedDelete", &msg)
                    .await;
                Err(e.into())
            }
        }
    }

    async fn update_status(&self, owner: &Arc<W>, status: Status) -> Result<()> {
        if owner.status_view() == status {
            return Ok(());
        }
        let ns = owner.namespace().unwrap_or_default();
        let api = self.api(&ns);
        let mut obj = (**owner).clone();
        obj.set_status(&status);
        match api
            .replace_status(&owner.name_any(), &PostParams::default(), &obj)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if ctrlutil::is_conflict(&e) => {
                // The cache was behind: once more on the current object.
                let mut fresh = match api.get(&owner.name_any()).await {
                    Ok(f) => f,
                    Err(e) if is_not_found(&e) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                if fresh.meta().uid != owner.meta().uid {
                    return Ok(());
                }
                fresh.set_status(&status);
                api.replace_status(&owner.name_any(), &PostParams::default(), &fresh)
                    .await?;
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Run `count` calls of `f`, in batches of 1, 2, 4, ... stopping at the
/// first batch with a failure (↔ slowStartBatch). Returns how many calls
/// succeeded (namespace-terminating skips do not count) and the first error.
async fn slow_start_batch<F, Fut>(count: usize, initial: usize, f: F) -> (usize, Option<Error>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(true) => successes += 1,
                Ok(false) => {}
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = remaining.min(batch * 2);
    }
    (successes, None)
}

/// The new status from the owned active pods (↔ calculateStatus).
fn calculate_status<W: Replicated>(
    owner: &W,
    pods: &[Arc<Pod>],
    manage_err: Option<&Error>,
    now: jiff::Timestamp,
) -> Status {
    let mut status = owner.status_view();
    let template_labels = owner
        .pod_template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = owner.min_ready_seconds();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in pods {
        if ctrlutil::map_selector_matches(&template_labels, pod.metadata.labels.as_ref()) {
            fully_labeled += 1;
        }
        if pod_is_ready(pod) {
            ready += 1;
            if pod_is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let has_failure = status
        .conditions
        .iter()
        .any(|c| c.type_ == "ReplicaFailure");
    match manage_err {
        Some(e) if !has_failure => {
            let diff = pods.len() as i64 - i64::from(owner.desired_replicas());
            let reason = if diff < 0 {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            status.conditions.push(Condition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => status.conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    status.replicas = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    status.fully_labeled_replicas = fully_labeled;
    status.ready_replicas = ready;
    status.available_replicas = available;
    status.observed_generation = owner.meta().generation.unwrap_or(0);
    status
}

/// Which `count` pods to delete: the least valuable first (↔ getPodsToDelete
/// with ActivePodsWithRanks): unscheduled, pending, not ready, lower
/// deletion cost, doubled up on a node, ready for less time, more restarts,
/// newer.
fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], count: usize) -> Vec<Arc<Pod>> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, i32> = HashMap::new();
    for p in related {
        if let Some(n) = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            *on_node.entry(n).or_default() += 1;
        }
    }
    let mut ranked: Vec<(i32, &Arc<Pod>)> = pods
        .iter()
        .map(|p| {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            (
                if node.is_empty() {
                    0
                } else {
                    on_node.get(node).copied().unwrap_or(0)
                },
                p,
            )
        })
        .collect();
    ranked.sort_by(|a, b| deletion_order(a.1, a.0, b.1, b.0));
    ranked
        .into_iter()
        .take(count)
        .map(|(_, p)| p.clone())
        .collect()
}

fn node_name(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn phase_ordinal(p: &Pod) -> i32 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(0, i64::from)
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    ctrlutil::pod_ready_condition(p)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ordering: Less means "delete first".
fn deletion_order(a: &Pod, rank_a: i32, b: &Pod, rank_b: i32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (na, nb) = (node_name(a), node_name(b));
    if na.is_empty() != nb.is_empty() {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let (pa, pb) = (phase_ordinal(a), phase_ordinal(b));
    if pa != pb {
        return pa.cmp(&pb);
    }
    let (ra, rb) = (pod_is_ready(a), pod_is_ready(b));
    if ra != rb {
        return if !ra {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let (ca, cb) = (deletion_cost(a), deletion_cost(b));
    if ca != cb {
        return ca.cmp(&cb);
    }
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    if ra && rb {
        match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) if x != y => return y.cmp(&x),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            _ => {}
        }
    }
    let (xa, xb) = (max_restarts(a), max_restarts(b));
    if xa != xb {
        return xb.cmp(&xa);
    }
    match (
        a.metadata.creation_timestamp.as_ref(),
        b.metadata.creation_timestamp.as_ref(),
    ) {
        (Some(x), Some(y)) if x.0 != y.0 => y.0.cmp(&x.0),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    jiff::Timestamp::from_second(created).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletes_unscheduled_then_not_ready_then_newer() {
        let pods = vec![
            pod("ready-old", "n1", "Running", true, 100),
            pod("ready-new", "n2", "Running", true, 200),
            pod("not-ready", "n3", "Running", false, 50),
            pod("unscheduled", "", "Pending", false, 10),
            pod("pending", "n4", "Pending", false, 20),
        ];
        assert_eq!(
            names(&pods_to_delete(&pods, &pods, 4)),
            ["unscheduled", "pending", "not-ready", "ready-new"]
        );
    }

    #[test]
    fn doubled_up_pods_go_first() {
        let pods = vec![
            pod("a", "n1", "Running", true, 100),
            pod("b", "n2", "Running", true, 100),
            pod("c", "n2", "Running", true, 100),
        ];
        let victims = names(&pods_to_delete(&pods, &pods, 1));
        assert!(victims == ["b"] || victims == ["c"], "{victims:?}");
    }

    #[tokio::test]
    async fn slow_start_stops_at_the_first_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n >= 4 {
                    Err(Error::Other("boom".into()))
                } else {
                    Ok(true)
                }
            }
        })
        .await;
        // Batches 1, 2, then 4 of which the first succeeds.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 7);
        assert_eq!(ok, 4);
        assert!(err.is_some());
    }
}
