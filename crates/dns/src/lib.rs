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
//! **Not an open resolver** (security review N1). A node's server listens
//! on the node's address (the kube-dns ClusterIP is DNATed to it), so:
//! - it answers only the sources in [`Config::allowed_sources`] (node.rs:
//!   the pod and service CIDRs, the node's address, loopback) and, with
//!   [`Config::allow_node_addresses`], every Node's addresses (pods on other
//!   nodes arrive masqueraded to their node's address); a UDP query from
//!   elsewhere is dropped without an answer, a TCP connection from
//!   elsewhere is closed when accepted ([`acl`]);
//! - at most [`Config::max_concurrent_forwards`] forwarded queries are in
//!   flight; beyond, the answer is SERVFAIL at once ([`forward`]);
//! - at most [`Config::max_tcp_connections`] TCP connections are open, each
//!   closed after [`Config::tcp_idle_timeout`] without a query (or without
//!   progress reading or writing one) and after
//!   [`Config::max_tcp_queries`] queries;
//! - a UDP answer is at most [`Config::max_udp_payload`] bytes whatever
//!   payload size the query's EDNS claims; a bigger one is sent truncated
//!   (TC) and the client asks again over TCP.
//!
//! **Architecture Invariant:** the DNS server reaches the cluster only
//! through the API (watches of Services, EndpointSlices and Nodes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub mod acl;
pub mod bench;
pub mod forward;
pub mod publish;
pub mod records;
pub mod server;
mod throttle;
pub mod watch;

pub use acl::Acl;
pub use forward::Forwarder;
pub use records::{Lookup, Records};
pub use server::{Handler, Limits, Server};

/// Forwarded queries in flight at most (CoreDNS forward's `max_concurrent`).
pub const DEFAULT_MAX_CONCURRENT_FORWARDS: usize = 1000;
/// Open TCP connections at most, per listening address.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection's idle and read/write timeout (CoreDNS's `idle`).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries per TCP connection at most (miekg/dns's `MaxTCPQueries`, which
/// CoreDNS serves with).
pub const DEFAULT_MAX_TCP_QUERIES: usize = 128;
/// The largest UDP answer (the EDNS buffer size of DNS Flag Day 2020, the
/// one this server advertises).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid cluster domain {0:?}")]
    Domain(String),
    #[error("invalid network {addr}/{prefix}: the prefix is longer than the address")]
    Network { addr: IpAddr, prefix: u8 },
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
    /// The networks (address, prefix length) whose queries are answered;
    /// a UDP query from elsewhere is dropped unanswered, a TCP connection
    /// from elsewhere closed when accepted. Empty (the default): every
    /// source, as tests and the benchmark use it; a node fills it with the
    /// pod and service CIDRs, its address and loopback.
    pub allowed_sources: Vec<(IpAddr, u8)>,
    /// With `allowed_sources` set, also answer every Node's InternalIP and
    /// ExternalIP addresses (watched; pods on other nodes reach this server
    /// masqueraded to their node's address). Default true.
    pub allow_node_addresses: bool,
    /// Forwarded queries in flight at most; beyond, SERVFAIL at once
    /// (CoreDNS answers REFUSED; SERVFAIL is what resolvers take for a
    /// passing failure and retry, and what this server already answers
    /// when no upstream does). Default
    /// [`DEFAULT_MAX_CONCURRENT_FORWARDS`] (1000); 0 forwards nothing.
    pub max_concurrent_forwards: usize,
    /// Open TCP connections at most, per listening address; a connection
    /// beyond is closed when accepted. Default
    /// [`DEFAULT_MAX_TCP_CONNECTIONS`] (256).
    pub max_tcp_connections: usize,
    /// How long a TCP connection may wait for its next query, and take to
    /// send one query or receive one answer, before it is closed. Default
    /// [`DEFAULT_TCP_IDLE_TIMEOUT`] (10 s).
    pub tcp_idle_timeout: Duration,
    /// Queries answered per TCP connection; then it is closed. Default
    /// [`DEFAULT_MAX_TCP_QUERIES`] (128).
    pub max_tcp_queries: usize,
    /// The largest UDP answer in bytes, whatever the query's EDNS allows
    /// (never less than 512); bigger answers go truncated, and the client
    /// asks again over TCP. Default [`DEFAULT_MAX_UDP_PAYLOAD`] (1232).
    pub max_udp_payload: u16,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53))],
            cluster_domain: "cluster.local".into(),
            upstreams: None,
            ttl: 5,
            upstream_timeout: Duration::from_secs(2),
            allowed_sources: Vec::new(),
            allow_node_addresses: true,
            max_concurrent_forwards: DEFAULT_MAX_CONCURRENT_FORWARDS,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
            max_tcp_queries: DEFAULT_MAX_TCP_QUERIES,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
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

    /// The forwarder: the upstreams and the bound on queries in flight.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder::new(self.resolved_upstreams(), self.upstream_timeout)
            .with_max_concurrent(self.max_concurrent_forwards)
    }

    /// The server's source ACL and connection limits.
    pub fn limits(&self) -> Result<Limits, Error> {
        Ok(Limits {
            acl: Acl::new(&self.allowed_sources)?,
            max_tcp_connections: self.max_tcp_connections,
            tcp_idle_timeout: self.tcp_idle_timeout,
            max_tcp_queries: self.max_tcp_queries,
            max_udp_payload: self.max_udp_payload,
        })
    }
}

/// A task that stops when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `config.listen` with the configured limits, and (for a
/// restricted ACL with `allow_node_addresses`) starts the watch of Nodes
/// that keeps their addresses in the ACL, until the guard is dropped.
async fn bind(
    client: &kube::Client,
    config: &Config,
) -> Result<(Server, Option<AbortOnDrop>), Error> {
    let limits = config.limits()?;
    let acl = limits.acl.clone();
    let server = Server::bind_all(&config.listen).await?.with_limits(limits);
    if acl.is_open() {
        tracing::warn!("cluster DNS answers every source (no allowed_sources)");
        return Ok((server, None));
    }
    tracing::info!(allowed = ?acl.networks().iter().map(ToString::to_string).collect::<Vec<_>>(), nodes = config.allow_node_addresses, "cluster DNS answers only these sources");
    let nodes = config.allow_node_addresses.then(|| {
        AbortOnDrop(tokio::spawn(watch::watch_node_addresses(
            client.clone(),
            acl,
        )))
    });
    Ok((server, nodes))
}

/// Runs the cluster DNS: binds `config.listen`, watches Services and
/// EndpointSlices through `client`, and serves until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let records = Records::new(&config.cluster_domain, config.ttl)?;
    let forwarder = config.forwarder();
    tracing::info!(upstreams = ?forwarder.upstreams(), zone = %config.cluster_domain, "cluster DNS starting");
    let (server, nodes) = bind(&client, &config).await?;
    let watcher = tokio::spawn(watch::watch(client, records.clone()));
    let result = server
        .serve(Handler::new(records, forwarder), shutdown)
        .await;
    watcher.abort();
    drop(nodes);
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
    let forwarder = config.forwarder();
    let (server, nodes) = bind(&client, &config).await?;
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
    drop(nodes);
    result
}
