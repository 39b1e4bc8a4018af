//! The Deployment controller (↔ pkg/controller/deployment): one ReplicaSet
//! per pod template, named `<deployment>-<pod-template-hash>`, rolled out
//! with the RollingUpdate (maxSurge/maxUnavailable) or Recreate strategy,
//! proportional scaling of a rollout in progress, revision annotations and
//! history cleanup, pausing, and the Available/Progressing conditions that
//! `kubectl rollout status` reads.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use skiff_runtime::events::EventType;

use crate::ctrlutil::{
    self, Cache, Change, Error, ObjKey, Result, WorkQueue, controller_of, controller_ref, informer,
    is_not_found,
};

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";
const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;

// Condition reasons (↔ pkg/controller/deployment/util).
pub const NEW_RS_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const PAUSED_REASON: &str = "DeploymentPaused";
pub const RESUMED_REASON: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
pub const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";

const WORKERS: usize = 4;
const RESYNC: Duration = Duration::from_secs(60);

struct Controller {
    ctx: crate::Context,
    deployments: Cache<Deployment>,
    replicasets: Cache<ReplicaSet>,
    pods: Cache<Pod>,
    queue: Arc<WorkQueue<ObjKey>>,
}

/// Run the Deployment controller until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let c = Arc::new(Controller {
        ctx: ctx.clone(),
        deployments: Cache::default(),
        replicasets: ctx.informers.get::<ReplicaSet>().cache(),
        pods: ctx.informers.get::<Pod>().cache(),
        queue: Arc::new(WorkQueue::default()),
    });
    let d_informer = {
        let c = c.clone();
        informer::run(
            Api::<Deployment>::all(ctx.client.clone()),
            watcher::Config::default(),
            c.deployments.clone(),
            move |ch| match ch {
                Change::Apply { new, .. } => c.queue.add(ObjKey::of(new.as_ref())),
                Change::Delete(old) => c.queue.add(ObjKey::of(old.as_ref())),
            },
        )
    };
    let rs_informer = {
        let c = c.clone();
        ctx.informers
            .get::<ReplicaSet>()
            .run(move |ch| c.on_replicaset(ch))
    };
    let pod_informer = {
        let c = c.clone();
        ctx.informers.get::<Pod>().run(move |ch| c.on_pod(ch))
    };
    let workers = {
        let c = c.clone();
        async move {
            c.deployments.wait_synced().await;
            c.replicasets.wait_synced().await;
            c.pods.wait_synced().await;
            let cc = c.clone();
            ctrlutil::run_workers("deployment", c.queue.clone(), WORKERS, move |key| {
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
                for key in c.deployments.keys() {
                    c.queue.add(key);
                }
            }
        }
    };
    tracing::info!(controller = "deployment", "starting");
    tokio::join!(d_informer, rs_informer, pod_informer, workers, resync);
}

