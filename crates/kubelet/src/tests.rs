//! The pod workers against the fake runtime.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::env::NoLookup;
use crate::fake::FakeRuntime;
use crate::runtime::{
    ContainerState, LABEL_NODE, LABEL_POD_UID, Runtime, SandboxState, SecurityProfile,
};
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
    pod(
        json!({"nodeName": "node-1", "restartPolicy": restart, "containers": [{"name": "app", "image": "busybox:skiff", "command": ["sh", "-c", "echo $(GREETING)"], "env": [{"name": "GREETING", "value": "hi"}]}]}),
    )
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
        Harness {
            rt,
            worker,
            _dir: dir,
            settings,
        }
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
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap()
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
    assert!(
        c["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    assert_eq!(c["image"], "docker.io/library/busybox:skiff");
    for kind in [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodReadyToStartContainers",
    ] {
        assert_eq!(condition(&st, kind)["status"], "True", "{kind}");
    }
    // The typed round trip accepts it.
    let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(st.clone()).unwrap();

    // What the container was made from.
    {
        let s = h.rt.lock();
        let c = s.containers.values().next().unwrap();
        assert_eq!(c.config.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(
            c.config.env,
            vec![("GREETING".to_string(), "hi".to_string())]
        );
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
    let events: Vec<String> = h
        .worker
        .take_events()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert_eq!(events, vec!["Pulled", "Created", "Started"]);
}

#[tokio::test]
async fn init_containers_run_in_order_first() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(
        json!({"containers": [{"name": "app", "image": "busybox:skiff"}], "initContainers": [
        {"name": "one", "image": "busybox:skiff"}, {"name": "two", "image": "busybox:skiff"}]}),
    );
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Pending");
    assert_eq!(condition(&st, "Initialized")["status"], "False");
    assert_eq!(
        condition(&st, "Initialized")["reason"],
        "ContainersNotInitialized"
    );
    assert!(st["initContainerStatuses"][0]["state"]["running"].is_object());
    // ↔ convertToAPIContainerStatuses: with init containers, what is not
    // created yet waits with PodInitializing.
    assert_eq!(
        st["initContainerStatuses"][1]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(h.rt.count_calls("CreateContainer"), 1);

    // Still running: nothing else starts.
    h.sync(&p).await;
    assert_eq!(h.rt.count_calls("CreateContainer"), 1);

    h.rt.exit("one", 0);
    let st = h.sync(&p).await;
    assert_eq!(
        st["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert!(st["initContainerStatuses"][1]["state"]["running"].is_object());
    assert_eq!(h.rt.count_calls("CreateContainer two"), 1);
    assert_eq!(h.rt.count_calls("CreateContainer app"), 0);

    h.rt.exit("two", 0);
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(condition(&st, "Initialized")["status"], "True");
    assert_eq!(st["initContainerStatuses"][1]["ready"], true);
    assert!(st["containerStatuses"][0]["state"]["running"].is_object());
    let order: Vec<String> =
        h.rt.lock()
            .calls
            .iter()
            .filter(|c| c.starts_with("CreateContainer"))
            .cloned()
            .collect();
    assert_eq!(
        order,
        vec![
            "CreateContainer one 0",
            "CreateContainer two 0",
            "CreateContainer app 0"
        ]
    );
}

#[tokio::test]
async fn failing_init_container_fails_a_never_pod() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(
        json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox:skiff"}], "initContainers": [{"name": "one", "image": "busybox:skiff"}]}),
    );
    h.sync(&p).await;
    h.rt.exit("one", 3);
    let st = h.sync(&p).await;
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(
        st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
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
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ImagePullBackOff"
    );
    assert_eq!(
        h.rt.count_calls("PullImage"),
        1,
        "no pull during the backoff"
    );
    let reasons: Vec<String> = h
        .worker
        .take_events()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"Pulling".to_string())
            && reasons.contains(&"Failed".to_string())
            && reasons.contains(&"BackOff".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn pull_policy_never_and_defaults() {
    let mut h = Harness::new(&[]);
    let p = pod(
        json!({"containers": [{"name": "app", "image": "busybox:skiff", "imagePullPolicy": "Never"}]}),
    );
    let st = h.sync(&p).await;
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImageNeverPull"
    );
    assert_eq!(h.rt.count_calls("PullImage"), 0);

    let c = |image: &str| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Container>(
            json!({"name": "c", "image": image}),
        )
        .unwrap()
    };
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
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=app pod=web_default(uid-1)")
    );
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
    assert_eq!(
        b.until("c", t0, t0 + Duration::from_secs(5)),
        Some(t0 + Duration::from_secs(10))
    );
    assert_eq!(b.until("c", t0, t0 + Duration::from_secs(11)), None);
    assert_eq!(
        b.next("c", t0 + Duration::from_secs(11), i, m),
        Duration::from_secs(20)
    );
    let mut t = t0 + Duration::from_secs(11);
    for _ in 0..10 {
        t += Duration::from_secs(1);
        b.next("c", t, i, m);
    }
    assert_eq!(b.next("c", t, i, m), Duration::from_secs(300));
    // Long quiet: starts over.
    assert_eq!(
        b.next("c", t + Duration::from_secs(601), i, m),
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn restart_policies_decide_the_phase() {
    for (restart, code, want) in [
        ("Never", 0, "Succeeded"),
        ("Never", 2, "Failed"),
        ("OnFailure", 0, "Succeeded"),
    ] {
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = simple(restart);
        h.sync(&p).await;
        h.rt.exit("app", code);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], want, "{restart} {code}: {st:#}");
        assert_eq!(
            st["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            code
        );
        let reason = if want == "Failed" {
            "PodFailed"
        } else {
            "PodCompleted"
        };
        assert_eq!(condition(&st, "Ready")["reason"], reason);
        // The sandbox is stopped; nothing restarts.
        assert!(
            h.rt.lock()
                .sandboxes
                .values()
                .all(|s| s.state == SandboxState::NotReady)
        );
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
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["reason"], "RunContainerError",
        "{st:#}"
    );
    // Then it crash-loops like any failing container.
    h.sync(&p).await;
    let st = h.sync(&p).await;
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff",
        "{st:#}"
    );
    assert_eq!(
        st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        128
    );
}

#[tokio::test]
async fn missing_config_map_is_create_container_config_error() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(
        json!({"containers": [{"name": "app", "image": "busybox:skiff", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}]}),
    );
    let st = h.sync(&p).await;
    let w = &st["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(w["reason"], "CreateContainerConfigError");
    assert_eq!(w["message"], "configmap \"cfg\" not found");
}

#[tokio::test]
async fn run_as_non_root_refuses_a_root_image() {
    let mut h = Harness::new(&["busybox:skiff", "app:user"]);
    h.rt.lock()
        .image_users
        .insert("app:user".into(), (Some(1000), String::new()));
    let p = pod(json!({"securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "root", "image": "busybox:skiff"},
            {"name": "user", "image": "app:user"},
            {"name": "explicit", "image": "busybox:skiff", "securityContext": {"runAsUser": 1234}}]}));
    let st = h.sync(&p).await;
    let by_name = |n: &str| {
        st["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    let w = &by_name("root")["state"]["waiting"];
    assert_eq!(w["reason"], "CreateContainerConfigError", "{st:#}");
    assert_eq!(
        w["message"],
        "container has runAsNonRoot and image will run as root (pod: \"web_default(uid-1)\", container: root)"
    );
    assert!(by_name("user")["state"]["running"].is_object(), "{st:#}");
    assert!(
        by_name("explicit")["state"]["running"].is_object(),
        "{st:#}"
    );
    let s = h.rt.lock();
    assert!(!s.containers.values().any(|c| c.config.name == "root"));
}

#[tokio::test]
async fn run_as_non_root_refuses_a_named_image_user() {
    let mut h = Harness::new(&["app:named"]);
    h.rt.lock()
        .image_users
        .insert("app:named".into(), (None, "nobody".into()));
    let p = pod(json!({"containers": [{"name": "app", "image": "app:named",
        "securityContext": {"runAsNonRoot": true}}]}));
    let st = h.sync(&p).await;
    let w = &st["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(w["reason"], "CreateContainerConfigError", "{st:#}");
    assert_eq!(
        w["message"],
        "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"web_default(uid-1)\", container: app)"
    );
}

#[tokio::test]
async fn hardening_fields_reach_the_runtime() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "busybox:skiff",
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}},
            {"name": "local", "image": "busybox:skiff",
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}]}),
    );
    h.sync(&p).await;
    let s = h.rt.lock();
    let sb = &s.sandboxes.values().next().unwrap().config;
    assert_eq!(sb.seccomp, SecurityProfile::RuntimeDefault);
    let app = &s
        .containers
        .values()
        .find(|c| c.config.name == "app")
        .unwrap()
        .config;
    assert!(app.read_only_root && app.no_new_privs);
    assert_eq!(app.capabilities_drop, vec!["ALL".to_string()]);
    assert_eq!(app.capabilities_add, vec!["NET_BIND_SERVICE".to_string()]);
    assert_eq!(app.seccomp, SecurityProfile::RuntimeDefault);
    let local = &s
        .containers
        .values()
        .find(|c| c.config.name == "local")
        .unwrap()
        .config;
    assert_eq!(
        local.seccomp,
        SecurityProfile::Localhost(h.settings.seccomp_root.join("p.json").display().to_string())
    );
    assert!(!local.read_only_root && !local.no_new_privs);
    let plain = pod(json!({"containers": [{"name": "x", "image": "busybox:skiff"}]}));
    assert_eq!(
        h.worker.sandbox_config(&plain, 0).seccomp,
        SecurityProfile::Unconfined
    );
}

