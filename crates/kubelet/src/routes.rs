//! The pod network across nodes, host-gateway style (↔ flannel's host-gw
//! backend): every other node's podCIDR is routed via that node's
//! InternalIP in the main routing table, so pods on different nodes reach
//! each other with their own addresses.
//!
//! The agent watches Nodes and keeps one route `<podCIDR> via <InternalIP>`
//! per other node, tagged with the routing protocol [`ROUTE_PROTO`] so
//! that only skiff's routes are listed, changed and removed. Beside the
//! routes it turns on IPv4 forwarding and masquerades only pod traffic
//! that leaves the pods' networks (the CNI bridge's own ipMasq would also
//! masquerade pod-to-pod traffic across nodes, which Kubernetes forbids):
//! one nftables table, rewritten when the set of pod CIDRs changes and
//! removed when the agent stops.
//!
//! The route keeping is one backend of [`run_backend`]: [`HostGw`] here
//! (`--flannel-backend host-gw`, the default), or [`crate::vxlan`] where the
//! nodes share no layer 2. Both compute a desired state from the
//! [`NodeSet`] and bring the kernel's entries in line with
//! [`reconcile_entries`]; the masquerade table is the same for both.
//!
//! IPv4 only. The OS side is behind [`RouteTable`], [`Entries`] and [`HostNet`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

/// The routing protocol id skiff's routes carry (`ip route ... proto 67`).
pub const ROUTE_PROTO: u8 = 67;
/// How often the routes are compared with the routing table even without
/// a Node change (someone may have removed one).
pub const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("running {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("parsing the output of {cmd}: {message}")]
    Parse { cmd: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("patching node {node}: {source}")]
    Patch { node: String, source: kube::Error },
}

/// How pods reach the other nodes' pods (k3s's `--flannel-backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlannelBackend {
    /// Routes via the other nodes' InternalIPs (one layer-2 segment).
    #[default]
    HostGw,
    /// A VXLAN overlay ([`crate::vxlan`]); k3s's default.
    Vxlan,
}

impl std::str::FromStr for FlannelBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host-gw" => Ok(FlannelBackend::HostGw),
            "vxlan" => Ok(FlannelBackend::Vxlan),
            _ => Err(format!("unknown flannel backend {s:?} (host-gw or vxlan)")),
        }
    }
}

impl std::fmt::Display for FlannelBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::Vxlan => "vxlan",
        })
    }
}

/// The host's main routing table, restricted to skiff's routes.
#[async_trait::async_trait]
pub trait RouteTable: Send + Sync {
    /// Add or change the route to `cidr` (canonical `a.b.c.d/n`).
    async fn replace(&self, cidr: &str, via: Ipv4Addr) -> Result<(), RouteError>;
    async fn delete(&self, cidr: &str) -> Result<(), RouteError>;
    /// skiff's routes: destination CIDR to gateway.
    async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError>;
}

/// A keyed set of kernel entries skiff owns (routes, the VXLAN backend's
/// neighbours and forwarding entries), for [`reconcile_entries`].
#[async_trait::async_trait]
pub trait Entries<K: Send + Sync, V: Send + Sync>: Send + Sync {
    async fn list(&self) -> Result<BTreeMap<K, V>, RouteError>;
    /// Add or change the entry.
    async fn set(&self, key: &K, value: &V) -> Result<(), RouteError>;
    async fn delete(&self, key: &K) -> Result<(), RouteError>;
}

/// Forwarding and the pods' masquerade.
#[async_trait::async_trait]
pub trait HostNet: Send + Sync {
    /// net.ipv4.ip_forward=1.
    async fn enable_forwarding(&self) -> Result<(), RouteError>;
    /// Masquerade traffic from the pod CIDRs to anything outside them
    /// (and not multicast); replaces the previous set.
    async fn masquerade(&self, pod_cidrs: &BTreeSet<String>) -> Result<(), RouteError>;
    /// Remove the masquerade rules (best effort, when the agent stops).
    fn remove_masquerade(&self);
}

