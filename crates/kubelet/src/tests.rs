//! The pod workers against the fake runtime.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::env::NoLookup;
use crate::fake::FakeRuntime;
use crate::runtime::{ContainerState, LABEL_NODE, LABEL_POD_UID, Runtime, SandboxState};
use crate::sync::{PodWorker, Settings, phase, pull_policy};

fn settings(dir: &std::path::Path) -> Arc<Settings> {
    let mut s = Settings::new("node-1", "192.168.1.10", dir.to_path_buf());
    s.runtime_name = "containerd".into();
    s.crash_backoff_initial = Duration::from_secs(10);
    s.cgroup_root = String::new();
    Arc::new(s)
}

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
    }))
    .unwrap()
}

fn simple(restart: &str) -> Pod {
    pod(json!({"nodeName": "node-1", "restartPolicy": restart, "containers": [{"name": "app", "image": "busybox:skiff", "command": ["sh", "-c", "echo $(GREETING)"], "env": [{"name": "GREETING", "value": "hi"}]}]}))
}

struct Harness {
    rt: Arc<FakeRuntime>,
    worker: PodWorker,
    _dir: tempfile::TempDir,
    settings: Arc<Settings>,
}

impl Harness {
    fn new(images: &[&str]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let rt = Arc::new(FakeRuntime::with_images(images));
        let settings = settings(dir.path());
        let worker = PodWorker::new(rt.clone() as Arc<dyn Runtime>, settings.clone());
        Harness { rt, worker, _dir: dir, settings }
    }

    async fn sync(&mut self, pod: &Pod) -> Value {
        self.worker.sync(pod, &NoLookup).await.unwrap().status
    }

    /// A new worker over the same runtime (an agent restart).
    fn restart_worker(&mut self) {
        self.worker = PodWorker::new(self.rt.clone() as Arc<dyn Runtime>, self.settings.clone());
    }
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap()
}

