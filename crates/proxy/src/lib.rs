//! The service proxy (↔ kube-proxy in nftables mode, KEP-3866, with its
//! iptables mode as the fallback).
//!
//! Runs on every node: watches Services and discovery.k8s.io/v1
//! EndpointSlices and programs the kernel with nftables so that traffic to a
//! ClusterIP, a NodePort on any local address (loopback excluded), an
//! externalIP or a LoadBalancer ingress IP is DNATed to one of the service's
//! endpoints, chosen at random (`numgen random`, see [`rules::Selection`]) or by client IP under
//! sessionAffinity ClientIP. Only ready endpoints are used, or serving and
//! terminating ones when none is ready; a service without endpoints rejects
//! (TCP reset / ICMP port unreachable). Traffic from outside the pod CIDR to
//! a ClusterIP, all NodePort/external traffic and hairpin traffic (a pod
//! reaching itself through its service) is masqueraded.
//!
//! Layout: `model` (what is kept of Services and slices, endpoint choice),
//! `rules` (the nftables ruleset, see its docs for the table's layout),
//! `proxier` (the incremental diff and the batching sync loop), `netfilter`
//! (the kernel behind the [`Netfilter`] and [`Host`] traits), `bench`, and
//! `iptables`: the iptables mode (↔ kube-proxy's), chosen with
//! [`Mode::Iptables`] or automatically when `nft` is missing and
//! `iptables-restore` is there (see [`choose_mode`]). It renders the same
//! model as kube-proxy's iptables chains and rewrites them whole with
//! `iptables-restore --noflush` at every (batched) sync, O(services) per
//! change: the fallback, where nftables is the incremental mode.
//!
//! Host requirements: `nft` (Debian's nftables package), or else
//! `iptables-restore` (Debian's iptables package). For pod → service
//! traffic whose endpoint sits on the same CNI bridge, bridged packets must
//! pass the IP netfilter hooks, so [`run`] loads `br_netfilter` and sets
//! `net.bridge.bridge-nf-call-iptables=1` (and ip6tables), through
//! [`Host`]; a failure there is logged and the proxy carries on. No
//! `route_localnet` is needed: NodePorts are not answered on 127.0.0.0/8.
//!
//! Not done: externalTrafficPolicy/internalTrafficPolicy Local (treated as
//! Cluster), topology hints, clearing stale UDP conntrack entries when an
//! endpoint goes.
//!
//! **Architecture Invariant:** every kernel change goes through [`Netfilter::apply`]
//! as one nft transaction (in iptables mode through the [`Iptables`] trait,
//! one `iptables-restore` per family); rule generation does no I/O.

pub mod bench;
pub mod iptables;
pub mod model;
pub mod netfilter;
pub mod proxier;
pub mod rules;

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::mpsc;

pub use bench::{BenchReport, bench};
pub use iptables::{Iptables, IptablesProxier, IptablesRecorder, RealIptables};
pub use model::{Cidr, Family};
pub use netfilter::{Host, Netfilter, NoHost, RealHost, RealNft, Recorder};
pub use proxier::{Proxier, SyncStats, Syncer, Update};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nft failed: {0}")]
    Nft(String),
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("iptables failed: {0}")]
    Iptables(String),
    #[error(
        "neither nft (Debian package nftables) nor iptables-restore (Debian package iptables) is installed"
    )]
    NoNetfilterTool,
    #[error(
        "iptables mode asked for, but iptables-restore is not installed (Debian package iptables)"
    )]
    IptablesMissing,
    #[error("preparing the host: {0}")]
    Host(String),
    #[error("invalid proxy configuration: {0}")]
    Config(String),
}

/// The default nftables table name (in families `ip` and `ip6`).
pub const DEFAULT_TABLE: &str = "skiff-proxy";

/// The proxy's settings (↔ KubeProxyConfiguration).
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (for logs; endpoint locality is not used yet).
    pub node_name: String,
    /// This node's addresses; their families (with the CIDRs') decide which tables are managed.
    pub node_ips: Vec<IpAddr>,
    /// The pod CIDRs, at most one per family (default 10.42.0.0/16): traffic
    /// to a ClusterIP from elsewhere is masqueraded.
    pub cluster_cidr: Vec<Cidr>,
    /// The service CIDRs (default 10.43.0.0/16): traffic to an address in it
    /// that is no service's ClusterIP is dropped.
    pub service_cidr: Vec<Cidr>,
    /// Changes arriving within this period after a sync are batched into the next one (kube-proxy's minSyncPeriod, 1 s).
    pub min_sync_period: Duration,
    /// Full resync period (5 min).
    pub sync_period: Duration,
    /// The nftables table name (tests use their own).
    pub table: String,
    /// How endpoints are picked (a cascade of `numgen` rules by default; kube-proxy's vmap as an option).
    pub selection: rules::Selection,
    /// Which kernel interface to program (nftables unless nft is missing).
    pub mode: Mode,
}

