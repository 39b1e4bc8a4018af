//! The node agent (↔ pkg/kubelet): registers the Node, renews its Lease
//! in kube-node-lease, and runs the pods bound to it as real containers
//! through CRI — by default in its own supervised containerd under
//! `<data_dir>/containerd`, with a locally built pause image and CNI
//! bridge networking on the node's pod CIDR — reporting their status
//! through pods/status.
//!
//! Entry point: [`run`], which runs until the future is dropped.
//! The pod logic is [`sync::PodWorker`] over the [`runtime::Runtime`] trait;
//! [`cri::CriRuntime`] is the real runtime.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod cni;
pub mod containerd;
pub mod cri;
pub mod dns;
pub mod env;
pub mod eviction;
pub mod hooks;
pub mod hosts;
pub mod image;
pub mod logrotate;
pub mod logs;
pub mod mount;
pub mod node;
pub mod pods;
pub mod pressure;
pub mod probes;
pub mod pullsecrets;
pub mod routes;
pub mod runtime;
pub mod security;
pub mod server;
pub mod serving;
pub mod static_pods;
pub mod stats;
pub mod subpath;
pub mod sync;
pub mod volumes;
pub mod vxlan;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runtime::Runtime;

/// How long a starting agent waits for its Node's podCIDR before running
/// pods on the default range.
const POD_CIDR_WAIT: Duration = Duration::from_secs(15);
/// An existing CRI runtime's image filesystem (containerd's default root).
const DEFAULT_CONTAINERD_ROOT: &str = "/var/lib/containerd";
/// How long pods wait at start for the kubelet's first serving certificate.
const SERVING_CERT_WAIT: Duration = Duration::from_secs(15);

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// State: `containerd/` (its root, state, socket, config and log),
    /// `cni/` (the CNI config and IPAM state), `pods/` (container logs, and pod volumes under `<uid>/volumes/`),
    /// `images/` (the pause image tarball).
    pub data_dir: PathBuf,
    /// An existing CRI socket to use instead of starting containerd.
    pub container_runtime_endpoint: Option<PathBuf>,
    /// The node's InternalIP; the default route's source address when unset.
    pub node_ip: Option<IpAddr>,
    /// The pod CIDR when the Node has no spec.podCIDR.
    pub default_pod_cidr: String,
    pub cni_bin_dir: PathBuf,
    pub cni_bridge: String,
    pub containerd_binary: PathBuf,
    /// The static busybox the pause image is built from.
    pub busybox: PathBuf,
    pub max_pods: u32,
    pub node_labels: BTreeMap<String, String>,
    /// Initial and maximum crash-loop backoff (10 s and 5 min in Kubernetes).
    pub crash_backoff: (Duration, Duration),
    /// Initial and maximum image pull backoff.
    pub image_backoff: (Duration, Duration),
    /// The cluster DNS service's addresses (pods' nameservers) and the cluster domain.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The kubelet API's port (10250; 0: a free port). The port actually
    /// used is published in the Node's status.daemonEndpoints.
    pub kubelet_port: u16,
    /// The bearer token the API server presents to the kubelet API (the
    /// node-join token); without one the API refuses every request.
    pub kubelet_token: Option<String>,
    /// The cluster CA (PEM): callers of the kubelet API present client
    /// certificates from it and are authorized by SubjectAccessReview
    /// (instead of `kubelet_token`).
    pub client_ca: Option<String>,
    /// Route the other nodes' podCIDRs via their InternalIPs and masquerade
    /// only pod traffic leaving the pod network ([`routes`]), when the agent
    /// runs its own containerd and CNI.
    pub route_pod_cidrs: bool,
    /// How those routes reach the other nodes: host-gw routes (the
    /// default here; k3s defaults to vxlan) or a VXLAN overlay ([`vxlan`]).
    pub flannel_backend: routes::FlannelBackend,
    /// Container log rotation (containerLogMaxSize, 10Mi, and
    /// containerLogMaxFiles, 5, as the kubelet's config): [`logrotate`].
    pub container_logs: logrotate::Policy,
    /// The node pressure thresholds (`--eviction-hard`).
    pub eviction_hard: pressure::Thresholds,
}

