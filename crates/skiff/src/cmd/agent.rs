//! `skiff agent`: the node agent (kubelet) joining a cluster, as
//! `k3s agent --server URL --token TOKEN`. It registers this machine as a
//! Node and runs the pods bound to it under containerd through CRI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[path = "agentlb.rs"]
pub mod agentlb;

#[derive(clap::Args)]
pub struct Args {
    /// API server URL (https://host:6443). Give it several times (or a
    /// comma-separated list) for several servers: the agent then talks to
    /// them through a local load balancer that fails over (as k3s's agent).
    #[arg(long, env = "SKIFF_URL", value_delimiter = ',')]
    pub server: Vec<String>,
    /// The local load balancer's port on 127.0.0.1 with several --server (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub lb_server_port: u16,
    /// Node-join token (the server's <data-dir>/node-token). A K10 token pins
    /// the cluster CA: the agent checks the server's before it sends anything.
    #[arg(long, env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// A file holding the token, instead of --token (which other local
    /// users can read in /proc/PID/cmdline).
    #[arg(long, env = "SKIFF_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The cluster CA (the server's <data-dir>/tls/server-ca.crt); without it the server's certificate is not verified.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Or a kubeconfig instead of --server/--token.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where containerd, CNI state and pod logs live.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Use this CRI socket instead of a supervised containerd.
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// The kubelet API's port (logs, exec, port-forward); 0 picks a free one.
    #[arg(long, env = "SKIFF_KUBELET_PORT", default_value_t = skiff_kubelet::server::DEFAULT_PORT)]
    pub kubelet_port: u16,
    /// The cluster's Service ClusterIP range (as the server's --service-cidr).
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// The cluster's pod range (as the server's --cluster-cidr).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// How pods reach the other nodes' pods: host-gw (routes via the nodes'
    /// addresses; they must share a layer-2 segment) or vxlan (an overlay
    /// over UDP 8472, as flannel's; k3s's default). All nodes use the same.
    #[arg(long, default_value = "host-gw", value_name = "host-gw|vxlan")]
    pub flannel_backend: skiff_kubelet::routes::FlannelBackend,
    /// The node components beside the kubelet (proxy, DNS).
    #[command(flatten)]
    pub node: super::node::NodeArgs,
    /// Container log rotation.
    #[command(flatten)]
    pub container_logs: ContainerLogArgs,
}

/// The kubelet's containerLogMaxSize and containerLogMaxFiles.
#[derive(clap::Args, Clone, Debug)]
pub struct ContainerLogArgs {
    /// A container's log file is rotated when it reaches this size (a
    /// quantity: 10Mi, 500Ki, 1G).
    #[arg(long, default_value = "10Mi", value_parser = parse_log_size)]
    pub container_log_max_size: u64,
    /// Log files kept per container, the live one included (at least 2).
    #[arg(long, default_value_t = skiff_kubelet::logrotate::DEFAULT_MAX_FILES,
          value_parser = clap::value_parser!(u32).range(2..))]
    pub container_log_max_files: u32,
    /// Node pressure thresholds, as the kubelet's flag:
    /// `memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%`
    /// by default (and pid.available<5%); signals not named keep theirs, `<0%` turns one off.
    #[arg(long, value_parser = skiff_kubelet::pressure::Thresholds::parse)]
    pub eviction_hard: Option<skiff_kubelet::pressure::Thresholds>,
}

impl ContainerLogArgs {
    pub fn policy(&self) -> skiff_kubelet::logrotate::Policy {
        skiff_kubelet::logrotate::Policy {
            max_size: self.container_log_max_size,
            max_files: self.container_log_max_files,
        }
    }
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    skiff_kubelet::logrotate::parse_max_size(s).map_err(|e| e.to_string())
}

pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