/// `a.b.c.d/n` with the host bits cleared, or None when not an IPv4 CIDR.
pub fn canonical_v4(cidr: &str) -> Option<String> {
    let (ip, bits) = cidr.trim().split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    if bits > 32 {
        return None;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Some(format!("{}/{bits}", Ipv4Addr::from(u32::from(ip) & mask)))
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let mut all: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if all.is_empty()
        && let Some(c) = spec.and_then(|s| s.pod_cidr.clone())
    {
        all.push(c);
    }
    all.iter().filter_map(|c| canonical_v4(c)).collect()
}

pub(crate) fn internal_ipv4(node: &Node) -> Option<Ipv4Addr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    addrs
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
}

/// The routes this node needs: every other node's IPv4 podCIDRs via its
/// InternalIP. Nodes without either, or with this node's own address, get
/// none; a CIDR claimed twice goes to the first node by name.
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    own_name: &str,
    own_ip: IpAddr,
) -> BTreeMap<String, Ipv4Addr> {
    other_nodes(nodes, own_name, own_ip, internal_ipv4)
        .into_iter()
        .map(|(cidr, (ip, _))| (cidr, ip))
        .collect()
}

/// Every other node's IPv4 podCIDRs with the node and its address as
/// `address` reads it, under the rules of [`desired_routes`].
pub fn other_nodes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    own_name: &str,
    own_ip: IpAddr,
    address: impl Fn(&Node) -> Option<Ipv4Addr>,
) -> BTreeMap<String, (Ipv4Addr, &'a Node)> {
    let mut sorted: Vec<&Node> = nodes.into_iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = BTreeMap::new();
    let own_cidrs: BTreeSet<String> = sorted
        .iter()
        .filter(|n| n.metadata.name.as_deref() == Some(own_name))
        .flat_map(|n| pod_cidrs(n))
        .collect();
    for node in sorted {
        if node.metadata.name.as_deref() == Some(own_name) {
            continue;
        }
        let Some(ip) = address(node) else {
            continue;
        };
        if IpAddr::V4(ip) == own_ip || ip.is_unspecified() || ip.is_loopback() {
            continue;
        }
        for cidr in pod_cidrs(node) {
            if !own_cidrs.contains(&cidr) {
                out.entry(cidr).or_insert((ip, node));
            }
        }
    }
    out
}

/// Every node's IPv4 podCIDRs plus this node's own pod subnet: the set
/// pod traffic is not masqueraded within.
pub fn all_pod_cidrs<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    local: &str,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = nodes.into_iter().flat_map(pod_cidrs).collect();
    out.extend(canonical_v4(local));
    out
}

/// Make skiff's routes in `table` equal `desired`: replace what is missing
/// or points elsewhere, delete what is no longer wanted. Goes on after a
/// failure; returns the number of changes made, or the first error.
pub async fn reconcile(
    table: &dyn RouteTable,
    desired: &BTreeMap<String, Ipv4Addr>,
) -> Result<usize, RouteError> {
    reconcile_entries("route to a node's pods", &RouteEntries(table), desired).await
}

/// A [`RouteTable`] as [`Entries`].
struct RouteEntries<'a>(&'a dyn RouteTable);

#[async_trait::async_trait]
impl Entries<String, Ipv4Addr> for RouteEntries<'_> {
    async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError> {
        self.0.list().await
    }
    async fn set(&self, cidr: &String, via: &Ipv4Addr) -> Result<(), RouteError> {
        self.0.replace(cidr, *via).await
    }
    async fn delete(&self, cidr: &String) -> Result<(), RouteError> {
        self.0.delete(cidr).await
    }
}

