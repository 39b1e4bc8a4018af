//! The CronJob controller against a real API server, with the Job
//! controller and hollow nodes running the Jobs. A missed minute is made
//! by moving status.lastScheduleTime back while the CronJob is suspended,
//! so the test does not wait for the clock (one test does wait for the
//! next minute, at most ~60 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::TestServer;

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

async fn eventually_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_for(what, Duration::from_secs(60), f).await
}

fn cronjob(name: &str, schedule: &str, suspend: bool) -> CronJob {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedule": schedule,
            "suspend": suspend,
            "jobTemplate": {
                "metadata": {"labels": {"cron": name}},
                "spec": {"template": {
                    "metadata": {"annotations": {"sim.skiff.dev/run-seconds": "1"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
                }}
            }
        }
    }))
    .unwrap()
}

fn start(client: &Client) -> Vec<tokio::task::JoinHandle<()>> {
    let ctx = context(client);
    vec![
        tokio::spawn(skiff_controllers::cronjob::run(ctx.clone())),
        tokio::spawn(skiff_controllers::job::run(ctx)),
        tokio::spawn(skiff_sim::run(
            client.clone(),
            skiff_sim::SimConfig {
                nodes: 1,
                ..Default::default()
            },
        )),
        tokio::spawn(skiff_scheduler::run(client.clone(), Default::default())),
    ]
}

async fn jobs_of(client: &Client, uid: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|r| r.uid == uid))
        .collect()
}

fn minute_floor(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap()
}

#[tokio::test]
async fn cronjob_runs_a_missed_minute_and_tracks_it() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client);
    let api: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let uid = api
        .create(&PostParams::default(), &cronjob("tick", "* * * * *", true))
        .await
        .unwrap()
        .uid()
        .unwrap();

    // Pretend the last run was two minutes ago, then resume: the latest missed minute runs now.
    let before = jiff::Timestamp::now();
    let last = minute_floor(before) - jiff::SignedDuration::from_mins(2);
    let status =
        json!({"status": {"lastScheduleTime": last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}});
    api.patch_status("tick", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs_of(&client, &uid).await.is_empty(), "suspended: no job");
    api.patch(
        "tick",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();

    let job = eventually("a job", || async {
        jobs_of(&client, &uid).await.into_iter().next()
    })
    .await;
    let after = jiff::Timestamp::now();
    // Named after the scheduled minute: the most recent one at the time of the sync.
    let minutes: i64 = job
        .name_any()
        .strip_prefix("tick-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (minute_floor(before).as_second() / 60..=minute_floor(after).as_second() / 60)
            .contains(&minutes),
        "{}",
        job.name_any()
    );
    let scheduled = jiff::Timestamp::from_second(minutes * 60).unwrap();
    assert_eq!(
        job.annotations()
            .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
            .map(String::as_str),
        Some(
            scheduled
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
                .as_str()
        )
    );
    assert_eq!(job.labels().get("cron").map(String::as_str), Some("tick"));
    let r = &job.owner_references()[0];
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.controller),
        ("CronJob", "tick", Some(true))
    );
    // The status is written after the Job is created: wait for it. The most
    // recent scheduled time: this job's minute, or a later one if the next
    // minute has come (and its job been created) in the meantime.
    let last = eventually("lastScheduleTime updated", || async {
        let cj = api.get("tick").await.unwrap();
        cj.status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| t.0)
            .filter(|t| *t > last)
    })
    .await;
    assert!(
        last >= scheduled && last.as_second() % 60 == 0,
        "lastScheduleTime {last}, first job for {scheduled}"
    );
    if last > scheduled {
        let jobs = jobs_of(&client, &uid).await;
        assert!(
            jobs.iter()
                .any(|j| j.name_any() == format!("tick-{}", last.as_second() / 60)),
            "a job for {last}"
        );
    }

    // The Job runs to completion: it leaves the active list and sets lastSuccessfulTime.
    let cj = eventually("the job done and noticed", || async {
        let cj = api.get("tick").await.unwrap();
        let s = cj.status.as_ref()?;
        (s.active.as_ref().is_none_or(Vec::is_empty) && s.last_successful_time.is_some())
            .then_some(cj)
    })
    .await;
    assert_eq!(
        jobs_of(&client, &uid).await.len(),
        1,
        "only the latest missed minute ran"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid == cj.metadata.uid)
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "SuccessfulCreate")
            && reasons.iter().any(|r| r == "SawCompletedJob"),
        "{reasons:?}"
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn cronjob_fires_at_the_next_minute() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client);
    let api: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &cronjob("every", "* * * * *", false),
        )
        .await
        .unwrap();
    let uid = created.uid().unwrap();
    let created_at = created.metadata.creation_timestamp.unwrap().0;
    // The controller wakes itself at the next minute (at most 60 s away).
    let job = eventually_for("the next minute's job", Duration::from_secs(70), || async {
        jobs_of(&client, &uid).await.into_iter().next()
    })
    .await;
    let minutes: i64 = job
        .name_any()
        .strip_prefix("every-")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        minutes,
        minute_floor(created_at).as_second() / 60 + 1,
        "the first minute after creation"
    );
    for t in tasks {
        t.abort();
    }
}
