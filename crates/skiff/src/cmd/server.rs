//! `skiff server`: the control plane (API server on the embedded store).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Where the store, certificates, tokens and kubeconfig live.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// `Node,RBAC` (every request authorized), or `AlwaysAllow` to turn
    /// authorization off: for benchmarks only (`skiff bench api
    /// --compare-authorization`), never for a cluster anyone else reaches.
    #[arg(long, default_value = "Node,RBAC", value_parser = ["Node,RBAC", "AlwaysAllow"])]
    pub authorization_mode: String,
    /// Pod Security level of namespaces without pod-security.kubernetes.io
    /// labels (privileged, baseline or restricted), for enforce, audit and
    /// warn, as the PodSecurity admission configuration's defaults.
    #[arg(long, default_value = "privileged", value_name = "LEVEL")]
    pub pod_security_default: skiff_apiserver::podsecurity::Level,
    /// API Priority and Fairness: requests queue per user within priority
    /// levels (system, nodes, controllers, workloads, others) and a
    /// client that floods gets 429s while the rest keep their latency.
    /// `false`: plain max-inflight limits instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enable_priority_and_fairness: bool,
    /// Read-only requests in flight at once (with priority and fairness:
    /// the two limits' sum is shared out among the priority levels; 0
    /// without it: no limit). Default: kube-apiserver's 400, or 40 per
    /// CPU on machines of fewer than 10 CPUs.
    #[arg(long)]
    pub max_requests_inflight: Option<usize>,
    /// Mutating requests in flight at once (see --max-requests-inflight).
    /// Default: 200, or 20 per CPU on machines of fewer than 10 CPUs.
    #[arg(long)]
    pub max_mutating_requests_inflight: Option<usize>,
    /// The longest a request may take (watches, exec, logs and proxying
    /// excepted), such as 60s or 2m; the `timeout` query parameter may
    /// ask for less.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Watches one user may have open at once (0: no limit;
    /// system:masters is never limited).
    #[arg(long, default_value_t = 4096)]
    pub max_watches_per_user: usize,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Do not run a node agent (kubelet + containerd) in this process.
    #[arg(long)]
    pub disable_agent: bool,
    /// Node name of the in-process agent (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// CRI socket for the in-process agent instead of a supervised containerd.
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// The in-process agent's kubelet API port (logs, exec, port-forward); 0 picks a free one.
    #[arg(long, env = "SKIFF_KUBELET_PORT", default_value_t = skiff_kubelet::server::DEFAULT_PORT)]
    pub kubelet_port: u16,
    /// The in-process agent's pod network across nodes: host-gw or vxlan (as `skiff agent --flannel-backend`).
    #[arg(long, default_value = "host-gw", value_name = "host-gw|vxlan")]
    pub flannel_backend: skiff_kubelet::routes::FlannelBackend,
    /// The node components beside the in-process agent (proxy, DNS).
    #[command(flatten)]
    pub node: super::node::NodeArgs,
    /// The in-process agent's container log rotation.
    #[command(flatten)]
    pub container_logs: super::agent::ContainerLogArgs,
    /// Do not run the controller manager in this process.
    #[arg(long)]
    pub disable_controller_manager: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Cluster pod CIDR (nodes get a /24 each).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// How long a node may go without renewing its Lease before it is NotReady/Unknown (seconds).
    #[arg(long, default_value_t = 40)]
    pub node_monitor_grace_period: u64,
    /// The datastore: embedded SQLite in the data directory unless --datastore-endpoint names etcd.
    #[command(flatten)]
    pub datastore: super::backup::DatastoreArgs,
    /// Cluster token (as k3s's --token). It becomes the node-join token of a
    /// new cluster; with a shared --datastore-endpoint, the first server
    /// stores the cluster CA and keys there encrypted with it, and a server
    /// started later with the same datastore and token joins that cluster.
    #[arg(long, env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// A file holding the token, instead of --token (which other local
    /// users can read in /proc/PID/cmdline).
    #[arg(long, env = "SKIFF_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// A token that joins agents but not servers (as k3s's --agent-token):
    /// kept in <data-dir>/agent-token, so that agents need not hold the
    /// cluster token, which is the key of the bootstrap data in a shared
    /// datastore.
    #[arg(long, env = "SKIFF_AGENT_TOKEN")]
    pub agent_token: Option<String>,
    /// A file holding the agent token, instead of --agent-token.
    #[arg(long, env = "SKIFF_AGENT_TOKEN_FILE", conflicts_with = "agent_token")]
    pub agent_token_file: Option<PathBuf>,
    /// Encryption of Secrets at rest.
    #[command(flatten)]
    pub encryption: super::secrets_encrypt::EncryptionArgs,
    /// Leader election of the scheduler and the controller manager.
    #[command(flatten)]
    pub leader: super::LeaderElectArgs,
}

