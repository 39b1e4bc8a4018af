//! The StatefulSet controller (↔ pkg/controller/statefulset): pods with
//! stable names `<set>-<ordinal>`, hostname = pod name and subdomain =
//! serviceName, labelled `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index`; one PVC per volumeClaimTemplate and
//! ordinal, `<template>-<set>-<ordinal>`, created before the pod and kept
//! on scale-down and deletion under the default Retain policy (the Delete
//! policies give the claims owner references to the set or the condemned
//! pod). OrderedReady creates ordinal N only when 0..N-1 are Running and
//! Ready and scales down from the highest ordinal one at a time; Parallel
//! acts on all at once. Templates are ControllerRevisions `<set>-<hash>`;
//! pods carry their revision's name in `controller-revision-hash`;
//! RollingUpdate replaces pods from the highest ordinal down to the
//! partition, one at a time, each once its successors are healthy;
//! OnDelete only recreates pods someone deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::events::EventType;

use crate::ctrlutil::{
    self, Cache, Change, Error, ObjKey, Result, WorkQueue, controller_of, informer, is_not_found,
};
use crate::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use crate::workload::{self, owner_key};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const WORKERS: usize = 2;
const RESYNC: Duration = Duration::from_secs(60);

struct Controller {
    ctx: crate::Context,
    sets: Cache<StatefulSet>,
    pods: Cache<Pod>,
    claims: Cache<PersistentVolumeClaim>,
    revisions: Cache<ControllerRevision>,
    queue: Arc<WorkQueue<ObjKey>>,
}

/// Run the StatefulSet controller until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let c = Arc::new(Controller {
        ctx: ctx.clone(),
        sets: Cache::default(),
        pods: ctx.informers.get::<Pod>().cache(),
        claims: Cache::default(),
        revisions: ctx.informers.get::<ControllerRevision>().cache(),
        queue: Arc::new(WorkQueue::default()),
    });
    let set_informer = {
        let c = c.clone();
        informer::run(
            Api::<StatefulSet>::all(ctx.client.clone()),
            watcher::Config::default(),
            c.sets.clone(),
            move |ch| match ch {
                Change::Apply { new, .. } => c.queue.add(ObjKey::of(new.as_ref())),
                Change::Delete(old) => c.queue.add(ObjKey::of(old.as_ref())),
            },
        )
    };
    let pod_informer = {
        let c = c.clone();
        ctx.informers.get::<Pod>().run(move |ch| c.on_pod(ch))
    };
    let claim_informer = informer::run(
        Api::<PersistentVolumeClaim>::all(ctx.client.clone()),
        watcher::Config::default(),
        c.claims.clone(),
        |_| {},
    );
    let rev_informer = {
        let c = c.clone();
        ctx.informers.get::<ControllerRevision>().run(move |ch| {
            let obj = match &ch {
                Change::Apply { new, .. } => new.clone(),
                Change::Delete(old) => old.clone(),
            };
            let ns = obj.namespace().unwrap_or_default();
            if let Some(key) =
                controller_of(&obj.metadata).and_then(|r| owner_key::<StatefulSet>(&ns, r))
            {
                c.queue.add(key);
            }
        })
    };
    let workers = {
        let c = c.clone();
        async move {
            c.sets.wait_synced().await;
            c.pods.wait_synced().await;
            c.claims.wait_synced().await;
            c.revisions.wait_synced().await;
            let cc = c.clone();
            ctrlutil::run_workers("statefulset", c.queue.clone(), WORKERS, move |key| {
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
                for key in c.sets.keys() {
                    c.queue.add(key);
                }
            }
        }
    };
    tracing::info!(controller = "statefulset", "starting");
    tokio::join!(
        set_informer,
        pod_informer,
        claim_informer,
        rev_informer,
        workers,
        resync
    );
}

/// The two templates a sync works with.
struct Revisions {
    current: ControllerRevision,
    update: ControllerRevision,
    current_template: PodTemplateSpec,
    update_template: PodTemplateSpec,
    collision_count: i32,
}