impl Config {
    pub fn new(node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            container_runtime_endpoint: None,
            node_ip: None,
            default_pod_cidr: cni::DEFAULT_POD_CIDR.into(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            cni_bridge: cni::DEFAULT_BRIDGE.into(),
            containerd_binary: PathBuf::from("containerd"),
            busybox: PathBuf::from("/bin/busybox"),
            max_pods: 110,
            node_labels: BTreeMap::new(),
            crash_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
            image_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            kubelet_port: server::DEFAULT_PORT,
            kubelet_token: None,
            client_ca: None,
            route_pod_cidrs: true,
            flannel_backend: routes::FlannelBackend::HostGw,
            container_logs: logrotate::Policy::default(),
            eviction_hard: pressure::Thresholds::default(),
        }
    }

    /// The CRI socket the agent talks to.
    pub fn runtime_socket(&self) -> PathBuf {
        match &self.container_runtime_endpoint {
            Some(p) => strip_unix(p),
            None => containerd::socket_path(&self.data_dir),
        }
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.data_dir.join("cni")
    }

    /// Whether the CNI bridge masquerades (not when [`routes`] does it).
    fn bridge_ip_masq(&self) -> bool {
        !(self.route_pod_cidrs && routes::have_nft())
    }
}

fn strip_unix(p: &Path) -> PathBuf {
    let s = p.display().to_string();
    match s.strip_prefix("unix://") {
        Some(rest) => PathBuf::from(rest),
        None => p.to_path_buf(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Containerd(#[from] containerd::ContainerdError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the container runtime did not answer within {0:?}: {1}")]
    RuntimeNotReady(Duration, runtime::RuntimeError),
    #[error("building the pause image from {path}: {source}")]
    PauseImage {
        path: String,
        source: std::io::Error,
    },
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("updating the status of node {node}: {source}")]
    NodeStatus { node: String, source: kube::Error },
    #[error("renewing the lease of node {node}: {source}")]
    Lease { node: String, source: kube::Error },
    #[error("container log rotation: {0}")]
    LogPolicy(#[source] logrotate::Error),
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Wait until the runtime answers Version.
pub async fn wait_for_runtime(
    runtime: &dyn Runtime,
    within: Duration,
) -> Result<runtime::RuntimeVersion, Error> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match runtime.version().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::RuntimeNotReady(within, e));
            }
            Err(e) => tracing::debug!(error = %e, "waiting for the container runtime"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Build the pause image from busybox and import it, unless present.
pub async fn ensure_pause_image(runtime: &dyn Runtime, config: &Config) -> Result<(), Error> {
    if runtime
        .image_status(containerd::PAUSE_IMAGE)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let busybox = std::fs::read(&config.busybox).map_err(|source| Error::PauseImage {
        path: config.busybox.display().to_string(),
        source,
    })?;
    let tar = image::pause_image(containerd::PAUSE_IMAGE, &busybox).map_err(|source| {
        Error::PauseImage {
            path: config.busybox.display().to_string(),
            source,
        }
    })?;
    let dir = config.data_dir.join("images");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join("pause.tar");
    std::fs::write(&path, tar).map_err(io_err(&path))?;
    runtime.import_image(&path).await?;
    tracing::info!(image = containerd::PAUSE_IMAGE, "pause image imported");
    Ok(())
}

/// Import an image tarball (docker-archive or OCI) into the runtime this
/// config's agent uses (`skiff images import`).
pub async fn import_image(config: &Config, path: &Path) -> Result<(), Error> {
    containerd::import_image(&config.runtime_socket(), path)
        .await
        .map_err(Error::from)
}

/// Bind the kubelet API; its port and the future serving it. A kubelet
/// API that cannot start leaves the agent running without it.
async fn start_kubelet_api(
    config: &Config,
    client: kube::Client,
    runtime: Arc<dyn Runtime>,
    host_ip: IpAddr,
) -> Option<KubeletApiTask<impl std::future::Future<Output = ()> + use<>>> {
    if config.client_ca.is_none() && config.kubelet_token.as_deref().is_none_or(str::is_empty) {
        tracing::warn!(
            "no token for the kubelet API: it refuses every request (logs, exec and port-forward do not work)"
        );
    }
    let names = serving::Names {
        node_name: config.node_name.clone(),
        dns: vec![config.node_name.clone()],
        ips: vec![host_ip],
    };
    let cert = match serving::ServingCert::new(&names, &config.data_dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the kubelet API cannot start");
            return None;
        }
    };
    let tls = match server::tls_config(cert.clone(), config.client_ca.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the kubelet API cannot start");
            return None;
        }
    };
    let listener = match server::bind(config.kubelet_port).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the kubelet API cannot start");
            return None;
        }
    };
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.kubelet_port);
    tracing::info!(port, "kubelet API listening");
    let api = Arc::new(server::KubeletApi {
        runtime,
        client,
        node_name: config.node_name.clone(),
        token: config.kubelet_token.clone(),
        verify_clients: config.client_ca.is_some(),
        decisions: Default::default(),
        log_root: config.data_dir.join("pods"),
    });
    Some(KubeletApiTask {
        port,
        serve: server::serve(api, listener, tls),
        cert,
        names,
    })
}

