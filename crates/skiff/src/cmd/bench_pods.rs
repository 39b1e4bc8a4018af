//! `skiff bench pods`: the node benchmark of the agent issue. A control
//! plane (`skiff server --disable-agent`) and a separate `skiff agent`
//! process with its own containerd, on temporary data directories; pods of
//! an image already present (the agent's pause image, run as a container)
//! are created at a steady rate, then in a burst. Needs root (containerd).
//!
//! Startup latency follows the Kubernetes pod startup SLI: from the pod's
//! creation until all its containers are reported started, as observed by
//! a watch. The creation instant is taken on the client, just before the
//! POST (metadata.creationTimestamp has only one-second resolution), so the
//! figure also includes the create request itself.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_kubelet::runtime::Runtime as _;

use super::bench::{Child, client, ms, percentile, rss_kib, start_server};

/// Creation instants (client side) and start observations, by pod name.
#[derive(Default)]
struct Book {
    created: HashMap<String, Instant>,
    started: HashMap<String, Instant>,
}

fn all_started(p: &Pod) -> bool {
    let Some(status) = &p.status else {
        return false;
    };
    let want = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(1);
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    statuses.len() == want
        && statuses
            .iter()
            .all(|c| c.state.as_ref().and_then(|s| s.running.as_ref()).is_some())
}

fn bench_pod(name: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench-pods"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sleep", "3600"]}]
        }
    }))?)
}

/// Processes whose parent is `pid`.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head
            .split_once('(')
            .map(|(_, c)| c.to_string())
            .unwrap_or_default();
        if rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            out.push((child, comm));
        }
    }
    out
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

pub(super) struct Agent {
    pub(super) child: std::process::Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM lets the agent stop its containerd; then make sure.
        let pid = self.child.id();
        let containerd: Vec<u32> = children(pid)
            .into_iter()
            .filter(|(_, c)| c == "containerd")
            .map(|(p, _)| p)
            .collect();
        signal(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in containerd {
            signal(p, "-KILL");
        }
    }
}

pub(super) fn start_agent(server: &Child, dir: &Path, extra: &[&str]) -> anyhow::Result<Agent> {
    let data = server._dir.path();
    let token =
        std::fs::read_to_string(data.join("node-token")).context("reading the node token")?;
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig)?;
    let url = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("server URL in the kubeconfig")?
        .to_string();
    let exe = std::env::current_exe().context("current exe")?;
    let child = std::process::Command::new(exe)
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            token.trim(),
            "--node-name",
            "bench-node",
            "--data-dir",
        ])
        .arg(dir)
        .arg("--ca-file")
        .arg(data.join("tls/server-ca.crt"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).context("agent log")?)
        .spawn()
        .context("starting skiff agent")?;
    Ok(Agent { child })
}

/// Remove every pod sandbox of the benchmark's node straight through CRI,
/// so that no container outlives the benchmark (the agent itself leaves
/// containers running when it stops, by design).
pub(super) async fn remove_all_pods(agent_dir: &Path) {
    let socket = skiff_kubelet::containerd::socket_path(&agent_dir.join("agent"));
    let Ok(rt) = skiff_kubelet::cri::CriRuntime::new(&socket) else {
        return;
    };
    let mine = [(
        skiff_kubelet::runtime::LABEL_NODE.to_string(),
        "bench-node".to_string(),
    )]
    .into();
    let Ok(sandboxes) = rt.list_sandboxes(&mine).await else {
        return;
    };
    let uids: std::collections::BTreeSet<String> = sandboxes
        .into_iter()
        .filter_map(|s| s.labels.get(skiff_kubelet::runtime::LABEL_POD_UID).cloned())
        .collect();
    for uid in uids {
        if let Err(e) = skiff_kubelet::sync::remove_pod(&rt, &uid).await {
            eprintln!("removing pod {uid}: {e}");
        }
    }
}

/// How many pod sandboxes the benchmark node's runtime holds (None when
/// it cannot be asked).
async fn runtime_sandboxes(agent_dir: &Path) -> Option<usize> {
    let socket = skiff_kubelet::containerd::socket_path(&agent_dir.join("agent"));
    let rt = skiff_kubelet::cri::CriRuntime::new(&socket).ok()?;
    let mine = [(
        skiff_kubelet::runtime::LABEL_NODE.to_string(),
        "bench-node".to_string(),
    )]
    .into();
    rt.list_sandboxes(&mine).await.ok().map(|s| s.len())
}

/// Record when each pod is first seen with all its containers started.
fn spawn_observer(
    pods: Api<Pod>,
    book: Arc<Mutex<Book>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut rv = pods
            .list_metadata(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        loop {
            let mut stream = pods
                .watch(
                    &WatchParams::default().labels("app=bench-pods").timeout(290),
                    &rv,
                )
                .await?
                .boxed();
            while let Some(ev) = stream.try_next().await? {
                match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        rv = p.metadata.resource_version.clone().unwrap_or(rv);
                        if all_started(&p) {
                            let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
                            let name = p.metadata.name.clone().unwrap_or_default();
                            b.started.entry(name).or_insert_with(Instant::now);
                        }
                    }
                    WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                    _ => {}
                }
            }
        }
    })
}