#[tokio::test]
async fn termination_stops_with_the_grace_period_then_removes() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = simple("Always");
    h.sync(&p).await;
    let mut deleting = p.clone();
    deleting.metadata.deletion_grace_period_seconds = Some(7);
    h.worker
        .terminate(&deleting, crate::sync::grace_period(&deleting, None))
        .await
        .unwrap();
    let s = h.rt.lock();
    assert_eq!(s.stops.len(), 1);
    assert_eq!(s.stops[0].1, 7);
    assert!(s.sandboxes.is_empty());
    assert!(s.containers.is_empty());
    let stop = s
        .calls
        .iter()
        .position(|c| c.starts_with("StopContainer"))
        .unwrap();
    let remove = s
        .calls
        .iter()
        .position(|c| c.starts_with("RemovePodSandbox"))
        .unwrap();
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
    assert!(
        h.worker
            .take_events()
            .iter()
            .any(|e| e.reason == "SandboxChanged")
    );
}

#[tokio::test]
async fn host_network_pods_get_the_host_ip() {
    let mut h = Harness::new(&["busybox:skiff"]);
    let p = pod(
        json!({"hostNetwork": true, "containers": [{"name": "app", "image": "busybox:skiff"}]}),
    );
    let st = h.sync(&p).await;
    assert_eq!(st["podIP"], "192.168.1.10");
    assert!(
        h.rt.lock()
            .sandboxes
            .values()
            .next()
            .unwrap()
            .config
            .host_network
    );
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
        assert!(
            s.containers
                .values()
                .all(|c| c.config.labels[LABEL_POD_UID] == "uid-2")
        );
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
    let attempts: Vec<u32> =
        h.rt.lock()
            .containers
            .values()
            .map(|c| c.config.attempt)
            .collect();
    assert!(attempts.len() <= 2, "{attempts:?}");
    assert!(st["containerStatuses"][0]["restartCount"].as_u64().unwrap() >= 5);
    assert!(
        h.rt.lock()
            .containers
            .values()
            .all(|c| c.state == ContainerState::Exited)
    );
}

#[test]
fn phases() {
    let running = json!({"state": {"running": {}}});
    let waiting = json!({"state": {"waiting": {"reason": "ContainerCreating"}}});
    let crashloop = json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}});
    let ok = json!({"state": {"terminated": {"exitCode": 0}}});
    let bad = json!({"state": {"terminated": {"exitCode": 1}}});
    assert_eq!(
        phase("Always", false, false, std::slice::from_ref(&running)),
        "Pending"
    );
    assert_eq!(
        phase("Never", false, true, std::slice::from_ref(&waiting)),
        "Failed"
    );
    assert_eq!(
        phase("Always", true, false, &[running.clone(), waiting.clone()]),
        "Pending"
    );
    assert_eq!(
        phase("Always", true, false, &[running.clone(), crashloop.clone()]),
        "Running"
    );
    assert_eq!(phase("Always", true, false, &[crashloop]), "Running");
    assert_eq!(
        phase("Never", true, false, &[ok.clone(), bad.clone()]),
        "Failed"
    );
    assert_eq!(
        phase("Never", true, false, &[ok.clone(), ok.clone()]),
        "Succeeded"
    );
    assert_eq!(
        phase("OnFailure", true, false, &[ok.clone(), bad]),
        "Running"
    );
    assert_eq!(phase("Always", true, false, &[ok]), "Running");
    assert_eq!(phase("Always", true, false, &[]), "Pending");
}

#[test]
fn resources_follow_the_kubelet() {
    use crate::sync::{qos_class, resources};
    let p = pod(
        json!({"containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}),
    );
    assert_eq!(qos_class(&p), "Guaranteed");
    let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
    assert_eq!(
        (r.cpu_period, r.cpu_quota, r.cpu_shares),
        (100_000, 50_000, 512)
    );
    assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    assert_eq!(r.oom_score_adj, -997);

    let p = pod(
        json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}),
    );
    assert_eq!(qos_class(&p), "Burstable");
    let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
    assert_eq!(
        (
            r.cpu_period,
            r.cpu_quota,
            r.cpu_shares,
            r.memory_limit_in_bytes
        ),
        (0, 0, 102, 0)
    );
    assert_eq!(r.oom_score_adj, 750);

    let p = simple("Always");
    assert_eq!(qos_class(&p), "BestEffort");
    let r = resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
    assert_eq!((r.cpu_shares, r.oom_score_adj), (2, 1000));
    assert_eq!(crate::sync::parse_millicores("1.5"), Some(1500));
    assert_eq!(crate::sync::parse_millicores("250m"), Some(250));
}