/// The proxy's mode (↔ kube-proxy's `--proxy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// nftables, updated incrementally; falls back to iptables when `nft` is missing.
    #[default]
    Nftables,
    /// kube-proxy's iptables layout, rewritten whole at each sync (see [`iptables`]).
    Iptables,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nftables" => Ok(Mode::Nftables),
            "iptables" => Ok(Mode::Iptables),
            _ => Err(format!("unknown proxy mode {s:?} (nftables or iptables)")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
        })
    }
}

/// The mode to run in, given the one asked for and which tools are
/// installed: nftables when asked and `nft` is there; iptables when asked,
/// or as the fallback when `nft` is missing and `iptables-restore` is there.
pub fn choose_mode(wanted: Mode, has_nft: bool, has_iptables: bool) -> Result<Mode, Error> {
    match (wanted, has_nft, has_iptables) {
        (Mode::Nftables, true, _) => Ok(Mode::Nftables),
        (Mode::Nftables, false, true) => {
            tracing::warn!("nft is not installed; the service proxy falls back to iptables mode");
            Ok(Mode::Iptables)
        }
        (Mode::Nftables, false, false) => Err(Error::NoNetfilterTool),
        (Mode::Iptables, _, true) => Ok(Mode::Iptables),
        (Mode::Iptables, _, false) => Err(Error::IptablesMissing),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_cidr: vec![Cidr {
                addr: IpAddr::from([10, 42, 0, 0]),
                prefix: 16,
            }],
            service_cidr: vec![Cidr {
                addr: IpAddr::from([10, 43, 0, 0]),
                prefix: 16,
            }],
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(300),
            table: DEFAULT_TABLE.into(),
            selection: rules::Selection::default(),
            mode: Mode::default(),
        }
    }
}

impl Config {
    /// The address families to program: those of the node IPs and CIDRs (IPv4 when none is given).
    pub fn families(&self) -> Vec<Family> {
        let mut fams: Vec<Family> = self
            .node_ips
            .iter()
            .map(Family::of)
            .chain(self.cluster_cidr.iter().map(|c| c.family()))
            .chain(self.service_cidr.iter().map(|c| c.family()))
            .collect();
        fams.sort();
        fams.dedup();
        if fams.is_empty() {
            fams.push(Family::V4);
        }
        fams
    }

    /// The cluster CIDRs of `family`.
    pub fn cluster_cidrs(&self, family: Family) -> Vec<Cidr> {
        self.cluster_cidr
            .iter()
            .filter(|c| c.family() == family)
            .copied()
            .collect()
    }

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
        for fam in [Family::V4, Family::V6] {
            if self
                .cluster_cidr
                .iter()
                .filter(|c| c.family() == fam)
                .count()
                > 1
            {
                return Err(Error::Config("at most one cluster CIDR per family".into()));
            }
        }
        Ok(())
    }
}

/// Run the service proxy until `shutdown` completes: prepares the host
/// (br_netfilter, see the crate docs), watches Services and EndpointSlices
/// through `client`, and keeps the kernel in step with them: in nftables
/// mode the `ip`/`ip6` table `config.table` through `nft -f -`, in iptables
/// mode (asked for, or when nft is missing) the chains of [`iptables`]
/// through `iptables-restore`. The first sync happens once both kinds are
/// listed, then per change (batched by `config.min_sync_period`), with a
/// full resync every `config.sync_period`. Rules stay in place on
/// shutdown, as kube-proxy's do (connections keep working across a
/// restart); [`cleanup`] and [`iptables::cleanup`] remove them.
///
/// Errors: `NoNetfilterTool` when neither nft nor iptables-restore is
/// installed, `IptablesMissing` in iptables mode without iptables-restore,
/// `Config` for an invalid configuration. Kernel failures while running
/// are logged and retried.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mode = choose_mode(
        config.mode,
        netfilter::find_nft().is_some(),
        netfilter::find_program("iptables-restore").is_some(),
    )?;
    let config = Config { mode, ..config };
    match mode {
        Mode::Nftables => run_with(client, config, RealNft::new(), &RealHost, shutdown).await,
        Mode::Iptables => {
            iptables::run_with(client, config, RealIptables, &RealHost, shutdown).await
        }
    }
}

