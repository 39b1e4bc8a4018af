//! The Job controller (↔ pkg/controller/job) with the TTL-after-finished
//! controller folded in (↔ pkg/controller/ttlafterfinished).
//!
//! A Job runs pods until `completions` succeeded (NonIndexed: any pods;
//! Indexed: one per completion index, annotated and labelled
//! `batch.kubernetes.io/job-completion-index`), at most `parallelism` at a
//! time, and fails once more than `backoffLimit` pods failed
//! (BackoffLimitExceeded; with restartPolicy OnFailure, container restarts
//! count) or `activeDeadlineSeconds` passed (DeadlineExceeded). Replacement
//! pods after failures wait an exponential backoff (10 s doubling, capped
//! at 10 min). `suspend` deletes the active pods; resuming restarts the
//! deadline clock.
//!
//! Pods are counted with the `batch.kubernetes.io/job-tracking` finalizer,
//! as Kubernetes does: a finished pod's uid is first recorded in
//! `status.uncountedTerminatedPods` (Indexed successes directly in
//! `completedIndexes`), then its finalizer is removed, then the uids move
//! into `succeeded`/`failed`. A pod deleted before finishing counts as
//! failed (podReplacementPolicy TerminatingOrFailed). On success or failure
//! the interim SuccessCriteriaMet / FailureTarget condition comes first;
//! Complete / Failed follows once no pod holds a finalizer or is
//! terminating. Pods whose Job is gone or finished lose the finalizer.
//! A finished Job with `ttlSecondsAfterFinished` is deleted (propagation
//! Background) that long after it finished.
//!
//! The API server does not yet generate a Job's selector: when
//! `spec.selector` is empty the controller tries to set it (and the
//! template labels) with an update, and otherwise works with the generated
//! selector `batch.kubernetes.io/controller-uid=<uid>` in memory; its pods
//! always carry the controller-uid and job-name labels.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use serde_json::json;
use skiff_runtime::events::EventType;

use crate::ctrlutil::{
    self, Cache, Change, ObjKey, Result, WorkQueue, controller_of, is_not_found,
};
use crate::workload::{self, Expectations, owner_key};

pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// spec.managedBy of Jobs this controller manages (absent means this one too).
pub const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";

pub const REASON_BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
pub const REASON_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
pub const REASON_COMPLETIONS_REACHED: &str = "CompletionsReached";

const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
const WORKERS: usize = 4;
const RESYNC: Duration = Duration::from_secs(60);

/// A work item: a Job to sync, or a pod holding our finalizer whose Job
/// may be gone or finished.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Item {
    Job(ObjKey),
    Orphan(ObjKey),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Job(k) => write!(f, "job {k}"),
            Item::Orphan(k) => write!(f, "pod {k}"),
        }
    }
}

/// Failures since the last success, and when the last one was seen.
#[derive(Clone, Copy, Debug)]
struct BackoffRecord {
    failures: u32,
    last: tokio::time::Instant,
}

struct Controller {
    ctx: crate::Context,
    jobs: Cache<Job>,
    pods: Cache<Pod>,
    queue: Arc<WorkQueue<Item>>,
    expectations: Expectations,
    /// Per Job, pod uids whose finalizer removal the pod cache has not shown yet.
    finalizer_expectations: Mutex<HashMap<ObjKey, HashSet<String>>>,
    backoff: Mutex<HashMap<ObjKey, BackoffRecord>>,
    /// Jobs whose generated selector the API server refused to store.
    selector_refused: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run the Job controller until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let c = Arc::new(Controller {
        ctx: ctx.clone(),
        jobs: ctx.informers.get::<Job>().cache(),
        pods: ctx.informers.get::<Pod>().cache(),
        queue: Arc::new(WorkQueue::default()),
        expectations: Expectations::default(),
        finalizer_expectations: Mutex::default(),
        backoff: Mutex::default(),
        selector_refused: Mutex::default(),
    });
    let job_informer = {
        let c = c.clone();
        ctx.informers.get::<Job>().run(move |ch| c.on_job(ch))
    };
    let pod_informer = {
        let c = c.clone();
        ctx.informers.get::<Pod>().run(move |ch| c.on_pod(ch))
    };
    let workers = {
        let c = c.clone();
        async move {
            c.jobs.wait_synced().await;
            c.pods.wait_synced().await;
            // Pods that kept a finalizer while no controller ran.
            for pod in c.pods.list() {
                if has_finalizer(&pod) && c.owner_of(&pod).is_none() {
                    c.queue.add(Item::Orphan(ObjKey::of(pod.as_ref())));
                }
            }
            let cc = c.clone();
            ctrlutil::run_workers("job", c.queue.clone(), WORKERS, move |item| {
                let c = cc.clone();
                async move {
                    match item {
                        Item::Job(key) => c.sync(&key).await,
                        Item::Orphan(key) => c.sync_orphan(&key).await,
                    }
                }
            })
            .await
        }
    };
    let resync = {
        let c = c.clone();
        async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                for key in c.jobs.keys() {
                    c.queue.add(Item::Job(key));
                }
            }
        }
    };
    tracing::info!(controller = "job", "starting");
    tokio::join!(job_informer, pod_informer, workers, resync);
}