impl Controller {
    fn resolve(&self, namespace: &str, meta: &ObjectMeta) -> Option<ObjKey> {
        let r = controller_of(meta)?;
        if r.kind != "Deployment" || r.api_version != "apps/v1" {
            return None;
        }
        let key = ObjKey::new(namespace, &r.name);
        let d = self.deployments.get(&key)?;
        (d.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(key)
    }

    fn enqueue_matching(&self, rs: &ReplicaSet) {
        let ns = rs.namespace().unwrap_or_default();
        for d in self.deployments.list_namespace(&ns) {
            if !ctrlutil::selector_is_empty(&spec_selector(&d))
                && ctrlutil::selector_matches(&spec_selector(&d), rs.metadata.labels.as_ref())
            {
                self.queue.add(ObjKey::of(d.as_ref()));
            }
        }
    }

    fn on_replicaset(&self, ch: Change<ReplicaSet>) {
        match ch {
            Change::Apply { old: None, new } => {
                let ns = new.namespace().unwrap_or_default();
                match self.resolve(&ns, &new.metadata) {
                    Some(key) => self.queue.add(key),
                    None if controller_of(&new.metadata).is_none() => self.enqueue_matching(&new),
                    None => {}
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
                let cur = controller_of(&new.metadata).map(|r| r.uid.clone());
                let prev = controller_of(&old.metadata).map(|r| r.uid.clone());
                if cur != prev
                    && let Some(key) = self.resolve(&ns, &old.metadata)
                {
                    self.queue.add(key);
                }
                match self.resolve(&ns, &new.metadata) {
                    Some(key) => self.queue.add(key),
                    None if cur.is_none()
                        && (old.metadata.labels != new.metadata.labels || cur != prev) =>
                    {
                        self.enqueue_matching(&new)
                    }
                    None => {}
                }
            }
            Change::Delete(rs) => {
                let ns = rs.namespace().unwrap_or_default();
                if let Some(key) = self.resolve(&ns, &rs.metadata) {
                    self.queue.add(key);
                }
            }
        }
    }

    /// Recreate waits for old pods to be gone: their deletion wakes the deployment.
    fn on_pod(&self, ch: Change<Pod>) {
        let Change::Delete(pod) = ch else { return };
        let ns = pod.namespace().unwrap_or_default();
        let Some(r) = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else {
            return;
        };
        let Some(rs) = self.replicasets.get(&ObjKey::new(&ns, &r.name)) else {
            return;
        };
        if let Some(key) = self.resolve(&ns, &rs.metadata)
            && let Some(d) = self.deployments.get(&key)
            && strategy_type(&d) == "Recreate"
        {
            self.queue.add(key);
        }
    }

    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn event(&self, d: &Deployment, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .record(&skiff_runtime::events::reference(d), kind, reason, message)
            .await;
    }

    async fn sync(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(cached) = self.deployments.get(key) else {
            return Ok(None);
        };
        let mut d = (*cached).clone();
        if ctrlutil::selector_is_empty(&spec_selector(&d)) {
            self.event(
                &d,
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
            let observed = d
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if observed < d.metadata.generation.unwrap_or(0) {
                let mut status = d.status.clone().unwrap_or_default();
                status.observed_generation = d.metadata.generation;
                self.update_status(&mut d, status).await?;
            }
            return Ok(None);
        }
        let mut rs_list = self.claim_replicasets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self
                .get_all_rs_and_sync_revision(&mut d, &mut rs_list, false)
                .await?;
            self.sync_deployment_status(&mut d, &all_of(&new_rs, &old), new_rs.as_ref())
                .await?;
            return Ok(None);
        }
        self.check_paused_conditions(&mut d).await?;
        if is_paused(&d) {
            self.sync_scale(&mut d, &mut rs_list).await?;
            return Ok(None);
        }
        if self.is_scaling_event(&mut d, &mut rs_list).await? {
            self.sync_scale(&mut d, &mut rs_list).await?;
            return Ok(None);
        }
        if strategy_type(&d) == "Recreate" {
            self.rollout_recreate(&mut d, &mut rs_list).await
        } else {
            self.rollout_rolling(&mut d, &mut rs_list).await
        }
    }

    /// Adopt orphan ReplicaSets matching the selector, release owned ones
    /// that stopped matching (↔ ReplicaSetControllerRefManager.ClaimReplicaSets).
    async fn claim_replicasets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let selector = spec_selector(d);
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        for rs in self.replicasets.list_namespace(&ns) {
            let matches = ctrlutil::selector_matches(&selector, rs.metadata.labels.as_ref());
            match controller_of(&rs.metadata) {
                Some(r) if r.uid != uid => {}
                Some(_) => {
                    if matches {
                        claimed.push((*rs).clone());
                    } else if !deleting {
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": rs.metadata.uid}});
                        match self
                            .rs_api(&ns)
                            .patch(
                                &rs.name_any(),
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
                }
                None => {
                    if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let allowed = match can_adopt {
                        Some(a) => a,
                        None => {
                            let a = match self.d_api(&ns).get(&d.name_any()).await {
                                Ok(fresh) => {
                                    fresh.metadata.uid == d.metadata.uid
                                        && fresh.metadata.deletion_timestamp.is_none()
                                }
                                Err(e) if is_not_found(&e) => false,
                                Err(e) => return Err(e.into()),
                            };
                            can_adopt = Some(a);
                            a
                        }
                    };
                    if !allowed {
                        continue;
                    }
                    let patch = json!({"metadata": {"ownerReferences": [controller_ref(d)], "uid": rs.metadata.uid}});
                    match self
                        .rs_api(&ns)
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(&patch),
                        )
                        .await
                    {
                        Ok(adopted) => claimed.push(adopted),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(claimed)
    }

    async fn update_status(&self, d: &mut Deployment, status: DeploymentStatus) -> Result<()> {
        let mut obj = d.clone();
        obj.status = Some(status);
        *d = self
            .d_api(&d.namespace().unwrap_or_default())
            .replace_status(&d.name_any(), &PostParams::default(), &obj)
            .await?;
        Ok(())
    }

    /// Write `d` (annotations and status) through the status subresource.
    async fn write_status(&self, d: &mut Deployment) -> Result<()> {
        let status = d.status.clone().unwrap_or_default();
        self.update_status(d, status).await
    }

    /// The new ReplicaSet (created if asked and missing) and the old ones,
    /// with the revision annotations brought up to date (↔ getAllReplicaSetsAndSyncRevision).
    async fn get_all_rs_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let existing = find_new_replicaset(d, rs_list).cloned();
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|rs| {
                existing
                    .as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        let new_rs = self.get_new_replicaset(d, existing, &old, create).await?;
        if let Some(n) = &new_rs {
            put(rs_list, n);
        }
        Ok((new_rs, old))
    }

    async fn get_new_replicaset(
        &self,
        d: &mut Deployment,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let new_revision = max_revision(old) + 1;
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let annotations_updated =
                set_new_replicaset_annotations(d, &mut copy, new_revision, true);
            let min_ready_changed = rs_min_ready(&copy) != d_min_ready(d);
            if annotations_updated || min_ready_changed {
                if let Some(spec) = copy.spec.as_mut() {
                    spec.min_ready_seconds = Some(d_min_ready(d));
                }
                let updated = self
                    .rs_api(&ns)
                    .replace(&copy.name_any(), &PostParams::default(), &copy)
                    .await?;
                return Ok(Some(updated));
            }
            let rev = copy
                .annotations()
                .get(REVISION_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let mut needs_update = set_deployment_revision(d, &rev);
            let has_progressing = condition(d.status.as_ref(), "Progressing").is_some();
            if has_progress_deadline(d) && !has_progressing {
                let msg = format!("Found new replica set \"{}\"", copy.name_any());
                set_condition(
                    status_mut(d),
                    new_condition("Progressing", "True", FOUND_NEW_RS_REASON, &msg),
                );
                needs_update = true;
            }
            if needs_update {
                self.write_status(d).await?;
            }
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }
        // Create the new ReplicaSet.
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = compute_hash(&template, collision_count);
        let tmeta = template.metadata.get_or_insert_with(ObjectMeta::default);
        tmeta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector = spec_selector(d);
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{}", d.name_any(), hash)),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref(d)]),
                labels: tmeta.labels.clone(),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(d_min_ready(d)),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all: Vec<ReplicaSet> = old.to_vec();
        all.push(new_rs.clone());
        let new_replicas = new_rs_new_replicas(d, &all, &new_rs)?;
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(new_replicas);
        }
        set_new_replicaset_annotations(d, &mut new_rs, new_revision, false);
        let rs_name = new_rs.name_any();
        let mut already_exists = false;
        let created = match self
            .rs_api(&ns)
            .create(&PostParams::default(), &new_rs)
            .await
        {
            Ok(rs) => rs,
            Err(e) if ctrlutil::is_already_exists(&e) => {
                already_exists = true;
                let current = match self.rs_api(&ns).get(&rs_name).await {
                    Ok(rs) => rs,
                    Err(e) => return Err(e.into()),
                };
                let ours = controller_of(&current.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = d
                    .spec
                    .as_ref()
                    .zip(current.spec.as_ref().and_then(|s| s.template.as_ref()))
                    .is_some_and(|(ds, t)| equal_ignore_hash(&ds.template, t));
                if ours && same {
                    current
                } else {
                    // A hash collision: bump collisionCount and try again.
                    let status = status_mut(d);
                    status.collision_count =
                        Some(status.collision_count.unwrap_or(0).saturating_add(1));
                    self.write_status(d).await?;
                    tracing::info!(deployment = %d.name_any(), "hash collision for the new ReplicaSet; bumped collisionCount");
                    return Err(Error::Other(format!(
                        "replica set {rs_name} already exists with another template"
                    )));
                }
            }
            Err(e) if ctrlutil::is_namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{rs_name}\": {e}");
                if has_progress_deadline(d) {
                    set_condition(
                        status_mut(d),
                        new_condition("Progressing", "False", FAILED_RS_CREATE_REASON, &msg),
                    );
                    let _ = self.write_status(d).await;
                }
                self.event(d, EventType::Warning, FAILED_RS_CREATE_REASON, &msg)
                    .await;
                return Err(e.into());
            }
        };
        if !already_exists && new_replicas > 0 {
            let msg = format!(
                "Scaled up replica set {} from 0 to {new_replicas}",
                created.name_any()
            );
            self.event(d, EventType::Normal, "ScalingReplicaSet", &msg)
                .await;
        }
        let mut needs_update = set_deployment_revision(d, &new_revision.to_string());
        if !already_exists && has_progress_deadline(d) {
            let msg = format!("Created new replica set \"{}\"", created.name_any());
            set_condition(
                status_mut(d),
                new_condition("Progressing", "True", NEW_RS_REASON, &msg),
            );
            needs_update = true;
        }
        if needs_update {
            self.write_status(d).await?;
        }
        Ok(Some(created))
    }

    /// Scale `rs` to `new_scale`, also refreshing its desired/max annotations;
    /// records ScalingReplicaSet. Returns whether anything was written.
    async fn scale_replicaset(
        &self,
        rs: &mut ReplicaSet,
        new_scale: i32,
        d: &Deployment,
        operation: &str,
    ) -> Result<bool> {
        let old_scale = rs_replicas(rs);
        let size_changed = old_scale != new_scale;
        let desired = d_replicas(d);
        let max = desired + max_surge(d)?;
        let annotations_changed = replicas_annotations_need_update(rs, desired, max);
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        let mut copy = rs.clone();
        if let Some(spec) = copy.spec.as_mut() {
            spec.replicas = Some(new_scale);
        }
        set_replicas_annotations(&mut copy, desired, max);
        let ns = rs.namespace().unwrap_or_default();
        *rs = self
            .rs_api(&ns)
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await?;
        if size_changed {
            let msg = format!(
                "Scaled {operation} replica set {} from {old_scale} to {new_scale}",
                rs.name_any()
            );
            self.event(d, EventType::Normal, "ScalingReplicaSet", &msg)
                .await;
        }
        Ok(true)
    }

    async fn scale_and_record(
        &self,
        rs: &mut ReplicaSet,
        new_scale: i32,
        d: &Deployment,
    ) -> Result<bool> {
        let current = rs_replicas(rs);
        if current == new_scale {
            return Ok(false);
        }
        let op = if current < new_scale { "up" } else { "down" };
        self.scale_replicaset(rs, new_scale, d, op).await
    }

    /// Whether the deployment's replicas changed since its ReplicaSets were annotated.
    async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool> {
        let (new_rs, old) = self.get_all_rs_and_sync_revision(d, rs_list, false).await?;
        let desired = d_replicas(d);
        for rs in all_of(&new_rs, &old)
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
        {
            if let Some(v) = annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION)
                && v != desired
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Scale without rolling out (↔ sync): scaling events and paused deployments.
    async fn sync_scale(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<()> {
        let (mut new_rs, mut old) = self.get_all_rs_and_sync_revision(d, rs_list, false).await?;
        self.scale(d, &mut new_rs, &mut old).await?;
        if is_paused(d) {
            self.cleanup(d, &old).await?;
        }
        let all = all_of(&new_rs, &old);
        self.sync_deployment_status(d, &all, new_rs.as_ref()).await
    }

    /// Proportional scaling (↔ DeploymentController.scale).
    async fn scale(
        &self,
        d: &Deployment,
        new_rs: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<()> {
        let desired = d_replicas(d);
        // Only one active ReplicaSet (or none): it gets everything.
        if let Some(target) = find_active_or_latest(new_rs.as_ref(), old) {
            let uid = target.metadata.uid.clone();
            if rs_replicas(&target) == desired {
                return Ok(());
            }
            if let Some(n) = new_rs.as_mut().filter(|n| n.metadata.uid == uid) {
                self.scale_and_record(n, desired, d).await?;
            } else if let Some(o) = old.iter_mut().find(|o| o.metadata.uid == uid) {
                self.scale_and_record(o, desired, d).await?;
            }
            return Ok(());
        }
        // The new ReplicaSet is saturated: old ones are scaled down fully.
        if new_rs.as_ref().is_some_and(|n| is_saturated(d, n)) {
            for o in old.iter_mut().filter(|o| rs_replicas(o) > 0) {
                self.scale_and_record(o, 0, d).await?;
            }
            return Ok(());
        }
        if strategy_type(d) != "RollingUpdate" {
            return Ok(());
        }
        // Spread the difference over the active ReplicaSets by their size.
        let mut all: Vec<&mut ReplicaSet> = new_rs
            .iter_mut()
            .chain(old.iter_mut())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let (sizes, operation) = proportional_sizes(d, &mut all)?;
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale_replicaset(rs, size, d, operation).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let (new_rs, mut old) = self.get_all_rs_and_sync_revision(d, rs_list, true).await?;
        let Some(mut new_rs) = new_rs else {
            return Err(Error::Other("no new replica set".into()));
        };
        // Scale up the new ReplicaSet.
        if self.reconcile_new_replicaset(d, &mut new_rs, &old).await? {
            return self
                .sync_rollout_status(d, &all_of(&Some(new_rs.clone()), &old), Some(&new_rs))
                .await;
        }
        // Scale down old ReplicaSets.
        if self.reconcile_old_replicasets(d, &new_rs, &mut old).await? {
            return self
                .sync_rollout_status(d, &all_of(&Some(new_rs.clone()), &old), Some(&new_rs))
                .await;
        }
        if deployment_complete(d, d.status.as_ref()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all_of(&Some(new_rs.clone()), &old), Some(&new_rs))
            .await
    }

    async fn reconcile_new_replicaset(
        &self,
        d: &Deployment,
        new_rs: &mut ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<bool> {
        let desired = d_replicas(d);
        let current = rs_replicas(new_rs);
        if current == desired {
            return Ok(false);
        }
        if current > desired {
            return self.scale_replicaset(new_rs, desired, d, "down").await;
        }
        let mut all: Vec<ReplicaSet> = old.to_vec();
        all.push(new_rs.clone());
        let count = new_rs_new_replicas(d, &all, new_rs)?;
        self.scale_and_record(new_rs, count, d).await
    }

    async fn reconcile_old_replicasets(
        &self,
        d: &Deployment,
        new_rs: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<bool> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + rs_replicas(new_rs);
        let min_available = d_replicas(d) - max_unavailable(d)?;
        let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Clean up unhealthy replicas first: they add nothing to availability.
        old.sort_by(by_creation);
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let replicas = rs_replicas(rs);
            if replicas == 0 || replicas == rs_available(rs) {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(replicas - rs_available(rs));
            self.scale_and_record(rs, replicas - n, d).await?;
            cleaned += n;
        }
        // Then scale down healthy ones, keeping minAvailable.
        let available: i32 = old.iter().map(rs_available).sum::<i32>() + rs_available(new_rs);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let replicas = rs_replicas(rs);
                if replicas == 0 {
                    continue;
                }
                let n = replicas.min(total - scaled);
                self.scale_and_record(rs, replicas - n, d).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let (mut new_rs, mut old) = self.get_all_rs_and_sync_revision(d, rs_list, false).await?;
        // Scale down old ReplicaSets first.
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            if self.scale_replicaset(rs, 0, d, "down").await? {
                scaled_down = true;
            }
        }
        if scaled_down {
            return self
                .sync_rollout_status(d, &all_of(&new_rs, &old), new_rs.as_ref())
                .await;
        }
        // Wait for old pods to be gone.
        if self.old_pods_running(new_rs.as_ref(), &old) {
            return self
                .sync_rollout_status(d, &all_of(&new_rs, &old), new_rs.as_ref())
                .await;
        }
        if new_rs.is_none() {
            let (n, o) = self.get_all_rs_and_sync_revision(d, rs_list, true).await?;
            new_rs = n;
            old = o;
        }
        if let Some(n) = new_rs.as_mut() {
            self.scale_and_record(n, d_replicas(d), d).await?;
        }
        if deployment_complete(d, d.status.as_ref()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all_of(&new_rs, &old), new_rs.as_ref())
            .await
    }

    fn old_pods_running(&self, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        if old.iter().map(rs_status_replicas).sum::<i32>() > 0 {
            return true;
        }
        let old_uids: Vec<&str> = old
            .iter()
            .filter(|rs| new_rs.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        let ns = old
            .first()
            .and_then(|rs| rs.namespace())
            .unwrap_or_default();
        self.pods.list_namespace(&ns).iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
    }

    /// Delete old ReplicaSets beyond revisionHistoryLimit (↔ cleanupDeployment).
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .filter(|l| *l != i32::MAX)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit.max(0));
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| by_creation(a, b))
        });
        for rs in cleanable
            .into_iter()
            .take(usize::try_from(diff).unwrap_or(0))
        {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            tracing::debug!(deployment = %d.name_any(), replicaset = %rs.name_any(), "trying to clean up replica set");
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self
                .rs_api(&rs.namespace().unwrap_or_default())
                .delete(&rs.name_any(), &dp)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<()> {
        if !has_progress_deadline(d) {
            return Ok(());
        }
        let cond = condition(d.status.as_ref(), "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(PAUSED_REASON));
        let paused = is_paused(d);
        if paused && !paused_cond {
            set_condition(
                status_mut(d),
                new_condition(
                    "Progressing",
                    "Unknown",
                    PAUSED_REASON,
                    "Deployment is paused",
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                status_mut(d),
                new_condition(
                    "Progressing",
                    "Unknown",
                    RESUMED_REASON,
                    "Deployment is resumed",
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status(d).await
    }

    async fn sync_deployment_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<()> {
        let status = calculate_status(d, all, new_rs)?;
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.update_status(d, status).await
    }

    /// Status with the Progressing condition (↔ syncRolloutStatus); returns
    /// when to look again for a progress deadline.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let mut status = calculate_status(d, all, new_rs)?;
        let now = jiff::Timestamp::now();
        if !has_progress_deadline(d) {
            remove_condition(&mut status, "Progressing");
        }
        let current = condition(d.status.as_ref(), "Progressing").cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON));
        if has_progress_deadline(d) && !complete_before {
            if deployment_complete(d, Some(&status)) {
                let msg = match new_rs {
                    Some(rs) => format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        rs.name_any()
                    ),
                    None => format!(
                        "Deployment \"{}\" has successfully progressed.",
                        d.name_any()
                    ),
                };
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", NEW_RS_AVAILABLE_REASON, &msg),
                );
            } else if deployment_progressing(d, &status) {
                let msg = match new_rs {
                    Some(rs) => format!("ReplicaSet \"{}\" is progressing.", rs.name_any()),
                    None => format!("Deployment \"{}\" is progressing.", d.name_any()),
                };
                let mut cond = new_condition("Progressing", "True", RS_UPDATED_REASON, &msg);
                if let Some(c) = &current {
                    if c.status == "True" {
                        cond.last_transition_time = c.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, cond);
            } else if deployment_timed_out(d, &status, now) {
                let msg = match new_rs {
                    Some(rs) => format!(
                        "ReplicaSet \"{}\" has timed out progressing.",
                        rs.name_any()
                    ),
                    None => format!("Deployment \"{}\" has timed out progressing.", d.name_any()),
                };
                set_condition(
                    &mut status,
                    new_condition("Progressing", "False", TIMED_OUT_REASON, &msg),
                );
            }
        }
        // No ReplicaFailure aggregation from ReplicaSets beyond removing stale ones.
        match all.iter().find_map(rs_failure) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        let requeue = requeue_for_deadline(d, &status, now);
        if d.status.as_ref() != Some(&status) {
            self.update_status(d, status).await?;
        }
        Ok(requeue)
    }
}

// ---- pure helpers (↔ pkg/controller/deployment/util) ----

fn spec_selector(d: &Deployment) -> LabelSelector {
    d.spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default()
}

fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

pub fn d_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn d_min_ready(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn rs_min_ready(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn rs_failure(rs: &ReplicaSet) -> Option<DeploymentCondition> {
    let c = rs
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some(DeploymentCondition {
        type_: "ReplicaFailure".into(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_transition_time: c.last_transition_time.clone(),
        last_update_time: c.last_transition_time.clone(),
    })
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_revision(rss: &[ReplicaSet]) -> i64 {
    rss.iter().map(revision).max().unwrap_or(0)
}

fn all_of(new_rs: &Option<ReplicaSet>, old: &[ReplicaSet]) -> Vec<ReplicaSet> {
    let mut all = old.to_vec();
    if let Some(n) = new_rs {
        all.push(n.clone());
    }
    all
}

fn put(list: &mut Vec<ReplicaSet>, rs: &ReplicaSet) {
    match list.iter_mut().find(|r| r.metadata.uid == rs.metadata.uid) {
        Some(slot) => *slot = rs.clone(),
        None => list.push(rs.clone()),
    }
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ta.cmp(&tb)
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Larger first; among equals, newer first (↔ ReplicaSetsBySizeNewer).
fn size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Larger first; among equals, older first (↔ ReplicaSetsBySizeOlder).
fn size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// FNV-1a (32 bit) of the template, encoded with Kubernetes' safe alphabet
/// (↔ controller.ComputeHash + rand.SafeEncodeString).
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    write(&serde_json::to_vec(&normalized(template)).unwrap_or_default());
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::from_ne_bytes(c.to_ne_bytes()).to_le_bytes());
        write(&bytes);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// A template as JSON with empty maps/lists and nulls dropped (Kubernetes'
/// semantic equality treats nil and empty alike).
fn normalized(template: &PodTemplateSpec) -> Value {
    fn clean(v: &mut Value) -> bool {
        match v {
            Value::Null => false,
            Value::Object(m) => {
                m.retain(|_, x| clean(x));
                !m.is_empty()
            }
            Value::Array(a) => {
                for x in a.iter_mut() {
                    clean(x);
                }
                !a.is_empty()
            }
            _ => true,
        }
    }
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    clean(&mut v);
    v
}

/// Whether two templates are equal once the pod-template-hash label is ignored (↔ EqualIgnoreHash).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        normalized(&t)
    };
    strip(a) == strip(b)
}

/// The oldest ReplicaSet whose template is the deployment's (↔ FindNewReplicaSet).
fn find_new_replicaset<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.as_ref()?.template;
    let mut sorted: Vec<&ReplicaSet> = rss.iter().collect();
    sorted.sort_by(|a, b| by_creation(a, b));
    sorted.into_iter().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, template))
    })
}

/// An int or a percentage of `total`, rounded up or down (↔ GetScaledValueFromIntOrPercent).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Other(format!("invalid value for IntOrString: invalid value {s:?}: must be an integer or a percentage")))?;
            let product = pct * i64::from(total);
            let value = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// maxSurge and maxUnavailable for `desired` replicas; both zero means one unavailable (↔ ResolveFenceposts).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32)> {
    let default = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&default), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&default), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn rolling_params(d: &Deployment) -> (Option<&IntOrString>, Option<&IntOrString>) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    (
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
    )
}

