//! The Job controller against a real API server. Hollow nodes run the pods
//! to success; failures are written through the pods' status subresource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut s = json!({
        "template": {
            "metadata": {"annotations": {"sim.skiff.dev/run-seconds": "1"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
        }
    });
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"}, "spec": s})).unwrap()
}

/// A cluster: the Job controller, and optionally hollow nodes with the scheduler.
fn start(client: &Client, nodes: bool) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(skiff_controllers::job::run(context(client)))];
    if nodes {
        tasks.push(tokio::spawn(skiff_sim::run(
            client.clone(),
            skiff_sim::SimConfig {
                nodes: 2,
                ..Default::default()
            },
        )));
        tasks.push(tokio::spawn(skiff_scheduler::run(
            client.clone(),
            Default::default(),
        )));
    }
    tasks
}

fn stop(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.abort();
    }
}

async fn pods_of(client: &Client, uid: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// The STATUS and COMPLETIONS columns of `kubectl get job <name>` (the server-side table).
async fn kubectl_columns(client: &Client, name: &str) -> (String, String) {
    let mut req = kube::core::Request::new("/apis/batch/v1/namespaces/default/jobs")
        .get(name, &Default::default())
        .unwrap();
    req.headers_mut().insert(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io"
            .parse()
            .unwrap(),
    );
    let text = client.request_text(req).await.unwrap();
    let table: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cells = &table["rows"][0]["cells"];
    (
        cells[1].as_str().unwrap_or_default().to_string(),
        cells[2].as_str().unwrap_or_default().to_string(),
    )
}

async fn fail_pod(client: &Client, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let status = json!({"status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn job_runs_to_completion_within_parallelism() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client, true);
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &job("pi", json!({"completions": 3, "parallelism": 2})),
        )
        .await
        .unwrap();
    let uid = created.uid().unwrap();

    let max_running = std::sync::atomic::AtomicUsize::new(0);
    let done = eventually("the job to complete", || {
        let (api, client, uid) = (api.clone(), client.clone(), uid.clone());
        let max_running = &max_running;
        async move {
            let pods = pods_of(&client, &uid).await;
            let running = pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && !matches!(phase(p), "Succeeded" | "Failed")
                })
                .count();
            max_running.fetch_max(running, std::sync::atomic::Ordering::SeqCst);
            let job = api.get("pi").await.unwrap();
            assert!(
                job.status.as_ref().and_then(|s| s.active).unwrap_or(0) <= 2,
                "status.active within parallelism"
            );
            condition(&job, "Complete").is_some().then_some(job)
        }
    })
    .await;
    let max_running = max_running.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max_running <= 2,
        "at most parallelism pods at once, saw {max_running}"
    );
    let s = done.status.as_ref().unwrap();
    assert_eq!(
        (s.succeeded, s.failed, s.active, s.ready),
        (Some(3), Some(0), Some(0), Some(0))
    );
    assert!(
        condition(&done, "SuccessCriteriaMet").is_some(),
        "the interim condition precedes Complete"
    );
    assert_eq!(
        condition(&done, "Complete").unwrap().reason.as_deref(),
        Some("CompletionsReached")
    );
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    assert!(s.start_time.as_ref().unwrap().0 <= s.completion_time.as_ref().unwrap().0);
    let unc = s.uncounted_terminated_pods.clone().unwrap_or_default();
    assert!(
        unc.succeeded.unwrap_or_default().is_empty() && unc.failed.unwrap_or_default().is_empty()
    );

    let pods = pods_of(&client, &uid).await;
    assert_eq!(pods.iter().filter(|p| phase(p) == "Succeeded").count(), 3);
    for p in &pods {
        assert!(p.name_any().starts_with("pi-"));
        assert_eq!(
            p.labels()
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str),
            Some("pi")
        );
        assert_eq!(p.labels().get("job-name").map(String::as_str), Some("pi"));
        assert_eq!(
            p.labels().get("batch.kubernetes.io/controller-uid"),
            Some(&uid)
        );
        assert!(
            p.finalizers()
                .iter()
                .all(|f| f != "batch.kubernetes.io/job-tracking"),
            "finalizer removed from {}",
            p.name_any()
        );
    }
    // The selector is generated (stored once the API server allows or does it).
    if let Some(sel) = done.spec.as_ref().unwrap().selector.as_ref() {
        assert_eq!(
            sel.match_labels
                .as_ref()
                .and_then(|m| m.get("batch.kubernetes.io/controller-uid")),
            Some(&uid)
        );
    }
    assert_eq!(
        kubectl_columns(&client, "pi").await,
        ("Complete".to_string(), "3/3".to_string())
    );
    stop(tasks);
}

