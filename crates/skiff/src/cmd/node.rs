//! The node components beside the kubelet, as k3s runs them on every node:
//! the service proxy (kube-proxy's job), the cluster DNS, the ingress
//! controller (k3s's Traefik) and NetworkPolicy enforcement. `skiff server`
//! (with its in-process agent) and `skiff agent` both start them here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Do not run the service proxy (nftables) on this node.
    #[arg(long)]
    pub disable_proxy: bool,
    /// Do not run the cluster DNS server on this node.
    #[arg(long)]
    pub disable_dns: bool,
    /// Do not run the ingress controller (IngressClass `skiff`) on this node.
    #[arg(long)]
    pub disable_ingress: bool,
    /// HTTP port of the ingress controller.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// HTTPS port of the ingress controller.
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    /// The kube-dns Service's ClusterIP pods resolve names through
    /// (default: the 10th address of the service CIDR, 10.43.0.10).
    #[arg(long)]
    pub cluster_dns: Option<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Port of this node's DNS server on the node's address (0: any free
    /// port; the kube-dns ClusterIP forwards to it either way).
    #[arg(long, default_value_t = 53)]
    pub dns_port: u16,
    /// The Linux bridge pods attach to.
    #[arg(long, default_value = skiff_kubelet::cni::DEFAULT_BRIDGE, hide = true)]
    pub cni_bridge: String,
    /// The nftables table of the service proxy.
    #[arg(long, default_value = skiff_proxy::DEFAULT_TABLE, hide = true)]
    pub proxy_table: String,
    /// The service proxy's mode: nftables (incremental), or iptables
    /// (kube-proxy's layout, rewritten whole per sync; also the fallback
    /// when nft is missing).
    #[arg(long, default_value = "nftables", value_name = "nftables|iptables")]
    pub proxy_mode: skiff_proxy::Mode,
    /// Do not enforce NetworkPolicies (nftables) on this node.
    #[arg(long)]
    pub disable_network_policy: bool,
    /// The nftables table of the NetworkPolicy enforcement.
    #[arg(long, default_value = skiff_netpol::DEFAULT_TABLE, hide = true)]
    pub netpol_table: String,
}

/// What the node components need to know about the cluster.
pub struct Cluster {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub cluster_cidr: (Ipv4Addr, u8),
    pub service_cidr: (Ipv4Addr, u8),
}

/// The cluster DNS address: as given, or the service CIDR's 10th address.
pub fn cluster_dns(args: &NodeArgs, service_cidr: (Ipv4Addr, u8)) -> IpAddr {
    args.cluster_dns
        .unwrap_or_else(|| IpAddr::V4(Ipv4Addr::from(u32::from(service_cidr.0) + 10)))
}