async fn wait_started(book: &Arc<Mutex<Book>>, names: &[String], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = {
            let b = book.lock().unwrap_or_else(|e| e.into_inner());
            names.iter().filter(|n| b.started.contains_key(*n)).count()
        };
        if n == names.len() || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the benchmark's node is Ready.
pub(super) async fn wait_node_ready(client: &kube::Client, agent_dir: &Path) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let ready = nodes
            .get_opt("bench-node")
            .await
            .ok()
            .flatten()
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the agent's node did not become Ready; see {}",
                agent_dir.with_extension("log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub async fn run(count: usize, rate: u64, burst: usize) -> anyhow::Result<ExitCode> {
    if !is_root() {
        bail!("skiff bench pods runs real containers: it needs root");
    }
    let server = start_server(true)?;
    let client = client(&server.kubeconfig).await?;
    let agent_dir = server._dir.path().join("agent");
    let agent = start_agent(
        &server,
        &agent_dir,
        &["--disable-ingress", "--dns-port", "0"],
    )?;
    let start = Instant::now();
    wait_node_ready(&client, &agent_dir).await?;
    println!(
        "skiff bench pods: {} cores; node Ready {:.1} s after the agent started",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        start.elapsed().as_secs_f64()
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "bench"}}))?,
        )
        .await?;
    // The default service account is what admission waits for.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let book = Arc::new(Mutex::new(Book::default()));
    let observer = spawn_observer(pods.clone(), book.clone());
    let image = skiff_kubelet::containerd::PAUSE_IMAGE;

    // Warm-up: one pod, not counted.
    let warm = "warm".to_string();
    book.lock()
        .unwrap_or_else(|e| e.into_inner())
        .created
        .insert(warm.clone(), Instant::now());
    pods.create(&PostParams::default(), &bench_pod(&warm, image)?)
        .await?;
    if wait_started(&book, std::slice::from_ref(&warm), Duration::from_secs(60)).await == 0 {
        bail!(
            "the warm-up pod did not start; see {}",
            agent_dir.with_extension("log").display()
        );
    }

    // Steady phase.
    let mut names = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    for i in 0..count {
        tick.tick().await;
        let name = format!("steady-{i}");
        book.lock()
            .unwrap_or_else(|e| e.into_inner())
            .created
            .insert(name.clone(), Instant::now());
        pods.create(&PostParams::default(), &bench_pod(&name, image)?)
            .await?;
        names.push(name);
    }
    let started = wait_started(&book, &names, Duration::from_secs(300)).await;
    let mut lat: Vec<Duration> = {
        let b = book.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .filter_map(|n| Some(*b.started.get(n)? - *b.created.get(n)?))
            .collect()
    };
    lat.sort();
    println!(
        "steady {count} pods at {rate}/s: {started} started; startup latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );

    // The node takes 110 pods: make room for the burst first.
    let agent_pid = agent.child.id();
    let steady_rss = rss_kib(agent_pid);
    let dp = DeleteParams::default().grace_period(0);
    let teardown_start = Instant::now();
    let _ = pods
        .delete_collection(
            &dp,
            &ListParams::default()
                .labels("app=bench-pods")
                .fields("metadata.name!=warm"),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline
        && pods
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
            > 1
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Pods deleted with grace 0 leave the API at once and the kubelet tears
    // them down afterwards (as Kubernetes does): the burst starts on a node
    // that has finished, so that it measures startup alone.
    while Instant::now() < deadline && runtime_sandboxes(&agent_dir).await.is_some_and(|n| n > 1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "teardown of {count} pods deleted at once (grace 0): runtime clean after {:.2} s",
        teardown_start.elapsed().as_secs_f64()
    );

    // Burst phase.
    let mut burst_names = Vec::new();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..burst {
        let name = format!("burst-{i}");
        burst_names.push(name.clone());
        let pods = pods.clone();
        let pod = bench_pod(&name, image)?;
        book.lock()
            .unwrap_or_else(|e| e.into_inner())
            .created
            .insert(name, Instant::now());
        tasks.push(tokio::spawn(async move {
            pods.create(&PostParams::default(), &pod).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let n = wait_started(&book, &burst_names, Duration::from_secs(300)).await;
    println!(
        "burst of {burst} pods: {n} Running after {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    if let Some(rss) = steady_rss {
        println!(
            "RSS of skiff agent with {} pods running: {:.1} MiB",
            count + 1,
            rss as f64 / 1024.0
        );
    }
    if let Some(rss) = rss_kib(agent_pid) {
        println!(
            "RSS of skiff agent with {} pods running: {:.1} MiB",
            burst + 1,
            rss as f64 / 1024.0
        );
    }
    let containerd: Vec<u32> = children(agent_pid)
        .into_iter()
        .filter(|(_, c)| c == "containerd")
        .map(|(p, _)| p)
        .collect();
    for p in &containerd {
        if let Some(rss) = rss_kib(*p) {
            println!(
                "RSS of its containerd:              {:.1} MiB",
                rss as f64 / 1024.0
            );
        }
    }
    if let Some(rss) = rss_kib(server.child.id()) {
        println!(
            "RSS of skiff server (control plane): {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    observer.abort();

    // Clean up the containers before the agent goes.
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline
        && !pods
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    remove_all_pods(&agent_dir).await;
    drop(agent);
    Ok(ExitCode::SUCCESS)
}