impl Controller {
    fn on_job(&self, ch: Change<Job>) {
        match ch {
            Change::Apply { new, .. } => self.queue.add(Item::Job(ObjKey::of(new.as_ref()))),
            Change::Delete(old) => {
                let key = ObjKey::of(old.as_ref());
                self.expectations.forget(&key);
                lock(&self.finalizer_expectations).remove(&key);
                lock(&self.backoff).remove(&key);
                let uid = old.metadata.uid.clone().unwrap_or_default();
                lock(&self.selector_refused).remove(&uid);
                for pod in self.pods.list_namespace(&key.namespace) {
                    if has_finalizer(&pod)
                        && controller_of(&pod.metadata).is_some_and(|r| r.uid == uid)
                    {
                        self.queue.add(Item::Orphan(ObjKey::of(pod.as_ref())));
                    }
                }
            }
        }
    }

    /// The Job `pod` is controlled by, if we know it (same uid).
    fn owner_of(&self, pod: &Pod) -> Option<ObjKey> {
        let ns = pod.namespace().unwrap_or_default();
        let r = controller_of(&pod.metadata)?;
        let key = owner_key::<Job>(&ns, r)?;
        let job = self.jobs.get(&key)?;
        (job.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(key)
    }

    fn finalizer_removal_observed(&self, key: &ObjKey, uid: &str) {
        if let Some(set) = lock(&self.finalizer_expectations).get_mut(key) {
            set.remove(uid);
        }
    }

    fn on_pod(&self, ch: Change<Pod>) {
        let (old, new, gone) = match ch {
            Change::Apply { old, new } => (old, new, false),
            Change::Delete(pod) => (None, pod, true),
        };
        let uid = new.metadata.uid.clone().unwrap_or_default();
        match self.owner_of(&new) {
            Some(key) => {
                if gone || new.metadata.deletion_timestamp.is_some() {
                    self.expectations
                        .deletion_observed(&key, &ObjKey::of(new.as_ref()));
                } else if old.is_none() {
                    self.expectations.creation_observed(&key);
                }
                if gone || !has_finalizer(&new) {
                    self.finalizer_removal_observed(&key, &uid);
                }
                self.queue.add(Item::Job(key));
            }
            None => {
                if !gone
                    && has_finalizer(&new)
                    && controller_of(&new.metadata).is_none_or(|r| r.kind == "Job")
                {
                    self.queue.add(Item::Orphan(ObjKey::of(new.as_ref())));
                }
            }
        }
        if let Some(old) = old
            && controller_of(&old.metadata).map(|r| &r.uid)
                != controller_of(&new.metadata).map(|r| &r.uid)
            && let Some(key) = self.owner_of(&old)
        {
            self.queue.add(Item::Job(key));
        }
    }

    fn job_api(&self, ns: &str) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn pod_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn event(&self, job: &Job, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .record(
                &skiff_runtime::events::reference(job),
                kind,
                reason,
                message,
            )
            .await;
    }

    /// Remove our finalizer from one pod. Ok(false) when the pod is gone.
    async fn remove_finalizer(&self, pod: &Pod) -> Result<bool> {
        let ns = pod.namespace().unwrap_or_default();
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING_FINALIZER], "uid": pod.metadata.uid}});
        match self
            .pod_api(&ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A pod with our finalizer whose Job is gone or finished loses it (↔ handleOrphanPod).
    async fn sync_orphan(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(None);
        };
        if !has_finalizer(&pod) {
            return Ok(None);
        }
        if let Some(r) = controller_of(&pod.metadata).filter(|r| r.kind == "Job") {
            match self.job_api(&key.namespace).get(&r.name).await {
                Ok(job)
                    if job.metadata.uid.as_deref() == Some(r.uid.as_str())
                        && !is_finished(&job) =>
                {
                    // A live Job: its own sync counts the pod first.
                    self.queue
                        .add(Item::Job(ObjKey::new(&key.namespace, &r.name)));
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::debug!(pod = %key, "removing the job-tracking finalizer of an orphan pod");
        self.remove_finalizer(&pod).await?;
        Ok(None)
    }

    /// The Job's selector: spec.selector, or the generated one, which we try
    /// to store (↔ the API server's generateSelector, not yet done there).
    async fn ensure_selector(&self, job: &mut Job) -> Result<(LabelSelector, bool)> {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let spec_selector = job
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .filter(|s| !ctrlutil::selector_is_empty(s));
        let manual = job
            .spec
            .as_ref()
            .and_then(|s| s.manual_selector)
            .unwrap_or(false);
        if let Some(sel) = spec_selector {
            // A selector we (or the API server) generated is not a manual one.
            let generated = sel
                .match_labels
                .as_ref()
                .and_then(|m| m.get(CONTROLLER_UID_LABEL))
                == Some(&uid);
            return Ok((sel, generated || !manual));
        }
        let selector = LabelSelector {
            match_labels: Some([(CONTROLLER_UID_LABEL.to_string(), uid.clone())].into()),
            match_expressions: None,
        };
        if manual || lock(&self.selector_refused).contains(&uid) {
            return Ok((selector, true));
        }
        let mut updated = job.clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.selector = Some(selector.clone());
            let labels = spec
                .template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(BTreeMap::new);
            labels.extend(generated_labels(job));
        }
        let ns = job.namespace().unwrap_or_default();
        match self
            .job_api(&ns)
            .replace(&job.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(stored) => {
                tracing::debug!(job = %job.name_any(), "stored the generated selector");
                *job = stored;
            }
            Err(kube::Error::Api(s)) if s.code == 422 => {
                tracing::debug!(job = %job.name_any(), message = %s.message, "the generated selector cannot be stored; using it in memory");
                lock(&self.selector_refused).insert(uid);
            }
            Err(e) => return Err(e.into()),
        }
        Ok((selector, true))
    }

    async fn sync(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(cached) = self.jobs.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let mut job = (*cached).clone();
        if job
            .spec
            .as_ref()
            .and_then(|s| s.managed_by.as_deref())
            .is_some_and(|m| m != JOB_CONTROLLER_NAME)
        {
            return Ok(None);
        }
        if is_finished(&job) {
            // Stragglers still holding the finalizer.
            let uid = job.metadata.uid.clone().unwrap_or_default();
            for pod in self.pods.list_namespace(&key.namespace) {
                if has_finalizer(&pod) && controller_of(&pod.metadata).is_some_and(|r| r.uid == uid)
                {
                    self.queue.add(Item::Orphan(ObjKey::of(pod.as_ref())));
                }
            }
            return self.ttl(&job).await;
        }
        let (selector, generated) = self.ensure_selector(&mut job).await?;
        let candidates = self.pods.list_namespace(&key.namespace);
        let pods = workload::claim(&self.ctx.client, &job, &selector, candidates).await?;
        self.sync_job(key, job, pods, generated).await
    }

    /// One pass of the Job's state machine (↔ syncJob + manageJob +
    /// trackJobStatusAndRemoveFinalizers).
    async fn sync_job(
        &self,
        key: &ObjKey,
        mut job: Job,
        pods: Vec<Arc<Pod>>,
        generated: bool,
    ) -> Result<Option<Duration>> {
        let spec = job.spec.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let now_time = Time(now);
        let old_status = job.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let suspended = spec.suspend.unwrap_or(false);
        let expected_rm: HashSet<String> = lock(&self.finalizer_expectations)
            .get(key)
            .cloned()
            .unwrap_or_default();
        let uid_of = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();

        // What the pods say.
        let active_pods: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| ctrlutil::pod_is_active(p))
            .cloned()
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(workload::phase(p), "Succeeded" | "Failed")
            })
            .count();
        let ready = active_pods
            .iter()
            .filter(|p| ctrlutil::pod_is_ready(p))
            .count();
        let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_succeeded: BTreeSet<String> = uncounted
            .succeeded
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut unc_failed: BTreeSet<String> =
            uncounted.failed.unwrap_or_default().into_iter().collect();
        let tracked = |p: &Pod| has_finalizer(p) && !expected_rm.contains(&uid_of(p));
        let new_succeeded: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                tracked(p)
                    && workload::phase(p) == "Succeeded"
                    && !unc_succeeded.contains(&uid_of(p))
            })
            .cloned()
            .collect();
        let new_failed: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| tracked(p) && is_pod_failed(p, &job) && !unc_failed.contains(&uid_of(p)))
            .cloned()
            .collect();
        let completions = spec.completions;
        let mut completed = parse_indexes(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions.unwrap_or(0),
        );
        if indexed {
            for p in &new_succeeded {
                if let Some(ix) = completion_index(p).filter(|ix| *ix < completions.unwrap_or(0)) {
                    completed.insert(ix);
                }
            }
        } else {
            unc_succeeded.extend(new_succeeded.iter().map(|p| uid_of(p)));
        }
        unc_failed.extend(new_failed.iter().map(|p| uid_of(p)));
        let succeeded = if indexed {
            i32::try_from(completed.len()).unwrap_or(i32::MAX)
        } else {
            status.succeeded.unwrap_or(0) + i32::try_from(unc_succeeded.len()).unwrap_or(i32::MAX)
        };
        let failed =
            status.failed.unwrap_or(0) + i32::try_from(unc_failed.len()).unwrap_or(i32::MAX);
        self.record_backoff(key, new_failed.len(), new_succeeded.len());

        if status.start_time.is_none() && !suspended {
            status.start_time = Some(now_time.clone());
        }
        let mut requeue: Option<Duration> = None;
        let mut add_requeue =
            |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));

        // Decide whether the Job is done (↔ the finishedCondition logic).
        let mut finish: Option<Finish> = existing_finish(&status);
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        if finish.is_none() {
            if failed > backoff_limit || past_backoff_limit_on_failure(&job, &active_pods) {
                finish = Some(Finish::failed(
                    REASON_BACKOFF_LIMIT_EXCEEDED,
                    "Job has reached the specified backoff limit",
                ));
            } else if let Some(left) = deadline_left(&job, &status, now) {
                if left.is_zero() {
                    finish = Some(Finish::failed(
                        REASON_DEADLINE_EXCEEDED,
                        "Job was active longer than specified deadline",
                    ));
                } else {
                    add_requeue(left);
                }
            }
        }

        let mut active = active_pods.len();
        let mut manage_err = None;
        if finish.as_ref().is_some_and(|f| !f.complete) {
            // Failing: the active pods go; they count as failed once terminating.
            let results = futures::future::join_all(
                active_pods
                    .iter()
                    .map(|p| workload::delete_pod(&self.ctx, &job, p)),
            )
            .await;
            for r in results {
                match r {
                    Ok(_) => active = active.saturating_sub(1),
                    Err(e) => {
                        if manage_err.is_none() {
                            manage_err = Some(e);
                        }
                    }
                }
            }
        } else if finish.is_none() {
            let suspended_before = is_condition_true(&status, "Suspended");
            if suspended {
                if !suspended_before {
                    set_condition(
                        &mut status,
                        "Suspended",
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        &now_time,
                    );
                    self.event(&job, EventType::Normal, "Suspended", "Job suspended")
                        .await;
                }
                self.expectations.expect(
                    key,
                    0,
                    active_pods.iter().map(|p| ObjKey::of(p.as_ref())),
                );
                let deleted = self.delete_job_pods(key, &job, &active_pods).await;
                match deleted {
                    Ok(n) => active = active.saturating_sub(n),
                    Err(e) => manage_err = Some(e),
                }
            } else {
                if suspended_before {
                    set_condition(
                        &mut status,
                        "Suspended",
                        "False",
                        "JobResumed",
                        "Job resumed",
                        &now_time,
                    );
                    // The deadline counts from the resumption.
                    status.start_time = Some(now_time.clone());
                    self.event(&job, EventType::Normal, "Resumed", "Job resumed")
                        .await;
                }
                if self.expectations.satisfied(key) && job.metadata.deletion_timestamp.is_none() {
                    match self
                        .manage(
                            key,
                            &job,
                            &active_pods,
                            succeeded,
                            &completed,
                            indexed,
                            generated,
                        )
                        .await
                    {
                        Ok((n, wait)) => {
                            active = n;
                            if let Some(w) = wait {
                                add_requeue(w);
                            }
                        }
                        Err(e) => manage_err = Some(e),
                    }
                }
            }
            let complete = match completions {
                _ if active > 0 => false,
                None => succeeded > 0,
                Some(c) => succeeded >= c,
            };
            if complete && manage_err.is_none() {
                finish = Some(Finish::complete());
            }
        }

        // Record newly finished pods before their finalizers go.
        status.active = Some(i32::try_from(active).unwrap_or(i32::MAX));
        status.ready = Some(i32::try_from(ready).unwrap_or(i32::MAX));
        status.terminating = Some(i32::try_from(terminating).unwrap_or(i32::MAX));
        if let Some(f) = &finish {
            let interim = if f.complete {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            if !is_condition_true(&status, interim) {
                set_condition(
                    &mut status,
                    interim,
                    "True",
                    &f.reason,
                    &f.message,
                    &now_time,
                );
            }
        }
        status.uncounted_terminated_pods = Some(uncounted_of(&unc_succeeded, &unc_failed));
        if indexed {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        let recorded_anything = !new_succeeded.is_empty() || !new_failed.is_empty();
        if recorded_anything || (finish.is_some() && status != old_status) {
            job = self.write_status(&job, &status).await?;
        }

        // Remove the finalizers of finished pods now that they are recorded.
        // (Succeeded pods of an Indexed Job whose index is already counted or out of range go too.)
        let to_release: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| tracked(p))
            .filter(|p| {
                let uid = uid_of(p);
                unc_succeeded.contains(&uid)
                    || unc_failed.contains(&uid)
                    || (indexed && workload::phase(p) == "Succeeded")
            })
            .cloned()
            .collect();
        self.release_pods(key, &to_release).await?;

        // Flush: the recorded pods become counts.
        if !indexed {
            status.succeeded = Some(succeeded);
        } else {
            status.succeeded = Some(i32::try_from(completed.len()).unwrap_or(i32::MAX));
        }
        status.failed = Some(failed);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        let released_uids: HashSet<String> = to_release.iter().map(|p| uid_of(p)).collect();
        let holding = pods
            .iter()
            .filter(|p| tracked(p) && !released_uids.contains(&uid_of(p)))
            .count();
        if let Some(f) = &finish
            && manage_err.is_none()
            && holding == 0
            && terminating == 0
            && active == 0
        {
            let kind = if f.complete { "Complete" } else { "Failed" };
            set_condition(&mut status, kind, "True", &f.reason, &f.message, &now_time);
            status.active = Some(0);
            status.ready = Some(0);
            if f.complete {
                status.completion_time = Some(now_time.clone());
                self.event(&job, EventType::Normal, "Completed", "Job completed")
                    .await;
            } else {
                self.event(&job, EventType::Warning, &f.reason, &f.message)
                    .await;
            }
            lock(&self.backoff).remove(key);
        }
        let current = job.status.clone().unwrap_or_default();
        if status != current {
            job = self.write_status(&job, &status).await?;
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        if is_finished(&job) {
            return self.ttl(&job).await;
        }
        Ok(requeue)
    }

    /// Count failures since the last success, for the replacement backoff.
    fn record_backoff(&self, key: &ObjKey, new_failed: usize, new_succeeded: usize) {
        let mut map = lock(&self.backoff);
        if new_succeeded > 0 {
            map.remove(key);
        }
        if new_failed > 0 {
            let entry = map.entry(key.clone()).or_insert(BackoffRecord {
                failures: 0,
                last: tokio::time::Instant::now(),
            });
            entry.failures = entry
                .failures
                .saturating_add(u32::try_from(new_failed).unwrap_or(u32::MAX));
            entry.last = tokio::time::Instant::now();
        }
    }

    /// How long new pods must still wait after failures.
    fn backoff_left(&self, key: &ObjKey) -> Option<Duration> {
        let rec = *lock(&self.backoff).get(key)?;
        let delay = pod_failure_backoff(rec.failures);
        let elapsed = rec.last.elapsed();
        (elapsed < delay).then(|| delay - elapsed)
    }

    /// Create and delete pods toward the wanted number of active pods
    /// (↔ manageJob). Returns the active count afterwards and how long
    /// creations must wait, if they must.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &ObjKey,
        job: &Job,
        active_pods: &[Arc<Pod>],
        succeeded: i32,
        completed: &BTreeSet<i32>,
        indexed: bool,
        generated: bool,
    ) -> Result<(usize, Option<Duration>)> {
        let spec = job.spec.clone().unwrap_or_default();
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
        let mut active = active_pods.len();
        let (to_delete, to_create): (Vec<Arc<Pod>>, Vec<Option<i32>>) = if indexed {
            let completions = spec.completions.unwrap_or(0);
            let (delete, keep) =
                indexed_pods_to_delete(active_pods, completed, completions, parallelism);
            let remaining = usize::try_from(completions.max(0))
                .unwrap_or(0)
                .saturating_sub(completed.len());
            let want = parallelism.min(remaining);
            let taken: BTreeSet<i32> = keep.iter().filter_map(|p| completion_index(p)).collect();
            let missing: Vec<Option<i32>> = (0..completions)
                .filter(|ix| !completed.contains(ix) && !taken.contains(ix))
                .map(Some)
                .take(want.saturating_sub(keep.len()))
                .collect();
            (delete, missing)
        } else {
            let want = match spec.completions {
                None if succeeded > 0 => active,
                None => parallelism,
                Some(c) => usize::try_from((c - succeeded).max(0))
                    .unwrap_or(0)
                    .min(parallelism),
            };
            if active > want {
                let mut sorted: Vec<Arc<Pod>> = active_pods.to_vec();
                sorted.sort_by(|a, b| deletion_order(a, b));
                (sorted.into_iter().take(active - want).collect(), Vec::new())
            } else {
                (Vec::new(), vec![None; (want - active).min(workload::BURST)])
            }
        };
        let wait = if to_create.is_empty() {
            None
        } else {
            self.backoff_left(key)
        };
        let to_create = if wait.is_some() {
            Vec::new()
        } else {
            to_create
        };
        if to_delete.is_empty() && to_create.is_empty() {
            return Ok((active, wait));
        }
        self.expectations.expect(
            key,
            to_create.len(),
            to_delete.iter().map(|p| ObjKey::of(p.as_ref())),
        );
        if !to_delete.is_empty() {
            match self.delete_job_pods(key, job, &to_delete).await {
                Ok(n) => active = active.saturating_sub(n),
                Err(e) => {
                    for _ in 0..to_create.len() {
                        self.expectations.creation_observed(key);
                    }
                    return Err(e);
                }
            }
        }
        if let Some(wait) = wait {
            tracing::debug!(job = %key, ?wait, "waiting out the pod failure backoff");
            return Ok((active, Some(wait)));
        }
        let (created, err) = workload::slow_start(to_create.len(), |i| {
            let pod = new_job_pod(job, to_create[i], generated);
            async move { Ok(workload::create_pod(&self.ctx, job, &pod).await?.is_some()) }
        })
        .await;
        for _ in created..to_create.len() {
            self.expectations.creation_observed(key);
        }
        active += created;
        match err {
            Some(e) => Err(e),
            None => Ok((active, None)),
        }
    }

    /// Delete pods that must not count as failed: their finalizer goes first
    /// (↔ deleteJobPods). The caller set the deletion expectations.
    async fn delete_job_pods(&self, key: &ObjKey, job: &Job, pods: &[Arc<Pod>]) -> Result<usize> {
        if pods.is_empty() {
            return Ok(0);
        }
        let results = futures::future::join_all(pods.iter().map(|p| async move {
            if has_finalizer(p) && !self.remove_finalizer(p).await? {
                return Ok(false);
            }
            workload::delete_pod(&self.ctx, job, p).await
        }))
        .await;
        let mut deleted = 0;
        let mut first_err = None;
        for (p, r) in pods.iter().zip(results) {
            match r {
                Ok(true) => deleted += 1,
                Ok(false) => self
                    .expectations
                    .deletion_observed(key, &ObjKey::of(p.as_ref())),
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, &ObjKey::of(p.as_ref()));
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        first_err.map_or(Ok(deleted), Err)
    }

    /// Remove the finalizers of recorded pods, remembering them until the cache shows it.
    async fn release_pods(&self, key: &ObjKey, pods: &[Arc<Pod>]) -> Result<()> {
        if pods.is_empty() {
            return Ok(());
        }
        {
            let mut map = lock(&self.finalizer_expectations);
            let set = map.entry(key.clone()).or_default();
            set.extend(pods.iter().filter_map(|p| p.metadata.uid.clone()));
        }
        let results =
            futures::future::join_all(pods.iter().map(|p| self.remove_finalizer(p))).await;
        let mut first_err = None;
        for (p, r) in pods.iter().zip(results) {
            match r {
                Ok(true) => {}
                Ok(false) => self
                    .finalizer_removal_observed(key, p.metadata.uid.as_deref().unwrap_or_default()),
                Err(e) => {
                    self.finalizer_removal_observed(
                        key,
                        p.metadata.uid.as_deref().unwrap_or_default(),
                    );
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Write the status; a conflict is an error (the counts must be
    /// recomputed from the current object).
    async fn write_status(&self, job: &Job, status: &JobStatus) -> Result<Job> {
        let mut obj = job.clone();
        obj.status = Some(status.clone());
        let ns = job.namespace().unwrap_or_default();
        Ok(self
            .job_api(&ns)
            .replace_status(&job.name_any(), &PostParams::default(), &obj)
            .await?)
    }

    /// Delete a finished Job once ttlSecondsAfterFinished passed (↔ ttlafterfinished).
    async fn ttl(&self, job: &Job) -> Result<Option<Duration>> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let now = jiff::Timestamp::now();
        match ttl_left(job, ttl, now) {
            None => Ok(None),
            Some(left) if !left.is_zero() => Ok(Some(left)),
            Some(_) => {
                // Check the live object before deleting it.
                let ns = job.namespace().unwrap_or_default();
                let api = self.job_api(&ns);
                let fresh = match api.get(&job.name_any()).await {
                    Ok(f) => f,
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let fresh_ttl = fresh
                    .spec
                    .as_ref()
                    .and_then(|s| s.ttl_seconds_after_finished);
                match fresh_ttl.and_then(|t| ttl_left(&fresh, t, now)) {
                    Some(left) if left.is_zero() => {}
                    Some(left) => return Ok(Some(left)),
                    None => return Ok(None),
                }
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    preconditions: Some(Preconditions {
                        uid: fresh.metadata.uid.clone(),
                        resource_version: fresh.metadata.resource_version.clone(),
                    }),
                    ..Default::default()
                };
                tracing::info!(job = %job.name_any(), "deleting the finished job: ttlSecondsAfterFinished passed");
                match api.delete(&job.name_any(), &dp).await {
                    Ok(_) => Ok(None),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// How a Job ends.
#[derive(Clone, Debug, PartialEq)]
struct Finish {
    complete: bool,
    reason: String,
    message: String,
}

impl Finish {
    fn failed(reason: &str, message: &str) -> Finish {
        Finish {
            complete: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn complete() -> Finish {
        Finish {
            complete: true,
            reason: REASON_COMPLETIONS_REACHED.into(),
            message: "Reached expected number of succeeded pods".into(),
        }
    }
}

/// An interim condition already decided the outcome.
fn existing_finish(status: &JobStatus) -> Option<Finish> {
    let cond = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if let Some(c) = cond("FailureTarget") {
        return Some(Finish {
            complete: false,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    cond("SuccessCriteriaMet").map(|c| Finish {
        complete: true,
        reason: c
            .reason
            .clone()
            .unwrap_or_else(|| REASON_COMPLETIONS_REACHED.into()),
        message: c.message.clone().unwrap_or_default(),
    })
}

pub fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING_FINALIZER)
}

/// Complete or Failed is True (↔ IsJobFinished).
pub fn is_finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    })
}

fn is_condition_true(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Set a condition, keeping its transition time when the status did not change.
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let new = JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == value => {
            c.reason = new.reason;
            c.message = new.message;
            c.last_probe_time = new.last_probe_time;
        }
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// A pod that failed, or was deleted before it succeeded (unless only
/// Failed pods are replaced) (↔ isPodFailed).
fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if workload::phase(pod) == "Failed" {
        return true;
    }
    let spec = job.spec.as_ref();
    let only_failed = spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some());
    !only_failed && pod.metadata.deletion_timestamp.is_some() && workload::phase(pod) != "Succeeded"
}

/// With restartPolicy OnFailure, container restarts count against backoffLimit (↔ pastBackoffLimitOnFailure).
fn past_backoff_limit_on_failure(job: &Job, active: &[Arc<Pod>]) -> bool {
    let spec = job.spec.as_ref();
    let policy = spec
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let limit = spec.and_then(|s| s.backoff_limit).unwrap_or(6);
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Time left before activeDeadlineSeconds (zero once passed); None without a deadline or while suspended.
fn deadline_left(job: &Job, status: &JobStatus, now: jiff::Timestamp) -> Option<Duration> {
    let spec = job.spec.as_ref()?;
    let deadline = spec.active_deadline_seconds?;
    if spec.suspend.unwrap_or(false) {
        return None;
    }
    let start = status.start_time.as_ref()?.0;
    // A deadline beyond the last representable instant never passes
    // (activeDeadlineSeconds is any non-negative int64).
    let end = start
        .checked_add(jiff::SignedDuration::from_secs(deadline))
        .ok()?;
    Some(Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// Time left before a finished Job expires (zero once expired); None if not finished.
pub fn ttl_left(job: &Job, ttl: i32, now: jiff::Timestamp) -> Option<Duration> {
    let finished_at = job
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| job.status.as_ref()?.completion_time.as_ref().map(|t| t.0))?;
    let expire = finished_at
        .checked_add(jiff::SignedDuration::from_secs(i64::from(ttl)))
        .ok()?;
    Some(Duration::try_from(expire.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// 10 s doubling per failure since the last success, capped at 10 min.
fn pod_failure_backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    POD_FAILURE_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_POD_FAILURE_BACKOFF)
}

fn uncounted_of(
    succeeded: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> UncountedTerminatedPods {
    UncountedTerminatedPods {
        succeeded: (!succeeded.is_empty()).then(|| succeeded.iter().cloned().collect()),
        failed: (!failed.is_empty()).then(|| failed.iter().cloned().collect()),
    }
}

/// The labels a generated selector puts on the template.
fn generated_labels(job: &Job) -> BTreeMap<String, String> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.name_any();
    [
        (CONTROLLER_UID_LABEL.to_string(), uid.clone()),
        (LEGACY_CONTROLLER_UID_LABEL.to_string(), uid),
        (JOB_NAME_LABEL.to_string(), name.clone()),
        (LEGACY_JOB_NAME_LABEL.to_string(), name),
    ]
    .into()
}

/// The completion index of a pod (annotation, else label).
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let from = |m: Option<&BTreeMap<String, String>>| {
        m.and_then(|m| m.get(COMPLETION_INDEX_ANNOTATION))
            .and_then(|v| v.parse::<i32>().ok())
    };
    from(pod.metadata.annotations.as_ref())
        .or_else(|| from(pod.metadata.labels.as_ref()))
        .filter(|i| *i >= 0)
}

/// A pod for the Job, with index `index` for Indexed Jobs (↔ manageJob's pod template).
pub fn new_job_pod(job: &Job, index: Option<i32>, generated: bool) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = workload::pod_from_template(job, &template);
    let name = job.name_any();
    pod.metadata.generate_name = Some(match index {
        Some(ix) => format!("{name}-{ix}-"),
        None => format!("{name}-"),
    });
    if generated {
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(generated_labels(job));
    }
    let finalizers = pod.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == JOB_TRACKING_FINALIZER) {
        finalizers.push(JOB_TRACKING_FINALIZER.into());
    }
    if let Some(ix) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
        let spec = pod.spec.get_or_insert_with(PodSpec::default);
        if spec.hostname.as_deref().is_none_or(str::is_empty) {
            spec.hostname = Some(format!("{name}-{ix}"));
        }
        let env = EnvVar {
            name: COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
                }),
                ..Default::default()
            }),
        };
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            let vars = c.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                vars.push(env.clone());
            }
        }
    }
    pod
}

/// Active pods of an Indexed Job to delete (bad index, already completed,
/// duplicates, beyond parallelism) and the ones kept.
fn indexed_pods_to_delete(
    active: &[Arc<Pod>],
    completed: &BTreeSet<i32>,
    completions: i32,
    parallelism: usize,
) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut delete = Vec::new();
    let mut by_index: BTreeMap<i32, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in active {
        match completion_index(p) {
            Some(ix) if ix < completions && !completed.contains(&ix) => {
                by_index.entry(ix).or_default().push(p.clone())
            }
            _ => delete.push(p.clone()),
        }
    }
    let mut keep = Vec::new();
    for (_, mut pods) in by_index {
        // Keep the most valuable pod of an index.
        pods.sort_by(|a, b| deletion_order(b, a));
        let mut it = pods.into_iter();
        if let Some(first) = it.next() {
            keep.push(first);
        }
        delete.extend(it);
    }
    if keep.len() > parallelism {
        // The highest indexes go.
        let excess = keep.split_off(parallelism);
        delete.extend(excess);
    }
    (delete, keep)
}