/// Make the entries in `table` equal `desired` (`what` names them in the
/// log): set what is missing or different, delete what is no longer
/// wanted. Goes on after a failure; returns the number of changes made,
/// or the first error.
pub async fn reconcile_entries<K, V>(
    what: &str,
    table: &dyn Entries<K, V>,
    desired: &BTreeMap<K, V>,
) -> Result<usize, RouteError>
where
    K: Ord + Display + Send + Sync,
    V: PartialEq + Display + Send + Sync,
{
    let current = table.list().await?;
    let mut changes = 0;
    let mut first_err = None;
    for (key, value) in desired {
        if current.get(key) == Some(value) {
            continue;
        }
        match table.set(key, value).await {
            Ok(()) => {
                tracing::info!(%key, %value, "{what} set");
                changes += 1;
            }
            Err(e) => {
                tracing::warn!(%key, %value, error = %e, "setting a {what} failed");
                first_err.get_or_insert(e);
            }
        }
    }
    for key in current.keys().filter(|k| !desired.contains_key(*k)) {
        match table.delete(key).await {
            Ok(()) => {
                tracing::info!(%key, "{what} removed");
                changes += 1;
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "removing a {what} failed");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

/// The Nodes as the watch reports them; `ready` once the first list is in.
#[derive(Default)]
pub struct NodeSet {
    nodes: BTreeMap<String, Node>,
    pending: BTreeMap<String, Node>,
    ready: bool,
}

impl NodeSet {
    pub fn apply(&mut self, event: Event<Node>) {
        let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Init => self.pending.clear(),
            Event::InitApply(n) => {
                self.pending.insert(name(&n), n);
            }
            Event::InitDone => {
                self.nodes = std::mem::take(&mut self.pending);
                self.ready = true;
            }
            Event::Apply(n) => {
                self.nodes.insert(name(&n), n);
            }
            Event::Delete(n) => {
                self.nodes.remove(&name(&n));
            }
        }
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }
}

/// Who this node is.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// The pod subnet of this node when its Node has no podCIDR.
    pub local_pod_cidr: String,
}

/// Removes the masquerade rules when the route controller stops.
struct MasqueradeGuard(Arc<dyn HostNet>);

impl Drop for MasqueradeGuard {
    fn drop(&mut self) {
        self.0.remove_masquerade();
    }
}

/// How the other nodes' pods are reached: [`HostGw`], or [`crate::vxlan::Vxlan`].
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// What the backend keeps in the kernel; compared between passes so
    /// that unchanged passes do nothing.
    type Desired: PartialEq + Send + Sync;
    fn desired(&self, nodes: &NodeSet, settings: &Settings) -> Self::Desired;
    /// Bring the kernel in line; failures are logged and retried at the
    /// next resync.
    async fn apply(&self, desired: &Self::Desired);
}

/// The host-gateway backend: every other node's podCIDR via its InternalIP.
pub struct HostGw<'a>(pub &'a dyn RouteTable);

#[async_trait::async_trait]
impl Backend for HostGw<'_> {
    type Desired = BTreeMap<String, Ipv4Addr>;

    fn desired(&self, nodes: &NodeSet, settings: &Settings) -> Self::Desired {
        desired_routes(nodes.nodes(), &settings.node_name, settings.node_ip)
    }

    async fn apply(&self, desired: &Self::Desired) {
        // A route that cannot be set (a node address not on this link) is
        // retried at the next resync, not at every Node status update.
        let _ = reconcile(self.0, desired).await;
    }
}

/// This node's pod subnet: its Node's first IPv4 podCIDR, or the default.
pub fn local_pod_cidr(nodes: &NodeSet, settings: &Settings) -> String {
    nodes
        .nodes()
        .find(|n| n.metadata.name.as_deref() == Some(settings.node_name.as_str()))
        .and_then(|own| pod_cidrs(own).into_iter().next())
        .unwrap_or_else(|| settings.local_pod_cidr.clone())
}

/// What one pass computed and applied, so that unchanged passes do nothing.
pub(crate) struct Applied<D = BTreeMap<String, Ipv4Addr>> {
    desired: Option<D>,
    cidrs: Option<BTreeSet<String>>,
}