/// Volumes and DNS through the pod worker, with a fake mounter and a stub API.
mod volume_tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    use crate::env::{Lookup, Token, TokenRequest};
    use crate::fake::FakeRuntime;
    use crate::mount::FakeMounter;
    use crate::runtime::{DnsConfig, Mount, Runtime};
    use crate::sync::{EventKind, PodWorker, Settings};

    #[derive(Default)]
    struct Api {
        config_maps: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
        secrets: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
        tokens: Mutex<Vec<TokenRequest>>,
    }

    impl Api {
        fn put_config_map(&self, name: &str, data: &[(&str, &str)]) {
            self.config_maps.lock().unwrap().insert(
                name.into(),
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            );
        }
    }

    fn to_strings(m: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    }

    #[async_trait::async_trait]
    impl Lookup for Api {
        async fn config_map(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(self
                .config_maps
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .map(to_strings))
        }
        async fn secret(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(self
                .secrets
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .map(to_strings))
        }
        async fn config_map_files(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
            Ok(self.config_maps.lock().unwrap().get(name).cloned())
        }
        async fn secret_files(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
            Ok(self.secrets.lock().unwrap().get(name).cloned())
        }
        async fn service_account_token(
            &self,
            namespace: &str,
            request: &TokenRequest,
        ) -> Result<Token, String> {
            let mut t = self.tokens.lock().unwrap();
            t.push(request.clone());
            Ok(Token {
                token: format!(
                    "token-{}-{}-{}",
                    namespace,
                    request.service_account,
                    t.len()
                ),
                expiration_seconds: request.expiration_seconds,
            })
        }
    }

    struct H {
        rt: Arc<FakeRuntime>,
        mounter: Arc<FakeMounter>,
        worker: PodWorker,
        api: Api,
        dir: tempfile::TempDir,
    }

    impl H {
        fn new(refresh: Duration) -> H {
            let dir = tempfile::tempdir().unwrap();
            let rt = Arc::new(FakeRuntime::with_images(&["busybox:skiff"]));
            let mounter = Arc::new(FakeMounter::default());
            let resolv = dir.path().join("resolv.conf");
            std::fs::write(&resolv, "nameserver 192.168.1.1\nsearch corp.example\n").unwrap();
            let mut s = Settings::new("node-1", "192.168.1.10", dir.path().join("pods"));
            s.cgroup_root = String::new();
            s.mounter = mounter.clone();
            s.resolv_conf = resolv;
            s.volume_refresh = refresh;
            let worker = PodWorker::new(rt.clone() as Arc<dyn Runtime>, Arc::new(s));
            H {
                rt,
                mounter,
                worker,
                api: Api::default(),
                dir,
            }
        }

        async fn sync(&mut self, pod: &Pod) -> Value {
            self.worker.sync(pod, &self.api).await.unwrap().status
        }

        fn mounts(&self, container: &str) -> Vec<Mount> {
            let s = self.rt.lock();
            s.containers
                .values()
                .find(|c| c.config.name == container)
                .map(|c| c.config.mounts.clone())
                .unwrap_or_default()
        }

        fn volume(&self, plugin: &str, name: &str) -> PathBuf {
            crate::volumes::volume_dir(&self.dir.path().join("pods"), "uid-1", plugin, name)
        }
    }

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "uid-1", "labels": {"app": "web", "tier": "front"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn image_pull_secrets_give_the_pull_its_credentials() {
        let mut h = H::new(Duration::from_secs(30));
        let cfg =
            r#"{"auths": {"registry.example.com": {"username": "robot", "password": "s3cret"}}}"#;
        h.api.secrets.lock().unwrap().insert(
            "regcred".into(),
            BTreeMap::from([(".dockerconfigjson".to_string(), cfg.as_bytes().to_vec())]),
        );
        let p = pod(
            json!({"imagePullSecrets": [{"name": "regcred"}, {"name": "missing"}],
            "containers": [{"name": "app", "image": "registry.example.com/team/app:1"}, {"name": "side", "image": "quay.io/x/y:2"}]}),
        );
        h.sync(&p).await;
        let pulls = h.rt.lock().pull_auths.clone();
        let app = pulls
            .iter()
            .find(|(i, _)| i.starts_with("registry.example.com"))
            .and_then(|(_, a)| a.clone())
            .expect("credentials for the matching registry");
        assert_eq!(
            (app.username.as_str(), app.password.as_str()),
            ("robot", "s3cret")
        );
        assert!(
            pulls
                .iter()
                .any(|(i, a)| i.starts_with("quay.io") && a.is_none()),
            "no credentials for another registry: {pulls:?}"
        );
    }

    fn full_pod() -> Pod {
        pod(
            json!({"nodeName": "node-1", "serviceAccountName": "builder", "volumes": [
            {"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 0o440, "items": [{"key": "a", "path": "conf/a.txt"}, {"key": "b", "path": "b", "mode": 0o400}]}},
            {"name": "sec", "secret": {"secretName": "creds"}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}]}},
            {"name": "kube-api-access-x1", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}},
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            {"name": "disk", "emptyDir": {}},
        ], "containers": [{"name": "app", "image": "busybox:skiff", "resources": {"limits": {"memory": "64Mi"}},
            "env": [{"name": "SUB", "value": "logs"}],
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/app"},
                {"name": "sec", "mountPath": "/secrets", "readOnly": true},
                {"name": "info", "mountPath": "/info"},
                {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                {"name": "scratch", "mountPath": "/scratch", "mountPropagation": "HostToContainer"},
                {"name": "disk", "mountPath": "/logs", "subPathExpr": "$(SUB)"},
                {"name": "cfg", "mountPath": "/b-only", "subPath": "b"}]}]}),
        )
    }

    /// ↔ security review S2: no other user of the node reaches a pod's
    /// secrets and tokens, and no one can plant files in their volumes.
    #[tokio::test]
    async fn secret_and_token_volumes_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let mut h = H::new(Duration::from_secs(30));
        let pods = h.dir.path().join("pods");
        // An older skiff (or the umask) left the pods directory open.
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::set_permissions(&pods, std::fs::Permissions::from_mode(0o755)).unwrap();
        h.api
            .put_config_map("app-config", &[("a", "alpha"), ("b", "beta")]);
        h.api
            .put_config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]);
        h.api.secrets.lock().unwrap().insert(
            "creds".into(),
            [("password".to_string(), b"p".to_vec())].into(),
        );
        h.sync(&full_pod()).await;
        assert_eq!(mode(&pods), 0o750);
        assert_eq!(mode(&pods.join("uid-1")), 0o750);
        let sec = h.volume("kubernetes.io~secret", "sec");
        let token = h.volume("kubernetes.io~projected", "kube-api-access-x1");
        assert!(h.mounter.is_mounted(&sec) && h.mounter.is_mounted(&token));
        // Their tmpfs roots are not world-writable (tmpfs' own 1777).
        assert_eq!(mode(&sec), 0o755);
        assert_eq!(mode(&token), 0o755);
        // Memory-backed emptyDirs stay writable by any container user.
        assert_eq!(
            mode(&h.volume("kubernetes.io~empty-dir", "scratch")),
            0o1777
        );
    }

    #[tokio::test]
    async fn api_volumes_are_written_and_mounted() {
        let mut h = H::new(Duration::from_secs(30));
        h.api.put_config_map(
            "app-config",
            &[("a", "alpha"), ("b", "beta"), ("unused", "x")],
        );
        h.api
            .put_config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]);
        h.api.secrets.lock().unwrap().insert(
            "creds".into(),
            [("password".to_string(), vec![0xff, 0x00, b'p'])].into(),
        );
        let st = h.sync(&full_pod()).await;
        assert!(
            st["containerStatuses"][0]["state"]["running"].is_object(),
            "{st:#}"
        );

        let cfg = h.volume("kubernetes.io~configmap", "cfg");
        assert_eq!(read(&cfg.join("conf/a.txt")), "alpha");
        assert_eq!(mode(&cfg.join("conf/a.txt")), 0o440);
        assert_eq!(mode(&cfg.join("b")), 0o400);
        assert!(!cfg.join("unused").exists());
        assert_eq!(
            std::fs::read_link(cfg.join("conf")).unwrap(),
            Path::new("..data/conf")
        );
        let sec = h.volume("kubernetes.io~secret", "sec");
        assert_eq!(
            std::fs::read(sec.join("password")).unwrap(),
            vec![0xff, 0x00, b'p']
        );
        assert_eq!(mode(&sec.join("password")), 0o644);
        let info = h.volume("kubernetes.io~downward-api", "info");
        assert_eq!(read(&info.join("labels")), "app=\"web\"\ntier=\"front\"");
        assert_eq!(read(&info.join("mem")), "64");
        let sa = h.volume("kubernetes.io~projected", "kube-api-access-x1");
        assert_eq!(read(&sa.join("token")), "token-team-builder-1");
        assert_eq!(read(&sa.join("ca.crt")), "PEM");
        assert_eq!(read(&sa.join("namespace")), "team");
        let req = h.api.tokens.lock().unwrap()[0].clone();
        assert_eq!(
            (
                req.expiration_seconds,
                req.pod_name.as_str(),
                req.pod_uid.as_str()
            ),
            (3607, "web", "uid-1")
        );
        assert!(req.audiences.is_empty());
        let scratch = h.volume("kubernetes.io~empty-dir", "scratch");
        let disk = h.volume("kubernetes.io~empty-dir", "disk");
        assert!(
            disk.join("logs").is_dir(),
            "the subPathExpr directory is made"
        );
        assert_eq!(mode(&disk), 0o777);
        // Memory-backed: the memory emptyDir, the secret and the projection
        // (besides the subPaths' bind mounts, checked below).
        let mut mounted = h.mounter.mounted.lock().unwrap().clone();
        let bound: Vec<PathBuf> = h.mounter.binds.lock().unwrap().keys().cloned().collect();
        assert_eq!(bound.len(), 2, "{bound:?}");
        for b in &bound {
            assert!(mounted.remove(b));
        }
        assert_eq!(
            mounted,
            [scratch.clone(), sec.clone(), sa.clone()]
                .into_iter()
                .collect()
        );

        let mounts = h.mounts("app");
        let by_path = |p: &str| {
            mounts
                .iter()
                .find(|m| m.container_path == p)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            by_path("/etc/app"),
            Mount {
                container_path: "/etc/app".into(),
                host_path: cfg.display().to_string(),
                readonly: true,
                ..Default::default()
            }
        );
        assert!(
            by_path("/secrets").readonly
                && by_path("/info").readonly
                && by_path("/var/run/secrets/kubernetes.io/serviceaccount").readonly
        );
        assert!(!by_path("/scratch").readonly);
        assert_eq!(
            by_path("/scratch").propagation,
            crate::runtime::MountPropagation::HostToContainer
        );
        // SubPaths are bound from what was opened and checked, onto the
        // pod's volume-subpaths/<volume>/<container>/<mount index>.
        let binds = h.mounter.binds.lock().unwrap().clone();
        let pod_dir = h.dir.path().join("pods/uid-1");
        assert_eq!(
            by_path("/logs").host_path,
            pod_dir
                .join("volume-subpaths/disk/app/5")
                .display()
                .to_string()
        );
        assert_eq!(
            binds.get(&PathBuf::from(by_path("/logs").host_path)),
            Some(&std::fs::canonicalize(disk.join("logs")).unwrap())
        );
        // A subPath into a configMap volume is the file itself (and gets no updates).
        assert_eq!(
            by_path("/b-only").host_path,
            pod_dir
                .join("volume-subpaths/cfg/app/6")
                .display()
                .to_string()
        );
        let b = binds
            .get(&PathBuf::from(by_path("/b-only").host_path))
            .unwrap()
            .clone();
        assert_eq!(read(&b), "beta");
        assert!(
            b.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("..2"),
            "{}",
            b.display()
        );
        // The volume mounts and the pod's /etc/hosts.
        assert_eq!(mounts.len(), 8);
        assert!(mounts.iter().any(|m| m.container_path == "/etc/hosts"));

        // DNS: ClusterFirst.
        let dns =
            h.rt.lock()
                .sandboxes
                .values()
                .next()
                .unwrap()
                .config
                .dns
                .clone()
                .unwrap();
        assert_eq!(
            dns,
            DnsConfig {
                servers: vec!["10.43.0.10".into()],
                searches: vec![
                    "team.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                    "corp.example".into()
                ],
                options: vec!["ndots:5".into()],
            }
        );
    }

    #[tokio::test]
    async fn a_missing_config_map_blocks_with_failed_mount_until_created() {
        let mut h = H::new(Duration::from_secs(30));
        let p = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "cfg", "configMap": {"name": "x"}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}]}),
        );
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Pending");
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
            "{st:#}"
        );
        assert_eq!(h.rt.count_calls("CreateContainer"), 0);
        let events = h.worker.take_events();
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e.reason == "FailedMount")
            .collect();
        assert_eq!(failed.len(), 1, "{events:?}");
        assert_eq!(failed[0].kind, EventKind::Warning);
        assert_eq!(
            failed[0].message,
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"x\" not found"
        );
        // A missing key is an error too.
        h.api.put_config_map("x", &[("other", "1")]);
        let keyed = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "cfg", "configMap": {"name": "x", "items": [{"key": "k", "path": "k"}]}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}]}),
        );
        h.sync(&keyed).await;
        assert!(h.worker.take_events().iter().any(|e| {
            e.message
                .ends_with("configmap references non-existent config key: k")
        }));
        // Once it exists, the container starts.
        h.api.put_config_map("x", &[("k", "v")]);
        let st = h.sync(&keyed).await;
        assert_eq!(st["phase"], "Running", "{st:#}");
        assert_eq!(
            read(&h.volume("kubernetes.io~configmap", "cfg").join("k")),
            "v"
        );
    }

    #[tokio::test]
    async fn optional_sources_may_be_missing() {
        let mut h = H::new(Duration::from_secs(30));
        let p = pod(json!({"nodeName": "node-1", "volumes": [
                {"name": "cfg", "configMap": {"name": "x", "optional": true}},
                {"name": "sec", "secret": {"secretName": "s", "optional": true, "items": [{"key": "k", "path": "k"}]}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"}]}]}));
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Running", "{st:#}");
        assert!(
            !h.worker
                .take_events()
                .iter()
                .any(|e| e.reason == "FailedMount")
        );
        let cfg = h.volume("kubernetes.io~configmap", "cfg");
        assert_eq!(
            std::fs::read_dir(&cfg)
                .unwrap()
                .filter(|e| !e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".."))
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_missing_secret_and_a_bad_host_path_fail_each_volume() {
        let mut h = H::new(Duration::from_secs(30));
        let p = pod(json!({"nodeName": "node-1", "volumes": [
                {"name": "sec", "secret": {"secretName": "gone"}},
                {"name": "host", "hostPath": {"path": "/nonexistent/skiff-test", "type": "Directory"}}],
            "initContainers": [{"name": "init", "image": "busybox:skiff"}],
            "containers": [{"name": "app", "image": "busybox:skiff"}]}));
        let st = h.sync(&p).await;
        let messages: Vec<String> = h
            .worker
            .take_events()
            .into_iter()
            .filter(|e| e.reason == "FailedMount")
            .map(|e| e.message)
            .collect();
        assert_eq!(
            messages,
            vec![
                "MountVolume.SetUp failed for volume \"sec\" : secret \"gone\" not found".to_string(),
                "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: /nonexistent/skiff-test is not a directory".to_string(),
            ]
        );
        assert_eq!(
            st["initContainerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing",
            "{st:#}"
        );
        assert_eq!(h.rt.count_calls("CreateContainer"), 0);
    }

    #[tokio::test]
    async fn host_paths_are_mounted_as_they_are() {
        let mut h = H::new(Duration::from_secs(30));
        let target = h.dir.path().join("host-data");
        let p = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "host", "hostPath": {"path": target, "type": "DirectoryOrCreate"}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "host", "mountPath": "/data", "readOnly": true}]}]}),
        );
        h.sync(&p).await;
        assert!(target.is_dir());
        assert_eq!(
            h.mounts("app")
                .into_iter()
                .filter(|m| m.container_path != "/etc/hosts")
                .collect::<Vec<_>>(),
            vec![Mount {
                container_path: "/data".into(),
                host_path: target.display().to_string(),
                readonly: true,
                ..Default::default()
            }]
        );
    }

    #[tokio::test]
    async fn a_subpath_cannot_leave_its_volume() {
        let mut h = H::new(Duration::from_secs(30));
        let p = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "d", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "d", "mountPath": "/x", "subPath": "../../etc"}]}]}),
        );
        let st = h.sync(&p).await;
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"], "CreateContainerConfigError",
            "{st:#}"
        );
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["message"],
            "unable to provision SubPath `../../etc`: must not contain '..'"
        );
        // A link inside the volume that points out of it.
        let d = h.volume("kubernetes.io~empty-dir", "d");
        std::os::unix::fs::symlink("/etc", d.join("out")).unwrap();
        let p2 = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "d", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "d", "mountPath": "/x", "subPath": "out"}]}]}),
        );
        let st = h.sync(&p2).await;
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["message"],
            "failed to prepare subPath for volumeMount \"d\" of container \"app\"",
            "{st:#}"
        );
        // A directory to be made through that link is not made (outside
        // the volume, on the host) before the check.
        let outside = h.dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, d.join("out2")).unwrap();
        let p3 = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "d", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "d", "mountPath": "/x", "subPath": "out2/x.service.d"}]}]}),
        );
        let st = h.sync(&p3).await;
        let w = &st["containerStatuses"][0]["state"]["waiting"];
        assert_eq!(w["reason"], "CreateContainerConfigError", "{st:#}");
        assert_eq!(
            w["message"],
            "failed to create subPath directory for volumeMount \"d\" of container \"app\""
        );
        assert!(!outside.join("x.service.d").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn updates_are_swapped_in_atomically_on_refresh() {
        let mut h = H::new(Duration::from_secs(30));
        h.api.put_config_map("app-config", &[("a", "1")]);
        let mut p = pod(json!({"nodeName": "node-1", "volumes": [
                {"name": "cfg", "configMap": {"name": "app-config"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "info", "mountPath": "/info"}]}]}));
        h.sync(&p).await;
        let cfg = h.volume("kubernetes.io~configmap", "cfg");
        let first = std::fs::read_link(cfg.join("..data")).unwrap();
        h.api
            .put_config_map("app-config", &[("a", "2"), ("new", "n")]);
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("version".into(), "2".into());
        // Not before the refresh period.
        h.sync(&p).await;
        assert_eq!(read(&cfg.join("a")), "1");
        tokio::time::advance(Duration::from_secs(31)).await;
        h.sync(&p).await;
        assert_eq!(read(&cfg.join("a")), "2");
        assert_eq!(read(&cfg.join("new")), "n");
        assert_ne!(std::fs::read_link(cfg.join("..data")).unwrap(), first);
        assert!(!cfg.join(&first).exists(), "the old contents are removed");
        assert!(
            read(
                &h.volume("kubernetes.io~downward-api", "info")
                    .join("labels")
            )
            .contains("version=\"2\"")
        );
        // A key removed from the configMap goes.
        h.api.put_config_map("app-config", &[("a", "3")]);
        tokio::time::advance(Duration::from_secs(31)).await;
        h.sync(&p).await;
        assert!(std::fs::symlink_metadata(cfg.join("new")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reused_then_renewed_near_expiry() {
        let mut h = H::new(Duration::from_secs(1));
        let p = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 1000}}]}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "t", "mountPath": "/t"}]}]}),
        );
        h.sync(&p).await;
        let t = h.volume("kubernetes.io~projected", "t").join("token");
        assert_eq!(read(&t), "token-team-default-1");
        assert_eq!(
            h.api.tokens.lock().unwrap()[0].audiences,
            vec!["vault".to_string()]
        );
        tokio::time::advance(Duration::from_secs(700)).await;
        h.sync(&p).await;
        assert_eq!(
            h.api.tokens.lock().unwrap().len(),
            1,
            "fresh tokens are reused"
        );
        tokio::time::advance(Duration::from_secs(150)).await;
        h.sync(&p).await;
        assert_eq!(read(&t), "token-team-default-2");
    }

    #[tokio::test]
    async fn termination_unmounts_and_removes_the_volumes() {
        let mut h = H::new(Duration::from_secs(30));
        let p = pod(
            json!({"nodeName": "node-1", "volumes": [{"name": "m", "emptyDir": {"medium": "Memory"}}, {"name": "d", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "busybox:skiff", "volumeMounts": [{"name": "m", "mountPath": "/m"}, {"name": "d", "mountPath": "/d"}]}]}),
        );
        h.sync(&p).await;
        let m = h.volume("kubernetes.io~empty-dir", "m");
        std::fs::write(h.volume("kubernetes.io~empty-dir", "d").join("f"), "x").unwrap();
        assert!(h.mounter.is_mounted(&m));
        h.worker.terminate(&p, 0).await.unwrap();
        assert!(!h.mounter.is_mounted(&m));
        assert_eq!(
            h.mounter.calls.lock().unwrap().last().unwrap(),
            &format!("umount {}", m.display())
        );
        assert!(!h.dir.path().join("pods").join("uid-1").exists());
    }

    #[tokio::test]
    async fn host_network_pods_use_the_hosts_resolv_conf() {
        let mut h = H::new(Duration::from_secs(30));
        let p = pod(
            json!({"nodeName": "node-1", "hostNetwork": true, "dnsConfig": {"options": [{"name": "ndots", "value": "3"}]},
            "containers": [{"name": "app", "image": "busybox:skiff"}]}),
        );
        h.sync(&p).await;
        let dns =
            h.rt.lock()
                .sandboxes
                .values()
                .next()
                .unwrap()
                .config
                .dns
                .clone()
                .unwrap();
        assert_eq!(
            dns,
            DnsConfig {
                servers: vec!["192.168.1.1".into()],
                searches: vec!["corp.example".into()],
                options: vec!["ndots:3".into()]
            }
        );
    }
}