/// Less valuable first (↔ controller.ActivePods): unscheduled, pending,
/// not ready, more restarts, newer.
fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let scheduled = |p: &Pod| !workload::node_name(p).is_empty();
    let phase_rank = |p: &Pod| match workload::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| ctrlutil::pod_is_ready(a).cmp(&ctrlutil::pod_is_ready(b)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// Parse "1,3-5,7" into indexes below `completions` (invalid parts are skipped).
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(lo), Ok(hi)) = (lo, hi) {
            for ix in lo.max(0)..=hi.min(completions - 1) {
                out.insert(ix);
            }
        }
    }
    out
}

/// Format indexes as ordered intervals: "1,3-5,7".
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job(v: serde_json::Value) -> Job {
        let mut base = json!({
            "metadata": {"name": "pi", "namespace": "default", "uid": "j1"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}
        });
        if let (Some(b), Some(v)) = (base["spec"].as_object_mut(), v.as_object()) {
            for (k, x) in v {
                b.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn index_intervals_round_trip() {
        let cases = [
            ("", vec![]),
            ("0", vec![0]),
            ("1,3-5,7", vec![1, 3, 4, 5, 7]),
            ("0-2", vec![0, 1, 2]),
            ("5-9", vec![5, 6, 7]),
        ];
        for (s, want) in cases {
            let got: Vec<i32> = parse_indexes(s, 8).into_iter().collect();
            assert_eq!(got, want, "{s}");
        }
        let cases = [
            (vec![], ""),
            (vec![0, 1, 2], "0-2"),
            (vec![1, 3, 4, 5, 7], "1,3-5,7"),
            (vec![4], "4"),
        ];
        for (ix, want) in cases {
            assert_eq!(format_indexes(&ix.into_iter().collect()), want);
        }
    }

    #[test]
    fn job_pods_carry_labels_finalizer_and_index() {
        let j = job(json!({"completionMode": "Indexed", "completions": 3}));
        let pod = new_job_pod(&j, Some(2), true);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
        let labels = pod.labels();
        assert_eq!(
            labels.get(CONTROLLER_UID_LABEL).map(String::as_str),
            Some("j1")
        );
        assert_eq!(labels.get(JOB_NAME_LABEL).map(String::as_str), Some("pi"));
        assert_eq!(
            labels.get(LEGACY_JOB_NAME_LABEL).map(String::as_str),
            Some("pi")
        );
        assert_eq!(labels.get("app").map(String::as_str), Some("pi"));
        assert_eq!(
            pod.annotations()
                .get(COMPLETION_INDEX_ANNOTATION)
                .map(String::as_str),
            Some("2")
        );
        assert_eq!(completion_index(&pod), Some(2));
        assert!(has_finalizer(&pod));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        assert!(
            spec.containers[0]
                .env
                .iter()
                .flatten()
                .any(|e| e.name == COMPLETION_INDEX_ENV)
        );
        let r = &pod.owner_references()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("Job", Some(true)));
        let plain = new_job_pod(&j, None, false);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(!plain.labels().contains_key(CONTROLLER_UID_LABEL));
    }

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn failed_pods_include_deleted_unfinished_ones() {
        let j = job(json!({}));
        let failed = pod(json!({"metadata": {"name": "a"}, "status": {"phase": "Failed"}}));
        let deleting = pod(
            json!({"metadata": {"name": "b", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}}),
        );
        let done = pod(
            json!({"metadata": {"name": "c", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Succeeded"}}),
        );
        assert!(is_pod_failed(&failed, &j));
        assert!(is_pod_failed(&deleting, &j));
        assert!(!is_pod_failed(&done, &j));
        let only_failed = job(json!({"podReplacementPolicy": "Failed"}));
        assert!(!is_pod_failed(&deleting, &only_failed));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cases = [(0, 0), (1, 10), (2, 20), (3, 40), (7, 600), (40, 600)];
        for (failures, secs) in cases {
            assert_eq!(
                pod_failure_backoff(failures),
                Duration::from_secs(secs),
                "{failures}"
            );
        }
    }

    #[test]
    fn deadlines_and_ttl() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Time(jiff::Timestamp::from_second(s).unwrap());
        let j = job(json!({"activeDeadlineSeconds": 30}));
        let status = JobStatus {
            start_time: Some(at(999_990)),
            ..Default::default()
        };
        assert_eq!(
            deadline_left(&j, &status, now),
            Some(Duration::from_secs(20))
        );
        let status = JobStatus {
            start_time: Some(at(999_900)),
            ..Default::default()
        };
        assert_eq!(deadline_left(&j, &status, now), Some(Duration::ZERO));
        let suspended = job(json!({"activeDeadlineSeconds": 30, "suspend": true}));
        assert_eq!(deadline_left(&suspended, &status, now), None);
        // A deadline past the last representable instant never comes
        // (security review D4: it panicked every controller).
        let far = job(json!({"activeDeadlineSeconds": 9_000_000_000_000_000_000_i64}));
        assert_eq!(deadline_left(&far, &status, now), None);
        assert_eq!(deadline_left(&job(json!({})), &status, now), None);

        let mut finished = job(json!({}));
        assert_eq!(ttl_left(&finished, 10, now), None);
        finished.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                last_transition_time: Some(at(999_995)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(ttl_left(&finished, 10, now), Some(Duration::from_secs(5)));
        assert_eq!(ttl_left(&finished, 0, now), Some(Duration::ZERO));
    }

    #[test]
    fn on_failure_restarts_count() {
        let j = job(
            json!({"backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}),
        );
        let restarted = |n: i32| {
            pod(
                json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": n}]}}),
            )
        };
        assert!(!past_backoff_limit_on_failure(&j, &[restarted(1)]));
        assert!(past_backoff_limit_on_failure(
            &j,
            &[restarted(1), restarted(1)]
        ));
        let never = job(json!({"backoffLimit": 0}));
        assert!(!past_backoff_limit_on_failure(&never, &[restarted(5)]));
    }

    #[test]
    fn indexed_deletions() {
        let p = |name: &str, ix: Option<i32>| {
            let mut v = json!({"metadata": {"name": name}, "status": {"phase": "Running"}});
            if let Some(ix) = ix {
                v["metadata"]["annotations"] = json!({COMPLETION_INDEX_ANNOTATION: ix.to_string()});
            }
            pod(v)
        };
        let active = vec![
            p("a0", Some(0)),
            p("b0", Some(0)),
            p("c1", Some(1)),
            p("d9", Some(9)),
            p("e", None),
            p("f2", Some(2)),
        ];
        let completed: BTreeSet<i32> = [1].into();
        let (delete, keep) = indexed_pods_to_delete(&active, &completed, 4, 1);
        let mut deleted: Vec<String> = delete.iter().map(|p| p.name_any()).collect();
        deleted.sort();
        let kept: Vec<String> = keep.iter().map(|p| p.name_any()).collect();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].ends_with('0'), "{kept:?}");
        assert_eq!(deleted.len(), 5, "{deleted:?}");
        assert!(
            deleted.contains(&"c1".to_string())
                && deleted.contains(&"d9".to_string())
                && deleted.contains(&"e".to_string())
                && deleted.contains(&"f2".to_string())
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut st = JobStatus::default();
        let t1 = Time(jiff::Timestamp::from_second(100).unwrap());
        let t2 = Time(jiff::Timestamp::from_second(200).unwrap());
        set_condition(
            &mut st,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            &t1,
        );
        set_condition(
            &mut st,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            &t2,
        );
        assert_eq!(
            st.conditions.as_ref().unwrap()[0].last_transition_time,
            Some(t1.clone())
        );
        set_condition(
            &mut st,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            &t2,
        );
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("False", Some(t2))
        );
        assert_eq!(existing_finish(&st), None);
        set_condition(
            &mut st,
            "FailureTarget",
            "True",
            REASON_DEADLINE_EXCEEDED,
            "m",
            &t1,
        );
        assert_eq!(
            existing_finish(&st),
            Some(Finish::failed(REASON_DEADLINE_EXCEEDED, "m"))
        );
    }
}