pub fn max_surge(d: &Deployment) -> Result<i32> {
    if strategy_type(d) != "RollingUpdate" {
        return Ok(0);
    }
    let (s, u) = rolling_params(d);
    Ok(resolve_fenceposts(s, u, d_replicas(d))?.0)
}

pub fn max_unavailable(d: &Deployment) -> Result<i32> {
    let desired = d_replicas(d);
    if strategy_type(d) != "RollingUpdate" || desired == 0 {
        return Ok(0);
    }
    let (s, u) = rolling_params(d);
    Ok(resolve_fenceposts(s, u, desired)?.1.min(desired))
}

/// How many replicas the new ReplicaSet should have now (↔ NewRSNewReplicas).
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> Result<i32> {
    let desired = d_replicas(d);
    if strategy_type(d) != "RollingUpdate" {
        return Ok(desired);
    }
    let surge = max_surge(d)?;
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = desired + surge;
    if current >= max_total {
        return Ok(rs_replicas(new_rs));
    }
    let scale_up = (max_total - current).min(desired - rs_replicas(new_rs));
    Ok(rs_replicas(new_rs) + scale_up)
}

fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let desired = d_replicas(d);
    annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION) == Some(desired)
        && rs_replicas(rs) == desired
        && rs_available(rs) == desired
}