pub use super::node::parse_cidr;

fn parse_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("{s}: not a range"))?;
    let (a, b): (u16, u16) = (a.parse()?, b.parse()?);
    if a > b {
        bail!("{s}: empty range");
    }
    Ok((a, b))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let mut args = args;
    args.token = super::resolve_token(args.token.take(), args.token_file.as_deref())?;
    args.agent_token =
        super::resolve_token(args.agent_token.take(), args.agent_token_file.as_deref())?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    let service_cidr = parse_cidr(&args.service_cidr)?;
    let node_ports = parse_range(&args.service_node_port_range)?;
    let cluster_cidr = parse_cidr(&args.cluster_cidr)?;
    let election = args.leader.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        super::create_private_dir(&data_dir)?;
        let store = super::backup::open_store(&args.datastore, &data_dir).await?;
        let token = args.token.clone().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        if let Some(token) = &token {
            if !args.datastore.datastore_endpoint.is_empty()
                && skiff_apiserver::bootdata::restore(&*store, token, &data_dir).await.context("restoring the cluster's bootstrap data")?
            {
                eprintln!("skiff: joining the cluster whose bootstrap data is in the datastore");
            }
            let node_token = data_dir.join("node-token");
            if !node_token.exists() {
                std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
                skiff_apiserver::tls::write_private(&node_token, token.as_bytes())?;
            }
        }
        if let Some(agent_token) = args.agent_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            // Kept as given; the API server rewrites it pinned to the CA.
            skiff_apiserver::tls::write_private(&data_dir.join("agent-token"), agent_token.as_bytes())?;
        }
        let store = super::secrets_encrypt::wrap(store, &args.encryption, &data_dir).await?;
        let mut config = skiff_apiserver::Config::new(data_dir.clone(), store);
        config.bind_address = args.bind_address;
        config.port = args.https_listen_port;
        config.tls_sans = args.tls_san.clone();
        // The node's own address is in the serving certificate (k3s adds
        // it), so agents and clients reaching it there can verify it.
        let node_ip = skiff_kubelet::node::default_node_ip().to_string();
        if !config.tls_sans.contains(&node_ip) {
            config.tls_sans.push(node_ip);
        }
        config.service_cidr = service_cidr;
        config.node_port_range = node_ports;
        config.pod_security_default = args.pod_security_default;
        config.authorization = args.authorization_mode != "AlwaysAllow";
        config.request_timeout = args.request_timeout;
        config.flow_control = skiff_apiserver::flowcontrol::Config {
            priority_and_fairness: args.enable_priority_and_fairness,
            max_requests_inflight: args
                .max_requests_inflight
                .unwrap_or_else(|| skiff_apiserver::flowcontrol::inflight_default(400)),
            max_mutating_requests_inflight: args
                .max_mutating_requests_inflight
                .unwrap_or_else(|| skiff_apiserver::flowcontrol::inflight_default(200)),
            // A quarter of the request timeout, as kube-apiserver.
            queue_wait: args.request_timeout / 4,
            max_watches_per_user: args.max_watches_per_user,
            ..Default::default()
        };
        if !config.authorization {
            tracing::warn!("--authorization-mode AlwaysAllow: every authenticated request is allowed (benchmarks only)");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            super::shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let (running, handle) = skiff_apiserver::start(config.clone(), stopped()).await.context("starting the API server")?;
        if let Some(token) = token.as_ref().filter(|_| !args.datastore.datastore_endpoint.is_empty()) {
            skiff_apiserver::bootdata::publish(&*config.store, token, &data_dir).await.context("storing the cluster's bootstrap data")?;
        }
        eprintln!("skiff: API server on https://{}; kubeconfig: {}", running.addr, running.kubeconfig_path.display());
        eprintln!("skiff: node join token in {}", data_dir.join("node-token").display());
        if data_dir.join("agent-token").exists() {
            eprintln!("skiff: agent join token in {}", data_dir.join("agent-token").display());
        }
        // The other components are clients of the API server, as in k3s,
        // each with its own identity (a client certificate from the cluster
        // CA) and only the permissions its bootstrap role grants.
        let component = |name: &str, user: &str, group: Option<&str>| {
            let name = name.to_string();
            let path = running.component_kubeconfig(&name, user, group);
            async move {
                let path = path.with_context(|| format!("the {name} credentials"))?;
                skiff_runtime::client_from_kubeconfig(&path).await.with_context(|| format!("the {name} client"))
            }
        };
        if !args.disable_controller_manager {
            let settings = super::controller_manager::Settings {
                cluster_cidr,
                root_ca: Some(running.ca_pem.clone()),
                node_monitor_grace_period: std::time::Duration::from_secs(args.node_monitor_grace_period),
                election: election.clone(),
                // The cluster CA signs what the CSR API approves (k3s runs
                // kube-controller-manager with --cluster-signing-*-file).
                signing: Some(super::controller_manager::signing(
                    &data_dir.join("tls/server-ca.crt"),
                    &data_dir.join("tls/server-ca.key"),
                )?),
                // The API server's service-account key signs token Secrets.
                service_account_key: Some(super::controller_manager::service_account_key(
                    &data_dir.join("tls/service-account.key"),
                )?),
            };
            let client = component("controller", "system:kube-controller-manager", None).await?;
            tokio::spawn(super::controller_manager::run_elected(client, settings, stopped()));
        }
        if !args.disable_agent {
            let agent = super::agent::config(data_dir.clone(), args.node_name.clone(), args.container_runtime_endpoint.clone());
            let mut agent = agent;
            agent.cni_bridge = args.node.cni_bridge.clone();
            agent.kubelet_port = args.kubelet_port;
            agent.flannel_backend = args.flannel_backend;
            agent.container_logs = args.container_logs.policy();
        if let Some(t) = args.container_logs.eviction_hard {
            agent.eviction_hard = t;
        }
            agent.cluster_dns = vec![super::node::cluster_dns(&args.node, service_cidr)];
            agent.cluster_domain = args.node.cluster_domain.clone();
            // The kubelet API verifies callers against the cluster CA.
            agent.client_ca = Some(running.ca_pem.clone());
            let cluster = super::node::Cluster {
                node_name: agent.node_name.clone(),
                node_ip: agent.node_ip.unwrap_or_else(skiff_kubelet::node::default_node_ip),
                cluster_cidr,
                service_cidr,
            };
            let clients = super::node::Clients {
                proxy: component("kube-proxy", "system:kube-proxy", None).await?,
                dns: component("skiff-dns", "system:skiff-dns", None).await?,
                ingress: component("skiff-ingress", "system:skiff-ingress", None).await?,
                netpol: component("skiff-netpol", "system:skiff-netpol", None).await?,
            };
            tokio::spawn(super::node::run(clients, args.node.clone(), cluster, stopped()));
            let node_user = format!("system:node:{}", agent.node_name);
            let agent_client = component("kubelet", &node_user, Some("system:nodes")).await?;
            let stop = stopped();
            tokio::spawn(async move {
                // An agent that cannot start (no containerd, not root) leaves the control plane running.
                tokio::select! {
                    r = skiff_kubelet::run(agent_client, agent) => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "node agent stopped; use --disable-agent to run a control plane only");
                        }
                    }
                    () = stop => {}
                }
            });
        }
        if !args.disable_scheduler {
            let client = component("scheduler", "system:kube-scheduler", None).await?;
            tokio::spawn(super::scheduler::run_elected(client, "default-scheduler".into(), election, stopped()));
        }
        let _ = handle.await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