#[tokio::test]
async fn job_fails_after_backoff_limit() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    // No nodes: pods stay Pending until the test fails them.
    let tasks = start(&client, false);
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    let uid = api
        .create(
            &PostParams::default(),
            &job("flaky", json!({"backoffLimit": 1})),
        )
        .await
        .unwrap()
        .uid()
        .unwrap();

    let first = eventually("a pod", || async {
        pods_of(&client, &uid).await.into_iter().next()
    })
    .await;
    assert!(
        first
            .finalizers()
            .iter()
            .any(|f| f == "batch.kubernetes.io/job-tracking")
    );
    fail_pod(&client, &first.name_any()).await;
    eventually("failed 1 counted, finalizer removed", || async {
        let job = api.get("flaky").await.unwrap();
        let pod = Api::<Pod>::namespaced(client.clone(), "default")
            .get(&first.name_any())
            .await
            .unwrap();
        (job.status.as_ref()?.failed == Some(1) && pod.finalizers().is_empty()).then_some(())
    })
    .await;
    // The replacement comes after the pod failure backoff (10 s).
    let second = eventually("a replacement pod", || async {
        pods_of(&client, &uid)
            .await
            .into_iter()
            .find(|p| p.name_any() != first.name_any() && phase(p) != "Failed")
    })
    .await;
    assert!(condition(&api.get("flaky").await.unwrap(), "Failed").is_none());
    fail_pod(&client, &second.name_any()).await;
    let failed = eventually("the job to fail", || async {
        Some(api.get("flaky").await.unwrap()).filter(|j| condition(j, "Failed").is_some())
    })
    .await;
    assert_eq!(
        condition(&failed, "Failed").unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(
        condition(&failed, "FailureTarget")
            .unwrap()
            .reason
            .as_deref(),
        Some("BackoffLimitExceeded")
    );
    let s = failed.status.as_ref().unwrap();
    assert_eq!(
        (s.failed, s.succeeded, s.active),
        (Some(2), Some(0), Some(0))
    );
    assert!(s.completion_time.is_none());
    assert_eq!(kubectl_columns(&client, "flaky").await.0, "Failed");
    stop(tasks);
}

#[tokio::test]
async fn job_fails_past_its_active_deadline() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client, false);
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    let uid = api
        .create(
            &PostParams::default(),
            &job(
                "slow",
                json!({"activeDeadlineSeconds": 1, "parallelism": 2, "completions": 4}),
            ),
        )
        .await
        .unwrap()
        .uid()
        .unwrap();
    // No wait for the 2 pods here: with a 1 s deadline a slow machine may
    // create and delete them between two polls. That they existed shows in
    // status.failed below (the active pods deleted at the deadline count).
    let failed = eventually("DeadlineExceeded", || async {
        Some(api.get("slow").await.unwrap()).filter(|j| condition(j, "Failed").is_some())
    })
    .await;
    assert_eq!(
        condition(&failed, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    // The active pods were deleted (and counted as failed).
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(2));
    eventually("pods gone", || async {
        pods_of(&client, &uid).await.is_empty().then_some(())
    })
    .await;
    stop(tasks);
}