/// The only active ReplicaSet, or the newest if none is active (↔ FindActiveOrLatest).
fn find_active_or_latest(new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Option<ReplicaSet> {
    if new_rs.is_none() && old.is_empty() {
        return None;
    }
    let mut sorted: Vec<&ReplicaSet> = old.iter().collect();
    sorted.sort_by(|a, b| by_creation(b, a));
    let active: Vec<&ReplicaSet> = sorted
        .iter()
        .copied()
        .chain(new_rs)
        .filter(|rs| rs_replicas(rs) > 0)
        .collect();
    match active.len() {
        0 => new_rs.or(sorted.first().copied()).cloned(),
        1 => Some(active[0].clone()),
        _ => None,
    }
}

/// The sizes active ReplicaSets get when a deployment in the middle of a
/// rollout is scaled: the difference is spread by their share of the
/// previous size, leftovers to the largest (↔ the RollingUpdate branch of
/// DeploymentController.scale). Sorts `all` in the order the sizes follow.
fn proportional_sizes(
    d: &Deployment,
    all: &mut [&mut ReplicaSet],
) -> Result<(Vec<i32>, &'static str)> {
    let desired = d_replicas(d);
    let all_replicas: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let allowed = if desired > 0 {
        desired + max_surge(d)?
    } else {
        0
    };
    let to_add = allowed - all_replicas;
    let operation = match to_add.cmp(&0) {
        Ordering::Greater => {
            all.sort_by(|a, b| size_newer(a, b));
            "up"
        }
        Ordering::Less => {
            all.sort_by(|a, b| size_older(a, b));
            "down"
        }
        Ordering::Equal => "",
    };
    let mut added = 0;
    let mut sizes = Vec::with_capacity(all.len());
    for rs in all.iter() {
        if to_add != 0 {
            let p = proportion(rs, d, to_add, added)?;
            sizes.push(rs_replicas(rs) + p);
            added += p;
        } else {
            sizes.push(rs_replicas(rs));
        }
    }
    if let Some(first) = sizes.first_mut()
        && to_add != 0
    {
        *first = (*first + to_add - added).max(0);
    }
    Ok((sizes, operation))
}

/// How many replicas `rs` gets of a scaling by `to_add` (↔ GetProportion).
fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> Result<i32> {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return Ok(0);
    }
    let fraction = replicaset_fraction(rs, d)?;
    let allowed = to_add - added;
    Ok(if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    })
}