impl Controller {
    fn owner_of(&self, pod: &Pod) -> Option<ObjKey> {
        let ns = pod.namespace().unwrap_or_default();
        let r = controller_of(&pod.metadata)?;
        let key = owner_key::<StatefulSet>(&ns, r)?;
        let set = self.sets.get(&key)?;
        (set.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(key)
    }

    fn on_pod(&self, ch: Change<Pod>) {
        let (old, new) = match ch {
            Change::Apply { old, new } => (old, new),
            Change::Delete(pod) => (None, pod),
        };
        if let Some(key) = self.owner_of(&new) {
            self.queue.add(key);
        } else if controller_of(&new.metadata).is_none() {
            let ns = new.namespace().unwrap_or_default();
            for set in self.sets.list_namespace(&ns) {
                if set
                    .spec
                    .as_ref()
                    .is_some_and(|s| workload::selects(&s.selector, new.metadata.labels.as_ref()))
                {
                    self.queue.add(ObjKey::of(set.as_ref()));
                }
            }
        }
        if let Some(old) = old
            && let Some(key) = self.owner_of(&old)
        {
            self.queue.add(key);
        }
    }

    async fn event(&self, set: &StatefulSet, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .record(
                &skiff_runtime::events::reference(set),
                kind,
                reason,
                message,
            )
            .await;
    }

    async fn sync(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(set) = self.sets.get(key) else {
            return Ok(None);
        };
        let Some(spec) = set.spec.as_ref() else {
            return Ok(None);
        };
        if ctrlutil::selector_is_empty(&spec.selector) {
            self.event(
                &set,
                EventType::Warning,
                "SelectingAll",
                "This statefulset is selecting all pods. A non-empty selector is required.",
            )
            .await;
            return Ok(None);
        }
        let client = &self.ctx.client;
        let revs = workload::claim(
            client,
            set.as_ref(),
            &spec.selector,
            self.revisions.list_namespace(&key.namespace),
        )
        .await?;
        let mut revs: Vec<ControllerRevision> = revs.iter().map(|r| (**r).clone()).collect();
        history::sort_revisions(&mut revs);
        let pods = workload::claim(
            client,
            set.as_ref(),
            &spec.selector,
            self.pods.list_namespace(&key.namespace),
        )
        .await?;
        let pods: Vec<Arc<Pod>> = pods
            .into_iter()
            .filter(|p| ordinal_of(&set.name_any(), &p.name_any()).is_some())
            .collect();
        let r = self.revisions_of(&set, &revs).await?;
        let now = jiff::Timestamp::now();
        let outcome = self.update_set(&set, &r, &pods).await;
        // The status reflects what the cache shows (as Kubernetes does).
        let status = calculate_status(&set, &r, &pods, now);
        if set.status.as_ref() != Some(&status) {
            workload::write_status(client, set.as_ref(), |s| s.status = Some(status.clone()))
                .await?;
        }
        outcome?;
        let mut live: HashSet<String> = pods
            .iter()
            .filter_map(|p| pod_revision(p).map(str::to_string))
            .collect();
        live.insert(r.current.name_any());
        live.insert(r.update.name_any());
        history::truncate(
            client,
            &revs,
            &live,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        Ok(ctrlutil::next_availability(
            pods.iter().map(|p| p.as_ref()),
            min_ready,
            now,
        ))
    }

    /// The current and update revisions, creating or renumbering the
    /// update revision as needed (↔ getStatefulSetRevisions).
    async fn revisions_of(
        &self,
        set: &StatefulSet,
        revs: &[ControllerRevision],
    ) -> Result<Revisions> {
        let client = &self.ctx.client;
        let mut collision_count = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let data = history::template_patch(&template);
        let next = history::max_revision(revs) + 1;
        let equal: Vec<&ControllerRevision> = revs
            .iter()
            .filter(|r| history::equal_data(r, &data))
            .collect();
        let update = match (equal.last(), revs.last()) {
            // Unchanged since the latest revision.
            (Some(e), Some(latest)) if e.name_any() == latest.name_any() => (*e).clone(),
            // A rollback to an older template: renumber it.
            (Some(e), _) => history::renumber(client, e, next).await?,
            (None, _) => {
                self.create_revision(set, &data, next, &mut collision_count)
                    .await?
            }
        };
        let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = current_name
            .and_then(|n| revs.iter().find(|r| r.name_any() == n).cloned())
            .unwrap_or_else(|| update.clone());
        let current_template = history::template_of(&current).unwrap_or_else(|| template.clone());
        Ok(Revisions {
            current,
            update,
            current_template,
            update_template: template,
            collision_count,
        })
    }

    /// Create the revision of `data`, bumping the collision count past
    /// names taken by other templates (↔ CreateControllerRevision).
    async fn create_revision(
        &self,
        set: &StatefulSet,
        data: &serde_json::Value,
        revision: i64,
        collision_count: &mut i32,
    ) -> Result<ControllerRevision> {
        let ns = set.namespace().unwrap_or_default();
        let api = history::api(&self.ctx.client, &ns);
        let labels = set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for _ in 0..100 {
            let hash = history::hash_data(data, Some(*collision_count).filter(|c| *c != 0));
            let name = revision_name(&set.name_any(), &hash);
            let rev = history::new_revision(
                set,
                name.clone(),
                &hash,
                labels.clone(),
                data.clone(),
                revision,
            );
            match api.create(&PostParams::default(), &rev).await {
                Ok(created) => return Ok(created),
                Err(e) if ctrlutil::is_already_exists(&e) => {
                    let existing = api.get(&name).await?;
                    if history::equal_data(&existing, data) {
                        return Ok(existing);
                    }
                    *collision_count += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Other(format!(
            "too many revision name collisions for StatefulSet {}",
            set.name_any()
        )))
    }

    /// Create, recreate, delete and update pods (↔ updateStatefulSet).
    async fn update_set(&self, set: &StatefulSet, r: &Revisions, pods: &[Arc<Pod>]) -> Result<()> {
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let name = set.name_any();
        let start = start_ordinal(set);
        let count = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let mut replicas: Vec<Option<Arc<Pod>>> = vec![None; count];
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for pod in pods {
            let Some(ord) = ordinal_of(&name, &pod.name_any()) else {
                continue;
            };
            match ord
                .checked_sub(start)
                .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
            {
                Some(i) if i < count => replicas[i] = Some(pod.clone()),
                _ => condemned.push(pod.clone()),
            }
        }
        // Highest ordinal first.
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(&name, &p.name_any())));
        let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = jiff::Timestamp::now();
        let healthy = |p: &Pod| workload::is_running_and_ready(p);
        // The first unhealthy pod: a replica (a missing one counts), else the lowest condemned one.
        let first_unhealthy: Option<String> = replicas
            .iter()
            .enumerate()
            .find_map(|(i, p)| match p {
                Some(p) if healthy(p) => None,
                Some(p) => Some(p.name_any()),
                None => Some(pod_name(set, start + i32::try_from(i).unwrap_or(i32::MAX))),
            })
            .or_else(|| {
                condemned
                    .iter()
                    .rev()
                    .find(|p| !healthy(p))
                    .map(|p| p.name_any())
            });

        // Living replicas, in ordinal order.
        if monotonic {
            for (i, slot) in replicas.iter_mut().enumerate() {
                if self
                    .process_replica(set, r, slot, i, start, true, min_ready, now)
                    .await?
                {
                    return Ok(());
                }
            }
        } else {
            let results = futures::future::join_all((0..count).map(|i| {
                let mut slot = replicas[i].clone();
                async move {
                    let res = self
                        .process_replica(set, r, &mut slot, i, start, false, min_ready, now)
                        .await;
                    (slot, res)
                }
            }))
            .await;
            let mut first_err = None;
            for (i, (pod, res)) in results.into_iter().enumerate() {
                replicas[i] = pod;
                if let Err(e) = res
                    && first_err.is_none()
                {
                    first_err = Some(e);
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }

        // Condemned pods: claims follow the retention policy, then deletion from the highest ordinal.
        if when_scaled(set) == "Delete" {
            for pod in &condemned {
                self.own_claims_by_pod(set, pod).await?;
            }
        }
        let mut errors = Vec::new();
        for pod in &condemned {
            if pod.metadata.deletion_timestamp.is_some() {
                if monotonic {
                    return Ok(());
                }
                continue;
            }
            let is_first_unhealthy = first_unhealthy.as_deref() == Some(pod.name_any().as_str());
            if monotonic
                && !is_first_unhealthy
                && (!healthy(pod) || !ctrlutil::pod_is_available(pod, min_ready, now))
            {
                return Ok(());
            }
            tracing::debug!(statefulset = %name, pod = %pod.name_any(), "terminating pod for scale down");
            let res = self.delete_pod(set, pod).await;
            if monotonic {
                return res;
            }
            if let Err(e) = res {
                errors.push(e);
            }
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }

        if update_strategy(set) == "OnDelete" {
            return Ok(());
        }
        // Rolling update: the highest ordinal not at the update revision goes first.
        let partition = usize::try_from(partition(set).max(0)).unwrap_or(0);
        for i in (partition..count).rev() {
            let Some(pod) = &replicas[i] else {
                return Ok(());
            };
            if pod_revision(pod) != Some(r.update.name_any().as_str())
                && pod.metadata.deletion_timestamp.is_none()
            {
                tracing::debug!(statefulset = %name, pod = %pod.name_any(), "terminating pod for update");
                return self.delete_pod(set, pod).await;
            }
            if !healthy(pod) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One living replica; Ok(true) means stop here (monotonic waiting) (↔ processReplica).
    #[allow(clippy::too_many_arguments)]
    async fn process_replica(
        &self,
        set: &StatefulSet,
        r: &Revisions,
        slot: &mut Option<Arc<Pod>>,
        i: usize,
        start: i32,
        monotonic: bool,
        min_ready: i32,
        now: jiff::Timestamp,
    ) -> Result<bool> {
        let ordinal = start + i32::try_from(i).unwrap_or(i32::MAX);
        if let Some(pod) = slot.as_ref()
            && matches!(workload::phase(pod), "Failed" | "Succeeded")
            && pod.metadata.deletion_timestamp.is_none()
        {
            let (reason, what) = if workload::phase(pod) == "Failed" {
                ("RecreatingFailedPod", "failed")
            } else {
                ("RecreatingTerminatedPod", "terminated")
            };
            let msg = format!(
                "StatefulSet {}/{} is recreating {what} Pod {}",
                set.namespace().unwrap_or_default(),
                set.name_any(),
                pod.name_any()
            );
            self.event(set, EventType::Warning, reason, &msg).await;
            self.delete_pod(set, pod).await?;
            // The replacement is created once the old pod is gone.
            return Ok(monotonic);
        }
        let Some(pod) = slot.as_ref() else {
            let pod = new_versioned_pod(set, r, ordinal);
            self.create_pod(set, &pod).await?;
            *slot = Some(Arc::new(pod));
            return Ok(monotonic);
        };
        if workload::phase(pod) == "Pending" {
            self.create_claims(set, ordinal).await?;
        }
        if monotonic
            && (pod.metadata.deletion_timestamp.is_some()
                || !workload::is_running_and_ready(pod)
                || !ctrlutil::pod_is_available(pod, min_ready, now))
        {
            return Ok(true);
        }
        // Enforce the identity labels (hostname and volumes cannot change on a live pod).
        if !identity_matches(set, pod, ordinal) && pod.metadata.deletion_timestamp.is_none() {
            let patch = json!({"metadata": {"labels": {POD_NAME_LABEL: pod.name_any(), POD_INDEX_LABEL: ordinal.to_string()}}});
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                &set.namespace().unwrap_or_default(),
            );
            match api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Create the claims of `ordinal` that do not exist yet (↔ createPersistentVolumeClaims).
    async fn create_claims(&self, set: &StatefulSet, ordinal: i32) -> Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &ns);
        for claim in claims_for(set, ordinal) {
            let name = claim.name_any();
            if self.claims.get(&ObjKey::new(&ns, &name)).is_some() {
                continue;
            }
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let msg = format!(
                        "create Claim {name} Pod {} in StatefulSet {} success",
                        pod_name(set, ordinal),
                        set.name_any()
                    );
                    self.event(set, EventType::Normal, "SuccessfulCreate", &msg)
                        .await;
                }
                Err(e) if ctrlutil::is_already_exists(&e) => {}
                Err(e) => {
                    let msg = format!(
                        "create Claim {name} for Pod {} in StatefulSet {} failed error: {e}",
                        pod_name(set, ordinal),
                        set.name_any()
                    );
                    self.event(set, EventType::Warning, "FailedCreate", &msg)
                        .await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Claims first, then the pod (↔ CreateStatefulPod).
    async fn create_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let ordinal = ordinal_of(&set.name_any(), &pod.name_any()).unwrap_or(0);
        self.create_claims(set, ordinal).await?;
        let ns = set.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                let msg = format!(
                    "create Pod {} in StatefulSet {} successful",
                    pod.name_any(),
                    set.name_any()
                );
                self.event(set, EventType::Normal, "SuccessfulCreate", &msg)
                    .await;
                Ok(())
            }
            // The cache is behind: it exists.
            Err(e) if ctrlutil::is_already_exists(&e) => Ok(()),
            Err(e) if ctrlutil::is_namespace_terminating(&e) => Ok(()),
            Err(e) => {
                let msg = format!(
                    "create Pod {} in StatefulSet {} failed error: {e}",
                    pod.name_any(),
                    set.name_any()
                );
                self.event(set, EventType::Warning, "FailedCreate", &msg)
                    .await;
                Err(e.into())
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let dp = kube::api::DeleteParams {
            preconditions: pod
                .metadata
                .uid
                .clone()
                .map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {
                let msg = format!(
                    "delete Pod {} in StatefulSet {} successful",
                    pod.name_any(),
                    set.name_any()
                );
                self.event(set, EventType::Normal, "SuccessfulDelete", &msg)
                    .await;
                Ok(())
            }
            Err(e) if is_not_found(&e) || ctrlutil::is_conflict(&e) => Ok(()),
            Err(e) => {
                let msg = format!(
                    "delete Pod {} in StatefulSet {} failed error: {e}",
                    pod.name_any(),
                    set.name_any()
                );
                self.event(set, EventType::Warning, "FailedDelete", &msg)
                    .await;
                Err(e.into())
            }
        }
    }

    /// whenScaled: Delete — a condemned pod's claims become its dependents,
    /// so they go with it (↔ UpdatePodClaimForRetentionPolicy).
    async fn own_claims_by_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let Some(ordinal) = ordinal_of(&set.name_any(), &pod.name_any()) else {
            return Ok(());
        };
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &ns);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for claim in claims_for(set, ordinal) {
            let Some(existing) = self.claims.get(&ObjKey::new(&ns, &claim.name_any())) else {
                continue;
            };
            if existing.owner_references().iter().any(|o| o.uid == uid) {
                continue;
            }
            let owner = OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid: uid.clone(),
                controller: None,
                block_owner_deletion: None,
            };
            let patch = json!({"metadata": {"ownerReferences": [owner]}});
            match api
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn update_strategy(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn partition(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

fn has_rolling_update_params(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .is_some_and(|u| u.rolling_update.is_some())
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn when_scaled(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_scaled.as_deref())
        .unwrap_or("Retain")
}

fn when_deleted(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_deleted.as_deref())
        .unwrap_or("Retain")
}

/// `<set>-<hash>`, the prefix cut to fit (↔ ControllerRevisionName).
pub fn revision_name(set: &str, hash: &str) -> String {
    let prefix = if set.len() > 223 { &set[..223] } else { set };
    format!("{prefix}-{hash}")
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name_any())
}

/// The ordinal of a pod named `<set>-<n>` (↔ getParentNameAndOrdinal + isMemberOf).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let (parent, ord) = pod.rsplit_once('-')?;
    if parent != set || ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ord.parse().ok()
}

fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

fn identity_matches(set: &StatefulSet, pod: &Pod, ordinal: i32) -> bool {
    let labels = pod.metadata.labels.as_ref();
    pod.name_any() == pod_name(set, ordinal)
        && labels.and_then(|l| l.get(POD_NAME_LABEL)) == Some(&pod.name_any())
        && labels.and_then(|l| l.get(POD_INDEX_LABEL)) == Some(&ordinal.to_string())
}

/// The claims of `ordinal`, from the set's volumeClaimTemplates (↔ getPersistentVolumeClaims).
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut claim = PersistentVolumeClaim {
                metadata: t.metadata.clone(),
                spec: t.spec.clone(),
                status: None,
            };
            claim.metadata.name = Some(format!("{}-{}-{ordinal}", t.name_any(), set.name_any()));
            claim.metadata.namespace = set.namespace();
            claim.metadata.resource_version = None;
            claim.metadata.uid = None;
            claim.metadata.creation_timestamp = None;
            let labels = claim.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(selector_labels.clone());
            if when_deleted(set) == "Delete" {
                let mut owner = ctrlutil::controller_ref(set);
                owner.controller = None;
                owner.block_owner_deletion = None;
                claim.metadata.owner_references = Some(vec![owner]);
            } else {
                claim.metadata.owner_references = None;
            }
            claim
        })
        .collect()
}

/// The pod of `ordinal` at the current or the update revision (↔ newVersionedStatefulSetPod).
fn new_versioned_pod(set: &StatefulSet, r: &Revisions, ordinal: i32) -> Pod {
    let current_replicas = set
        .status
        .as_ref()
        .and_then(|s| s.current_replicas)
        .unwrap_or(0);
    let use_current = update_strategy(set) == "RollingUpdate"
        && if has_rolling_update_params(set) {
            ordinal < partition(set)
        } else {
            ordinal < current_replicas
        };
    if use_current {
        new_pod(set, &r.current_template, &r.current.name_any(), ordinal)
    } else {
        new_pod(set, &r.update_template, &r.update.name_any(), ordinal)
    }
}

/// The pod of `ordinal` from `template` (↔ newStatefulSetPod + setPodRevision).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let mut pod = workload::pod_from_template(set, template);
    let name = pod_name(set, ordinal);
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.to_string());
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.hostname = Some(name);
    if let Some(service) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    // Claim volumes replace template volumes of the same name.
    let claims = claims_for(set, ordinal);
    let templates: Vec<String> = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
        .map(|t| t.name_any())
        .collect();
    let mut volumes: Vec<Volume> = templates
        .iter()
        .zip(&claims)
        .map(|(volume, claim)| Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.name_any(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    volumes.extend(
        spec.volumes
            .take()
            .into_iter()
            .flatten()
            .filter(|v| !templates.contains(&v.name)),
    );
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    pod
}

/// The status from the pods (↔ updateStatefulSet's counting and completeRollingUpdate).
fn calculate_status(
    set: &StatefulSet,
    r: &Revisions,
    pods: &[Arc<Pod>],
    now: jiff::Timestamp,
) -> StatefulSetStatus {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (current_name, update_name) = (r.current.name_any(), r.update.name_any());
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: Some(r.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut replicas, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    for pod in pods {
        if !workload::phase(pod).is_empty() {
            replicas += 1;
        }
        if workload::is_running_and_ready(pod) {
            ready += 1;
            if ctrlutil::pod_is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if !workload::phase(pod).is_empty() && pod.metadata.deletion_timestamp.is_none() {
            if pod_revision(pod) == Some(current_name.as_str()) {
                current += 1;
            }
            if pod_revision(pod) == Some(update_name.as_str()) {
                updated += 1;
            }
        }
    }
    status.replicas = replicas;
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = Some(current);
    status.updated_replicas = Some(updated);
    status.current_revision = Some(current_name);
    status.update_revision = Some(update_name.clone());
    // Every pod is at the update revision and ready: it becomes current.
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if updated == replicas && ready == replicas && replicas == desired {
        status.current_replicas = Some(updated);
        status.current_revision = Some(update_name);
    }
    status
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(v: serde_json::Value) -> StatefulSet {
        let mut base = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 2},
            "spec": {
                "replicas": 3,
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "c", "image": "nginx"}],
                    "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]
                }},
                "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "data"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        });
        if let (Some(b), Some(v)) = (base["spec"].as_object_mut(), v.as_object()) {
            for (k, x) in v {
                b.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn ordinals() {
        let cases = [
            ("web-0", Some(0)),
            ("web-12", Some(12)),
            ("web-x", None),
            ("web-", None),
            ("webby-1", None),
            ("web-1-2", None),
            ("other-1", None),
        ];
        for (name, want) in cases {
            assert_eq!(ordinal_of("web", name), want, "{name}");
        }
        assert_eq!(ordinal_of("my-app", "my-app-3"), Some(3));
    }

    #[test]
    fn pods_have_stable_identity_and_claims() {
        let s = set(json!({}));
        let template = s.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&s, &template, "web-abc", 2);
        assert_eq!(pod.name_any(), "web-2");
        let labels = pod.labels();
        assert_eq!(
            labels.get(POD_NAME_LABEL).map(String::as_str),
            Some("web-2")
        );
        assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(
            labels
                .get(CONTROLLER_REVISION_HASH_LABEL)
                .map(String::as_str),
            Some("web-abc")
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-2"), Some("nginx"))
        );
        let vols: Vec<(&str, Option<&str>)> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.as_str()),
                )
            })
            .collect();
        assert_eq!(vols, [("www", Some("www-web-2")), ("cfg", None)]);
        assert!(identity_matches(&s, &pod, 2));
        let claims = claims_for(&s, 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].name_any(), "www-web-2");
        assert_eq!(
            claims[0].labels().get("app").map(String::as_str),
            Some("web")
        );
        assert_eq!(
            claims[0].labels().get("tier").map(String::as_str),
            Some("data")
        );
        assert!(
            claims[0].metadata.owner_references.is_none(),
            "Retain: no owner"
        );
        let deleting = set(
            json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}),
        );
        let owners = claims_for(&deleting, 0)[0]
            .metadata
            .owner_references
            .clone()
            .unwrap();
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].controller
            ),
            ("StatefulSet", "web", None)
        );
    }

    fn rev(name: &str, n: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            revision: n,
            ..Default::default()
        }
    }

    fn pod(name: &str, revision: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": "web", CONTROLLER_REVISION_HASH_LABEL: revision}},
                "spec": {"containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn status_counts_and_completes_rollouts() {
        let s = set(json!({}));
        let template = s.spec.as_ref().unwrap().template.clone();
        let r = Revisions {
            current: rev("web-old", 1),
            update: rev("web-new", 2),
            current_template: template.clone(),
            update_template: template,
            collision_count: 0,
        };
        let now = jiff::Timestamp::now();
        let pods = vec![
            pod("web-0", "web-old", true),
            pod("web-1", "web-old", true),
            pod("web-2", "web-new", false),
        ];
        let st = calculate_status(&s, &r, &pods, now);
        assert_eq!(
            (st.replicas, st.ready_replicas, st.available_replicas),
            (3, Some(2), Some(2))
        );
        assert_eq!(
            (st.current_replicas, st.updated_replicas),
            (Some(2), Some(1))
        );
        assert_eq!(
            (
                st.current_revision.as_deref(),
                st.update_revision.as_deref()
            ),
            (Some("web-old"), Some("web-new"))
        );
        assert_eq!(st.observed_generation, Some(2));
        let pods = vec![
            pod("web-0", "web-new", true),
            pod("web-1", "web-new", true),
            pod("web-2", "web-new", true),
        ];
        let st = calculate_status(&s, &r, &pods, now);
        assert_eq!(
            (st.current_replicas, st.updated_replicas),
            (Some(3), Some(3))
        );
        assert_eq!(st.current_revision.as_deref(), Some("web-new"));
    }

    #[test]
    fn partition_keeps_low_ordinals_at_the_current_revision() {
        let s = set(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
        );
        let mut old_template = s.spec.as_ref().unwrap().template.clone();
        old_template.spec.as_mut().unwrap().containers[0].image = Some("nginx:old".into());
        let r = Revisions {
            current: rev("web-old", 1),
            update: rev("web-new", 2),
            current_template: old_template,
            update_template: s.spec.as_ref().unwrap().template.clone(),
            collision_count: 0,
        };
        let image = |p: &Pod| {
            p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap()
        };
        let p1 = new_versioned_pod(&s, &r, 1);
        assert_eq!(
            (pod_revision(&p1), image(&p1).as_str()),
            (Some("web-old"), "nginx:old")
        );
        let p2 = new_versioned_pod(&s, &r, 2);
        assert_eq!(
            (pod_revision(&p2), image(&p2).as_str()),
            (Some("web-new"), "nginx")
        );
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }
}
