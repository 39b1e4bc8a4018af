//! The CronJob controller (↔ pkg/controller/cronjob, the v2 controller):
//! at each time of `spec.schedule` (see [`crate::cron`]; `spec.timeZone`,
//! UTC when unset) a Job named `<cronjob>-<scheduled time in minutes since
//! the epoch>` is created from the job template, annotated with
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`. The most recent
//! missed time is run late unless `startingDeadlineSeconds` passed;
//! concurrencyPolicy Forbid skips a run while one is active, Replace
//! deletes the active ones first; `suspend` stops new runs. Finished Jobs
//! beyond successful/failedJobsHistoryLimit are deleted oldest first. The
//! status lists the active Jobs, lastScheduleTime and lastSuccessfulTime.
//! The controller requeues each CronJob for its next scheduled time.
//! The time logic is pure ([`plan`], [`crate::cron`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::watcher;
use skiff_runtime::events::EventType;

use crate::cron::{self, Schedule};
use crate::ctrlutil::{
    self, Cache, Change, ObjKey, Result, WorkQueue, controller_of, informer, is_not_found,
};
use crate::job::is_finished;
use crate::workload::{self, owner_key};

pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Wake a little after the scheduled time (↔ nextScheduleDelta).
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
const WORKERS: usize = 2;
const RESYNC: Duration = Duration::from_secs(60);

struct Controller {
    ctx: crate::Context,
    cronjobs: Cache<CronJob>,
    jobs: Cache<Job>,
    queue: Arc<WorkQueue<ObjKey>>,
}

/// Run the CronJob controller until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let c = Arc::new(Controller {
        ctx: ctx.clone(),
        cronjobs: Cache::default(),
        jobs: ctx.informers.get::<Job>().cache(),
        queue: Arc::new(WorkQueue::default()),
    });
    let cj_informer = {
        let c = c.clone();
        informer::run(
            Api::<CronJob>::all(ctx.client.clone()),
            watcher::Config::default(),
            c.cronjobs.clone(),
            move |ch| match ch {
                Change::Apply { new, .. } => c.queue.add(ObjKey::of(new.as_ref())),
                Change::Delete(old) => c.queue.add(ObjKey::of(old.as_ref())),
            },
        )
    };
    let job_informer = {
        let c = c.clone();
        ctx.informers.get::<Job>().run(move |ch| {
            let job = match &ch {
                Change::Apply { new, .. } => new.clone(),
                Change::Delete(old) => old.clone(),
            };
            let ns = job.namespace().unwrap_or_default();
            if let Some(key) =
                controller_of(&job.metadata).and_then(|r| owner_key::<CronJob>(&ns, r))
            {
                c.queue.add(key);
            }
        })
    };
    let workers = {
        let c = c.clone();
        async move {
            c.cronjobs.wait_synced().await;
            c.jobs.wait_synced().await;
            let cc = c.clone();
            ctrlutil::run_workers("cronjob", c.queue.clone(), WORKERS, move |key| {
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
                for key in c.cronjobs.keys() {
                    c.queue.add(key);
                }
            }
        }
    };
    tracing::info!(controller = "cronjob", "starting");
    tokio::join!(cj_informer, job_informer, workers, resync);
}

/// What a sync should do about the schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing is due (or the CronJob is suspended).
    Nothing,
    /// The spec cannot be used: an event, and no requeue.
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// The most recent time is past startingDeadlineSeconds.
    MissSchedule(jiff::Timestamp),
    /// That time already has its Job.
    AlreadyProcessed,
    /// Forbid, and a Job is still active.
    Forbidden,
    /// Start the Job for `scheduled`, deleting the active ones first if `replace`.
    Start {
        scheduled: jiff::Timestamp,
        replace: bool,
    },
}

/// The decision of one sync and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub action: Action,
    pub requeue: Option<Duration>,
    /// More than 100 start times were missed.
    pub too_many_missed: bool,
}

/// The name of the Job for `scheduled` (↔ getJobName).
pub fn job_name(cronjob: &str, scheduled: jiff::Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The earliest time to consider: the last schedule (or creation), but no
/// earlier than startingDeadlineSeconds ago.
pub fn earliest_time(cj: &CronJob, now: jiff::Timestamp) -> jiff::Timestamp {
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    if let Some(deadline) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds) {
        // A deadline reaching before the first representable instant
        // limits nothing (startingDeadlineSeconds is any non-negative int64).
        if let Ok(limit) = now.checked_sub(jiff::SignedDuration::from_secs(deadline))
            && limit > earliest
        {
            earliest = limit;
        }
    }
    earliest
}

/// Decide what to do at `now` (↔ the schedule half of syncCronJob). Pure.
pub fn plan(cj: &CronJob, now: jiff::Timestamp) -> Plan {
    let none = |action| Plan {
        action,
        requeue: None,
        too_many_missed: false,
    };
    let Some(spec) = cj.spec.as_ref() else {
        return none(Action::Nothing);
    };
    if spec.suspend.unwrap_or(false) {
        return none(Action::Nothing);
    }
    let tz = match cron::time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            return none(Action::Invalid {
                reason: "UnknownTimeZone",
                message: format!(
                    "invalid timeZone: {:?}: {e}",
                    spec.time_zone.as_deref().unwrap_or("")
                ),
            });
        }
    };
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            return none(Action::Invalid {
                reason: "UnparseableSchedule",
                message: format!("unparseable schedule: {:?} : {e}", spec.schedule),
            });
        }
    };
    let (most_recent, missed) = match cron::most_recent(&schedule, &tz, earliest_time(cj, now), now)
    {
        Ok(r) => r,
        Err(e) => {
            return none(Action::Invalid {
                reason: "InvalidSchedule",
                message: format!("invalid schedule: {} : {e}", spec.schedule),
            });
        }
    };
    let requeue = schedule.next(now, &tz).map(|next| {
        Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO) + NEXT_SCHEDULE_DELTA
    });
    let with = |action| Plan {
        action,
        requeue,
        too_many_missed: missed > 100,
    };
    let Some(scheduled) = most_recent else {
        return with(Action::Nothing);
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled
            .checked_add(jiff::SignedDuration::from_secs(deadline))
            .is_ok_and(|missed_at| missed_at < now)
    {
        return with(Action::MissSchedule(scheduled));
    }
    let name = job_name(&cj.name_any(), scheduled);
    let status = cj.status.as_ref();
    let active = status.and_then(|s| s.active.as_deref()).unwrap_or_default();
    let last = status
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || last == Some(scheduled)
    {
        return with(Action::AlreadyProcessed);
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => with(Action::Forbidden),
        "Replace" => with(Action::Start {
            scheduled,
            replace: !active.is_empty(),
        }),
        _ => with(Action::Start {
            scheduled,
            replace: false,
        }),
    }
}

/// RFC 3339 in the schedule's zone ("Z" for UTC), as Go formats it.
pub fn scheduled_timestamp(scheduled: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let z = scheduled.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for `scheduled` (↔ getJobFromTemplate2).
pub fn job_from_template(cj: &CronJob, scheduled: jiff::Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let tz = cron::time_zone(cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()))
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        scheduled_timestamp(scheduled, &tz),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![ctrlutil::controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Finished Jobs to delete beyond `limit`, oldest start first (no start time last) (↔ removeOldestJobs).
pub fn oldest_beyond(mut jobs: Vec<&Job>, limit: Option<i32>) -> Vec<&Job> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if jobs.len() <= limit {
        return Vec::new();
    }
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    jobs.sort_by(|a, b| match (start(a), start(b)) {
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (x, y) => x
            .cmp(&y)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name)),
    });
    let excess = jobs.len() - limit;
    jobs.into_iter().take(excess).collect()
}

fn finished_type(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn in_active(cj: &CronJob, uid: &str) -> bool {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .is_some_and(|a| a.iter().any(|r| r.uid.as_deref() == Some(uid)))
}

fn remove_active(cj: &mut CronJob, uid: &str) {
    if let Some(active) = cj.status.as_mut().and_then(|s| s.active.as_mut()) {
        active.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

fn job_ref(job: &Job) -> ObjectReference {
    skiff_runtime::events::reference(job)
}

impl Controller {
    fn api(&self, ns: &str) -> Api<CronJob> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn job_api(&self, ns: &str) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn event(&self, cj: &CronJob, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .record(&skiff_runtime::events::reference(cj), kind, reason, message)
            .await;
    }

    /// Delete a Job and its pods in the background; Ok(false) if it was gone.
    async fn delete_job(&self, cj: &CronJob, job_name: &str) -> Result<bool> {
        let ns = cj.namespace().unwrap_or_default();
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match self.job_api(&ns).delete(job_name, &dp).await {
            Ok(_) => {
                self.event(
                    cj,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {job_name}"),
                )
                .await;
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => {
                self.event(
                    cj,
                    EventType::Warning,
                    "FailedDelete",
                    &format!("Deleted job: {e}"),
                )
                .await;
                Err(e.into())
            }
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<Option<Duration>> {
        let Some(cached) = self.cronjobs.get(key) else {
            return Ok(None);
        };
        if cached.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let mut original = (*cached).clone();
        let uid = original.metadata.uid.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        // A running Job missing from our cached status may be one we just
        // listed there ourselves: read the live object first.
        if jobs.iter().any(|j| {
            !is_finished(j) && !in_active(&original, j.metadata.uid.as_deref().unwrap_or_default())
        }) {
            match self.api(&key.namespace).get(&key.name).await {
                Ok(fresh) if fresh.metadata.uid == original.metadata.uid => original = fresh,
                Ok(_) => return Ok(None),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let mut cj = original.clone();

        // Reconcile the active list with the Jobs (↔ the first half of syncCronJob).
        for j in &jobs {
            let juid = j.metadata.uid.clone().unwrap_or_default();
            let found = in_active(&cj, &juid);
            let finished = is_finished(j);
            if !found && !finished {
                self.event(
                    &cj,
                    EventType::Warning,
                    "UnexpectedJob",
                    &format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    ),
                )
                .await;
                cj.status
                    .get_or_insert_with(Default::default)
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(job_ref(j));
            } else if found && finished {
                remove_active(&mut cj, &juid);
                let condition = finished_type(j).unwrap_or_default().to_string();
                self.event(
                    &cj,
                    EventType::Normal,
                    "SawCompletedJob",
                    &format!(
                        "Saw completed job: {}, condition: {condition}",
                        j.name_any()
                    ),
                )
                .await;
            }
            if finished_type(j) == Some("Complete")
                && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            {
                let status = cj.status.get_or_insert_with(Default::default);
                if status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
        }
        let listed: Vec<ObjectReference> = cj
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        for r in listed {
            let ruid = r.uid.clone().unwrap_or_default();
            if jobs
                .iter()
                .any(|j| j.metadata.uid.as_deref() == Some(ruid.as_str()))
            {
                continue;
            }
            // Not in the cache: ask the API before forgetting it.
            let name = r.name.clone().unwrap_or_default();
            match self.job_api(&key.namespace).get(&name).await {
                Err(e) if is_not_found(&e) => {
                    self.event(
                        &cj,
                        EventType::Normal,
                        "MissingJob",
                        &format!("Active job went missing: {name}"),
                    )
                    .await;
                    remove_active(&mut cj, &ruid);
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }

        // The schedule.
        let p = plan(&cj, now);
        if p.too_many_missed {
            let msg = "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
            self.event(&cj, EventType::Warning, "TooManyMissedTimes", msg)
                .await;
        }
        let mut result: Result<()> = Ok(());
        match &p.action {
            Action::Nothing | Action::AlreadyProcessed => {}
            Action::Invalid { reason, message } => {
                self.event(&cj, EventType::Warning, reason, message).await
            }
            Action::MissSchedule(t) => {
                let msg = format!(
                    "Missed scheduled time to start a job: {}",
                    t.strftime("%a, %d %b %Y %H:%M:%S %z")
                );
                self.event(&cj, EventType::Warning, "MissSchedule", &msg)
                    .await;
            }
            Action::Forbidden => {
                let msg = "Not starting job because prior execution is running and concurrency policy is Forbid";
                self.event(&cj, EventType::Normal, "JobAlreadyActive", msg)
                    .await;
            }
            Action::Start { scheduled, replace } => {
                result = self.start(&mut cj, *scheduled, *replace).await
            }
        }

        // History limits (↔ cleanupFinishedJobs).
        if result.is_ok() {
            let spec = cj.spec.clone().unwrap_or_default();
            let finished: Vec<&Job> = jobs
                .iter()
                .map(|j| j.as_ref())
                .filter(|j| is_finished(j))
                .collect();
            let successful: Vec<&Job> = finished
                .iter()
                .copied()
                .filter(|j| finished_type(j) == Some("Complete"))
                .collect();
            let failed: Vec<&Job> = finished
                .iter()
                .copied()
                .filter(|j| finished_type(j) == Some("Failed"))
                .collect();
            let mut doomed = oldest_beyond(successful, spec.successful_jobs_history_limit);
            doomed.extend(oldest_beyond(failed, spec.failed_jobs_history_limit));
            for j in doomed {
                if j.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if let Err(e) = self.delete_job(&cj, &j.name_any()).await {
                    result = Err(e);
                    break;
                }
                remove_active(&mut cj, j.metadata.uid.as_deref().unwrap_or_default());
            }
        }

        if cj.status != original.status {
            let status = cj.status.clone();
            workload::write_status(&self.ctx.client, &cj, |c| c.status = status.clone()).await?;
        }
        result?;
        Ok(p.requeue)
    }

    /// Create the Job for `scheduled`, replacing active ones if asked.
    async fn start(
        &self,
        cj: &mut CronJob,
        scheduled: jiff::Timestamp,
        replace: bool,
    ) -> Result<()> {
        let ns = cj.namespace().unwrap_or_default();
        if replace {
            let active: Vec<ObjectReference> = cj
                .status
                .as_ref()
                .and_then(|s| s.active.clone())
                .unwrap_or_default();
            for r in active {
                let name = r.name.clone().unwrap_or_default();
                tracing::debug!(cronjob = %cj.name_any(), job = %name, "deleting the job still running at the next scheduled start");
                self.delete_job(cj, &name).await?;
                remove_active(cj, r.uid.as_deref().unwrap_or_default());
            }
        }
        let job = job_from_template(cj, scheduled);
        let created = match self.job_api(&ns).create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.event(
                    cj,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created job {}", created.name_any()),
                )
                .await;
                created
            }
            Err(e) if ctrlutil::is_already_exists(&e) => {
                let existing = self.job_api(&ns).get(&job.name_any()).await?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
                if !ours || in_active(cj, existing.metadata.uid.as_deref().unwrap_or_default()) {
                    return Ok(());
                }
                tracing::info!(cronjob = %cj.name_any(), job = %existing.name_any(), "job already exists");
                existing
            }
            Err(e) if ctrlutil::is_namespace_terminating(&e) => return Ok(()),
            Err(e) => {
                self.event(
                    cj,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating job: {e}"),
                )
                .await;
                return Err(e.into());
            }
        };
        let status = cj.status.get_or_insert_with(Default::default);
        // A finished Job (created earlier, status lost) is not active.
        if !is_finished(&created) {
            status
                .active
                .get_or_insert_with(Vec::new)
                .push(job_ref(&created));
        }
        status.last_schedule_time = Some(Time(scheduled));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(spec: serde_json::Value, status: serde_json::Value) -> CronJob {
        let mut s = json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "tick", "namespace": "default", "uid": "cj1", "creationTimestamp": "2024-03-10T12:00:30Z"},
            "spec": s,
            "status": status
        }))
        .unwrap()
    }

    fn active(name: &str) -> serde_json::Value {
        json!([{"kind": "Job", "name": name, "namespace": "default", "uid": format!("uid-{name}")}])
    }

    #[test]
    fn a_huge_starting_deadline_neither_panics_nor_limits() {
        // Security review D4: startingDeadlineSeconds near i64::MAX.
        let cj = cronjob(json!({"startingDeadlineSeconds": i64::MAX}), json!({}));
        let now = ts("2024-03-10T12:03:30Z");
        assert_eq!(earliest_time(&cj, now), ts("2024-03-10T12:00:30Z"));
        assert!(matches!(plan(&cj, now).action, Action::Start { .. }));
    }

    #[test]
    fn plans_table() {
        let start = |t: &str| Action::Start {
            scheduled: ts(t),
            replace: false,
        };
        let cases: Vec<(&str, serde_json::Value, serde_json::Value, &str, Action)> = vec![
            ("nothing due before the first minute", json!({}), json!({}), "2024-03-10T12:00:45Z", Action::Nothing),
            ("the first minute", json!({}), json!({}), "2024-03-10T12:01:00.2Z", start("2024-03-10T12:01:00Z")),
            ("late but within no deadline", json!({}), json!({}), "2024-03-10T12:03:30Z", start("2024-03-10T12:03:00Z")),
            ("scheduled already", json!({}), json!({"lastScheduleTime": "2024-03-10T12:03:00Z"}), "2024-03-10T12:03:30Z", Action::Nothing),
            (
                "the next minute after the last",
                json!({}),
                json!({"lastScheduleTime": "2024-03-10T12:03:00Z"}),
                "2024-03-10T12:04:01Z",
                start("2024-03-10T12:04:00Z"),
            ),
            ("suspended", json!({"suspend": true}), json!({}), "2024-03-10T12:03:30Z", Action::Nothing),
            (
                "forbid with an active job",
                json!({"concurrencyPolicy": "Forbid"}),
                json!({"active": active("tick-28501203")}),
                "2024-03-10T12:05:10Z",
                Action::Forbidden,
            ),
            ("forbid, nothing active", json!({"concurrencyPolicy": "Forbid"}), json!({}), "2024-03-10T12:05:10Z", start("2024-03-10T12:05:00Z")),
            (
                "replace an active job",
                json!({"concurrencyPolicy": "Replace"}),
                json!({"active": active("tick-28501203")}),
                "2024-03-10T12:05:10Z",
                Action::Start { scheduled: ts("2024-03-10T12:05:00Z"), replace: true },
            ),
            (
                "allow runs concurrently",
                json!({"concurrencyPolicy": "Allow"}),
                json!({"active": active("tick-28501203")}),
                "2024-03-10T12:05:10Z",
                start("2024-03-10T12:05:00Z"),
            ),
            ("the job of this time is active", json!({}), json!({"active": active("tick-28501205")}), "2024-03-10T12:05:10Z", Action::AlreadyProcessed),
            // With a deadline only times within it count: 12:05 is 10 s late, within 30 s.
            ("within the starting deadline", json!({"startingDeadlineSeconds": 30}), json!({}), "2024-03-10T12:05:10Z", start("2024-03-10T12:05:00Z")),
            // Hourly, 10 min late with a 60 s deadline: nothing in the window.
            ("past the starting deadline", json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 60}), json!({}), "2024-03-10T13:10:00Z", Action::Nothing),
            (
                "a bad schedule",
                json!({"schedule": "61 * * * *"}),
                json!({}),
                "2024-03-10T13:10:00Z",
                Action::Invalid {
                    reason: "UnparseableSchedule",
                    message: "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59): 61".into(),
                },
            ),
        ];
        for (what, spec, status, now, want) in cases {
            let got = plan(&cronjob(spec, status), ts(now));
            assert_eq!(got.action, want, "{what}");
        }
        let bad_tz = plan(
            &cronjob(json!({"timeZone": "Mars/Olympus"}), json!({})),
            ts("2024-03-10T12:05:10Z"),
        );
        assert!(
            matches!(
                bad_tz.action,
                Action::Invalid {
                    reason: "UnknownTimeZone",
                    ..
                }
            ),
            "{bad_tz:?}"
        );
    }

    #[test]
    fn requeue_at_the_next_time() {
        let p = plan(&cronjob(json!({}), json!({})), ts("2024-03-10T12:00:45Z"));
        assert_eq!(
            p.requeue,
            Some(Duration::from_secs(15) + NEXT_SCHEDULE_DELTA)
        );
        let p = plan(
            &cronjob(json!({"schedule": "@hourly"}), json!({})),
            ts("2024-03-10T12:30:00Z"),
        );
        assert_eq!(
            p.requeue,
            Some(Duration::from_secs(1800) + NEXT_SCHEDULE_DELTA)
        );
        let p = plan(
            &cronjob(json!({"suspend": true}), json!({})),
            ts("2024-03-10T12:30:00Z"),
        );
        assert_eq!(p.requeue, None);
        // Many missed times: flagged, and only the latest runs.
        let p = plan(
            &cronjob(
                json!({}),
                json!({"lastScheduleTime": "2024-03-09T00:00:00Z"}),
            ),
            ts("2024-03-10T12:30:05Z"),
        );
        assert!(p.too_many_missed);
        assert_eq!(
            p.action,
            Action::Start {
                scheduled: ts("2024-03-10T12:30:00Z"),
                replace: false
            }
        );
    }

    #[test]
    fn earliest_respects_the_deadline() {
        let cj = cronjob(
            json!({"startingDeadlineSeconds": 100}),
            json!({"lastScheduleTime": "2024-03-10T12:00:00Z"}),
        );
        assert_eq!(
            earliest_time(&cj, ts("2024-03-10T12:01:00Z")),
            ts("2024-03-10T12:00:00Z")
        );
        assert_eq!(
            earliest_time(&cj, ts("2024-03-10T13:00:00Z")),
            ts("2024-03-10T12:58:20Z")
        );
        let fresh = cronjob(json!({}), json!({}));
        assert_eq!(
            earliest_time(&fresh, ts("2024-03-10T13:00:00Z")),
            ts("2024-03-10T12:00:30Z")
        );
    }

    #[test]
    fn jobs_from_the_template() {
        let mut cj = cronjob(json!({}), json!({}));
        cj.spec.as_mut().unwrap().job_template.metadata = Some(ObjectMeta {
            labels: Some([("team".into(), "a".into())].into()),
            ..Default::default()
        });
        let job = job_from_template(&cj, ts("2024-03-10T12:05:00Z"));
        assert_eq!(job.name_any(), "tick-28501205");
        assert_eq!(job.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(
            job.annotations()
                .get(SCHEDULED_TIMESTAMP_ANNOTATION)
                .map(String::as_str),
            Some("2024-03-10T12:05:00Z")
        );
        let r = &job.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller),
            ("CronJob", "tick", Some(true))
        );
        assert_eq!(
            job.spec.unwrap().template.spec.unwrap().containers[0].name,
            "c"
        );
        if let Ok(tz) = jiff::tz::TimeZone::get("Europe/Berlin") {
            assert_eq!(
                scheduled_timestamp(ts("2024-03-10T12:05:00Z"), &tz),
                "2024-03-10T13:05:00+01:00"
            );
        }
    }

    #[test]
    fn history_keeps_the_newest() {
        let job = |name: &str, start: Option<&str>| -> Job {
            serde_json::from_value(
                json!({"metadata": {"name": name}, "status": {"startTime": start}}),
            )
            .unwrap()
        };
        let jobs = [
            job("a", Some("2024-01-01T00:03:00Z")),
            job("b", Some("2024-01-01T00:01:00Z")),
            job("c", None),
            job("d", Some("2024-01-01T00:02:00Z")),
        ];
        let names = |v: Vec<&Job>| v.iter().map(|j| j.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(oldest_beyond(jobs.iter().collect(), Some(1))),
            ["b", "d", "a"]
        );
        assert_eq!(names(oldest_beyond(jobs.iter().collect(), Some(3))), ["b"]);
        assert!(oldest_beyond(jobs.iter().collect(), Some(4)).is_empty());
        assert!(oldest_beyond(jobs.iter().collect(), None).is_empty());
        assert_eq!(oldest_beyond(jobs.iter().collect(), Some(0)).len(), 4);
    }
}