#[tokio::test]
async fn runs_a_pod_and_reports_it_running() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = simple("Always");
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(st["podIP"], "10.42.0.2");
    assert_eq!(st["podIPs"][0]["ip"], "10.42.0.2");
    assert_eq!(st["hostIP"], "192.168.1.10");
    assert!(st["startTime"].is_string());
    let c = &st["containerStatuses"][0];
    assert!(c["state"]["running"]["startedAt"].is_string(), "{c:#}");
    assert_eq!(c["ready"], true);
    assert_eq!(c["started"], true);
    assert_eq!(c["restartCount"], 0);
    assert!(c["containerID"].as_str().unwrap().starts_with("containerd://"));
    assert_eq!(c["image"], "docker.io/library/busybox:skiff");
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready", "PodReadyToStartContainers"] {
        assert_eq!(condition(&st, kind)["status"], "True", "{kind}");
    }
    // The typed round trip accepts it.
    let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(st.clone()).unwrap();

    // What the container was made from.
    {
        let s = h.rt.lock();
        let c = s.containers.values().next().unwrap();
        assert_eq!(c.config.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(c.config.env, vec![("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(c.config.labels[LABEL_POD_UID], "uid-1");
        assert_eq!(c.config.labels[LABEL_NODE], "node-1");
        assert_eq!(c.config.log_path, "app/0.log");
        let sb = s.sandboxes.values().next().unwrap();
        assert_eq!(sb.config.hostname, "web");
        assert!(sb.config.log_directory.ends_with("default_web_uid-1"));
    }

    // Nothing more to do: a second sync changes nothing and starts nothing.
    let again = h.sync(&p).await;
    assert_eq!(again, st);
    assert_eq!(h.rt.count_calls("CreateContainer"), 1);
    assert_eq!(h.rt.count_calls("RunPodSandbox"), 1);
    let events: Vec<String> = h.worker.take_events().into_iter().map(|e| e.reason).collect();
    assert_eq!(events, vec!["Pulled", "Created", "Started"]);
}

#[tokio::test]
async fn init_containers_run_in_order_first() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(json!({"containers": [{"name": "app", "image": "busybox:skiff"}], "initContainers": [
        {"name": "one", "image": "busybox:skiff"}, {"name": "two", "image": "busybox:skiff"}]}));
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Pending");
    assert_eq!(condition(&st, "Initialized")["status"], "False");
    assert_eq!(condition(&st, "Initialized")["reason"], "ContainersNotInitialized");
    assert!(st["initContainerStatuses"][0]["state"]["running"].is_object());
    assert_eq!(st["initContainerStatuses"][1]["state"]["waiting"]["reason"], "ContainerCreating");
    assert_eq!(st["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
    assert_eq!(h.rt.count_calls("CreateContainer"), 1);

    // Still running: nothing else starts.
    h.sync(&p).await;
    assert_eq!(h.rt.count_calls("CreateContainer"), 1);

    h.rt.exit("one", 0);
    let st = h.sync(&p).await;
    assert_eq!(st["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    assert!(st["initContainerStatuses"][1]["state"]["running"].is_object());
    assert_eq!(h.rt.count_calls("CreateContainer two"), 1);
    assert_eq!(h.rt.count_calls("CreateContainer app"), 0);

    h.rt.exit("two", 0);
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(condition(&st, "Initialized")["status"], "True");
    assert_eq!(st["initContainerStatuses"][1]["ready"], true);
    assert!(st["containerStatuses"][0]["state"]["running"].is_object());
    let order: Vec<String> = h.rt.lock().calls.iter().filter(|c| c.starts_with("CreateContainer")).cloned().collect();
    assert_eq!(order, vec!["CreateContainer one 0", "CreateContainer two 0", "CreateContainer app 0"]);
}

#[tokio::test]
async fn failing_init_container_fails_a_never_pod() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox:skiff"}], "initContainers": [{"name": "one", "image": "busybox:skiff"}]}));
    h.sync(&p).await;
    h.rt.exit("one", 3);
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    assert_eq!(h.rt.count_calls("CreateContainer app"), 0);
}

#[tokio::test]
async fn missing_image_is_err_image_pull_then_back_off() {
    let mut h = Harness::new(&[]);
    let p = pod(json!({"containers": [{"name": "app", "image": "nginx:1.27"}]}));
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Pending");
    let w = &st["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(w["reason"], "ErrImagePull", "{st:#}");
    assert!(w["message"].as_str().unwrap().contains("nginx:1.27"));
    assert_eq!(condition(&st, "Ready")["reason"], "ContainersNotReady");
    let st = h.sync(&p).await;
    assert_eq!(st["containerStatuses"][0]["state"]["waiting"]["reason"], "ImagePullBackOff");
    assert_eq!(h.rt.count_calls("PullImage"), 1, "no pull during the backoff");
    let reasons: Vec<String> = h.worker.take_events().into_iter().map(|e| e.reason).collect();
    assert!(reasons.contains(&"Pulling".to_string()) && reasons.contains(&"Failed".to_string()) && reasons.contains(&"BackOff".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn pull_policy_never_and_defaults() {
    let mut h = Harness::new(&[]);
    let p = pod(json!({"containers": [{"name": "app", "image": "busybox:skiff", "imagePullPolicy": "Never"}]}));
    let st = h.sync(&p).await;
    assert_eq!(st["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImageNeverPull");
    assert_eq!(h.rt.count_calls("PullImage"), 0);

    let c = |image: &str| serde_json::from_value::<k8s_openapi::api::core::v1::Container>(json!({"name": "c", "image": image})).unwrap();
    assert_eq!(pull_policy(&c("busybox")), "Always");
    assert_eq!(pull_policy(&c("busybox:latest")), "Always");
    assert_eq!(pull_policy(&c("busybox:skiff")), "IfNotPresent");
    assert_eq!(pull_policy(&c("localhost:5000/busybox")), "Always");
    assert_eq!(pull_policy(&c("busybox@sha256:abc")), "IfNotPresent");
}

#[tokio::test]
async fn present_image_is_used_when_always_pull_fails() {
    let mut h = Harness::new(&["busybox"]);
    let p = pod(json!({"containers": [{"name": "app", "image": "busybox"}]}));
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(h.rt.count_calls("PullImage"), 1);
}

#[tokio::test]
async fn crashing_container_backs_off() {
    let mut h = Harness::new(&["busybox:skiff"]);
    h.rt.lock().exit_on_start.insert("app".into(), 1);
    let p = simple("Always");
    let st = h.sync(&p).await;
    let c = &st["containerStatuses"][0];
    assert_eq!(c["state"]["terminated"]["exitCode"], 1, "{c:#}");
    assert_eq!(c["state"]["terminated"]["reason"], "Error");
    assert_eq!(c["restartCount"], 0);
    // The first restart is immediate.
    let st = h.sync(&p).await;
    assert_eq!(st["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(h.rt.count_calls("CreateContainer app 1"), 1);
    // The next waits: CrashLoopBackOff with the last termination.
    let r = h.worker.sync(&p, &NoLookup).await.unwrap();
    let c = &r.status["containerStatuses"][0];
    assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff", "{c:#}");
    assert!(c["state"]["waiting"]["message"].as_str().unwrap().starts_with("back-off 10s restarting failed container=app pod=web_default(uid-1)"));
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(c["restartCount"], 1);
    assert_eq!(c["ready"], false);
    assert_eq!(r.status["phase"], "Running");
    assert_eq!(condition(&r.status, "Ready")["status"], "False");
    assert!(r.requeue <= Duration::from_secs(10), "{:?}", r.requeue);
    assert_eq!(h.rt.count_calls("CreateContainer"), 2);
    assert!(h.worker.take_events().iter().any(|e| e.reason == "BackOff"));
}

#[tokio::test]
async fn crash_backoff_doubles_and_resets() {
    use crate::sync::Backoff;
    use std::time::SystemTime;
    let mut b = Backoff::default();
    let t0 = SystemTime::now();
    let (i, m) = (Duration::from_secs(10), Duration::from_secs(300));
    assert_eq!(b.until("c", t0, t0), None);
    assert_eq!(b.next("c", t0, i, m), Duration::from_secs(10));
    assert_eq!(b.until("c", t0, t0 + Duration::from_secs(5)), Some(t0 + Duration::from_secs(10)));
    assert_eq!(b.until("c", t0, t0 + Duration::from_secs(11)), None);
    assert_eq!(b.next("c", t0 + Duration::from_secs(11), i, m), Duration::from_secs(20));
    let mut t = t0 + Duration::from_secs(11);
    for _ in 0..10 {
        t += Duration::from_secs(1);
        b.next("c", t, i, m);
    }
    assert_eq!(b.next("c", t, i, m), Duration::from_secs(300));
    // Long quiet: starts over.
    assert_eq!(b.next("c", t + Duration::from_secs(601), i, m), Duration::from_secs(10));
}

#[tokio::test]
async fn restart_policies_decide_the_phase() {
    for (restart, code, want) in [("Never", 0, "Succeeded"), ("Never", 2, "Failed"), ("OnFailure", 0, "Succeeded")] {
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = simple(restart);
        h.sync(&p).await;
        h.rt.exit("app", code);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], want, "{restart} {code}: {st:#}");
        assert_eq!(st["containerStatuses"][0]["state"]["terminated"]["exitCode"], code);
        assert_eq!(condition(&st, "Ready")["reason"], "PodCompleted");
        // The sandbox is stopped; nothing restarts.
        assert!(h.rt.lock().sandboxes.values().all(|s| s.state == SandboxState::NotReady));
        let again = h.sync(&p).await;
        assert_eq!(again, st);
        assert_eq!(h.rt.count_calls("CreateContainer"), 1);
    }
    // OnFailure restarts a failure.
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = simple("OnFailure");
    h.sync(&p).await;
    h.rt.exit("app", 1);
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Running");
    assert_eq!(st["containerStatuses"][0]["restartCount"], 1);
}

#[tokio::test]
async fn unstartable_command_is_run_container_error() {
    let mut h = Harness::new(&["busybox:skiff"]);
    h.rt.lock().fail_start.insert("app".into());
    let p = simple("Always");
    let st = h.sync(&p).await;
    assert_eq!(st["containerStatuses"][0]["state"]["waiting"]["reason"], "RunContainerError", "{st:#}");
    // Then it crash-loops like any failing container.
    h.sync(&p).await;
    let st = h.sync(&p).await;
    assert_eq!(st["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff", "{st:#}");
    assert_eq!(st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 128);
}

#[tokio::test]
async fn missing_config_map_is_create_container_config_error() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(json!({"containers": [{"name": "app", "image": "busybox:skiff", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}]}));
    let st = h.sync(&p).await;
    let w = &st["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(w["reason"], "CreateContainerConfigError");
    assert_eq!(w["message"], "configmap \"cfg\" not found");
}

#[tokio::test]
async fn termination_stops_with_the_grace_period_then_removes() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = simple("Always");
    h.sync(&p).await;
    let mut deleting = p.clone();
    deleting.metadata.deletion_grace_period_seconds = Some(7);
    h.worker.terminate(&deleting, crate::sync::grace_period(&deleting, None)).await.unwrap();
    let s = h.rt.lock();
    assert_eq!(s.stops.len(), 1);
    assert_eq!(s.stops[0].1, 7);
    assert!(s.sandboxes.is_empty());
    assert!(s.containers.is_empty());
    let stop = s.calls.iter().position(|c| c.starts_with("StopContainer")).unwrap();
    let remove = s.calls.iter().position(|c| c.starts_with("RemovePodSandbox")).unwrap();
    assert!(stop < remove);
}

#[tokio::test]
async fn grace_periods() {
    let mut p = simple("Always");
    assert_eq!(crate::sync::grace_period(&p, None), 30);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(5);
    assert_eq!(crate::sync::grace_period(&p, None), 5);
    p.metadata.deletion_grace_period_seconds = Some(2);
    assert_eq!(crate::sync::grace_period(&p, None), 2);
}

#[tokio::test]
async fn a_new_worker_adopts_running_containers() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = simple("Always");
    let before = h.sync(&p).await;
    h.restart_worker();
    let after = h.sync(&p).await;
    assert_eq!(h.rt.count_calls("CreateContainer"), 1);
    assert_eq!(h.rt.count_calls("RunPodSandbox"), 1);
    assert_eq!(after["containerStatuses"], before["containerStatuses"]);
    assert_eq!(after["podIP"], before["podIP"]);
    assert_eq!(after["phase"], "Running");
}

#[tokio::test]
async fn a_dead_sandbox_is_recreated() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = simple("Always");
    h.sync(&p).await;
    let id = h.rt.lock().sandboxes.keys().next().unwrap().clone();
    h.rt.stop_sandbox(&id).await.unwrap();
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(h.rt.count_calls("RunPodSandbox web 1"), 1);
    assert_eq!(st["containerStatuses"][0]["restartCount"], 1);
    assert!(h.worker.take_events().iter().any(|e| e.reason == "SandboxChanged"));
}

#[tokio::test]
async fn host_network_pods_get_the_host_ip() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(json!({"hostNetwork": true, "containers": [{"name": "app", "image": "busybox:skiff"}]}));
    let st = h.sync(&p).await;
    assert_eq!(st["podIP"], "192.168.1.10");
    assert!(h.rt.lock().sandboxes.values().next().unwrap().config.host_network);
}

#[tokio::test]
async fn orphans_are_removed_and_others_kept() {
    let mut h = Harness::new(&["busybox:skiff"]);
    h.sync(&simple("Always")).await;
    let mut other: Pod = pod(json!({"containers": [{"name": "app", "image": "busybox:skiff"}]}));
    other.metadata.uid = Some("uid-2".into());
    h.sync(&other).await;
    // Claimed: uid-2 only.
    let claimed: HashSet<String> = ["uid-2".to_string()].into();
    crate::pods::remove_orphans(h.rt.as_ref(), "node-1", &claimed, "").await;
    {
        let s = h.rt.lock();
        assert_eq!(s.sandboxes.len(), 1);
        assert!(s.sandboxes.values().all(|sb| sb.config.uid == "uid-2"));
        assert!(s.containers.values().all(|c| c.config.labels[LABEL_POD_UID] == "uid-2"));
    }
    // Another node's containers are not ours to remove.
    crate::pods::remove_orphans(h.rt.as_ref(), "node-2", &HashSet::new(), "").await;
    assert_eq!(h.rt.lock().sandboxes.len(), 1);
}

#[tokio::test]
async fn old_instances_are_collected() {
    let mut h = Harness::new(&["busybox:skiff"]);
    h.rt.lock().exit_on_start.insert("app".into(), 1);
    let p = simple("Always");
    let mut s = (*h.settings).clone();
    s.crash_backoff_initial = Duration::from_millis(1);
    s.crash_backoff_max = Duration::from_millis(2);
    h.worker = PodWorker::new(h.rt.clone() as Arc<dyn Runtime>, Arc::new(s));
    for _ in 0..6 {
        h.sync(&p).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let st = h.sync(&p).await;
    let attempts: Vec<u32> = h.rt.lock().containers.values().map(|c| c.config.attempt).collect();
    assert!(attempts.len() <= 2, "{attempts:?}");
    assert!(st["containerStatuses"][0]["restartCount"].as_u64().unwrap() >= 5);
    assert!(h.rt.lock().containers.values().all(|c| c.state == ContainerState::Exited));
}

#[test]
fn phases() {
    let running = json!({"state": {"running": {}}});
    let waiting = json!({"state": {"waiting": {"reason": "ContainerCreating"}}});
    let crashloop = json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}});
    let ok = json!({"state": {"terminated": {"exitCode": 0}}});
    let bad = json!({"state": {"terminated": {"exitCode": 1}}});
    assert_eq!(phase("Always", false, false, std::slice::from_ref(&running)), "Pending");
    assert_eq!(phase("Never", false, true, std::slice::from_ref(&waiting)), "Failed");
    assert_eq!(phase("Always", true, false, &[running.clone(), waiting.clone()]), "Pending");
    assert_eq!(phase("Always", true, false, &[running.clone(), crashloop.clone()]), "Running");
    assert_eq!(phase("Always", true, false, &[crashloop]), "Running");
    assert_eq!(phase("Never", true, false, &[ok.clone(), bad.clone()]), "Failed");
    assert_eq!(phase("Never", true, false, &[ok.clone(), ok.clone()]), "Succeeded");
    assert_eq!(phase("OnFailure", true, false, &[ok.clone(), bad]), "Running");
    assert_eq!(phase("Always", true, false, &[ok]), "Running");
    assert_eq!(phase("Always", true, false, &[]), "Pending");
}

#[test]
fn resources_follow_the_kubelet() {
    use crate::sync::{qos_class, resources};
    let p = pod(json!({"containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}));
    assert_eq!(qos_class(&p), "Guaranteed");
    let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
    assert_eq!((r.cpu_period, r.cpu_quota, r.cpu_shares), (100_000, 50_000, 512));
    assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    assert_eq!(r.oom_score_adj, -997);

    let p = pod(json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}));
    assert_eq!(qos_class(&p), "Burstable");
    let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
    assert_eq!((r.cpu_period, r.cpu_quota, r.cpu_shares, r.memory_limit_in_bytes), (0, 0, 102, 0));
    assert_eq!(r.oom_score_adj, 750);

    let p = simple("Always");
    assert_eq!(qos_class(&p), "BestEffort");
    let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
    assert_eq!((r.cpu_shares, r.oom_score_adj), (2, 1000));
    assert_eq!(crate::sync::parse_millicores("1.5"), Some(1500));
    assert_eq!(crate::sync::parse_millicores("250m"), Some(250));
}
