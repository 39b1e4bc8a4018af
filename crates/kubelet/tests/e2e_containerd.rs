//! End to end with real containers: an in-process API server, the agent
//! with its own containerd (runc, overlayfs, CNI bridge) in a temporary
//! data directory, the busybox test image from scripts/build-test-image.sh,
//! and a pod bound to the node through pods/binding that runs, survives an
//! agent restart, and is deleted.
//!
//! Needs root and Debian's containerd, runc, containernetworking-plugins
//! and busybox-static; without them it says why and passes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_kubelet::runtime::{LABEL_NODE, LABEL_POD_UID, Runtime};

fn missing_prerequisite() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        });
    if uid.as_deref() != Some("0") {
        return Some("not running as root".into());
    }
    let on_path = |bin: &str| {
        std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
            .any(|d| Path::new(d).join(bin).exists())
    };
    for bin in ["containerd", "containerd-shim-runc-v2", "runc", "ctr"] {
        if !on_path(bin) {
            return Some(format!(
                "{bin} is not installed (apt-get install containerd runc)"
            ));
        }
    }
    for f in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
    ] {
        if !Path::new(f).exists() {
            return Some(format!(
                "{f} is missing (apt-get install containernetworking-plugins)"
            ));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    None
}

async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start_agent(client: kube::Client, config: skiff_kubelet::Config) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = skiff_kubelet::run(client, config).await {
            panic!("agent failed: {e}");
        }
    })
}