/// Who the node's DNS server answers (security review N1: it listens on
/// the node's address, so it must not be an open resolver): the pods
/// (cluster CIDR), the service CIDR, this node's address and loopback.
/// Pods on other nodes arrive masqueraded to their node's address, which
/// the server adds from its watch of Nodes (`allow_node_addresses`).
pub fn dns_allowed_sources(cluster: &Cluster) -> Vec<(IpAddr, u8)> {
    let host = if cluster.node_ip.is_ipv4() { 32 } else { 128 };
    vec![
        (IpAddr::V4(cluster.cluster_cidr.0), cluster.cluster_cidr.1),
        (IpAddr::V4(cluster.service_cidr.0), cluster.service_cidr.1),
        (cluster.node_ip, host),
        (IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
        (IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
    ]
}

/// The API clients of a node's components, each its own identity on a
/// server's node (an agent's share the agent's).
#[derive(Clone)]
pub struct Clients {
    pub proxy: kube::Client,
    pub dns: kube::Client,
    pub ingress: kube::Client,
    pub netpol: kube::Client,
}

impl Clients {
    /// One client for every component.
    pub fn shared(client: kube::Client) -> Clients {
        Clients {
            proxy: client.clone(),
            dns: client.clone(),
            ingress: client.clone(),
            netpol: client,
        }
    }
}

/// Run the proxy, the DNS server and the ingress controller until `stop` completes. A component
/// that cannot start is logged and left out; the others go on.
pub async fn run(
    clients: Clients,
    args: NodeArgs,
    cluster: Cluster,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if !args.disable_proxy {
        let config = skiff_proxy::Config {
            node_name: cluster.node_name.clone(),
            node_ips: vec![cluster.node_ip],
            cluster_cidr: vec![skiff_proxy::Cidr {
                addr: IpAddr::V4(cluster.cluster_cidr.0),
                prefix: cluster.cluster_cidr.1,
            }],
            service_cidr: vec![skiff_proxy::Cidr {
                addr: IpAddr::V4(cluster.service_cidr.0),
                prefix: cluster.service_cidr.1,
            }],
            table: args.proxy_table.clone(),
            mode: args.proxy_mode,
            ..Default::default()
        };
        let (client, stop) = (clients.proxy.clone(), stopped());
        tasks.spawn(async move {
            if let Err(e) = skiff_proxy::run(client, config, stop).await {
                tracing::error!(error = %e, "the service proxy stopped; Services will not be reachable from this node");
            }
        });
    }
    if !args.disable_dns {
        let config = skiff_dns::Config {
            listen: vec![SocketAddr::new(cluster.node_ip, args.dns_port)],
            cluster_domain: args.cluster_domain.clone(),
            allowed_sources: dns_allowed_sources(&cluster),
            ..Default::default()
        };
        let dns_ip = cluster_dns(&args, cluster.service_cidr);
        let (client, stop, node) = (clients.dns.clone(), stopped(), cluster.node_name.clone());
        tasks.spawn(async move {
            if let Err(e) = skiff_dns::run_node(client, config, node, dns_ip, stop).await {
                tracing::error!(error = %e, "the cluster DNS server stopped on this node");
            }
        });
    }
    if !args.disable_ingress {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let config = skiff_ingress::Config {
            http: SocketAddr::new(any, args.ingress_http_port),
            https: SocketAddr::new(any, args.ingress_https_port),
            status_address: Some(cluster.node_ip.to_string()),
            ..Default::default()
        };
        let (client, stop) = (clients.ingress.clone(), stopped());
        tasks.spawn(async move {
            if let Err(e) = skiff_ingress::run(client, config, stop).await {
                tracing::error!(error = %e, "the ingress controller stopped on this node");
            }
        });
    }
    if !args.disable_network_policy {
        let config = skiff_netpol::Config {
            node_name: cluster.node_name.clone(),
            table: args.netpol_table.clone(),
            ..Default::default()
        };
        let (client, stop) = (clients.netpol.clone(), stopped());
        tasks.spawn(async move {
            if let Err(e) = skiff_netpol::run(client, config, stop).await {
                tracing::error!(error = %e, "network policy enforcement stopped; NetworkPolicies are not enforced on this node");
            }
        });
    }
    stop.await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Parse `a.b.c.d/n` (the server's and agent's CIDR flags).
pub fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, bits) = s
        .split_once('/')
        .with_context(|| format!("{s}: not a CIDR"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("{s}: bad address"))?;
    let bits: u8 = bits
        .parse()
        .with_context(|| format!("{s}: bad prefix length"))?;
    anyhow::ensure!(
        (8..=30).contains(&bits),
        "{s}: prefix length must be between 8 and 30"
    );
    Ok((ip, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dns_defaults_to_the_tenth_service_address() {
        let args = NodeArgs {
            disable_proxy: false,
            disable_dns: false,
            disable_ingress: false,
            ingress_http_port: 80,
            ingress_https_port: 443,
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
            dns_port: 53,
            cni_bridge: "b".into(),
            proxy_table: "t".into(),
            proxy_mode: skiff_proxy::Mode::Nftables,
            disable_network_policy: false,
            netpol_table: "np".into(),
        };
        assert_eq!(
            cluster_dns(&args, (Ipv4Addr::new(10, 43, 0, 0), 16)),
            IpAddr::from([10, 43, 0, 10])
        );
        assert_eq!(
            cluster_dns(&args, (Ipv4Addr::new(10, 150, 0, 0), 16)),
            IpAddr::from([10, 150, 0, 10])
        );
        let given = NodeArgs {
            cluster_dns: Some(IpAddr::from([10, 0, 0, 2])),
            ..args
        };
        assert_eq!(
            cluster_dns(&given, (Ipv4Addr::new(10, 43, 0, 0), 16)),
            IpAddr::from([10, 0, 0, 2])
        );
    }

    /// Review N1: the node's DNS answers pods, services, the node and
    /// loopback, and nobody else.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn dns_answers_only_the_cluster() {
        let cluster = Cluster {
            node_name: "n1".into(),
            node_ip: IpAddr::from([192, 168, 1, 10]),
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
        };
        let acl = skiff_dns::Acl::new(&dns_allowed_sources(&cluster)).unwrap();
        for ip in [
            "10.42.1.5",
            "10.43.0.10",
            "192.168.1.10",
            "127.0.0.1",
            "::1",
        ] {
            assert!(acl.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.11", "8.8.8.8", "10.44.0.1", "2001:db8::1"] {
            assert!(!acl.allows(ip.parse().unwrap()), "{ip}");
        }
    }
}
