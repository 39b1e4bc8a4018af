//! `skiff bench api`: the API benchmark of the API server issue. Starts a
//! `skiff server` child process on a temporary data directory (or uses
//! `--kubeconfig`), drives it with the kube client library over HTTPS, and
//! prints figures. It never fails on a slow figure: it measures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// API server throughput, latency, LIST, watch fan-out, idle RSS.
    Api(ApiArgs),
    /// Scheduling throughput end to end through the API server, on hollow nodes.
    Scheduler(SchedulerArgs),
    /// Pod startup latency and burst on one real node (containerd); needs root.
    Pods(PodsArgs),
    /// Service proxy programming, cluster DNS, ClusterIP vs direct throughput; needs root.
    Proxy(ProxyArgs),
    /// RBAC decision cost with N Roles and RoleBindings, in process.
    Authz(AuthzArgs),
    /// A flooding client against a well-behaved one and a node's Lease
    /// renewals, per overload mode (priority and fairness, max-inflight, none).
    Overload(OverloadArgs),
    /// Creates of a custom resource (50-field schema, 3 CEL rules) beside
    /// ConfigMaps, and the latency one validating webhook adds.
    Crd(CrdArgs),
}

#[derive(clap::Args)]
struct CrdArgs {
    /// Creates per round and kind.
    #[arg(long, default_value_t = 2000)]
    objects: usize,
    /// Creates in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Alternating rounds (ConfigMaps, then custom resources).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(clap::Args)]
struct OverloadArgs {
    /// ConfigMaps in the namespace the flooding client LISTs.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Concurrent workers of the flooding client.
    #[arg(long, default_value_t = 64)]
    flooders: usize,
    /// Seconds of each phase (unloaded, flooded).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(clap::Args)]
struct ProxyArgs {
    #[arg(long, default_value_t = 5000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(clap::Args)]
struct PodsArgs {
    /// Pods of the steady phase.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Pods created per second in the steady phase.
    #[arg(long, default_value_t = 5)]
    rate: u64,
    /// Pods of the burst phase, created at once.
    #[arg(long, default_value_t = 30)]
    burst: usize,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods created as fast as the API takes them.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Replicas of the Deployment phase.
    #[arg(long, default_value_t = 1000)]
    replicas: i32,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(clap::Args)]
struct ApiArgs {
    /// Benchmark an already running server instead of starting one.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Pods created by the throughput phase (and then listed).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients of the throughput phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Writes per second of the latency phase.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent watches of the watch phase.
    #[arg(long, default_value_t = 1000)]
    watches: usize,
    /// Run the whole benchmark twice, side by side: on the embedded store,
    /// then on a one-member etcd (Debian's `etcd`) started for the run.
    #[arg(long)]
    compare_etcd: bool,
    /// Run the whole benchmark twice, side by side: with authorization
    /// (Node, RBAC), then with `--authorization-mode AlwaysAllow`.
    #[arg(long)]
    compare_authorization: bool,
}

#[derive(clap::Args)]
struct AuthzArgs {
    /// Roles (each with a RoleBinding) in the index.
    #[arg(long, default_value_t = 1000)]
    roles: usize,
    /// Decisions timed.
    #[arg(long, default_value_t = 100_000)]
    decisions: usize,
}

/// The figures compared across stores.
struct ApiFigures {
    creates_per_second: f64,
    write_p99: Duration,
    list_json: Duration,
}

pub(super) struct Child {
    pub(super) child: std::process::Child,
    pub(super) _dir: tempfile::TempDir,
    pub(super) kubeconfig: PathBuf,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start a `skiff server` child. The API benchmark runs the API server
/// alone (`control_plane` false); the scheduler benchmark runs the whole
/// control plane.
pub(super) fn start_server(control_plane: bool) -> anyhow::Result<Child> {
    start_server_with(control_plane, &[])
}

pub(super) fn start_server_with(control_plane: bool, extra: &[String]) -> anyhow::Result<Child> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe().context("current exe")?;
    let child = std::process::Command::new(exe)
        .args([
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(if control_plane {
            &[][..]
        } else {
            &["--disable-controller-manager", "--disable-scheduler"][..]
        })
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting skiff server")?;
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            bail!("skiff server did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Child {
        child,
        _dir: dir,
        kubeconfig,
    })
}

pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) async fn client(kubeconfig: &PathBuf) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    }))?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.what {
        What::Api(args) => runtime.block_on(bench_api(args)),
        What::Scheduler(args) => runtime.block_on(bench_scheduler(args)),
        What::Pods(args) => {
            runtime.block_on(super::bench_pods::run(args.pods, args.rate, args.burst))
        }
        What::Proxy(args) => runtime.block_on(super::bench_proxy::run(
            args.services,
            args.endpoints,
            args.seconds,
        )),
        What::Authz(args) => bench_authz(&args),
        What::Crd(args) => runtime.block_on(super::bench_crd::run(
            args.objects,
            args.concurrency,
            args.rounds,
        )),
        What::Overload(args) => runtime.block_on(super::bench_overload::run(
            args.objects,
            args.flooders,
            args.seconds,
        )),
    }
}