fn replicaset_fraction(rs: &ReplicaSet, d: &Deployment) -> Result<i32> {
    let desired = d_replicas(d);
    if desired == 0 {
        return Ok(-rs_replicas(rs));
    }
    let deployment_replicas = desired + max_surge(d)?;
    let annotated = annotation_i32(rs, MAX_REPLICAS_ANNOTATION)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated <= 0 {
        return Ok(0);
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    Ok(size.round() as i32 - rs_replicas(rs))
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.as_ref();
    a.and_then(|a| a.get(DESIRED_REPLICAS_ANNOTATION)) != Some(&desired.to_string())
        || a.and_then(|a| a.get(MAX_REPLICAS_ANNOTATION)) != Some(&max.to_string())
}

fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [
        (DESIRED_REPLICAS_ANNOTATION, desired),
        (MAX_REPLICAS_ANNOTATION, max),
    ] {
        if a.get(k) != Some(&v.to_string()) {
            a.insert(k.into(), v.to_string());
            changed = true;
        }
    }
    changed
}

fn skip_copy_annotation(key: &str) -> bool {
    [
        LAST_APPLIED_ANNOTATION,
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        ROLLBACK_TO_ANNOTATION,
    ]
    .contains(&key)
}

/// Copy the deployment's annotations, bump the revision (keeping history)
/// and, for a new ReplicaSet, set the replicas annotations (↔ SetNewReplicaSetAnnotations).
fn set_new_replicaset_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old_revision = annotations.get(REVISION_ANNOTATION).cloned();
    let old_rev_int = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return changed,
        },
    };
    if old_rev_int < new_revision {
        annotations.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        // Rolling back to this ReplicaSet: keep its earlier revisions.
        if let Some(old) = old_revision.filter(|s| !s.is_empty()) {
            let history = annotations
                .get(REVISION_HISTORY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY_ANNOTATION.into(), old);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_LENGTH_IN_CHARS && start < revisions.len() {
                    total -= revisions[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_LENGTH_IN_CHARS {
                    revisions = revisions.split_off(start);
                    revisions.push(&old);
                    let joined = revisions.join(",");
                    annotations.insert(REVISION_HISTORY_ANNOTATION.into(), joined);
                }
            }
        }
    }
    if !exists {
        let desired = d_replicas(d);
        let max = desired + max_surge(d).unwrap_or(0);
        if set_replicas_annotations(rs, desired, max) {
            changed = true;
        }
    }
    changed
}

fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let a = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if a.get(REVISION_ANNOTATION).map(String::as_str) == Some(revision) {
        return false;
    }
    a.insert(REVISION_ANNOTATION.into(), revision.to_string());
    true
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|p| p != i32::MAX)
}

fn status_mut(d: &mut Deployment) -> &mut DeploymentStatus {
    d.status.get_or_insert_with(DeploymentStatus::default)
}

fn condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> DeploymentCondition {
    let now = skiff_runtime::now_time();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// ↔ SetDeploymentCondition: same status and reason is a no-op; same status keeps the transition time.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == cond.type_) {
        if current.status == cond.status && current.reason == cond.reason {
            return;
        }
        if current.status == cond.status {
            cond.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != cond.type_);
    conditions.push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

/// ↔ calculateStatus.
fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Result<DeploymentStatus> {
    let available: i32 = all.iter().map(rs_available).sum();
    let total: i32 = all.iter().map(rs_replicas).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(rs_status_replicas).sum()),
        updated_replicas: Some(new_rs.map_or(0, rs_status_replicas)),
        ready_replicas: Some(all.iter().map(rs_ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= d_replicas(d) - max_unavailable(d)? {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                MIN_AVAILABLE_REASON,
                "Deployment has minimum availability.",
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                MIN_UNAVAILABLE_REASON,
                "Deployment does not have minimum availability.",
            ),
        );
    }
    Ok(status)
}