/// A bound kubelet API: its port, the future serving it, and the serving
/// certificate to keep issued.
struct KubeletApiTask<F> {
    port: u16,
    serve: F,
    cert: Arc<serving::ServingCert>,
    names: serving::Names,
}

/// Run the node agent until the future is dropped. Returns only when the
/// runtime cannot be started; everything later is retried.
pub async fn run(client: kube::Client, config: Config) -> Result<(), Error> {
    config.container_logs.validate().map_err(Error::LogPolicy)?;
    std::fs::create_dir_all(&config.data_dir).map_err(io_err(&config.data_dir))?;
    let own_containerd = config.container_runtime_endpoint.is_none();
    let host_ip = config.node_ip.unwrap_or_else(node::default_node_ip);
    let pod_mtu = match (config.flannel_backend, host_ip) {
        (routes::FlannelBackend::Vxlan, IpAddr::V4(ip)) => match vxlan::host_pod_mtu(ip).await {
            Ok(mtu) => Some(mtu),
            Err(e) => {
                tracing::warn!(error = %e, "no MTU for the VXLAN overlay: pods keep the default");
                None
            }
        },
        _ => None,
    };
    if own_containerd {
        // A first config so that the CRI plugin finds a network at once.
        cni::write_masq(
            &config.cni_conf_dir(),
            &config.cni_bridge,
            &config.default_pod_cidr,
            config.bridge_ip_masq(),
            pod_mtu,
        )
        .map_err(io_err(&config.cni_conf_dir()))?;
    }
    let supervisor = if own_containerd {
        let c = containerd::ContainerdConfig {
            dir: config.data_dir.join("containerd"),
            binary: config.containerd_binary.clone(),
            sandbox_image: containerd::PAUSE_IMAGE.into(),
            cni_bin_dir: config.cni_bin_dir.clone(),
            cni_conf_dir: config.cni_conf_dir(),
            restrict_oom_score_adj: !containerd::can_lower_oom_score_adj(),
        };
        Some(containerd::start(c).await?)
    } else {
        None
    };
    let socket = config.runtime_socket();
    let cri = cri::CriRuntime::new(&socket)?;
    let runtime: Arc<dyn Runtime> = Arc::new(cri);
    let version = wait_for_runtime(runtime.as_ref(), Duration::from_secs(60)).await?;
    tracing::info!(runtime = %version.name, version = %version.version, socket = %socket.display(), "container runtime ready");
    if own_containerd {
        ensure_pause_image(runtime.as_ref(), &config).await?;
    }

    let kubelet_api = start_kubelet_api(&config, client.clone(), runtime.clone(), host_ip).await;
    let spec = node::NodeSpec {
        name: config.node_name.clone(),
        ip: host_ip,
        max_pods: config.max_pods,
        runtime_version: format!("{}://{}", version.name, version.version),
        machine: node::MachineInfo::read(),
        labels: config.node_labels.clone(),
        kubelet_port: kubelet_api
            .as_ref()
            .map(|k| k.port)
            .unwrap_or(config.kubelet_port),
    };
    let agent = node::NodeAgent::new(client.clone(), spec);
    let registered = agent.register_until_done().await;
    // The serving certificate is asked for once the Node (whose addresses
    // the approver checks its names against) exists.
    let (serve_api, mut maintain_cert) = match kubelet_api {
        Some(k) => {
            let wait = (config.client_ca.is_some() && !k.cert.is_issued()).then(|| k.cert.clone());
            let maintain =
                serving::maintain(client.clone(), k.names, config.data_dir.clone(), k.cert);
            (Some(k.serve), Some((Box::pin(maintain), wait)))
        }
        None => (None, None),
    };
    // In a cluster with a CA (every skiff server and agent) the API server
    // verifies the kubelet's certificate: no pod starts here, for a while,
    // before one is issued, so that its logs and exec work from the start.
    if let Some((maintain, Some(cert))) = maintain_cert.as_mut() {
        tokio::select! {
            () = maintain.as_mut() => {}
            issued = cert.wait_issued(SERVING_CERT_WAIT) => {
                if !issued {
                    tracing::warn!(
                        "no serving certificate from the cluster CA yet: the API server cannot reach this kubelet's logs, exec and port-forward until one is issued"
                    );
                }
            }
        }
    }
    let mut pod_cidr = registered
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty());
    // The node IPAM controller assigns the podCIDR right after
    // registration: wait for it a little, so that the first pods do not
    // get addresses from the default range.
    let wait_cidr = tokio::time::Instant::now() + POD_CIDR_WAIT;
    while own_containerd && pod_cidr.is_none() && tokio::time::Instant::now() < wait_cidr {
        tokio::time::sleep(Duration::from_millis(250)).await;
        pod_cidr = agent.pod_cidr().await;
    }
    if own_containerd && let Some(cidr) = pod_cidr {
        match cni::write_masq(
            &config.cni_conf_dir(),
            &config.cni_bridge,
            &cidr,
            config.bridge_ip_masq(),
            pod_mtu,
        ) {
            Ok(true) => tracing::info!(pod_cidr = %cidr, "pod network set to the node's podCIDR"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "writing the CNI config failed"),
        }
    }

    let mut settings = sync::Settings::new(
        &config.node_name,
        &host_ip.to_string(),
        config.data_dir.join("pods"),
    );
    settings.runtime_name = version.name.clone();
    settings.memory_capacity = node::MachineInfo::read().memory;
    settings.crash_backoff_initial = config.crash_backoff.0;
    settings.crash_backoff_max = config.crash_backoff.1;
    settings.image_backoff_initial = config.image_backoff.0;
    settings.image_backoff_max = config.image_backoff.1;
    settings.cluster_dns = config.cluster_dns.clone();
    settings.cluster_domain = config.cluster_domain.clone();
    let api_slots = Arc::new(tokio::sync::Semaphore::new(pods::API_CONCURRENCY));
    let (pressure_tx, mut pressure_rx) = tokio::sync::watch::channel(pressure::Pressure::default());
    // One Service watch for the whole node: the containers' service links;
    // one RuntimeClass watch: the sandboxes' runtime handlers.
    let (services, service_reflector) = reflect::<k8s_openapi::api::core::v1::Service>(&client);
    let (runtime_classes, runtime_class_reflector) =
        reflect::<k8s_openapi::api::node::v1::RuntimeClass>(&client);
    let shared = Arc::new(pods::Shared {
        client: client.clone(),
        api_slots: api_slots.clone(),
        runtime: runtime.clone(),
        settings: Arc::new(settings),
        recorder: skiff_runtime::events::Recorder::new(
            client.clone(),
            "kubelet",
            Some(&config.node_name),
        ),
        lookup: Box::new(env::Limited::new(
            env::ApiLookup {
                client: client.clone(),
                services: Some(services),
                runtime_classes: Some(runtime_classes),
            },
            api_slots,
        )),
        pressure: pressure_rx.clone(),
    });
    // Memory, disk and PID pressure, measured every 10 s: a change is
    // reported at once, not at the next heartbeat; while a threshold is
    // crossed the eviction manager evicts a pod per pass.
    let imagefs = if own_containerd {
        config.data_dir.join("containerd")
    } else {
        PathBuf::from(DEFAULT_CONTAINERD_ROOT)
    };
    let monitor = pressure::Monitor::new(
        Arc::new(pressure::HostMeasure::new(config.data_dir.clone(), imagefs)),
        config.eviction_hard,
        pressure_tx,
    );
    let (commands_tx, commands) = tokio::sync::mpsc::channel(8);
    let eviction_manager = eviction::Manager {
        node: config.node_name.clone(),
        pods: Arc::new(pods::WorkerPods { tx: commands_tx }),
        usage: Arc::new(eviction::RuntimeUsage {
            runtime: runtime.clone(),
            node: config.node_name.clone(),
            log_root: config.data_dir.join("pods"),
        }),
        events: shared.clone(),
    }
    .run(monitor);
    let heartbeat = async {
        let mut tick = tokio::time::interval(node::NODE_STATUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut monitored = true;
        loop {
            let periodic = tokio::select! {
                _ = tick.tick() => true,
                r = pressure_rx.changed(), if monitored => {
                    monitored = r.is_ok();
                    false
                }
            };
            let health = node::NodeHealth {
                ready: runtime.version().await.is_ok(),
                pressure: *pressure_rx.borrow_and_update(),
            };
            if (periodic || agent.changed(health))
                && let Err(e) = agent.heartbeat(health).await
            {
                tracing::warn!(error = %e, "node heartbeat failed");
            }
            if !periodic {
                continue;
            }
            // A podCIDR assigned after registration (by the node IPAM controller).
            if own_containerd && let Some(cidr) = agent.pod_cidr().await {
                match cni::write_masq(
                    &config.cni_conf_dir(),
                    &config.cni_bridge,
                    &cidr,
                    config.bridge_ip_masq(),
                    pod_mtu,
                ) {
                    Ok(true) => {
                        tracing::info!(pod_cidr = %cidr, "pod network set to the node's podCIDR")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "writing the CNI config failed"),
                }
            }
        }
    };
    tracing::info!(node = %config.node_name, "agent running");
    let api_server = async {
        match (serve_api, maintain_cert) {
            (Some(serve), Some((maintain, _))) => {
                tokio::join!(serve, maintain);
            }
            _ => std::future::pending().await,
        }
    };
    let pod_routes = async {
        if own_containerd && config.route_pod_cidrs {
            let settings = routes::Settings {
                node_name: config.node_name.clone(),
                node_ip: host_ip,
                local_pod_cidr: config.default_pod_cidr.clone(),
            };
            let host = Arc::new(routes::NftHost::for_bridge(&config.cni_bridge));
            match config.flannel_backend {
                routes::FlannelBackend::HostGw => {
                    routes::run(client.clone(), settings, Arc::new(routes::IpRoute), host).await
                }
                routes::FlannelBackend::Vxlan => vxlan::run(client.clone(), settings, host).await,
            }
        }
    };
    let static_pods = static_pods::run(
        client.clone(),
        config.node_name.clone(),
        config.data_dir.join("pod-manifests"),
    );
    let log_manager =
        logrotate::LogManager::new(runtime.clone(), &config.node_name, config.container_logs);
    tokio::join!(
        agent.lease_loop(),
        log_manager.run(),
        eviction_manager,
        heartbeat,
        pods::run(shared, commands),
        service_reflector,
        runtime_class_reflector,
        api_server,
        pod_routes,
        static_pods
    );
    drop(supervisor);
    Ok(())
}

/// A reflector of every `K` in the cluster: its store, and the future that
/// keeps it current (watch failures are logged and retried with backoff).
fn reflect<K>(
    client: &kube::Client,
) -> (
    kube::runtime::reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + use<K>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    let api: kube::Api<K> = kube::Api::all(client.clone());
    let run = kube::runtime::reflector(
        writer,
        kube::runtime::watcher(api, kube::runtime::watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|ev| async move {
        if let Err(e) = ev {
            tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying");
        }
    });
    (store, run)
}