#[tokio::test]
async fn indexed_job_completes_every_index() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client, true);
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    let spec = json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3});
    let uid = api
        .create(&PostParams::default(), &job("idx", spec))
        .await
        .unwrap()
        .uid()
        .unwrap();
    let done = eventually("complete", || async {
        Some(api.get("idx").await.unwrap()).filter(|j| condition(j, "Complete").is_some())
    })
    .await;
    let s = done.status.as_ref().unwrap();
    assert_eq!(
        (s.completed_indexes.as_deref(), s.succeeded),
        (Some("0-2"), Some(3))
    );
    let mut indexes: Vec<(String, String)> = pods_of(&client, &uid)
        .await
        .iter()
        .map(|p| {
            let ix = p
                .annotations()
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
                .unwrap();
            assert!(
                p.name_any().starts_with(&format!("idx-{ix}-")),
                "{}",
                p.name_any()
            );
            (ix, p.spec.as_ref().unwrap().hostname.clone().unwrap())
        })
        .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            ("0".into(), "idx-0".into()),
            ("1".into(), "idx-1".into()),
            ("2".into(), "idx-2".into())
        ]
    );
    stop(tasks);
}

#[tokio::test]
async fn suspended_job_waits_then_runs_and_expires() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let mut tasks = start(&client, true);
    let ctx = context(&client);
    tasks.push(tokio::spawn(skiff_controllers::gc::run(ctx)));
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    // Three seconds: long enough to see Complete before the TTL deletes
    // the Job even when a loaded machine slows the polling down.
    let spec = json!({"suspend": true, "ttlSecondsAfterFinished": 3});
    let uid = api
        .create(&PostParams::default(), &job("later", spec))
        .await
        .unwrap()
        .uid()
        .unwrap();
    let suspended = eventually("Suspended", || async {
        Some(api.get("later").await.unwrap()).filter(|j| condition(j, "Suspended").is_some())
    })
    .await;
    assert!(suspended.status.as_ref().unwrap().start_time.is_none());
    assert_eq!(kubectl_columns(&client, "later").await.0, "Suspended");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        pods_of(&client, &uid).await.is_empty(),
        "a suspended job runs nothing"
    );

    api.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let done = eventually("complete", || async {
        Some(api.get("later").await.unwrap()).filter(|j| condition(j, "Complete").is_some())
    })
    .await;
    let resumed = done
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Suspended")
        .unwrap();
    assert_eq!(
        (resumed.status.as_str(), resumed.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    assert!(!pods_of(&client, &uid).await.is_empty());
    // ttlSecondsAfterFinished: the Job goes, and the garbage collector takes its pods.
    eventually("the job deleted", || async {
        match api.get("later").await {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    eventually("its pods collected", || async {
        pods_of(&client, &uid).await.is_empty().then_some(())
    })
    .await;
    stop(tasks);
}

/// Security review D4: an activeDeadlineSeconds past the last representable
/// instant made the Job controller panic, and with it every controller, at
/// each restart. It is accepted (as Kubernetes accepts any int64), never
/// reached, and a Job created after it still runs to completion.
#[tokio::test]
async fn a_deadline_beyond_the_clock_neither_panics_nor_stops_other_jobs() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let tasks = start(&client, true);
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &job(
            "far",
            json!({"activeDeadlineSeconds": 9_000_000_000_000_000_000_i64}),
        ),
    )
    .await
    .unwrap();
    let next = api
        .create(&PostParams::default(), &job("next", json!({})))
        .await
        .unwrap();
    let far_done = eventually("both jobs to complete", || {
        let api = api.clone();
        async move {
            let far = api.get("far").await.ok()?;
            let next = api.get("next").await.ok()?;
            (condition(&far, "Complete").is_some() && condition(&next, "Complete").is_some())
                .then_some(far)
        }
    })
    .await;
    assert!(condition(&far_done, "Failed").is_none());
    assert!(next.uid().is_some());
    stop(tasks);
}