/// Every replica updated and available, and the spec observed (↔ DeploymentComplete).
fn deployment_complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let Some(s) = status else { return false };
    let desired = d_replicas(d);
    s.updated_replicas.unwrap_or(0) == desired
        && s.replicas.unwrap_or(0) == desired
        && s.available_replicas.unwrap_or(0) == desired
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Any sign of progress since the last status (↔ DeploymentProgressing).
fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

fn progress_deadline(d: &Deployment) -> Option<jiff::SignedDuration> {
    let secs = d
        .spec
        .as_ref()?
        .progress_deadline_seconds
        .filter(|p| *p != i32::MAX)?;
    Some(jiff::SignedDuration::from_secs(i64::from(secs)))
}

/// ↔ DeploymentTimedOut.
fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(cond) = condition(Some(status), "Progressing") else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => false,
        Some(TIMED_OUT_REASON) => true,
        _ => cond
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0 + deadline < now),
    }
}

/// When to look again so ProgressDeadlineExceeded is noticed (↔ requeueStuckDeployment).
fn requeue_for_deadline(
    d: &Deployment,
    status: &DeploymentStatus,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let cond = condition(Some(status), "Progressing")?;
    if deployment_complete(d, Some(status)) || cond.reason.as_deref() == Some(TIMED_OUT_REASON) {
        return None;
    }
    let from = cond.last_update_time.as_ref()?.0;
    let after = (from + deadline).duration_since(now);
    if after < jiff::SignedDuration::from_secs(1) {
        return Some(Duration::from_secs(1));
    }
    Some(Duration::try_from(after).unwrap_or_default() + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn int(i: i32) -> IntOrString {
        IntOrString::Int(i)
    }
    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_like_kubernetes() {
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10).ok(),
            Some((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 1).ok(),
            Some((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&int(0)), Some(&pct("10%")), 5).ok(),
            Some((0, 1))
        );
        assert_eq!(
            resolve_fenceposts(Some(&int(2)), Some(&int(1)), 3).ok(),
            Some((2, 1))
        );
        assert!(scaled_value(&pct("abc"), 3, true).is_err());
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn hash_is_stable_and_depends_on_template_and_collisions() {
        let a = compute_hash(&template("nginx:1"), None);
        assert_eq!(a, compute_hash(&template("nginx:1"), None));
        assert_ne!(a, compute_hash(&template("nginx:2"), None));
        assert_ne!(a, compute_hash(&template("nginx:1"), Some(1)));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let mut with_hash = template("nginx:1");
        if let Some(l) = with_hash.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH_LABEL.into(), a.clone());
        }
        assert!(equal_ignore_hash(&with_hash, &template("nginx:1")));
        assert!(!equal_ignore_hash(&with_hash, &template("nginx:2")));
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                template: template("nginx:1"),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(name: &str, replicas: i32, available: i32, max_annotation: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                annotations: max_annotation
                    .map(|m| [(MAX_REPLICAS_ANNOTATION.to_string(), m.to_string())].into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn new_replicaset_grows_by_surge() {
        let d = deployment(10, pct("25%"), pct("25%"));
        let old = rs("old", 10, 10, None);
        let new = rs("new", 0, 0, None);
        assert_eq!(
            new_rs_new_replicas(&d, &[old.clone(), new.clone()], &new).ok(),
            Some(3)
        );
        let new = rs("new", 3, 0, None);
        assert_eq!(
            new_rs_new_replicas(&d, &[old, new.clone()], &new).ok(),
            Some(3)
        );
    }

    #[test]
    fn proportional_scaling_fractions() {
        // 10 -> 15 replicas with maxSurge 3: an RS of 6 sized for 13 gets ~ 6*18/13.
        let d = deployment(15, int(3), int(0));
        let a = rs("a", 6, 6, Some(13));
        assert_eq!(proportion(&a, &d, 5, 0).ok(), Some(2));
        assert_eq!(proportion(&a, &d, 5, 4).ok(), Some(1));
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // The Kubernetes documentation's example: 10 replicas, maxSurge 3,
        // old RS 8 and new RS 5 (both sized for 13), scaled to 15: 3 more
        // for the old one, 2 for the new one.
        let d = deployment(15, int(3), int(2));
        let mut old = rs("old", 8, 8, Some(13));
        let mut new = rs("new", 5, 0, Some(13));
        let mut all = vec![&mut new, &mut old];
        let (sizes, op) = proportional_sizes(&d, &mut all).expect("sizes");
        assert_eq!(op, "up");
        let names: Vec<String> = all
            .iter()
            .map(|r| r.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["old", "new"]);
        assert_eq!(sizes, [11, 7]);
        // Scaling down to 5 (allowed 8): the larger gives more.
        let d = deployment(5, int(3), int(2));
        let mut old = rs("old", 8, 8, Some(13));
        let mut new = rs("new", 5, 0, Some(13));
        let mut all = vec![&mut new, &mut old];
        let (sizes, op) = proportional_sizes(&d, &mut all).expect("sizes");
        assert_eq!(op, "down");
        assert_eq!(sizes.iter().sum::<i32>(), 8);
        assert_eq!(sizes, [5, 3]);
    }

    #[test]
    fn revision_history_is_kept_on_rollback() {
        let d = deployment(1, int(1), int(0));
        let mut r = rs("a", 1, 1, None);
        r.metadata.annotations = Some([(REVISION_ANNOTATION.to_string(), "1".to_string())].into());
        assert!(set_new_replicaset_annotations(&d, &mut r, 3, true));
        let a = r.metadata.annotations.unwrap_or_default();
        assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("3"));
        assert_eq!(
            a.get(REVISION_HISTORY_ANNOTATION).map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn complete_and_timed_out() {
        let mut d = deployment(2, int(1), int(0));
        if let Some(s) = d.spec.as_mut() {
            s.progress_deadline_seconds = Some(10);
        }
        let status = DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..Default::default()
        };
        assert!(deployment_complete(&d, Some(&status)));
        let mut stuck = DeploymentStatus::default();
        let mut cond = new_condition("Progressing", "True", RS_UPDATED_REASON, "x");
        cond.last_update_time = Some(Time(
            jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
        ));
        stuck.conditions = Some(vec![cond]);
        assert!(deployment_timed_out(&d, &stuck, jiff::Timestamp::now()));
        assert_eq!(
            requeue_for_deadline(&d, &stuck, jiff::Timestamp::now()),
            Some(Duration::from_secs(1))
        );
    }
}
