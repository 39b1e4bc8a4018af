//! Cluster DNS (the Kubernetes DNS specification, as CoreDNS's kubernetes
//! plugin serves it): `<svc>.<ns>.svc.<zone>` A/AAAA, headless services'
//! ready endpoints, `<hostname>.<svc>.<ns>.svc.<zone>`, SRV for named
//! ports, ExternalName CNAMEs, `a-b-c-d.<ns>.pod.<zone>`, PTR for ClusterIPs
//! and headless endpoints, SOA, NXDOMAIN vs NODATA. Other names are
//! forwarded to the host's resolvers.
//!
//! Entry points: [`run`] (watchers + server, what the binary calls),
//! [`Server::bind`] + [`Server::serve`] with a [`Handler`] over an
//! in-memory [`Records`] (what tests and the benchmark use).
//!
//! **Architecture Invariant:** the DNS server reaches the cluster only
//! through the API (watches of Services and EndpointSlices).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub mod bench;
pub mod forward;
pub mod publish;
pub mod records;
pub mod server;
pub mod watch;

pub use forward::Forwarder;
pub use records::{Lookup, Records};
pub use server::{Handler, Server};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid cluster domain {0:?}")]
    Domain(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Cluster DNS settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen, UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, `cluster.local` by default.
    pub cluster_domain: String,
    /// Upstream resolvers; None: the host's /etc/resolv.conf (without
    /// addresses that would loop back to `listen`).
    pub upstreams: Option<Vec<SocketAddr>>,
    /// TTL of cluster records and of the SOA's negative caching, seconds.
    pub ttl: u32,
    /// How long to wait for one upstream.
    pub upstream_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53))],
            cluster_domain: "cluster.local".into(),
            upstreams: None,
            ttl: 5,
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// The upstreams to forward to: as configured, or the host's.
    pub fn resolved_upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams
            .clone()
            .unwrap_or_else(|| forward::host_upstreams(&self.listen))
    }
}

/// Runs the cluster DNS: binds `config.listen`, watches Services and
/// EndpointSlices through `client`, and serves until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let records = Records::new(&config.cluster_domain, config.ttl)?;
    let forwarder = Forwarder::new(config.resolved_upstreams(), config.upstream_timeout);
    tracing::info!(upstreams = ?forwarder.upstreams(), zone = %config.cluster_domain, "cluster DNS starting");
    let server = Server::bind_all(&config.listen).await?;
    let watcher = tokio::spawn(watch::watch(client, records.clone()));
    let result = server
        .serve(Handler::new(records, forwarder), shutdown)
        .await;
    watcher.abort();
    result
}

/// A node's cluster DNS: binds `config.listen` (port 0 picks one), makes
/// sure the kube-dns Service exists with `cluster_ip`, publishes this
/// node's server in its EndpointSlice (retrying until the API answers),
/// then serves until `shutdown`.
pub async fn run_node(
    client: kube::Client,
    config: Config,
    node_name: String,
    cluster_ip: std::net::IpAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let records = Records::new(&config.cluster_domain, config.ttl)?;
    let forwarder = Forwarder::new(config.resolved_upstreams(), config.upstream_timeout);
    let server = Server::bind_all(&config.listen).await?;
    let Some(addr) = server.local_addr() else {
        return Ok(());
    };
    tracing::info!(%addr, upstreams = ?forwarder.upstreams(), zone = %config.cluster_domain, "cluster DNS starting");
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                let r = match publish::ensure_service(&client, cluster_ip).await {
                    Ok(()) => publish::publish(&client, &node_name, addr).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {
                        tracing::info!(%addr, service = %cluster_ip, "cluster DNS published in kube-system/kube-dns");
                        // Re-publish now and then: the Node (and with it the slice) may be recreated.
                        delay = Duration::from_secs(60);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the cluster DNS endpoint failed; retrying");
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
                tokio::time::sleep(delay).await;
            }
        })
    };
    let watcher = tokio::spawn(watch::watch(client, records.clone()));
    let result = server
        .serve(Handler::new(records, forwarder), shutdown)
        .await;
    watcher.abort();
    publisher.abort();
    result
}