/// A client for user `skiff-bench` (a client certificate from the child
/// server's CA) bound to cluster-admin by a ClusterRoleBinding.
async fn rbac_user_client(child: &Child, admin: &kube::Client) -> anyhow::Result<kube::Client> {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "skiff-bench"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "skiff-bench"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let pki = skiff_apiserver::tls::Pki::load_or_create(child._dir.path(), &[])?;
    let admin_kc = std::fs::read_to_string(&child.kubeconfig)?;
    let url = admin_kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("server URL in the kubeconfig")?;
    let kc = pki.cert_kubeconfig(url, "bench", "skiff-bench", None)?;
    let path = child._dir.path().join("bench.kubeconfig");
    std::fs::write(&path, kc)?;
    let user = client(&path).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Api::<Namespace>::all(user.clone())
        .list(&ListParams::default().limit(1))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the benchmark user's binding did not take effect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(user)
}

/// RBAC decisions against an index of `roles` Roles, each bound by a
/// RoleBinding to one service account, in as many namespaces: the p50/p99
/// of an allowed and of a denied decision.
fn bench_authz(args: &AuthzArgs) -> anyhow::Result<ExitCode> {
    use skiff_apiserver::authz::{Attributes, UserInfo};
    let rbac = skiff_apiserver::rbac::Rbac::default();
    let started = Instant::now();
    for i in 0..args.roles {
        let ns = format!("ns-{i}");
        let role = serde_json::json!({"metadata": {"name": format!("role-{i}"), "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list"]},
                      {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"], "resourceNames": ["web"]}]});
        rbac.apply("Role", &ns, &format!("role-{i}"), Some(&role));
        let binding = serde_json::json!({"metadata": {"name": format!("binding-{i}"), "namespace": ns},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns},
                         {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("team-{i}")}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("role-{i}")}});
        rbac.apply("RoleBinding", &ns, &format!("binding-{i}"), Some(&binding));
    }
    let built = started.elapsed();
    let ask = |i: usize, resource: &str| Attributes {
        user: UserInfo::service_account(&format!("ns-{i}"), "app", ""),
        verb: "list".into(),
        resource_request: true,
        namespace: format!("ns-{i}"),
        resource: resource.into(),
        ..Default::default()
    };
    let mut figures = Vec::new();
    for (what, resource) in [("allowed", "pods"), ("denied", "secrets")] {
        let mut times = Vec::with_capacity(args.decisions);
        let mut allowed = 0usize;
        for n in 0..args.decisions {
            let a = ask(n % args.roles.max(1), resource);
            let t = Instant::now();
            if rbac.authorize(&a).is_some() {
                allowed += 1;
            }
            times.push(t.elapsed());
        }
        times.sort();
        figures.push((
            what,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            allowed,
        ));
    }
    println!(
        "skiff bench authz: {} Roles + {} RoleBindings indexed in {:.1} ms",
        args.roles,
        args.roles,
        ms(built)
    );
    for (what, p50, p99, allowed) in figures {
        println!(
            "  {what:>7} decision: p50 {:.2} µs, p99 {:.2} µs ({allowed} of {} allowed)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            args.decisions
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_api(args: ApiArgs) -> anyhow::Result<ExitCode> {
    if args.compare_authorization {
        // Off, on, off again: the first run on a machine is often the
        // slowest, so the figures compared are "on" against the mean of
        // the two runs around it.
        let off_args = [
            "--authorization-mode".to_string(),
            "AlwaysAllow".to_string(),
        ];
        println!("== authorization off (--authorization-mode AlwaysAllow), first");
        let off1 = bench_api_once(&args, &off_args).await?;
        println!("== authorization on (Node,RBAC)");
        let on = bench_api_once(&args, &[]).await?;
        println!("== authorization off (--authorization-mode AlwaysAllow), again");
        let off2 = bench_api_once(&args, &off_args).await?;
        let off = ApiFigures {
            creates_per_second: (off1.creates_per_second + off2.creates_per_second) / 2.0,
            write_p99: (off1.write_p99 + off2.write_p99) / 2,
            list_json: (off1.list_json + off2.list_json) / 2,
        };
        println!(
            "authorization on / off (mean of the two off runs): creates/s {:.0} / {:.0} = {:.3}; write p99 {:.2} / {:.2} ms = {:.3}; LIST JSON median {:.1} / {:.1} ms = {:.3}",
            on.creates_per_second,
            off.creates_per_second,
            on.creates_per_second / off.creates_per_second.max(1.0),
            ms(on.write_p99),
            ms(off.write_p99),
            on.write_p99.as_secs_f64() / off.write_p99.as_secs_f64().max(1e-9),
            ms(on.list_json),
            ms(off.list_json),
            on.list_json.as_secs_f64() / off.list_json.as_secs_f64().max(1e-9)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !args.compare_etcd {
        bench_api_once(&args, &[]).await?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("== embedded SQLite store");
    let sqlite = bench_api_once(&args, &[]).await?;
    let etcd = skiff_store_etcd::testing::Cluster::start(1)
        .context("starting etcd (apt-get install etcd-server)")?;
    println!(
        "== etcd ({}), one member on this machine",
        etcd.endpoint_list()
    );
    let on_etcd = bench_api_once(
        &args,
        &["--datastore-endpoint".into(), etcd.endpoint_list()],
    )
    .await?;
    println!(
        "etcd / embedded: creates/s {:.0} / {:.0} = {:.2}; write p99 {:.2} / {:.2} ms = {:.2}",
        on_etcd.creates_per_second,
        sqlite.creates_per_second,
        on_etcd.creates_per_second / sqlite.creates_per_second.max(1.0),
        ms(on_etcd.write_p99),
        ms(sqlite.write_p99),
        on_etcd.write_p99.as_secs_f64() / sqlite.write_p99.as_secs_f64().max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

async fn bench_api_once(args: &ApiArgs, extra: &[String]) -> anyhow::Result<ApiFigures> {
    let mut figures = ApiFigures {
        creates_per_second: 0.0,
        write_p99: Duration::ZERO,
        list_json: Duration::ZERO,
    };
    let child = match &args.kubeconfig {
        Some(_) => None,
        None => Some(start_server_with(false, extra)?),
    };
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| child.as_ref().map(|c| c.kubeconfig.clone()))
        .context("kubeconfig")?;
    let client = client(&kubeconfig).await?;
    // Wait for readiness.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.apiserver_version().await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("server not ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On a server of its own, the benchmark acts as an ordinary user whom
    // a ClusterRoleBinding makes cluster-admin, so that each request goes
    // through the RBAC authorizer (system:masters would skip it).
    let client = match &child {
        Some(c) => rbac_user_client(c, &client).await?,
        None => client,
    };
    println!(
        "skiff bench api: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if let Some(c) = &child {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(rss) = rss_kib(c.child.id()) {
            println!(
                "idle RSS of skiff server:            {:.1} MiB",
                rss as f64 / 1024.0
            );
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["bench", "latency", "watch"] {
        let n: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        let _ = namespaces.create(&PostParams::default(), &n).await;
    }

    // 1. Durable creates with N concurrent clients.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let per = args.pods.div_ceil(args.concurrency);
    let cpu_before = child.as_ref().and_then(|c| cpu_time(c.child.id()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let p = pod(&format!("p-{w}-{i}"))?;
                let t = Instant::now();
                pods.create(&PostParams::default(), &p).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed();
    lat.sort();
    figures.creates_per_second = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "creates/s, {} clients, {} pods:     {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        args.concurrency,
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    if let (Some(c), Some(before)) = (&child, cpu_before)
        && let Some(after) = cpu_time(c.child.id())
    {
        let per_create = after.saturating_sub(before).as_secs_f64() * 1e6 / lat.len().max(1) as f64;
        println!(
            "server CPU per create:               {per_create:.0} µs (the server alone could do {:.0}/s per core)",
            1e6 / per_create.max(1.0)
        );
    }

    // 2. LIST of all those pods (server time + transfer, and with decoding),
    // in JSON and in protobuf. The first protobuf LIST encodes every pod
    // once (the cache keeps each object's encoding); later ones copy bytes.
    let list_path = "/api/v1/namespaces/bench/pods";
    let server_pid = child.as_ref().map(|c| c.child.id());
    let (first_pb, pb_size) = timed_get(&client, list_path, PROTOBUF).await?;
    // Raw LISTs, and the server's CPU time per LIST in each encoding.
    let mut raw_times = Vec::new();
    let mut pb_times = Vec::new();
    let mut json_size = 0;
    let mut list_cpu = [Duration::ZERO; 2];
    for (i, accept) in ["application/json", PROTOBUF].into_iter().enumerate() {
        let before = server_pid.and_then(cpu_time);
        for _ in 0..5 {
            let (t, size) = timed_get(&client, list_path, accept).await?;
            if i == 0 {
                raw_times.push(t);
                json_size = size;
            } else {
                pb_times.push(t);
            }
        }
        if let (Some(b), Some(a)) = (before, server_pid.and_then(cpu_time)) {
            list_cpu[i] = a.saturating_sub(b) / 5;
        }
    }
    let mut typed_times = Vec::new();
    let mut pb_decode_times = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        count = pods.list(&ListParams::default()).await?.items.len();
        typed_times.push(t.elapsed());
        let t = Instant::now();
        let body = get_bytes(&client, list_path, PROTOBUF).await?;
        let list = skiff_api::protobuf::decode(&body)?;
        let _ = list.get("items").and_then(|i| i.as_array()).map(Vec::len);
        pb_decode_times.push(t.elapsed());
    }
    raw_times.sort();
    figures.list_json = percentile(&raw_times, 0.5);
    pb_times.sort();
    typed_times.sort();
    pb_decode_times.sort();
    println!(
        "LIST {count} pods, JSON:             {:.1} ms median raw ({:.1} MiB, server CPU {:.1} ms), {:.1} ms with client decoding (kube-rs, typed)",
        ms(percentile(&raw_times, 0.5)),
        json_size as f64 / 1048576.0,
        ms(list_cpu[0]),
        ms(percentile(&typed_times, 0.5))
    );
    println!(
        "LIST {count} pods, protobuf:         {:.1} ms median raw ({:.1} MiB, server CPU {:.1} ms; first, encoding every pod: {:.1} ms), {:.1} ms with client decoding (skiff_api::protobuf::decode to JSON values)",
        ms(percentile(&pb_times, 0.5)),
        pb_size as f64 / 1048576.0,
        ms(list_cpu[1]),
        ms(first_pb),
        ms(percentile(&pb_decode_times, 0.5))
    );

    // 3. Single-object write latency at a fixed rate (open loop).
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "latency");
    let total = (args.rate * args.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let cms = cms.clone();
        handles.push(tokio::spawn(async move {
            let cm: ConfigMap = serde_json::from_value(
                serde_json::json!({"metadata": {"name": format!("c{i}")}, "data": {"k": "v"}}),
            )?;
            let t = Instant::now();
            cms.create(&PostParams::default(), &cm).await?;
            anyhow::Ok(t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for h in handles {
        lat.push(h.await??);
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    figures.write_p99 = percentile(&lat, 0.99);
    println!(
        "write latency at {}/s ({:.0}/s achieved): p50 {:.2} ms, p99 {:.2} ms",
        args.rate,
        achieved,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    // 4. Watch fan-out: N watches, each write's delivery delay to every
    // watcher, with JSON and then protobuf watch streams.
    for (label, accept, ns) in [
        ("JSON", "application/json", "watch"),
        ("protobuf", PROTOBUF, "watch-pb"),
    ] {
        let n: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        let _ = namespaces.create(&PostParams::default(), &n).await;
        let (delivered, expected, delays, bytes, cpu) =
            watch_fanout(&client, ns, accept, args.watches, server_pid).await?;
        println!(
            "watch delivery ({label}), {} watches x {WATCH_WRITES} writes: {delivered} of {expected} delivered, p50 {:.2} ms, p99 {:.2} ms, {:.0} bytes per event, server CPU {:.1} ms",
            args.watches,
            ms(percentile(&delays, 0.5)),
            ms(percentile(&delays, 0.99)),
            bytes as f64 / delivered.max(1) as f64,
            ms(cpu)
        );
    }
    if let Some(c) = &child
        && let Some(rss) = rss_kib(c.child.id())
    {
        println!(
            "RSS of skiff server after the run:   {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    Ok(figures)
}

/// What client-go's typed clients send.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf, application/json";

/// Writes of the watch phase.
const WATCH_WRITES: usize = 20;

/// GET `path` with `accept`: the body.
async fn get_bytes(client: &kube::Client, path: &str, accept: &str) -> anyhow::Result<Vec<u8>> {
    use futures::AsyncReadExt;
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(Vec::new())?;
    let mut body = Vec::new();
    Box::pin(client.request_stream(req).await?)
        .read_to_end(&mut body)
        .await?;
    Ok(body)
}

/// GET `path` with `accept`: (time to the last byte, body size).
async fn timed_get(
    client: &kube::Client,
    path: &str,
    accept: &str,
) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let body = get_bytes(client, path, accept).await?;
    Ok((t.elapsed(), body.len()))
}

/// `watches` raw watch streams of ConfigMaps in `namespace` with `accept`,
/// `WATCH_WRITES` creates: (delivered, expected, sorted delays, bytes read,
/// server CPU time from the first write to the last delivery).
async fn watch_fanout(
    client: &kube::Client,
    namespace: &str,
    accept: &'static str,
    watches: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<(usize, usize, Vec<Duration>, usize, Duration)> {
    use futures::{AsyncBufReadExt, AsyncReadExt};
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let path = format!(
        "/api/v1/namespaces/{namespace}/configmaps?watch=true&resourceVersion=0&timeoutSeconds=290"
    );
    let mut watchers = Vec::new();
    for _ in 0..watches {
        let (client, sent, tx, ready_tx, bytes, path) = (
            client.clone(),
            sent.clone(),
            tx.clone(),
            ready_tx.clone(),
            bytes.clone(),
            path.clone(),
        );
        watchers.push(tokio::spawn(async move {
            let req = http::Request::get(path.as_str())
                .header(http::header::ACCEPT, accept)
                .body(Vec::new())?;
            let mut stream = Box::pin(client.request_stream(req).await?);
            let _ = ready_tx.send(());
            let deliver = |name: &str| {
                let now = Instant::now();
                let at = sent.lock().ok().and_then(|m| m.get(name).copied());
                if let Some(at) = at {
                    let _ = tx.send(now.saturating_duration_since(at));
                }
            };
            if accept == PROTOBUF {
                loop {
                    let mut len = [0u8; 4];
                    stream.read_exact(&mut len).await?;
                    let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
                    stream.read_exact(&mut msg).await?;
                    bytes.fetch_add(msg.len() + 4, std::sync::atomic::Ordering::Relaxed);
                    let (kind, obj) = skiff_api::protobuf::decode_watch_event(&msg)?;
                    if kind == "ADDED" {
                        deliver(
                            obj.pointer("/metadata/name")
                                .and_then(|v| v.as_str())
                                .unwrap_or(""),
                        );
                    }
                }
            } else {
                let mut line = String::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await? == 0 {
                        return anyhow::Ok(());
                    }
                    bytes.fetch_add(line.len(), std::sync::atomic::Ordering::Relaxed);
                    let ev: serde_json::Value = serde_json::from_str(&line)?;
                    if ev["type"] == "ADDED" {
                        deliver(
                            ev.pointer("/object/metadata/name")
                                .and_then(|v| v.as_str())
                                .unwrap_or(""),
                        );
                    }
                }
            }
        }));
    }
    drop(tx);
    for _ in 0..watches {
        ready_rx.recv().await.context("watch setup")?;
    }
    let wcm: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cpu_before = server_pid.and_then(cpu_time);
    for i in 0..WATCH_WRITES {
        let name = format!("w{i}");
        let cm: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "labels": {"app": "bench"}}, "data": {"key": "value"}}),
        )?;
        if let Ok(mut m) = sent.lock() {
            m.insert(name, Instant::now());
        }
        wcm.create(&PostParams::default(), &cm).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = WATCH_WRITES * watches;
    let mut delays = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while delays.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => delays.push(d),
            _ => break,
        }
    }
    let cpu = match (cpu_before, server_pid.and_then(cpu_time)) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => Duration::ZERO,
    };
    for w in watchers {
        w.abort();
    }
    delays.sort();
    Ok((
        delays.len(),
        expected,
        delays,
        bytes.load(std::sync::atomic::Ordering::Relaxed),
        cpu,
    ))
}

/// Wait until `want` pods in `namespace` (matching `selector`) have a node.
async fn wait_bound(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    want: usize,
    limit: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    let mut bound = std::collections::HashSet::new();
    let list = pods
        .list_metadata(&ListParams::default().labels(selector))
        .await?;
    let mut rv = list.metadata.resource_version.unwrap_or_default();
    for p in pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
    {
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            bound.insert(p.metadata.name.unwrap_or_default());
        }
    }
    while bound.len() < want && start.elapsed() < limit {
        let mut stream = pods
            .watch(&WatchParams::default().labels(selector).timeout(60), &rv)
            .await?
            .boxed();
        while let Some(ev) = stream.try_next().await? {
            match ev {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    rv = p.metadata.resource_version.clone().unwrap_or(rv);
                    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                        bound.insert(p.metadata.name.unwrap_or_default());
                    }
                }
                WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                _ => {}
            }
            if bound.len() >= want || start.elapsed() >= limit {
                break;
            }
        }
    }
    Ok((bound.len(), start.elapsed()))
}

async fn bench_scheduler(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let child = start_server(true)?;
    let client = client(&child.kubeconfig).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.apiserver_version().await.is_err() {
        if Instant::now() > deadline {
            bail!("server not ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "skiff bench scheduler: {} cores, {} hollow nodes",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.nodes
    );
    let sim = skiff_sim::SimConfig {
        nodes: args.nodes,
        cpu: "32".into(),
        memory: "256Gi".into(),
        pods: 110,
        ..Default::default()
    };
    let sim_task = tokio::spawn(skiff_sim::run(client.clone(), sim));
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let n = nodes
            .list_metadata(&ListParams::default().labels("type=sim"))
            .await?
            .items
            .len();
        if n >= args.nodes {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("only {n} nodes registered");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{} nodes registered in:              {:.1} s",
        args.nodes,
        start.elapsed().as_secs_f64()
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "sched"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    // Give the scheduler's node cache time to fill.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "sched");
    let per = args.pods.div_ceil(args.concurrency);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let mut p = pod(&format!("s-{w}-{i}"))?;
                p.metadata.labels = Some([("app".to_string(), "sched".to_string())].into());
                pods.create(&PostParams::default(), &p).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = start.elapsed();
    let total = per * args.concurrency;
    let (bound, elapsed) = wait_bound(
        &client,
        "sched",
        "app=sched",
        total,
        Duration::from_secs(900),
    )
    .await?;
    println!(
        "{total} pods: created in {:.1} s ({:.0}/s); {bound} bound after {:.1} s: {:.0} pods/s end to end",
        created.as_secs_f64(),
        total as f64 / created.as_secs_f64(),
        elapsed.as_secs_f64() + created.as_secs_f64(),
        bound as f64 / (elapsed + created).as_secs_f64()
    );

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "sched");
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "big"},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "big"}},
            "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    }))?;
    let start = Instant::now();
    deployments.create(&PostParams::default(), &d).await?;
    let (bound, elapsed) = wait_bound(
        &client,
        "sched",
        "app=big",
        args.replicas as usize,
        Duration::from_secs(600),
    )
    .await?;
    println!(
        "Deployment of {} replicas: {bound} pods bound in {:.1} s",
        args.replicas,
        elapsed.max(start.elapsed()).as_secs_f64()
    );
    sim_task.abort();
    if let Some(rss) = rss_kib(child.child.id()) {
        println!(
            "RSS of skiff server after the run:   {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