/// The agent's settings under a data directory.
pub fn config(
    data_dir: PathBuf,
    node_name: Option<String>,
    endpoint: Option<PathBuf>,
) -> skiff_kubelet::Config {
    let mut c = skiff_kubelet::Config::new(
        node_name.unwrap_or_else(host_name).to_ascii_lowercase(),
        data_dir.join("agent"),
    );
    c.container_runtime_endpoint = endpoint;
    // The API server authenticates to the kubelet API with the node-join
    // token: the server's own file for its in-process agent.
    c.kubelet_token = std::fs::read_to_string(data_dir.join("node-token"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    c
}

/// The agent's clients (the kubelet's, and the node components'), and the
/// load balancer they go through with several servers.
async fn clients(
    args: &Args,
    node_name: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<(
    kube::Client,
    super::node::Clients,
    Option<agentlb::LoadBalancer>,
    Option<String>,
)> {
    if let Some(kc) = &args.kubeconfig {
        let client = skiff_runtime::client_from_kubeconfig(kc).await?;
        // The kubeconfig's CA is the one the kubelet API verifies callers with.
        let kubeconfig = kube::config::Kubeconfig::read_from(kc)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let ca = config
            .root_cert
            .as_ref()
            .and_then(|certs| certs.first())
            .map(|der| der_to_pem(der));
        return Ok((
            client.clone(),
            super::node::Clients::shared(client),
            None,
            ca,
        ));
    }
    let first = args
        .server
        .first()
        .cloned()
        .context("--server (or --kubeconfig) is required")?;
    let token = args
        .token
        .clone()
        .context("--token is required with --server")?;
    // The CA: given, or pinned by the token, before the token goes anywhere.
    let ca_pem = match (&args.ca_file, super::join::pinned_hash(&token)) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(hash)) => super::join::pinned_ca(&first, hash).await?.into_bytes(),
        (None, None) => {
            // A bare token pins nothing: whoever answers is trusted, as
            // before secure tokens (use the node-token's K10 form).
            tracing::warn!(
                "neither --ca-file nor a K10 token: the cluster CA is taken unverified from {first}/cacerts"
            );
            super::join::unverified_ca(&first).await?.into_bytes()
        }
    };
    let (server, lb) = if args.server.len() > 1 {
        let bind = std::net::SocketAddr::from(([127, 0, 0, 1], args.lb_server_port));
        let lb = agentlb::LoadBalancer::start(bind, &args.server).await?;
        tracing::info!(local = %lb.addr, first = %lb.current(), "talking to the API servers through the agent load balancer");
        // Every skiff server's certificate names 127.0.0.1.
        (format!("https://127.0.0.1:{}", lb.addr.port()), Some(lb))
    } else {
        (first, None)
    };
    let mut config = kube::Config::new(server.parse().context("--server is not a URL")?);
    config.auth_info.token = Some(token.into());
    let der = pem_to_der(&ca_pem).context("the cluster CA holds no certificate")?;
    config.root_cert = Some(vec![der.clone()]);
    let bootstrap = kube::Client::try_from(config)?;
    // Each component as its own user, its certificate from the CSR API.
    let dir = data_dir.join("agent");
    let client_for =
        |name: &'static str, user: String, group: Option<&'static str>, signer: &'static str| {
            let (bootstrap, dir, server, der) = (&bootstrap, &dir, &server, &der);
            async move {
                let id = super::join::Identity {
                    name,
                    user,
                    group,
                    signer,
                };
                let (cert, key) = super::join::credentials(bootstrap, dir, &id).await?;
                super::join::cert_client(server, der, &cert, &key)
            }
        };
    use skiff_controllers::certificates::{APISERVER_CLIENT, KUBELET_CLIENT};
    let kubelet = client_for(
        "kubelet",
        format!("system:node:{node_name}"),
        Some("system:nodes"),
        KUBELET_CLIENT,
    )
    .await?;
    let node = super::node::Clients {
        proxy: client_for(
            "kube-proxy",
            "system:kube-proxy".into(),
            None,
            APISERVER_CLIENT,
        )
        .await?,
        dns: client_for(
            "skiff-dns",
            "system:skiff-dns".into(),
            None,
            APISERVER_CLIENT,
        )
        .await?,
        ingress: client_for(
            "skiff-ingress",
            "system:skiff-ingress".into(),
            None,
            APISERVER_CLIENT,
        )
        .await?,
        netpol: client_for(
            "skiff-netpol",
            "system:skiff-netpol".into(),
            None,
            APISERVER_CLIENT,
        )
        .await?,
    };
    let ca = String::from_utf8_lossy(&ca_pem).into_owned();
    Ok((kubelet, node, lb, Some(ca)))
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

pub(super) fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    pem_block(pem, "CERTIFICATE")
}

/// The DER of the first PEM block labelled `label`.
pub(super) fn pem_block(pem: &[u8], label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with(&begin))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let mut args = args;
    args.token = super::resolve_token(args.token.take(), args.token_file.as_deref())?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut config = config(
            data_dir.clone(),
            args.node_name.clone(),
            args.container_runtime_endpoint.clone(),
        );
        let (client, node_clients, _lb, ca) = clients(&args, &config.node_name, &data_dir).await?;
        // The kubelet API verifies callers against the cluster CA.
        config.client_ca = ca;
        config.kubelet_port = args.kubelet_port;
        config.flannel_backend = args.flannel_backend;
        config.container_logs = args.container_logs.policy();
        if let Some(t) = args.container_logs.eviction_hard {
            config.eviction_hard = t;
        }
        if let Some(token) = args.token.clone().filter(|t| !t.is_empty()) {
            config.kubelet_token = Some(token);
        }
        let service_cidr = super::node::parse_cidr(&args.service_cidr)?;
        config.cni_bridge = args.node.cni_bridge.clone();
        config.cluster_dns = vec![super::node::cluster_dns(&args.node, service_cidr)];
        config.cluster_domain = args.node.cluster_domain.clone();
        let cluster = super::node::Cluster {
            node_name: config.node_name.clone(),
            node_ip: config
                .node_ip
                .unwrap_or_else(skiff_kubelet::node::default_node_ip),
            cluster_cidr: super::node::parse_cidr(&args.cluster_cidr)?,
            service_cidr,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let node = tokio::spawn(super::node::run(
            node_clients,
            args.node.clone(),
            cluster,
            async move {
                let _ = stop_rx.await;
            },
        ));
        tokio::select! {
            r = skiff_kubelet::run(client, config) => r.context("node agent")?,
            () = super::shutdown_signal() => {
                let _ = stop_tx.send(());
                let _ = node.await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn certificates_round_trip_between_der_and_pem() {
        let der: Vec<u8> = (0..200u8).collect();
        assert_eq!(
            super::pem_to_der(super::der_to_pem(&der).as_bytes()),
            Some(der)
        );
    }
}
