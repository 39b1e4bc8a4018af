//! `skiff bench overload`: the overload benchmark of the robustness issue.
//! One client floods the API server with LISTs and creates as fast as it
//! can; meanwhile a well-behaved client writes at a steady pace and a node
//! renews its Lease. Their latencies are measured unloaded, then under the
//! flood, side by side in one run, for each overload mode: API Priority
//! and Fairness (the default), plain max-inflight, and no limit at all.
//! It prints figures; it never fails on a slow one.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};

use super::bench::{Child, ms, percentile, start_server_with};

const NAMESPACE: &str = "bench-overload";
const NODE: &str = "bench-node";

/// What one mode measured.
struct Figures {
    mode: &'static str,
    quiet: [(Duration, Duration); 2],
    lease: [(Duration, Duration); 2],
    quiet_errors: u64,
    lease_errors: u64,
    noisy_ok: u64,
    noisy_429: u64,
    noisy_other: u64,
    seconds: f64,
}

pub async fn run(objects: usize, flooders: usize, seconds: u64) -> anyhow::Result<ExitCode> {
    let modes: [(&'static str, &[&str]); 3] = [
        ("priority and fairness", &[]),
        ("max-inflight", &["--enable-priority-and-fairness=false"]),
        (
            "no limit",
            &[
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
            ],
        ),
    ];
    // The flooding client stands for another machine: on a machine of two
    // CPUs or more, it has CPU 1 to itself, and the server and the two
    // well-behaved clients share CPU 0 (children inherit the mask).
    let pinned = std::thread::available_parallelism().map_or(1, usize::from) >= 2
        && pin_process(std::process::id(), 0).is_ok();
    let flood_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            if pinned {
                let _ = pin_thread(1);
            }
        })
        .enable_all()
        .build()?;
    println!(
        "{}",
        if pinned {
            "server and well-behaved clients on CPU 0, the flooding client on CPU 1"
        } else {
            "not pinned to CPUs: every process shares every CPU"
        }
    );
    println!(
        "overload: {flooders} flooding workers (LIST over {objects} ConfigMaps matching none / create, no client retry), \
         one writer every 20 ms, one node Lease renewal every 50 ms; {seconds} s unloaded, then {seconds} s flooded"
    );
    let mut all = Vec::new();
    for (mode, flags) in modes {
        let extra: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let child = start_server_with(false, &extra)?;
        if pinned {
            pin_process(child.child.id(), 0)?;
        }
        let figures = measure(
            &child,
            flood_rt.handle(),
            mode,
            objects,
            flooders,
            Duration::from_secs(seconds),
        )
        .await
        .with_context(|| format!("mode {mode}"))?;
        all.push(figures);
    }
    flood_rt.shutdown_background();
    println!();
    println!(
        "{:<24} {:>22} {:>22} {:>7} {:>22} {:>22} {:>7} {:>9} {:>9} {:>7}",
        "mode",
        "writer p50/p99 idle",
        "writer p50/p99 flood",
        "ratio",
        "lease p50/p99 idle",
        "lease p50/p99 flood",
        "ratio",
        "noisy/s",
        "429/s",
        "errors"
    );
    for f in &all {
        let pair = |(p50, p99): (Duration, Duration)| format!("{:.1}/{:.1} ms", ms(p50), ms(p99));
        let ratio = |x: &[(Duration, Duration); 2]| ms(x[1].1) / ms(x[0].1).max(0.001);
        println!(
            "{:<24} {:>22} {:>22} {:>6.2}x {:>22} {:>22} {:>6.2}x {:>9.0} {:>9.0} {:>7}",
            f.mode,
            pair(f.quiet[0]),
            pair(f.quiet[1]),
            ratio(&f.quiet),
            pair(f.lease[0]),
            pair(f.lease[1]),
            ratio(&f.lease),
            f.noisy_ok as f64 / f.seconds,
            f.noisy_429 as f64 / f.seconds,
            f.noisy_other + f.quiet_errors + f.lease_errors,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A client of the child server acting as `user` in `groups` (the admin
/// impersonates them), without kube's retries so that 429s are seen.
async fn client_as(child: &Child, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
    client_at(&child.kubeconfig, user, groups).await
}

async fn client_at(
    kubeconfig: &std::path::Path,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

async fn setup(admin: &kube::Client, objects: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-overload"},
        "subjects": [
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "noisy"},
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "quiet"}
        ],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let data = "x".repeat(200);
    futures::stream::iter(0..objects)
        .map(|i| {
            let (cms, data) = (cms.clone(), data.clone());
            async move {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("seed-{i}")}, "data": {"d": data}
                }))?;
                cms.create(&PostParams::default(), &cm).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

use futures::{StreamExt, TryStreamExt};

/// Pin every thread of process `pid` to `cpu` (util-linux's taskset;
/// threads started later inherit the mask).
fn pin_process(pid: u32, cpu: usize) -> std::io::Result<()> {
    taskset(&["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
}

/// Pin the calling thread to `cpu`.
fn pin_thread(cpu: usize) -> std::io::Result<()> {
    // /proc/thread-self is a link to "<pid>/task/<tid>".
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| std::io::Error::other("no thread id"))?
        .to_string();
    taskset(&["-p", "-c", &cpu.to_string(), &tid])
}

fn taskset(args: &[&str]) -> std::io::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("taskset {args:?}: {status}")))
    }
}