/// [`run`] in nftables mode with the kernel and host given.
pub async fn run_with<N: Netfilter>(
    client: kube::Client,
    config: Config,
    nft: N,
    host: &dyn Host,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_syncer(client, Proxier::new(config, nft), host, shutdown).await
}

/// Prepare the host, watch Services and EndpointSlices and drive `proxier` with them.
async fn run_syncer<S: Syncer>(
    client: kube::Client,
    mut proxier: S,
    host: &dyn Host,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let config = proxier.config();
    config.validate()?;
    if let Err(e) = host.enable_bridge_netfilter().await {
        tracing::warn!(error = %e, "could not enable br_netfilter; pods may not reach services whose endpoints share their bridge");
    }
    tracing::info!(node = %config.node_name, table = %config.table, mode = %config.mode, families = ?config.families(), "service proxy starting");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let services = Api::<Service>::all(client.clone());
    let slices = Api::<EndpointSlice>::all(client);
    let services_cfg =
        watcher::Config::default().labels("!service.kubernetes.io/service-proxy-name");
    let slices_cfg = watcher::Config::default()
        .labels("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless");
    let watch_services = watch(
        services,
        services_cfg,
        tx.clone(),
        |s| Update::ServiceApplied(Box::new(s)),
        |s| Update::ServiceDeleted(Box::new(s)),
        Update::ServicesListed,
    );
    let watch_slices = watch(
        slices,
        slices_cfg,
        tx,
        |s| Update::SliceApplied(Box::new(s)),
        |s| Update::SliceDeleted(Box::new(s)),
        Update::SlicesListed,
    );
    tokio::select! {
        _ = watch_services => {}
        _ = watch_slices => {}
        _ = proxier::run_loop(&mut proxier, &mut rx, shutdown) => {}
    }
    tracing::info!("service proxy stopped");
    Ok(())
}

/// Delete the proxy's tables (both families); missing tables are fine.
pub async fn cleanup(nft: &dyn Netfilter, table: &str) -> Result<(), Error> {
    let mut script = String::new();
    for fam in [Family::V4, Family::V6] {
        let t = rules::table_ref(fam, table);
        script.push_str(&format!("add table {t}\ndelete table {t}\n"));
    }
    nft.apply(&script).await
}

/// Feeds one kind's watch events into an update channel, a relist as one
/// `listed` update (also used by the NetworkPolicy enforcer).
pub async fn watch<K, U>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<U>,
    applied: fn(K) -> U,
    deleted: fn(K) -> U,
    listed: fn(Vec<K>) -> U,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut buffer: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => {
                buffer.clear();
                None
            }
            Ok(watcher::Event::InitApply(o)) => {
                buffer.push(o);
                None
            }
            Ok(watcher::Event::InitDone) => Some(listed(std::mem::take(&mut buffer))),
            Ok(watcher::Event::Apply(o)) => Some(applied(o)),
            Ok(watcher::Event::Delete(o)) => Some(deleted(o)),
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch failed; retrying");
                None
            }
        };
        if let Some(u) = update
            && tx.send(u).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_choice_falls_back_to_iptables_without_nft() {
        assert_eq!(
            choose_mode(Mode::Nftables, true, true).ok(),
            Some(Mode::Nftables)
        );
        assert_eq!(
            choose_mode(Mode::Nftables, true, false).ok(),
            Some(Mode::Nftables)
        );
        assert_eq!(
            choose_mode(Mode::Nftables, false, true).ok(),
            Some(Mode::Iptables)
        );
        assert!(matches!(
            choose_mode(Mode::Nftables, false, false),
            Err(Error::NoNetfilterTool)
        ));
        assert_eq!(
            choose_mode(Mode::Iptables, true, true).ok(),
            Some(Mode::Iptables)
        );
        assert!(matches!(
            choose_mode(Mode::Iptables, true, false),
            Err(Error::IptablesMissing)
        ));
        assert_eq!("iptables".parse::<Mode>().ok(), Some(Mode::Iptables));
        assert_eq!("nftables".parse::<Mode>().ok(), Some(Mode::Nftables));
        assert!("ipvs".parse::<Mode>().is_err());
        assert_eq!(Mode::Iptables.to_string(), "iptables");
    }
}