impl<D> Default for Applied<D> {
    fn default() -> Self {
        Applied {
            desired: None,
            cidrs: None,
        }
    }
}

#[cfg(test)]
async fn sync(
    nodes: &NodeSet,
    settings: &Settings,
    table: &dyn RouteTable,
    host: &dyn HostNet,
    applied: &mut Applied,
    force: bool,
) {
    sync_backend(nodes, settings, &HostGw(table), host, applied, force).await;
}

pub(crate) async fn sync_backend<B: Backend>(
    nodes: &NodeSet,
    settings: &Settings,
    backend: &B,
    host: &dyn HostNet,
    applied: &mut Applied<B::Desired>,
    force: bool,
) {
    let desired = backend.desired(nodes, settings);
    let cidrs = all_pod_cidrs(nodes.nodes(), &local_pod_cidr(nodes, settings));
    if force || applied.cidrs.as_ref() != Some(&cidrs) {
        match host.masquerade(&cidrs).await {
            Ok(()) => applied.cidrs = Some(cidrs),
            Err(e) => tracing::warn!(error = %e, "setting the pods' masquerade rules failed"),
        }
    }
    if force || applied.desired.as_ref() != Some(&desired) {
        backend.apply(&desired).await;
        applied.desired = Some(desired);
    }
}

/// Keep the routes to the other nodes' pods until the future is dropped.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    table: Arc<dyn RouteTable>,
    host: Arc<dyn HostNet>,
) {
    run_backend(client, settings, HostGw(table.as_ref()), host).await;
}

/// Keep `backend`'s state and the masquerade table in line with the Nodes
/// until the future is dropped.
pub async fn run_backend<B: Backend>(
    client: kube::Client,
    settings: Settings,
    backend: B,
    host: Arc<dyn HostNet>,
) {
    if let Err(e) = host.enable_forwarding().await {
        tracing::warn!(error = %e, "enabling IPv4 forwarding failed: pods on other nodes may be unreachable");
    }
    let _guard = MasqueradeGuard(host.clone());
    let api: kube::Api<Node> = kube::Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes = NodeSet::default();
    let mut applied = Applied::default();
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev)) => {
                    nodes.apply(ev);
                    if nodes.ready() {
                        sync_backend(&nodes, &settings, &backend, host.as_ref(), &mut applied, false).await;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "watching nodes for routes"),
                None => return,
            },
            _ = tick.tick() => {
                if nodes.ready() {
                    sync_backend(&nodes, &settings, &backend, host.as_ref(), &mut applied, true).await;
                }
            }
        }
    }
}

