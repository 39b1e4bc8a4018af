//! NetworkPolicy enforcement (networking.k8s.io/v1) on one node, with nftables.
//!
//! Runs on every node beside the service proxy: watches NetworkPolicies,
//! Pods (all of them: peers are cluster-wide; only this node's pods,
//! `spec.nodeName == config.node_name`, get chains) and Namespaces, and keeps
//! the table `inet <config.table>` in step, hooked on `forward`.
//!
//! Semantics, as Kubernetes documents them: a pod selected by some policy of
//! type Ingress (Egress) is isolated for ingress (egress), and a connection is
//! allowed when some rule of some such policy allows it; both directions must
//! allow a pod-to-pod connection (egress on the source's node, ingress on the
//! destination's). Replies of allowed connections always pass (`ct state
//! established,related accept` comes first). policyTypes defaults to Ingress,
//! plus Egress when the policy has egress rules. An empty podSelector selects
//! every pod of the namespace; an empty rule (`{}`) allows everything. Peers:
//! podSelector (the policy's namespace), namespaceSelector, both (pods
//! selected within the selected namespaces), ipBlock with except. Ports: a
//! number, a range (endPort), a protocol alone (every port), or a named port
//! (resolved on the destination pod: the isolated pod itself for ingress,
//! through an (IP, port) set for egress). hostNetwork pods are neither subject
//! nor peers. Traffic from the pod's own node (probes) never crosses
//! `forward` and so is always allowed, as Kubernetes requires.
//!
//! The layout is in [`rules`]; peers are named sets updated element by
//! element, so pods coming and going do not rewrite chains. Traffic to a
//! ClusterIP is judged on the real destination pod: the proxy's DNAT
//! happens in prerouting, before `forward`.
//!
//! Host requirements: `nft`, and bridged traffic passing the IP hooks
//! (`br_netfilter`, `net.bridge.bridge-nf-call-iptables=1`), which [`run`]
//! sets up through the proxy's [`Host`].
//!
//! Not done: IPv6 pod addresses and IPv6 ipBlocks (IPv4 only); egress from a
//! pod to its own node's addresses (the `input` hook: node-local DNS and
//! services answered by the node stay reachable); existing connections are
//! not cut when a policy starts denying them (conntrack keeps them, as with
//! most implementations); SCTP needs the kernel's sctp support for `th dport`.
//!
//! **Architecture Invariant:** every kernel change goes through
//! [`Netfilter::apply`] as one nft transaction; rule generation does no I/O.

pub mod enforcer;
pub mod model;
pub mod rules;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;

pub use enforcer::{Enforcer, SyncStats, Update};
pub use skiff_proxy::{Host, Netfilter, NoHost, RealHost, RealNft};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netfilter(#[from] skiff_proxy::Error),
    #[error("nft is not installed (Debian package nftables)")]
    NftMissing,
    #[error("invalid network policy configuration: {0}")]
    Config(String),
}

/// The default nftables table name (family `inet`).
pub const DEFAULT_TABLE: &str = "skiff-netpol";

/// The enforcer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name: pods with this `spec.nodeName` are enforced here.
    pub node_name: String,
    /// The nftables table (family `inet`; tests use their own).
    pub table: String,
    /// Changes arriving within this period after a sync are batched into the next one.
    pub min_sync_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            table: DEFAULT_TABLE.into(),
            min_sync_period: Duration::from_millis(200),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        let name_ok = !self.table.is_empty()
            && self.table.len() <= 64
            && self
                .table
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(Error::Config(format!(
                "table name {:?} must be letters, digits, '-' or '_'",
                self.table
            )));
        }
        if self.node_name.is_empty() {
            return Err(Error::Config("the node name is empty".into()));
        }
        Ok(())
    }
}

/// Enforce NetworkPolicies on this node until `shutdown` completes: prepares
/// the host (br_netfilter), watches NetworkPolicies, Pods and Namespaces
/// through `client` and keeps the table `inet <config.table>` in step (a full
/// resync once all three are listed, then one transaction per batch of
/// changes). The table is deleted on shutdown: with the enforcer gone, pods
/// would otherwise stay isolated by stale rules.
///
/// Errors: `NftMissing` when nft is not installed, `Config` for an invalid configuration.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if skiff_proxy::netfilter::find_nft().is_none() {
        return Err(Error::NftMissing);
    }
    run_with(client, config, RealNft::new(), &RealHost, shutdown).await
}

/// [`run`] with the kernel and host given.
pub async fn run_with<N: Netfilter>(
    client: kube::Client,
    config: Config,
    nft: N,
    host: &dyn Host,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.validate()?;
    if let Err(e) = host.enable_bridge_netfilter().await {
        tracing::warn!(error = %e, "could not enable br_netfilter; traffic between pods on one bridge escapes network policies");
    }
    tracing::info!(node = %config.node_name, table = %config.table, "network policy enforcement starting");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let table = config.table.clone();
    let watch_policies = skiff_proxy::watch(
        Api::<NetworkPolicy>::all(client.clone()),
        watcher::Config::default(),
        tx.clone(),
        |o| Update::PolicyApplied(Box::new(o)),
        |o| Update::PolicyDeleted(Box::new(o)),
        Update::PoliciesListed,
    );
    let watch_pods = skiff_proxy::watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        tx.clone(),
        |o| Update::PodApplied(Box::new(o)),
        |o| Update::PodDeleted(Box::new(o)),
        Update::PodsListed,
    );
    let watch_namespaces = skiff_proxy::watch(
        Api::<Namespace>::all(client),
        watcher::Config::default(),
        tx,
        |o| Update::NamespaceApplied(Box::new(o)),
        |o| Update::NamespaceDeleted(Box::new(o)),
        Update::NamespacesListed,
    );
    let mut enforcer = Enforcer::new(config, nft);
    tokio::select! {
        _ = watch_policies => {}
        _ = watch_pods => {}
        _ = watch_namespaces => {}
        _ = enforcer::run_loop(&mut enforcer, &mut rx, shutdown) => {}
    }
    if let Err(e) = cleanup(enforcer.netfilter(), &table).await {
        tracing::warn!(error = %e, "could not delete the network policy table");
    }
    tracing::info!("network policy enforcement stopped");
    Ok(())
}

/// Delete the table; a missing one is fine.
pub async fn cleanup(nft: &dyn Netfilter, table: &str) -> Result<(), Error> {
    nft.apply(&format!(
        "add table inet {table}\ndelete table inet {table}\n"
    ))
    .await?;
    Ok(())
}