/// On the way out, also when an assertion fails: every sandbox of the test
/// node goes (with its containers), so that nothing outlives the test.
struct Cleanup {
    socket: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(cri) = skiff_kubelet::cri::CriRuntime::new(&socket) else {
                    return;
                };
                let labels = [(LABEL_NODE.to_string(), "e2e-node".to_string())].into();
                let work = async {
                    for sb in cri.list_sandboxes(&labels).await.unwrap_or_default() {
                        let _ = cri.stop_sandbox(&sb.id).await;
                        let _ = cri.remove_sandbox(&sb.id).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(60), work).await;
            })
        })
        .join();
        // The test's CNI bridge goes with it.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "skiffe2e0"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_real_pod_through_containerd() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipping the containerd end-to-end test: {why}");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "skiff_kubelet=info".into()))
        .with_test_writer()
        .try_init();

    let server = skiff_testsupport::TestServer::start().await;
    let client = server.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut config = skiff_kubelet::Config::new("e2e-node", dir.path().join("agent"));
    // Its own bridge and range, clear of a skiff that may run on this machine.
    config.cni_bridge = "skiffe2e0".into();
    config.default_pod_cidr = "10.42.250.0/24".into();
    config.node_ip = Some("127.0.0.1".parse().unwrap());
    config.crash_backoff = (Duration::from_secs(1), Duration::from_secs(4));
    // Disk thresholds off, as kind's nodes and skiff's own end-to-end
    // tests have them: the test shares its disk with builds, whose free
    // space says nothing of what it does (under DiskPressure the kubelet
    // rightly admits no pod).
    config.eviction_hard = skiff_kubelet::pressure::Thresholds::parse(
        "nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%",
    )
    .unwrap();

    // The test image, built from busybox-static.
    let tar = dir.path().join("busybox-skiff.tar");
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/build-test-image.sh"))
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-test-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut agent = start_agent(client.clone(), config.clone());
    let _cleanup = Cleanup {
        socket: config.runtime_socket(),
    };

    // The Node registers, Ready, with the runtime's version; its Lease is renewed.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually("the node", Duration::from_secs(90), || async {
        nodes.get_opt("e2e-node").await.ok().flatten()
    })
    .await;
    let status = node.status.clone().unwrap();
    let info = status.node_info.unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "110");
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    eventually("the lease", Duration::from_secs(30), || async {
        leases.get_opt("e2e-node").await.ok().flatten()
    })
    .await;

    skiff_kubelet::import_image(&config, &tar).await.unwrap();
    let runtime = skiff_kubelet::cri::CriRuntime::new(&config.runtime_socket()).unwrap();
    assert!(
        runtime
            .image_status("busybox:skiff")
            .await
            .unwrap()
            .is_some()
    );

    // A pod, bound to the node as the scheduler does.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            // No controller manager here publishes kube-root-ca.crt, which the
            // service account token volume needs.
            "automountServiceAccountToken": false,
            "initContainers": [{"name": "init", "image": "busybox:skiff", "command": ["sh", "-c", "echo init done"]}],
            "containers": [{"name": "app", "image": "busybox:skiff", "command": ["sh", "-c"],
                "args": ["echo hello $GREETING from $(pwd) as $POD_NAME; sleep 3600"],
                "workingDir": "/tmp",
                "env": [{"name": "GREETING", "value": "world"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]
        }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "hello"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "e2e-node"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "hello", &PostParams::default(), &binding)
        .await
        .unwrap();

    let running = eventually(
        "the pod Running with an IP",
        Duration::from_secs(120),
        || async {
            let p = pods.get("hello").await.ok()?;
            let st = p.status.clone()?;
            (st.phase.as_deref() == Some("Running") && st.pod_ip.is_some()).then_some(p)
        },
    )
    .await;
    let st = running.status.clone().unwrap();
    let ip: std::net::Ipv4Addr = st.pod_ip.clone().unwrap().parse().unwrap();
    assert_eq!(ip.octets()[..3], [10, 42, 250], "{ip}");
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    let cs = &st.container_statuses.clone().unwrap()[0];
    assert!(cs.state.as_ref().unwrap().running.is_some(), "{cs:?}");
    assert!(cs.ready);
    let container_id = cs.container_id.clone().unwrap();
    assert!(container_id.starts_with("containerd://"), "{container_id}");
    assert!(
        st.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    let init = &st.init_container_statuses.clone().unwrap()[0];
    let done = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );

    // The container wrote its log where the kubelet keeps logs.
    let log = config
        .data_dir
        .join(format!("pods/default_hello_{uid}/app/0.log"));
    let text = eventually("the container log", Duration::from_secs(30), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("hello world from /tmp as hello"))
    })
    .await;
    assert!(text.contains("stdout"), "{text}");

    // A crashing container: restarted with backoff (CrashLoopBackOff), its restartCount growing.
    let on_node = |name: &str, image: &str, command: &str| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": "e2e-node", "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": image, "command": ["sh", "-c", command]}]}
        }))
        .unwrap()
    };
    pods.create(
        &PostParams::default(),
        &on_node("crash", "busybox:skiff", "echo crash; exit 3"),
    )
    .await
    .unwrap();
    // A memory limit, applied as a cgroup limit: the container is OOMKilled.
    let mut oom = on_node("oom", "busybox:skiff", "head -c 300m /dev/zero | tail");
    let spec = oom.spec.as_mut().unwrap();
    spec.restart_policy = Some("Never".into());
    spec.containers[0].resources =
        Some(serde_json::from_value(json!({"limits": {"memory": "16Mi", "cpu": "500m"}})).unwrap());
    pods.create(&PostParams::default(), &oom).await.unwrap();
    // An image no registry has: ErrImagePull, then ImagePullBackOff (the "registry" is a closed loopback port).
    pods.create(
        &PostParams::default(),
        &on_node("missing", "127.0.0.1:1/skiff/missing:1", "true"),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (mut crash_loop, mut err_pull, mut pull_backoff, mut restarts) = (false, false, false, 0);
    while !(crash_loop && restarts >= 2 && err_pull && pull_backoff) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "crash loop {crash_loop}, restarts {restarts}, ErrImagePull {err_pull}, ImagePullBackOff {pull_backoff}"
        );
        let status_of = |p: Pod| {
            p.status
                .and_then(|s| s.container_statuses)
                .and_then(|cs| cs.into_iter().next())
        };
        if let Some(cs) = status_of(pods.get("crash").await.unwrap()) {
            restarts = cs.restart_count;
            if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
                && w.reason.as_deref() == Some("CrashLoopBackOff")
            {
                crash_loop = true;
                let last = cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .expect("lastState.terminated");
                assert_eq!(last.exit_code, 3);
                assert_eq!(last.reason.as_deref(), Some("Error"));
            }
        }
        if let Some(cs) = status_of(pods.get("missing").await.unwrap()) {
            match cs
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
            {
                Some("ErrImagePull") => err_pull = true,
                Some("ImagePullBackOff") => pull_backoff = true,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let oomed = eventually("the pod OOMKilled", Duration::from_secs(60), || async {
        let p = pods.get("oom").await.ok()?;
        let st = p.status?;
        (st.phase.as_deref() == Some("Failed")).then_some(st)
    })
    .await;
    let t = oomed.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (t.reason.as_deref(), t.exit_code),
        (Some("OOMKilled"), 137),
        "{t:?}"
    );
    for name in ["crash", "missing", "oom"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }

    // An agent restart adopts the running container instead of restarting it.
    agent.abort();
    let _ = agent.await;
    agent = start_agent(client.clone(), config.clone());
    let labels = [(LABEL_POD_UID.to_string(), uid.clone())].into();
    eventually(
        "the runtime after the agent restart",
        Duration::from_secs(60),
        || async { runtime.version().await.ok() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pods.get("hello").await.unwrap();
    let cs = &after.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(
        cs.container_id.as_deref(),
        Some(container_id.as_str()),
        "the container was kept"
    );
    assert_eq!(cs.restart_count, 0);
    let containers = runtime.list_containers(&labels).await.unwrap();
    let apps: Vec<_> = containers.iter().filter(|c| c.name == "app").collect();
    assert_eq!(apps.len(), 1, "{containers:?}");
    assert_eq!(format!("containerd://{}", apps[0].id), container_id);

    // containerd dies: the agent restarts it, the containers live on, and CRI calls reconnect.
    let pid_file = config.data_dir.join("containerd/containerd.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        std::process::Command::new("kill")
            .arg("-KILL")
            .arg(pid.trim())
            .status()
            .unwrap()
            .success()
    );
    eventually("containerd restarted", Duration::from_secs(60), || async {
        let now = std::fs::read_to_string(&pid_file).ok()?;
        (now.trim() != pid.trim()).then_some(())
    })
    .await;
    let again = eventually(
        "the runtime after a containerd restart",
        Duration::from_secs(60),
        || async { runtime.list_containers(&labels).await.ok() },
    )
    .await;
    assert!(again.iter().any(|c| c.name == "app"
        && format!("containerd://{}", c.id) == container_id
        && c.state == skiff_kubelet::runtime::ContainerState::Running));

    // Deletion: stopped within the grace period, sandbox removed, pod gone.
    pods.delete(
        "hello",
        &DeleteParams {
            grace_period_seconds: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for name in ["hello", "crash", "missing", "oom"] {
        eventually("the pods deleted", Duration::from_secs(60), || async {
            matches!(pods.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }
    let node_labels = [(LABEL_NODE.to_string(), "e2e-node".to_string())].into();
    assert!(
        runtime
            .list_containers(&node_labels)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        runtime
            .list_sandboxes(&node_labels)
            .await
            .unwrap()
            .is_empty()
    );

    agent.abort();
    let _ = agent.await;
}