pub(crate) async fn command(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, RouteError> {
    use tokio::io::AsyncWriteExt as _;
    let cmd = format!("{program} {}", args.join(" "));
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    let mut child = c.spawn().map_err(|source| RouteError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| RouteError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| RouteError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(RouteError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The real routing table through `ip route`.
pub struct IpRoute;

/// Parse `ip -j route show` output into destination → gateway.
pub fn parse_ip_routes(json: &str) -> Result<BTreeMap<String, Ipv4Addr>, String> {
    if json.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for r in v {
        let Some(dst) = r.get("dst").and_then(|d| d.as_str()) else {
            continue;
        };
        let dst = if dst.contains('/') {
            dst.to_string()
        } else {
            format!("{dst}/32")
        };
        let Some(dst) = canonical_v4(&dst) else {
            continue;
        };
        let via = r
            .get("gateway")
            .and_then(|g| g.as_str())
            .and_then(|g| g.parse::<Ipv4Addr>().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        out.insert(dst, via);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl RouteTable for IpRoute {
    async fn replace(&self, cidr: &str, via: Ipv4Addr) -> Result<(), RouteError> {
        let (via, proto) = (via.to_string(), ROUTE_PROTO.to_string());
        command(
            "ip",
            &["route", "replace", cidr, "via", &via, "proto", &proto],
            None,
        )
        .await
        .map(drop)
    }

    async fn delete(&self, cidr: &str) -> Result<(), RouteError> {
        let proto = ROUTE_PROTO.to_string();
        command("ip", &["route", "del", cidr, "proto", &proto], None)
            .await
            .map(drop)
    }

    async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError> {
        let proto = ROUTE_PROTO.to_string();
        let args = ["-4", "-j", "route", "show", "proto", &proto];
        let out = command("ip", &args, None).await?;
        parse_ip_routes(&out).map_err(|message| RouteError::Parse {
            cmd: format!("ip {}", args.join(" ")),
            message,
        })
    }
}

/// The real forwarding switch and masquerade table (nftables).
pub struct NftHost {
    pub table: String,
}

impl NftHost {
    /// The table of the agent whose pods sit on `bridge` (agents of
    /// different clusters may share a network namespace).
    pub fn for_bridge(bridge: &str) -> NftHost {
        NftHost {
            table: format!("skiff-pods-{bridge}"),
        }
    }
}

/// Whether nft is installed.
pub fn have_nft() -> bool {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// The nft script (re)creating the masquerade table.
pub fn masquerade_script(table: &str, pod_cidrs: &BTreeSet<String>) -> String {
    let mut s = format!("table ip {table}\ndelete table ip {table}\n");
    if pod_cidrs.is_empty() {
        return s;
    }
    let elems = pod_cidrs.iter().cloned().collect::<Vec<_>>().join(", ");
    s.push_str(&format!(
        "table ip {table} {{\n\
         \tset pod-cidrs {{ type ipv4_addr; flags interval; elements = {{ {elems} }}; }}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr @pod-cidrs ip daddr != @pod-cidrs ip daddr != 224.0.0.0/4 masquerade\n\
         \t}}\n\
         }}\n"
    ));
    s
}

#[async_trait::async_trait]
impl HostNet for NftHost {
    async fn enable_forwarding(&self) -> Result<(), RouteError> {
        let path = "/proc/sys/net/ipv4/ip_forward";
        tokio::fs::write(path, b"1")
            .await
            .map_err(|source| RouteError::Io {
                path: path.into(),
                source,
            })
    }

    async fn masquerade(&self, pod_cidrs: &BTreeSet<String>) -> Result<(), RouteError> {
        command(
            "nft",
            &["-f", "-"],
            Some(&masquerade_script(&self.table, pod_cidrs)),
        )
        .await
        .map(drop)
    }

    fn remove_masquerade(&self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        let mut v = json!({"metadata": {"name": name}, "spec": {}, "status": {"addresses": [{"type": "Hostname", "address": name}]}});
        if let Some(c) = cidr {
            v["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
        }
        if let Some(ip) = ip {
            v["status"]["addresses"] = json!([{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]);
        }
        serde_json::from_value(v).unwrap()
    }

    fn own_ip() -> IpAddr {
        IpAddr::from([172, 31, 0, 2])
    }

    #[derive(Default)]
    struct FakeTable {
        routes: Mutex<BTreeMap<String, Ipv4Addr>>,
        calls: Mutex<Vec<String>>,
        fail: Mutex<BTreeSet<String>>,
    }

    #[async_trait::async_trait]
    impl RouteTable for FakeTable {
        async fn replace(&self, cidr: &str, via: Ipv4Addr) -> Result<(), RouteError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("replace {cidr} {via}"));
            if self.fail.lock().unwrap().contains(cidr) {
                return Err(RouteError::Failed {
                    cmd: "ip".into(),
                    stderr: "Nexthop has invalid gateway".into(),
                });
            }
            self.routes.lock().unwrap().insert(cidr.into(), via);
            Ok(())
        }
        async fn delete(&self, cidr: &str) -> Result<(), RouteError> {
            self.calls.lock().unwrap().push(format!("delete {cidr}"));
            self.routes.lock().unwrap().remove(cidr);
            Ok(())
        }
        async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError> {
            Ok(self.routes.lock().unwrap().clone())
        }
    }

    #[derive(Default)]
    struct FakeHost {
        masq: Mutex<Vec<BTreeSet<String>>>,
        removed: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl HostNet for FakeHost {
        async fn enable_forwarding(&self) -> Result<(), RouteError> {
            Ok(())
        }
        async fn masquerade(&self, pod_cidrs: &BTreeSet<String>) -> Result<(), RouteError> {
            self.masq.lock().unwrap().push(pod_cidrs.clone());
            Ok(())
        }
        fn remove_masquerade(&self) {
            *self.removed.lock().unwrap() = true;
        }
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn canonical_cidrs() {
        assert_eq!(
            canonical_v4("10.42.1.0/24").as_deref(),
            Some("10.42.1.0/24")
        );
        assert_eq!(
            canonical_v4("10.42.1.7/24").as_deref(),
            Some("10.42.1.0/24")
        );
        assert_eq!(canonical_v4("0.0.0.0/0").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(canonical_v4("fd42::/64"), None);
        assert_eq!(canonical_v4("10.42.1.0/33"), None);
        assert_eq!(canonical_v4("10.42.1.0"), None);
    }

    #[test]
    fn desired_routes_cover_every_other_node() {
        let nodes = [
            node("a", Some("10.42.0.0/24"), Some("172.31.0.2")),
            node("b", Some("10.42.1.0/24"), Some("172.31.0.3")),
            node("c", Some("10.42.2.0/24"), None),
            node("d", None, Some("172.31.0.5")),
            node("e", Some("10.42.1.0/24"), Some("172.31.0.6")),
            node("f", Some("10.42.4.0/24"), Some("172.31.0.2")),
            node("g", Some("10.42.0.0/24"), Some("172.31.0.7")),
        ];
        let d = desired_routes(&nodes, "a", own_ip());
        // c: no address; d: no CIDR; e: CIDR already b's; f: our own
        // address; g: our own CIDR.
        assert_eq!(
            d,
            BTreeMap::from([("10.42.1.0/24".to_string(), ip4("172.31.0.3"))])
        );
        let d = desired_routes(&nodes, "b", IpAddr::from([172, 31, 0, 3]));
        assert_eq!(d.get("10.42.0.0/24"), Some(&ip4("172.31.0.2")));
        assert_eq!(d.get("10.42.1.0/24"), None);
        assert_eq!(d.get("10.42.4.0/24"), Some(&ip4("172.31.0.2")));
    }

    #[test]
    fn dual_stack_nodes_route_their_ipv4_cidr() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "b"},
            "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24", "fd42:0:0:1::/64"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "fd00::3"}, {"type": "InternalIP", "address": "172.31.0.3"}]},
        }))
        .unwrap();
        assert_eq!(
            desired_routes([&n], "a", own_ip()),
            BTreeMap::from([("10.42.1.0/24".to_string(), ip4("172.31.0.3"))])
        );
    }

    #[tokio::test]
    async fn reconcile_adds_changes_and_removes() {
        let t = FakeTable::default();
        t.routes
            .lock()
            .unwrap()
            .insert("10.42.1.0/24".into(), ip4("172.31.0.9"));
        t.routes
            .lock()
            .unwrap()
            .insert("10.42.2.0/24".into(), ip4("172.31.0.4"));
        t.routes
            .lock()
            .unwrap()
            .insert("10.42.7.0/24".into(), ip4("172.31.0.8"));
        let want = BTreeMap::from([
            ("10.42.1.0/24".to_string(), ip4("172.31.0.3")),
            ("10.42.2.0/24".to_string(), ip4("172.31.0.4")),
            ("10.42.3.0/24".to_string(), ip4("172.31.0.5")),
        ]);
        assert_eq!(reconcile(&t, &want).await.unwrap(), 3);
        assert_eq!(*t.routes.lock().unwrap(), want);
        assert_eq!(
            *t.calls.lock().unwrap(),
            [
                "replace 10.42.1.0/24 172.31.0.3",
                "replace 10.42.3.0/24 172.31.0.5",
                "delete 10.42.7.0/24"
            ]
        );
        // In place: nothing to do.
        t.calls.lock().unwrap().clear();
        assert_eq!(reconcile(&t, &want).await.unwrap(), 0);
        assert!(t.calls.lock().unwrap().is_empty());
        // Everything goes when no other node is left.
        assert_eq!(reconcile(&t, &BTreeMap::new()).await.unwrap(), 3);
        assert!(t.routes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn reconcile_goes_on_after_a_failure() {
        let t = FakeTable::default();
        t.fail.lock().unwrap().insert("10.42.1.0/24".into());
        t.routes
            .lock()
            .unwrap()
            .insert("10.42.9.0/24".into(), ip4("172.31.0.9"));
        let want = BTreeMap::from([
            ("10.42.1.0/24".to_string(), ip4("172.31.0.3")),
            ("10.42.2.0/24".to_string(), ip4("172.31.0.4")),
        ]);
        assert!(matches!(
            reconcile(&t, &want).await,
            Err(RouteError::Failed { .. })
        ));
        let routes = t.routes.lock().unwrap().clone();
        assert_eq!(
            routes,
            BTreeMap::from([("10.42.2.0/24".to_string(), ip4("172.31.0.4"))])
        );
    }

    #[test]
    fn node_set_follows_the_watch() {
        let mut s = NodeSet::default();
        s.apply(Event::Init);
        s.apply(Event::InitApply(node(
            "a",
            Some("10.42.0.0/24"),
            Some("172.31.0.2"),
        )));
        assert!(!s.ready());
        s.apply(Event::InitDone);
        assert!(s.ready());
        s.apply(Event::Apply(node(
            "b",
            Some("10.42.1.0/24"),
            Some("172.31.0.3"),
        )));
        assert_eq!(s.nodes().count(), 2);
        // A changed address replaces the node.
        s.apply(Event::Apply(node(
            "b",
            Some("10.42.1.0/24"),
            Some("172.31.0.4"),
        )));
        assert_eq!(
            desired_routes(s.nodes(), "a", own_ip()).get("10.42.1.0/24"),
            Some(&ip4("172.31.0.4"))
        );
        s.apply(Event::Delete(node("b", None, None)));
        assert!(desired_routes(s.nodes(), "a", own_ip()).is_empty());
        // A relist drops nodes that went away meanwhile.
        s.apply(Event::Apply(node(
            "c",
            Some("10.42.2.0/24"),
            Some("172.31.0.5"),
        )));
        s.apply(Event::Init);
        s.apply(Event::InitApply(node(
            "a",
            Some("10.42.0.0/24"),
            Some("172.31.0.2"),
        )));
        s.apply(Event::InitDone);
        assert_eq!(s.nodes().count(), 1);
    }

    #[tokio::test]
    async fn sync_sets_routes_and_masquerade_once_per_change() {
        let (t, h) = (FakeTable::default(), FakeHost::default());
        let settings = Settings {
            node_name: "a".into(),
            node_ip: own_ip(),
            local_pod_cidr: "10.42.0.0/24".into(),
        };
        let mut s = NodeSet::default();
        s.apply(Event::Init);
        s.apply(Event::InitApply(node(
            "a",
            Some("10.42.5.0/24"),
            Some("172.31.0.2"),
        )));
        s.apply(Event::InitApply(node(
            "b",
            Some("10.42.1.0/24"),
            Some("172.31.0.3"),
        )));
        s.apply(Event::InitDone);
        let mut applied = Applied::default();
        sync(&s, &settings, &t, &h, &mut applied, false).await;
        assert_eq!(
            *t.routes.lock().unwrap(),
            BTreeMap::from([("10.42.1.0/24".to_string(), ip4("172.31.0.3"))])
        );
        // The node's own podCIDR, not the default, is its pod subnet.
        assert_eq!(
            h.masq.lock().unwrap().last().unwrap(),
            &BTreeSet::from(["10.42.1.0/24".to_string(), "10.42.5.0/24".to_string()])
        );
        sync(&s, &settings, &t, &h, &mut applied, false).await;
        assert_eq!(h.masq.lock().unwrap().len(), 1);
        assert_eq!(t.calls.lock().unwrap().len(), 1);
        // A resync repairs a route removed behind the agent's back.
        t.routes.lock().unwrap().clear();
        sync(&s, &settings, &t, &h, &mut applied, true).await;
        assert_eq!(t.routes.lock().unwrap().len(), 1);
        // A failing route is retried at the resync, not at every status update.
        s.apply(Event::Apply(node(
            "c",
            Some("10.42.2.0/24"),
            Some("192.0.2.7"),
        )));
        t.fail.lock().unwrap().insert("10.42.2.0/24".into());
        sync(&s, &settings, &t, &h, &mut applied, false).await;
        sync(&s, &settings, &t, &h, &mut applied, false).await;
        let attempts = |t: &FakeTable| {
            t.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.starts_with("replace 10.42.2.0/24"))
                .count()
        };
        assert_eq!(attempts(&t), 1);
        t.fail.lock().unwrap().clear();
        sync(&s, &settings, &t, &h, &mut applied, true).await;
        assert_eq!(attempts(&t), 2);
        assert_eq!(
            t.routes.lock().unwrap().get("10.42.2.0/24"),
            Some(&ip4("192.0.2.7"))
        );
        s.apply(Event::Delete(node("b", None, None)));
        s.apply(Event::Delete(node("c", None, None)));
        sync(&s, &settings, &t, &h, &mut applied, false).await;
        assert!(t.routes.lock().unwrap().is_empty());
        assert_eq!(
            h.masq.lock().unwrap().last().unwrap(),
            &BTreeSet::from(["10.42.5.0/24".to_string()])
        );
    }

    #[test]
    fn the_guard_removes_the_masquerade() {
        let h = Arc::new(FakeHost::default());
        drop(MasqueradeGuard(h.clone()));
        assert!(*h.removed.lock().unwrap());
    }

    #[test]
    fn parses_ip_json() {
        let out = r#"[{"dst":"10.42.1.0/24","gateway":"172.31.0.3","dev":"veth0","protocol":"67","flags":[]},{"dst":"10.9.9.9","gateway":"172.31.0.4","flags":[]},{"dst":"fd00::/64","flags":[]}]"#;
        let r = parse_ip_routes(out).unwrap();
        assert_eq!(
            r,
            BTreeMap::from([
                ("10.42.1.0/24".to_string(), ip4("172.31.0.3")),
                ("10.9.9.9/32".to_string(), ip4("172.31.0.4"))
            ])
        );
        assert!(parse_ip_routes("\n").unwrap().is_empty());
        assert!(parse_ip_routes("{").is_err());
    }

    #[test]
    fn masquerade_script_spares_pod_to_pod_traffic() {
        let s = masquerade_script(
            "skiff-pods-skiff0",
            &BTreeSet::from(["10.42.0.0/24".to_string(), "10.42.1.0/24".to_string()]),
        );
        assert!(s.starts_with("table ip skiff-pods-skiff0\ndelete table ip skiff-pods-skiff0\n"));
        assert!(s.contains("elements = { 10.42.0.0/24, 10.42.1.0/24 }"));
        assert!(s.contains(
            "ip saddr @pod-cidrs ip daddr != @pod-cidrs ip daddr != 224.0.0.0/4 masquerade"
        ));
        assert_eq!(
            masquerade_script("t", &BTreeSet::new()),
            "table ip t\ndelete table ip t\n"
        );
    }
}