/// What the conformance suite's node tests check of the pod worker.
mod conformance_tests {
    use super::*;
    use crate::runtime::Mount;
    use crate::sync::EventKind;

    fn mount_at(h: &Harness, container: &str, path: &str) -> Option<Mount> {
        h.rt.lock()
            .containers
            .values()
            .filter(|c| c.config.name == container)
            .max_by_key(|c| c.config.attempt)
            .and_then(|c| {
                c.config
                    .mounts
                    .iter()
                    .find(|m| m.container_path == path)
                    .cloned()
            })
    }

    #[tokio::test]
    async fn a_failed_init_container_leaves_a_never_pod_uninitialized() {
        // ↔ InitContainer "should not start app containers and fail the pod
        // if init containers fail on a RestartNever pod".
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = pod(json!({"restartPolicy": "Never",
            "initContainers": [{"name": "init1", "image": "busybox:skiff"}, {"name": "init2", "image": "busybox:skiff"}],
            "containers": [{"name": "run1", "image": "busybox:skiff"}]}));
        let st = h.sync(&p).await;
        // Not created yet: PodInitializing, for init and app containers alike.
        assert_eq!(
            st["initContainerStatuses"][1]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        h.rt.exit("init1", 0);
        h.sync(&p).await;
        h.rt.exit("init2", 1);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Failed", "{st:#}");
        let init = condition(&st, "Initialized");
        assert_eq!(init["status"], "False");
        assert_eq!(init["reason"], "ContainersNotInitialized");
        assert_eq!(
            init["message"],
            "containers with incomplete status: [init2]"
        );
        assert_eq!(condition(&st, "Ready")["reason"], "PodFailed");
        assert_eq!(condition(&st, "ContainersReady")["reason"], "PodFailed");
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        assert_eq!(h.rt.count_calls("CreateContainer run1"), 0);
    }

    #[tokio::test]
    async fn a_succeeded_pod_is_initialized_with_reason_pod_completed() {
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = pod(json!({"restartPolicy": "Never",
            "initContainers": [{"name": "init1", "image": "busybox:skiff"}],
            "containers": [{"name": "run1", "image": "busybox:skiff"}]}));
        h.sync(&p).await;
        h.rt.exit("init1", 0);
        h.sync(&p).await;
        h.rt.exit("run1", 0);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Succeeded", "{st:#}");
        let init = condition(&st, "Initialized");
        assert_eq!(
            (init["status"].as_str(), init["reason"].as_str()),
            (Some("True"), Some("PodCompleted"))
        );
        assert_eq!(condition(&st, "Ready")["reason"], "PodCompleted");
    }

    fn started_long_ago(mut p: Pod) -> Pod {
        p.status = Some(
            serde_json::from_value(
                json!({"phase": "Running", "startTime": "2020-01-01T00:00:00Z"}),
            )
            .unwrap(),
        );
        p
    }

    #[tokio::test]
    async fn a_lowered_active_deadline_kills_the_pod() {
        // ↔ Pods "should allow activeDeadlineSeconds to be updated".
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = started_long_ago(simple("Always"));
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Running", "{st:#}");
        let mut updated = p.clone();
        updated.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
        let st = h.sync(&updated).await;
        assert_eq!(st["phase"], "Failed", "{st:#}");
        assert_eq!(st["reason"], "DeadlineExceeded");
        assert_eq!(
            st["message"],
            "Pod was active on the node longer than the specified deadline"
        );
        assert!(
            st["containerStatuses"][0]["state"]["terminated"].is_object(),
            "{st:#}"
        );
        assert_eq!(h.rt.lock().stops.len(), 1);
        assert!(
            h.rt.lock()
                .sandboxes
                .values()
                .all(|s| s.state == SandboxState::NotReady)
        );
        let events = h.worker.take_events();
        assert!(
            events.iter().any(|e| e.reason == "DeadlineExceeded"),
            "{events:?}"
        );
        // Nothing starts again.
        let again = h.sync(&updated).await;
        assert_eq!(again["phase"], "Failed");
        assert_eq!(h.rt.count_calls("CreateContainer"), 1);
    }

    #[tokio::test]
    async fn an_evicted_pod_is_killed_at_once_and_failed_evicted() {
        // ↔ the eviction manager's evictPod through the pod workers.
        let mut h = Harness::new(&["busybox:skiff"]);
        let mut p = simple("Always");
        p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(30);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Running", "{st:#}");
        let message =
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi. ";
        h.worker.kill(crate::eviction::kill(message));
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Failed", "{st:#}");
        assert_eq!(st["reason"], "Evicted");
        assert_eq!(st["message"], message);
        let disruption = condition(&st, "DisruptionTarget");
        assert_eq!(disruption["status"], "True");
        assert_eq!(disruption["reason"], "TerminationByKubelet");
        assert_eq!(disruption["message"], message);
        assert!(
            st["containerStatuses"][0]["state"]["terminated"].is_object(),
            "{st:#}"
        );
        // Killed with grace period 0, not the pod's 30 s.
        let stops = h.rt.lock().stops.clone();
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].1, 0);
        let events = h.worker.take_events();
        assert!(
            events.iter().any(|e| e.reason == "Evicted"
                && e.kind == crate::sync::EventKind::Warning
                && e.message == message),
            "{events:?}"
        );
        // Nothing starts again, and a later kill changes nothing.
        h.worker.kill(crate::sync::Kill::deadline());
        let again = h.sync(&p).await;
        assert_eq!(again["reason"], "Evicted");
        assert_eq!(h.rt.count_calls("CreateContainer"), 1);
    }

    #[tokio::test]
    async fn pod_usage_is_the_runtimes_stats_and_the_log_files() {
        use crate::eviction::Usage;
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = simple("Always");
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Running", "{st:#}");
        // Logs (the live file and a rotated one) under the pod's log directory.
        let dir = h.settings.log_root.join("default_web_uid-1").join("app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), vec![b'x'; 1000]).unwrap();
        std::fs::write(dir.join("0.log.20260101-000000"), vec![b'x'; 500]).unwrap();
        let usage = crate::eviction::RuntimeUsage {
            runtime: h.rt.clone(),
            node: "node-1".into(),
            log_root: h.settings.log_root.clone(),
        };
        let with_disk = usage.usage(true).await.unwrap();
        let app = &with_disk["uid-1"].containers["app"];
        assert_eq!(app.memory, crate::fake::FAKE_WORKING_SET);
        assert_eq!(
            app.disk,
            Some(crate::fake::FAKE_WRITABLE_LAYER + 1500),
            "writable layer and logs"
        );
        let without = usage.usage(false).await.unwrap();
        assert_eq!(without["uid-1"].containers["app"].disk, None);
        // Another node's containers are not this node's pods.
        let other = crate::eviction::RuntimeUsage {
            runtime: h.rt.clone(),
            node: "node-2".into(),
            log_root: h.settings.log_root.clone(),
        };
        assert!(other.usage(true).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_pod_within_its_deadline_is_looked_at_when_it_passes() {
        let mut h = Harness::new(&["busybox:skiff"]);
        let mut p = simple("Always");
        p.spec.as_mut().unwrap().active_deadline_seconds = Some(3600);
        let r = h.worker.sync(&p, &NoLookup).await.unwrap();
        assert_eq!(r.status["phase"], "Running");
        assert!(r.requeue <= Duration::from_secs(10));
        // One the clock cannot reach never passes.
        let mut h = Harness::new(&["busybox:skiff"]);
        let mut forever = simple("Always");
        forever.spec.as_mut().unwrap().active_deadline_seconds = Some(i64::MAX);
        assert_eq!(h.sync(&forever).await["phase"], "Running");
        // A pod past its deadline when first seen never starts.
        let mut h = Harness::new(&["busybox:skiff"]);
        let mut late = started_long_ago(simple("Always"));
        late.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        let st = h.sync(&late).await;
        assert_eq!(st["phase"], "Failed");
        assert_eq!(st["reason"], "DeadlineExceeded");
        assert_eq!(h.rt.count_calls("RunPodSandbox"), 0);
    }

    fn log_dir(h: &Harness) -> std::path::PathBuf {
        h.settings.log_root.join("default_web_uid-1")
    }

    #[tokio::test]
    async fn termination_messages_come_from_the_file() {
        // ↔ Container Runtime "should report termination message if
        // TerminationMessagePath is set as non-root user and at a non-default path".
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = pod(
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox:skiff",
            "terminationMessagePath": "/dev/termination-custom-log", "terminationMessagePolicy": "File",
            "securityContext": {"runAsUser": 1000}}]}),
        );
        h.sync(&p).await;
        let m = mount_at(&h, "app", "/dev/termination-custom-log")
            .expect("the termination log is mounted");
        assert!(!m.readonly);
        let meta = std::fs::metadata(&m.host_path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o666,
            "writable by any user"
        );
        std::fs::write(&m.host_path, "DONE").unwrap();
        h.rt.exit("app", 0);
        let st = h.sync(&p).await;
        assert_eq!(st["phase"], "Succeeded");
        assert_eq!(
            st["containerStatuses"][0]["state"]["terminated"]["message"], "DONE",
            "{st:#}"
        );
    }

    #[tokio::test]
    async fn fallback_to_logs_on_error_reads_the_log_tail_only_for_failures() {
        // From the file when the container succeeds.
        let mut h = Harness::new(&["busybox:skiff"]);
        let policy = |restart: &str| {
            pod(
                json!({"restartPolicy": restart, "containers": [{"name": "app", "image": "busybox:skiff",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "FallbackToLogsOnError"}]}),
            )
        };
        let p = policy("Never");
        h.sync(&p).await;
        let m = mount_at(&h, "app", "/dev/termination-log").unwrap();
        std::fs::write(&m.host_path, "OK").unwrap();
        std::fs::write(
            log_dir(&h).join("app/0.log"),
            "2026-12-07T00:00:00.000000000Z stdout F from the log\n",
        )
        .unwrap();
        h.rt.exit("app", 0);
        let st = h.sync(&p).await;
        assert_eq!(
            st["containerStatuses"][0]["state"]["terminated"]["message"], "OK",
            "{st:#}"
        );

        // From the log when it fails and the file is empty: the last line, as written.
        let mut h = Harness::new(&["busybox:skiff"]);
        h.sync(&p).await;
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&format!(
                "2026-12-07T00:00:00.000000000Z stderr F line {i}\n"
            ));
        }
        log.push_str("2026-12-07T00:00:01.000000000Z stdout P DONE\n");
        std::fs::write(log_dir(&h).join("app/0.log"), &log).unwrap();
        h.rt.exit("app", 1);
        let st = h.sync(&p).await;
        let message = st["containerStatuses"][0]["state"]["terminated"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.ends_with("line 99\nDONE"), "{message:?}");
        assert!(
            !message.contains("line 20\n"),
            "only the last 80 lines: {message:?}"
        );

        // The File policy never reads the log.
        let mut h = Harness::new(&["busybox:skiff"]);
        let file_only = pod(
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox:skiff",
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]}),
        );
        h.sync(&file_only).await;
        std::fs::write(log_dir(&h).join("app/0.log"), &log).unwrap();
        h.rt.exit("app", 1);
        let st = h.sync(&file_only).await;
        assert!(
            st["containerStatuses"][0]["state"]["terminated"]
                .get("message")
                .is_none(),
            "{st:#}"
        );
    }

    #[tokio::test]
    async fn security_context_reaches_the_runtime() {
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = pod(
            json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 1001,
                "supplementalGroups": [3000], "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]},
            "containers": [{"name": "app", "image": "busybox:skiff",
                "securityContext": {"allowPrivilegeEscalation": false}},
                {"name": "other", "image": "busybox:skiff", "securityContext": {"runAsUser": 0}}]}),
        );
        h.sync(&p).await;
        let s = h.rt.lock();
        let sb = &s.sandboxes.values().next().unwrap().config;
        assert_eq!(
            sb.sysctls.get("kernel.shm_rmid_forced").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            crate::sync::sysctl_with_dots("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            crate::sync::sysctl_with_dots("kernel.msgmax"),
            "kernel.msgmax"
        );
        assert_eq!((sb.run_as_user, sb.run_as_group), (Some(1000), Some(2000)));
        assert_eq!(sb.supplemental_groups, vec![1001, 3000]);
        let app = &s
            .containers
            .values()
            .find(|c| c.config.name == "app")
            .unwrap()
            .config;
        assert!(app.no_new_privs);
        assert_eq!(
            (app.run_as_user, app.run_as_group),
            (Some(1000), Some(2000))
        );
        assert_eq!(app.supplemental_groups, vec![1001, 3000]);
        let other = &s
            .containers
            .values()
            .find(|c| c.config.name == "other")
            .unwrap()
            .config;
        assert!(!other.no_new_privs);
        assert_eq!(other.run_as_user, Some(0));
    }

    #[tokio::test]
    async fn every_container_gets_the_pods_hosts_file() {
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = pod(json!({"hostname": "h1", "subdomain": "sub",
            "hostAliases": [{"ip": "123.45.67.89", "hostnames": ["foo", "bar"]}],
            "volumes": [{"name": "own", "emptyDir": {}}],
            "initContainers": [{"name": "init", "image": "busybox:skiff"}],
            "containers": [{"name": "app", "image": "busybox:skiff"},
                {"name": "mine", "image": "busybox:skiff", "volumeMounts": [{"name": "own", "mountPath": "/etc/hosts"}]}]}));
        h.sync(&p).await;
        let m = mount_at(&h, "init", "/etc/hosts").expect("init containers get it too");
        let content = std::fs::read_to_string(&m.host_path).unwrap();
        assert!(
            content.starts_with("# Kubernetes-managed hosts file.\n"),
            "{content}"
        );
        assert!(
            content.contains("\n10.42.0.2\th1.sub.default.svc.cluster.local\th1\n"),
            "{content}"
        );
        assert!(
            content.ends_with("# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n"),
            "{content}"
        );
        h.rt.exit("init", 0);
        h.sync(&p).await;
        assert_eq!(
            mount_at(&h, "app", "/etc/hosts").unwrap().host_path,
            m.host_path
        );
        // Its own /etc/hosts mount wins.
        let own = mount_at(&h, "mine", "/etc/hosts").unwrap();
        assert_ne!(own.host_path, m.host_path);
        // The hostname is the sandbox's too.
        assert_eq!(
            h.rt.lock()
                .sandboxes
                .values()
                .next()
                .unwrap()
                .config
                .hostname,
            "h1"
        );
    }

    #[tokio::test]
    async fn ephemeral_containers_start_once_and_are_never_restarted() {
        // ↔ Ephemeral Containers "will start an ephemeral container in an existing pod".
        let mut h = Harness::new(&["busybox:skiff"]);
        let p = simple("Always");
        h.sync(&p).await;
        let mut debugged = p.clone();
        debugged.spec.as_mut().unwrap().ephemeral_containers = Some(vec![
            serde_json::from_value(json!({"name": "debugger", "image": "busybox:skiff",
                "command": ["sh", "-c", "while true; do echo polo; sleep 2; done"],
                "stdin": true, "tty": true, "targetContainerName": "app"}))
            .unwrap(),
        ]);
        let st = h.sync(&debugged).await;
        let e = &st["ephemeralContainerStatuses"][0];
        assert_eq!(e["name"], "debugger", "{st:#}");
        assert!(e["state"]["running"].is_object(), "{st:#}");
        assert_eq!(st["containerStatuses"].as_array().unwrap().len(), 1);
        assert_eq!(st["phase"], "Running");
        {
            let s = h.rt.lock();
            let app = s
                .containers
                .iter()
                .find(|(_, c)| c.config.name == "app")
                .unwrap()
                .0
                .clone();
            let dbg = &s
                .containers
                .values()
                .find(|c| c.config.name == "debugger")
                .unwrap()
                .config;
            assert_eq!(dbg.target_container_id.as_deref(), Some(app.as_str()));
            assert!(dbg.stdin && dbg.tty);
        }
        let events = h.worker.take_events();
        assert!(
            events.iter().any(|e| e.reason == "Started"
                && e.field_path.as_deref() == Some("spec.ephemeralContainers{debugger}")),
            "{events:?}"
        );
        h.rt.exit("debugger", 1);
        let st = h.sync(&debugged).await;
        assert_eq!(
            st["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"], 1,
            "{st:#}"
        );
        assert_eq!(st["phase"], "Running");
        assert_eq!(h.rt.count_calls("CreateContainer debugger"), 1);
    }

    #[tokio::test]
    async fn a_rejected_pod_never_runs_and_is_failed() {
        let mut h = Harness::new(&["busybox:skiff"]);
        h.worker
            .reject("NodePorts", "Pod was rejected: Predicate NodePorts failed");
        let st = h.sync(&simple("Always")).await;
        assert_eq!(st["phase"], "Failed");
        assert_eq!(st["reason"], "NodePorts");
        assert_eq!(
            st["message"],
            "Pod was rejected: Predicate NodePorts failed"
        );
        assert_eq!(h.rt.count_calls("RunPodSandbox"), 0);
        let events = h.worker.take_events();
        assert!(
            events
                .iter()
                .any(|e| e.kind == EventKind::Warning && e.reason == "NodePorts"),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn host_network_pods_get_the_nodes_hosts_file() {
        let dir = tempfile::tempdir().unwrap();
        let node_hosts = dir.path().join("hosts");
        std::fs::write(&node_hosts, "127.0.0.1 localhost\n192.168.1.10 node-1\n").unwrap();
        let mut h = Harness::new(&["busybox:skiff"]);
        let mut s = (*h.settings).clone();
        s.etc_hosts = node_hosts;
        h.worker = PodWorker::new(h.rt.clone() as Arc<dyn Runtime>, Arc::new(s));
        let p = pod(
            json!({"hostNetwork": true, "containers": [{"name": "app", "image": "busybox:skiff"}]}),
        );
        h.sync(&p).await;
        let m = mount_at(&h, "app", "/etc/hosts").unwrap();
        assert_eq!(
            std::fs::read_to_string(&m.host_path).unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.168.1.10 node-1\n"
        );
    }
}

mod runtime_class_tests {
    use super::*;
    use crate::env::Lookup;
    use crate::sync::EventKind;
    use std::collections::BTreeMap;

    /// Knows only RuntimeClasses (name → handler).
    struct Classes(BTreeMap<String, String>);

    #[async_trait::async_trait]
    impl Lookup for Classes {
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(None)
        }
        async fn secret(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(None)
        }
        fn runtime_class_handler(&self, name: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(name).cloned())
        }
    }

    fn with_class(class: &str) -> Pod {
        let mut p = simple("Always");
        if let Some(spec) = p.spec.as_mut() {
            spec.runtime_class_name = Some(class.into());
        }
        p
    }

    fn handlers(h: &Harness) -> Vec<String> {
        h.rt.lock()
            .sandboxes
            .values()
            .map(|s| s.config.runtime_handler.clone())
            .collect()
    }

    #[tokio::test]
    async fn the_runtime_class_handler_reaches_run_pod_sandbox() {
        let lookup = Classes(BTreeMap::from([(
            "sandboxed".to_string(),
            "runsc".to_string(),
        )]));
        let mut h = Harness::new(&["busybox:skiff"]);
        h.worker
            .sync(&with_class("sandboxed"), &lookup)
            .await
            .unwrap();
        assert_eq!(handlers(&h), ["runsc"]);

        // Without a RuntimeClass: the runtime's default handler.
        let mut h = Harness::new(&["busybox:skiff"]);
        h.worker.sync(&simple("Always"), &lookup).await.unwrap();
        assert_eq!(handlers(&h), [""]);
    }

    #[tokio::test]
    async fn a_missing_runtime_class_leaves_the_pod_pending_without_a_sandbox() {
        let lookup = Classes(BTreeMap::new());
        let mut h = Harness::new(&["busybox:skiff"]);
        let st = h
            .worker
            .sync(&with_class("gone"), &lookup)
            .await
            .unwrap()
            .status;
        assert_eq!(st["phase"], "Pending");
        assert_eq!(h.rt.count_calls("RunPodSandbox"), 0);
        let events = h.worker.take_events();
        assert!(
            events.iter().any(|e| e.kind == EventKind::Warning
                && e.reason == "FailedCreatePodSandBox"
                && e.message
                    == "Failed to create pod sandbox: runtimeclass.node.k8s.io \"gone\" not found"),
            "{events:?}"
        );
        // Created later: the next sync runs the sandbox with its handler.
        let lookup = Classes(BTreeMap::from([("gone".to_string(), "runc".to_string())]));
        h.worker.sync(&with_class("gone"), &lookup).await.unwrap();
        assert_eq!(handlers(&h), ["runc"]);
    }
}