async fn measure(
    child: &Child,
    flood_rt: &tokio::runtime::Handle,
    mode: &'static str,
    objects: usize,
    flooders: usize,
    phase: Duration,
) -> anyhow::Result<Figures> {
    let admin = super::bench::client(&child.kubeconfig).await?;
    setup(&admin, objects).await?;
    let quiet = client_as(child, "quiet", &[]).await?;
    let node = client_as(child, &format!("system:node:{NODE}"), &["system:nodes"]).await?;
    // Made on the flooding runtime, so that its connections run there.
    let noisy = {
        let kubeconfig = child.kubeconfig.clone();
        flood_rt
            .spawn(async move { client_at(&kubeconfig, "noisy", &[]).await })
            .await??
    };
    // Wait for the binding to be in force.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Api::<ConfigMap>::namespaced(quiet.clone(), NAMESPACE)
        .get_opt("none")
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the benchmark users' binding did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leases: Api<Lease> = Api::namespaced(node.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": NODE},
        "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40}
    }))?;
    leases.create(&PostParams::default(), &lease).await?;

    let mut quiet_figures = [(Duration::ZERO, Duration::ZERO); 2];
    let mut lease_figures = [(Duration::ZERO, Duration::ZERO); 2];
    let (mut quiet_errors, mut lease_errors) = (0, 0);
    let (ok, refused, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for (i, label) in ["unloaded", "flooded"].into_iter().enumerate() {
        if i == 1 {
            for w in 0..flooders {
                let (noisy, ok, refused, other, stop) = (
                    noisy.clone(),
                    ok.clone(),
                    refused.clone(),
                    other.clone(),
                    stop.clone(),
                );
                flood.push(
                    flood_rt.spawn(async move {
                        flood_worker(noisy, w, ok, refused, other, stop).await
                    }),
                );
            }
        }
        let writer = tokio::spawn(writer(quiet.clone(), phase, i));
        let renewer = tokio::spawn(renewer(leases.clone(), phase));
        let (mut w, we) = writer.await?;
        let (mut l, le) = renewer.await?;
        w.sort();
        l.sort();
        quiet_figures[i] = (percentile(&w, 0.5), percentile(&w, 0.99));
        lease_figures[i] = (percentile(&l, 0.5), percentile(&l, 0.99));
        quiet_errors += we;
        lease_errors += le;
        println!(
            "  {mode:<22} {label:<9} writer p50 {:.1} ms p99 {:.1} ms ({} writes, {we} errors); lease p50 {:.1} ms p99 {:.1} ms ({} renewals, {le} errors)",
            ms(quiet_figures[i].0),
            ms(quiet_figures[i].1),
            w.len(),
            ms(lease_figures[i].0),
            ms(lease_figures[i].1),
            l.len()
        );
    }
    stop.store(true, Ordering::SeqCst);
    for f in flood {
        let _ = f.await;
    }
    Ok(Figures {
        mode,
        quiet: quiet_figures,
        lease: lease_figures,
        quiet_errors,
        lease_errors,
        noisy_ok: ok.load(Ordering::SeqCst),
        noisy_429: refused.load(Ordering::SeqCst),
        noisy_other: other.load(Ordering::SeqCst),
        seconds: phase.as_secs_f64(),
    })
}

/// The noisy client: LISTs of the namespace (matching nothing) and
/// creates, back to back.
async fn flood_worker(
    client: kube::Client,
    worker: usize,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    // The server walks every ConfigMap of the namespace and answers none:
    // the flooding client spends its CPU on asking, not on reading answers
    // (a client on a machine of its own would not be short of CPU), so the
    // load lands on the server.
    let list_path =
        format!("/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector=flood%3Dnothing");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = if worker.is_multiple_of(2) {
            let req = http::Request::get(&list_path).body(Vec::new());
            match req {
                Ok(req) => client.request_text(req).await.map(|_| ()),
                Err(_) => return,
            }
        } else {
            let cm: ConfigMap = match serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("noisy-{worker}-{n}")}, "data": {"d": "x"}
            })) {
                Ok(cm) => cm,
                Err(_) => return,
            };
            cms.create(&PostParams::default(), &cm).await.map(|_| ())
        };
        match r {
            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
            Err(kube::Error::Api(e)) if e.code == 429 => refused.fetch_add(1, Ordering::Relaxed),
            Err(_) => other.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The well-behaved client: one create every 20 ms; its latencies.
async fn writer(client: kube::Client, phase: Duration, round: usize) -> (Vec<Duration>, u64) {
    let cms: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let end = Instant::now() + phase;
    let (mut times, mut errors) = (Vec::new(), 0);
    let mut n = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        n += 1;
        let Ok(cm) = serde_json::from_value::<ConfigMap>(serde_json::json!({
            "metadata": {"name": format!("quiet-{round}-{n}")}, "data": {"d": "x"}
        })) else {
            continue;
        };
        let t = Instant::now();
        match cms.create(&PostParams::default(), &cm).await {
            Ok(_) => times.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    (times, errors)
}

/// The node: a Lease renewal (a PUT of the Lease it last got back, with a
/// new renewTime) every 50 ms, as the kubelet's heartbeat does every 10 s;
/// its latencies.
async fn renewer(leases: Api<Lease>, phase: Duration) -> (Vec<Duration>, u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let end = Instant::now() + phase;
    let (mut times, mut errors) = (Vec::new(), 0);
    let mut current = leases.get(NODE).await.ok();
    while Instant::now() < end {
        ticker.tick().await;
        let t = Instant::now();
        let renewed = match current.take() {
            Some(lease) => renew(&leases, lease).await,
            None => leases.get(NODE).await,
        };
        match renewed {
            Ok(lease) => {
                times.push(t.elapsed());
                current = Some(lease);
            }
            Err(_) => errors += 1,
        }
    }
    (times, errors)
}

async fn renew(leases: &Api<Lease>, lease: Lease) -> Result<Lease, kube::Error> {
    let mut value = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
    value["spec"]["renewTime"] = serde_json::json!(skiff_apiserver::handlers::now_rfc3339());
    let lease: Lease = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
    leases.replace(NODE, &PostParams::default(), &lease).await
}
