//! The pod network across nodes as a VXLAN overlay (↔ flannel's vxlan
//! backend, k3s's default; `--flannel-backend vxlan`), for nodes that share
//! no layer-2 segment: only the nodes' own addresses need to reach each
//! other (UDP 8472).
//!
//! Each node keeps a VXLAN device [`DEVICE`] (VNI 1, UDP port 8472, on the
//! interface holding the node's IP with that IP as its local address,
//! learning off, MTU 50 below that interface's). Its VTEP address is the
//! network address of the node's podCIDR as /32 (`10.42.1.0/32` for
//! `10.42.1.0/24`), as flannel gives it, so that it never collides with
//! the CNI bridge's gateway (the first address). The node publishes the
//! device's MAC and its public IP as flannel's Node annotations
//! ([`BACKEND_DATA`] = `{"VNI":1,"VtepMAC":"<mac>"}`, [`BACKEND_TYPE`] =
//! `vxlan`, [`PUBLIC_IP`]) with a merge patch on its own Node, and for
//! every other node carrying them and a podCIDR keeps:
//!
//! - a permanent neighbour entry: the node's VTEP address → its VTEP MAC,
//!   on [`DEVICE`];
//! - a forwarding entry: that MAC → the node's public IP (the VXLAN
//!   packets' destination);
//! - a route `<podCIDR> via <VTEP address> dev skiff.vxlan onlink`, tagged
//!   `proto 67` like the host-gw routes ([`routes::ROUTE_PROTO`]), so that
//!   the same reconcile owns them and switching backends replaces them.
//!
//! Entries of nodes that go away or change are removed or replaced. The
//! device is (re)created when missing or configured differently, and stays
//! when the agent stops (as flannel's). This is a [`routes::Backend`]: the
//! Node watch, the resync, forwarding and the pods' masquerade are
//! [`routes::run_backend`]'s. Nodes on host-gw and on vxlan do not reach
//! each other's pods: a cluster uses one backend. Pods' interfaces get the
//! VXLAN device's MTU ([`pod_mtu`], in the CNI bridge config), as flannel
//! gives its CNI config FLANNEL_MTU.
//!
//! IPv4 only. The OS side is behind [`VxlanDevice`], [`Entries`],
//! [`RouteTable`] and [`NodeAnnotator`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::routes::{
    self, Backend, Entries, HostNet, IpRoute, NodeSet, RouteError, RouteTable, Settings, command,
};

/// The VXLAN device's name.
pub const DEVICE: &str = "skiff.vxlan";
/// The VXLAN network identifier (flannel's default).
pub const VNI: u32 = 1;
/// The VXLAN UDP port (flannel's default, the Linux one; not IANA's 4789).
pub const PORT: u16 = 8472;
/// The VXLAN encapsulation's overhead over IPv4.
pub const MTU_OVERHEAD: u32 = 50;
/// `{"VNI":1,"VtepMAC":"<mac>"}`.
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// `vxlan`.
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// The address the other nodes send this node's VXLAN packets to.
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

/// The device as this node wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The node's IP: the packets' source, and it names the underlying interface.
    pub local: Ipv4Addr,
    /// The VTEP address (/32).
    pub address: Ipv4Addr,
}

/// Another node reached through the overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub vtep: Ipv4Addr,
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub public_ip: Ipv4Addr,
}

/// What one pass wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// None when the node's IP is not IPv4.
    pub device: Option<DeviceSpec>,
    pub node_name: String,
    /// The flannel annotations this node's Node has now.
    pub published: BTreeMap<String, String>,
    /// Other nodes by podCIDR.
    pub peers: BTreeMap<String, Peer>,
}

/// The VXLAN device.
#[async_trait::async_trait]
pub trait VxlanDevice: Send + Sync {
    /// Create the device or fix its settings, address, MTU and state; its MAC.
    async fn ensure(&self, spec: &DeviceSpec) -> Result<String, RouteError>;
}

/// Writes this node's annotations.
#[async_trait::async_trait]
pub trait NodeAnnotator: Send + Sync {
    async fn annotate(
        &self,
        node: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), RouteError>;
}

/// The VXLAN backend.
pub struct Vxlan {
    pub device: Arc<dyn VxlanDevice>,
    /// VTEP address → MAC, on the device.
    pub neighbours: Arc<dyn Entries<Ipv4Addr, String>>,
    /// MAC → public IP, on the device.
    pub fdb: Arc<dyn Entries<String, Ipv4Addr>>,
    pub routes: Arc<dyn RouteTable>,
    pub annotator: Arc<dyn NodeAnnotator>,
}

/// The annotations a node with this VTEP MAC and public IP carries.
pub fn annotations(mac: &str, public_ip: Ipv4Addr) -> BTreeMap<String, String> {
    let data = serde_json::json!({"VNI": VNI, "VtepMAC": mac});
    BTreeMap::from([
        (BACKEND_DATA.to_string(), data.to_string()),
        (BACKEND_TYPE.to_string(), "vxlan".to_string()),
        (PUBLIC_IP.to_string(), public_ip.to_string()),
    ])
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, or None when not a MAC.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.trim().split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| mac.trim().to_ascii_lowercase())
}

/// A vxlan node's public IP, from its annotations.
fn public_ip(node: &Node) -> Option<Ipv4Addr> {
    if annotation(node, BACKEND_TYPE) != Some("vxlan") {
        return None;
    }
    annotation(node, PUBLIC_IP)?.trim().parse().ok()
}

/// A vxlan node's VTEP MAC, from its backend data.
fn vtep_mac(node: &Node) -> Option<String> {
    let data: serde_json::Value = serde_json::from_str(annotation(node, BACKEND_DATA)?).ok()?;
    normalize_mac(data.get("VtepMAC")?.as_str()?)
}

/// The network address of a canonical IPv4 CIDR.
fn network(cidr: &str) -> Option<Ipv4Addr> {
    routes::canonical_v4(cidr)?.split_once('/')?.0.parse().ok()
}

/// This node's device, annotations and peers.
pub fn desired(nodes: &NodeSet, settings: &Settings) -> Desired {
    let device = match (
        settings.node_ip,
        network(&routes::local_pod_cidr(nodes, settings)),
    ) {
        (IpAddr::V4(local), Some(address)) => Some(DeviceSpec {
            name: DEVICE.into(),
            vni: VNI,
            port: PORT,
            local,
            address,
        }),
        _ => None,
    };
    let published = nodes
        .nodes()
        .find(|n| n.metadata.name.as_deref() == Some(settings.node_name.as_str()))
        .and_then(|n| n.metadata.annotations.as_ref())
        .map(|a| {
            a.iter()
                .filter(|(k, _)| [BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let peers = routes::other_nodes(
        nodes.nodes(),
        &settings.node_name,
        settings.node_ip,
        public_ip,
    )
    .into_iter()
    .filter_map(|(cidr, (public_ip, node))| {
        let peer = Peer {
            vtep: network(&cidr)?,
            mac: vtep_mac(node)?,
            public_ip,
        };
        Some((cidr, peer))
    })
    .collect();
    Desired {
        device,
        node_name: settings.node_name.clone(),
        published,
        peers,
    }
}

#[async_trait::async_trait]
impl Backend for Vxlan {
    type Desired = Desired;

    fn desired(&self, nodes: &NodeSet, settings: &Settings) -> Desired {
        desired(nodes, settings)
    }

    async fn apply(&self, desired: &Desired) {
        let Some(spec) = &desired.device else {
            tracing::warn!(
                "the VXLAN backend needs an IPv4 node IP: pods on other nodes are unreachable"
            );
            return;
        };
        let mac = match self.device.ensure(spec).await {
            Ok(mac) => mac,
            Err(e) => {
                tracing::warn!(device = %spec.name, error = %e, "setting up the VXLAN device failed");
                return;
            }
        };
        let want = annotations(&mac, spec.local);
        if desired.published != want {
            match self.annotator.annotate(&desired.node_name, &want).await {
                Ok(()) => {
                    tracing::info!(vtep_mac = %mac, public_ip = %spec.local, "VXLAN endpoint published on the Node")
                }
                Err(e) => tracing::warn!(error = %e, "publishing the VXLAN endpoint failed"),
            }
        }
        let peers = desired.peers.iter();
        let neighbours = peers.clone().map(|(_, p)| (p.vtep, p.mac.clone()));
        let fdb = peers.clone().map(|(_, p)| (p.mac.clone(), p.public_ip));
        let via = peers.map(|(cidr, p)| (cidr.clone(), p.vtep));
        // Neighbour and forwarding entries before the routes that use them.
        let what = "neighbour entry of a node's VTEP";
        let _ =
            routes::reconcile_entries(what, self.neighbours.as_ref(), &neighbours.collect()).await;
        let what = "forwarding entry of a node's VTEP";
        let _ = routes::reconcile_entries(what, self.fdb.as_ref(), &fdb.collect()).await;
        let _ = routes::reconcile(self.routes.as_ref(), &via.collect()).await;
    }
}

/// Keep the overlay to the other nodes' pods until the future is dropped.
pub async fn run(client: kube::Client, settings: Settings, host: Arc<dyn HostNet>) {
    let backend = Vxlan {
        device: Arc::new(IpVxlan),
        neighbours: Arc::new(IpNeigh { dev: DEVICE.into() }),
        fdb: Arc::new(BridgeFdb { dev: DEVICE.into() }),
        routes: Arc::new(OnlinkRoutes { dev: DEVICE.into() }),
        annotator: Arc::new(ApiAnnotator(client.clone())),
    };
    routes::run_backend(client, settings, backend, host).await;
}

/// Merge-patches the Node's annotations through the API.
pub struct ApiAnnotator(pub kube::Client);

#[async_trait::async_trait]
impl NodeAnnotator for ApiAnnotator {
    async fn annotate(
        &self,
        node: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), RouteError> {
        let api: kube::Api<Node> = kube::Api::all(self.0.clone());
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        api.patch(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map(drop)
        .map_err(|source| RouteError::Patch {
            node: node.into(),
            source,
        })
    }
}

fn parse_err(cmd: &str) -> impl FnOnce(String) -> RouteError + '_ {
    move |message| RouteError::Parse {
        cmd: cmd.into(),
        message,
    }
}

fn json_array(json: &str) -> Result<Vec<serde_json::Value>, String> {
    if json.trim().is_empty() {
        return Ok(vec![]);
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// The interface holding `local` in `ip -j -4 addr show`'s output: its name
/// and the MTU left for VXLAN's payload (its MTU less [`MTU_OVERHEAD`]).
fn underlying(addrs: &[serde_json::Value], local: Ipv4Addr) -> Result<(&str, u64), String> {
    let local = local.to_string();
    let found = addrs
        .iter()
        .find(|l| {
            l.get("addr_info")
                .and_then(|a| a.as_array())
                .is_some_and(|a| a.iter().any(|a| str_field(a, "local") == Some(&local)))
        })
        .ok_or_else(|| format!("no interface has the address {local}"))?;
    let name = str_field(found, "ifname").ok_or("an interface without a name")?;
    let mtu = found
        .get("mtu")
        .and_then(|m| m.as_u64())
        .ok_or("an interface without an MTU")?;
    Ok((name, mtu.saturating_sub(u64::from(MTU_OVERHEAD))))
}

/// The MTU of pods' interfaces on the overlay (↔ flannel's FLANNEL_MTU in
/// subnet.env): the VXLAN device's, given `ip -j -4 addr show`.
pub fn pod_mtu(addrs: &str, local: Ipv4Addr) -> Result<u32, String> {
    let addrs = json_array(addrs)?;
    let (_, mtu) = underlying(&addrs, local)?;
    u32::try_from(mtu).map_err(|e| e.to_string())
}

/// [`pod_mtu`] on this host.
pub async fn host_pod_mtu(local: Ipv4Addr) -> Result<u32, RouteError> {
    let addrs = command("ip", &["-j", "-4", "addr", "show"], None).await?;
    pod_mtu(&addrs, local).map_err(|message| RouteError::Parse {
        cmd: "ip -j -4 addr show".into(),
        message,
    })
}

/// The `ip` commands (arguments) that bring the device to `spec`, given
/// `ip -j -d link show` and `ip -j -4 addr show`.
pub fn device_plan(
    spec: &DeviceSpec,
    links: &str,
    addrs: &str,
) -> Result<Vec<Vec<String>>, String> {
    let (links, addrs) = (json_array(links)?, json_array(addrs)?);
    let (parent, mtu) = underlying(&addrs, spec.local)?;
    let mtu = mtu.to_string();
    let local = spec.local.to_string();
    let name = spec.name.as_str();
    let existing = links.iter().find(|l| str_field(l, "ifname") == Some(name));
    let info = existing.and_then(|l| l.get("linkinfo"));
    let data = info.and_then(|i| i.get("info_data"));
    let field = |k: &str| data.and_then(|d| d.get(k));
    let matches = info.and_then(|i| str_field(i, "info_kind")) == Some("vxlan")
        && field("id").and_then(|v| v.as_u64()) == Some(u64::from(spec.vni))
        && field("port").and_then(|v| v.as_u64()) == Some(u64::from(spec.port))
        && field("local").and_then(|v| v.as_str()) == Some(&local)
        && field("link").and_then(|v| v.as_str()) == Some(parent)
        && field("learning").and_then(|v| v.as_bool()) == Some(false);
    let cmd = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut plan = vec![];
    let fresh = !(existing.is_some() && matches);
    if existing.is_some() && !matches {
        plan.push(cmd(&["link", "delete", name]));
    }
    if fresh {
        let (vni, port) = (spec.vni.to_string(), spec.port.to_string());
        plan.push(cmd(&[
            "link",
            "add",
            name,
            "type",
            "vxlan",
            "id",
            &vni,
            "dev",
            parent,
            "local",
            &local,
            "dstport",
            &port,
            "nolearning",
        ]));
    }
    let link = existing.filter(|_| !fresh);
    if link.and_then(|l| l.get("mtu")).and_then(|m| m.as_u64()) != mtu.parse().ok() {
        plan.push(cmd(&["link", "set", name, "mtu", &mtu]));
    }
    let address = format!("{}/32", spec.address);
    let current: Vec<String> = if fresh {
        vec![]
    } else {
        addrs
            .iter()
            .filter(|l| str_field(l, "ifname") == Some(name))
            .filter_map(|l| l.get("addr_info")?.as_array())
            .flatten()
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    str_field(a, "local")?,
                    a.get("prefixlen")?
                ))
            })
            .collect()
    };
    if current != [address.clone()] {
        if !current.is_empty() {
            plan.push(cmd(&["addr", "flush", "dev", name]));
        }
        plan.push(cmd(&["addr", "add", &address, "dev", name]));
    }
    let up = link
        .and_then(|l| l.get("flags"))
        .and_then(|f| f.as_array())
        .is_some_and(|f| f.iter().any(|f| f.as_str() == Some("UP")));
    if !up {
        plan.push(cmd(&["link", "set", name, "up"]));
    }
    Ok(plan)
}

/// The MAC of the one link in `ip -j link show dev <name>`.
pub fn parse_link_mac(json: &str) -> Result<String, String> {
    json_array(json)?
        .first()
        .and_then(|l| str_field(l, "address"))
        .and_then(normalize_mac)
        .ok_or_else(|| "no MAC address".to_string())
}

/// `ip -j -4 neigh show dev <dev>`: address → MAC.
pub fn parse_neighbours(json: &str) -> Result<BTreeMap<Ipv4Addr, String>, String> {
    Ok(json_array(json)?
        .iter()
        .filter_map(|n| {
            let ip = str_field(n, "dst")?.parse().ok()?;
            Some((ip, normalize_mac(str_field(n, "lladdr")?)?))
        })
        .collect())
}

/// `bridge -j fdb show dev <dev>`: MAC → remote IPv4 address (entries
/// without one, like the all-zeros default, are not skiff's).
pub fn parse_fdb(json: &str) -> Result<BTreeMap<String, Ipv4Addr>, String> {
    Ok(json_array(json)?
        .iter()
        .filter_map(|e| {
            let mac = normalize_mac(str_field(e, "mac")?)?;
            let dst = str_field(e, "dst")?.parse().ok()?;
            (mac != "00:00:00:00:00:00").then_some((mac, dst))
        })
        .collect())
}

/// The real device through `ip link` / `ip addr`.
pub struct IpVxlan;

#[async_trait::async_trait]
impl VxlanDevice for IpVxlan {
    async fn ensure(&self, spec: &DeviceSpec) -> Result<String, RouteError> {
        let links = command("ip", &["-j", "-d", "link", "show"], None).await?;
        let addrs = command("ip", &["-j", "-4", "addr", "show"], None).await?;
        let plan = device_plan(spec, &links, &addrs).map_err(parse_err("ip -j link/addr show"))?;
        for args in &plan {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            command("ip", &args, None).await?;
            tracing::info!(command = %format!("ip {}", args.join(" ")), "VXLAN device changed");
        }
        let out = command("ip", &["-j", "link", "show", "dev", &spec.name], None).await?;
        parse_link_mac(&out).map_err(parse_err("ip -j link show"))
    }
}

/// The device's permanent neighbour entries through `ip neigh`.
pub struct IpNeigh {
    pub dev: String,
}

#[async_trait::async_trait]
impl Entries<Ipv4Addr, String> for IpNeigh {
    async fn list(&self) -> Result<BTreeMap<Ipv4Addr, String>, RouteError> {
        let args = [
            "-j",
            "-4",
            "neigh",
            "show",
            "dev",
            &self.dev,
            "nud",
            "permanent",
        ];
        let out = command("ip", &args, None).await?;
        parse_neighbours(&out).map_err(parse_err("ip -j neigh show"))
    }
    async fn set(&self, ip: &Ipv4Addr, mac: &String) -> Result<(), RouteError> {
        let ip = ip.to_string();
        let args = [
            "neigh",
            "replace",
            &ip,
            "lladdr",
            mac,
            "dev",
            &self.dev,
            "nud",
            "permanent",
        ];
        command("ip", &args, None).await.map(drop)
    }
    async fn delete(&self, ip: &Ipv4Addr) -> Result<(), RouteError> {
        let ip = ip.to_string();
        command("ip", &["neigh", "del", &ip, "dev", &self.dev], None)
            .await
            .map(drop)
    }
}

/// The device's forwarding entries through `bridge fdb`.
pub struct BridgeFdb {
    pub dev: String,
}

#[async_trait::async_trait]
impl Entries<String, Ipv4Addr> for BridgeFdb {
    async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError> {
        let out = command("bridge", &["-j", "fdb", "show", "dev", &self.dev], None).await?;
        parse_fdb(&out).map_err(parse_err("bridge -j fdb show"))
    }
    async fn set(&self, mac: &String, dst: &Ipv4Addr) -> Result<(), RouteError> {
        let dst = dst.to_string();
        let args = [
            "fdb",
            "replace",
            mac,
            "dev",
            &self.dev,
            "dst",
            &dst,
            "self",
            "permanent",
        ];
        command("bridge", &args, None).await.map(drop)
    }
    async fn delete(&self, mac: &String) -> Result<(), RouteError> {
        command(
            "bridge",
            &["fdb", "del", mac, "dev", &self.dev, "self"],
            None,
        )
        .await
        .map(drop)
    }
}

/// skiff's routes (`proto 67`) through `ip route`, added on the device
/// with `onlink` (the VTEP addresses are not on any link).
pub struct OnlinkRoutes {
    pub dev: String,
}

#[async_trait::async_trait]
impl RouteTable for OnlinkRoutes {
    async fn replace(&self, cidr: &str, via: Ipv4Addr) -> Result<(), RouteError> {
        let (via, proto) = (via.to_string(), routes::ROUTE_PROTO.to_string());
        let args = [
            "route", "replace", cidr, "via", &via, "dev", &self.dev, "onlink", "proto", &proto,
        ];
        command("ip", &args, None).await.map(drop)
    }
    async fn delete(&self, cidr: &str) -> Result<(), RouteError> {
        IpRoute.delete(cidr).await
    }
    async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError> {
        IpRoute.list().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;
    use std::sync::Mutex;

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A node with a podCIDR and an InternalIP, annotated as a vxlan node
    /// with `mac` when given.
    fn node(name: &str, cidr: &str, ip: &str, mac: Option<&str>) -> Node {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        });
        if let Some(mac) = mac {
            v["metadata"]["annotations"] = json!(annotations(mac, ip4(ip)));
        }
        serde_json::from_value(v).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            node_name: "a".into(),
            node_ip: IpAddr::from([192, 0, 2, 2]),
            local_pod_cidr: "10.42.0.0/24".into(),
        }
    }

    fn node_set(nodes: Vec<Node>) -> NodeSet {
        let mut s = NodeSet::default();
        s.apply(Event::Init);
        for n in nodes {
            s.apply(Event::InitApply(n));
        }
        s.apply(Event::InitDone);
        s
    }

    struct FakeEntries<K, V> {
        entries: Mutex<BTreeMap<K, V>>,
        calls: Mutex<Vec<String>>,
    }

    impl<K, V> Default for FakeEntries<K, V> {
        fn default() -> Self {
            FakeEntries {
                entries: Mutex::new(BTreeMap::new()),
                calls: Mutex::default(),
            }
        }
    }

    #[async_trait::async_trait]
    impl<K, V> Entries<K, V> for FakeEntries<K, V>
    where
        K: Ord + Clone + std::fmt::Display + Send + Sync,
        V: Clone + std::fmt::Display + Send + Sync,
    {
        async fn list(&self) -> Result<BTreeMap<K, V>, RouteError> {
            Ok(self.entries.lock().unwrap().clone())
        }
        async fn set(&self, key: &K, value: &V) -> Result<(), RouteError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("set {key} {value}"));
            self.entries
                .lock()
                .unwrap()
                .insert(key.clone(), value.clone());
            Ok(())
        }
        async fn delete(&self, key: &K) -> Result<(), RouteError> {
            self.calls.lock().unwrap().push(format!("delete {key}"));
            self.entries.lock().unwrap().remove(key);
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl RouteTable for FakeEntries<String, Ipv4Addr> {
        async fn replace(&self, cidr: &str, via: Ipv4Addr) -> Result<(), RouteError> {
            Entries::set(self, &cidr.to_string(), &via).await
        }
        async fn delete(&self, cidr: &str) -> Result<(), RouteError> {
            Entries::delete(self, &cidr.to_string()).await
        }
        async fn list(&self) -> Result<BTreeMap<String, Ipv4Addr>, RouteError> {
            Entries::list(self).await
        }
    }

    struct FakeDevice {
        mac: Mutex<String>,
        specs: Mutex<Vec<DeviceSpec>>,
        fail: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl VxlanDevice for FakeDevice {
        async fn ensure(&self, spec: &DeviceSpec) -> Result<String, RouteError> {
            self.specs.lock().unwrap().push(spec.clone());
            if *self.fail.lock().unwrap() {
                return Err(RouteError::Failed {
                    cmd: "ip link add".into(),
                    stderr: "Unknown device type.".into(),
                });
            }
            Ok(self.mac.lock().unwrap().clone())
        }
    }

    #[derive(Default)]
    struct FakeAnnotator {
        patches: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    }

    #[async_trait::async_trait]
    impl NodeAnnotator for FakeAnnotator {
        async fn annotate(
            &self,
            node: &str,
            annotations: &BTreeMap<String, String>,
        ) -> Result<(), RouteError> {
            self.patches
                .lock()
                .unwrap()
                .push((node.into(), annotations.clone()));
            Ok(())
        }
    }

    struct Fakes {
        device: Arc<FakeDevice>,
        neighbours: Arc<FakeEntries<Ipv4Addr, String>>,
        fdb: Arc<FakeEntries<String, Ipv4Addr>>,
        routes: Arc<FakeEntries<String, Ipv4Addr>>,
        annotator: Arc<FakeAnnotator>,
        backend: Vxlan,
    }

    fn fakes() -> Fakes {
        let device = Arc::new(FakeDevice {
            mac: Mutex::new("0a:00:00:00:00:0a".into()),
            specs: Mutex::default(),
            fail: Mutex::new(false),
        });
        let neighbours = Arc::new(FakeEntries::default());
        let fdb = Arc::new(FakeEntries::default());
        let routes = Arc::new(FakeEntries::default());
        let annotator = Arc::new(FakeAnnotator::default());
        let backend = Vxlan {
            device: device.clone(),
            neighbours: neighbours.clone(),
            fdb: fdb.clone(),
            routes: routes.clone(),
            annotator: annotator.clone(),
        };
        Fakes {
            device,
            neighbours,
            fdb,
            routes,
            annotator,
            backend,
        }
    }

    #[test]
    fn annotations_are_flannels() {
        let a = annotations("0a:00:00:00:00:0a", ip4("192.0.2.2"));
        assert_eq!(
            a[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}"#
        );
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(a[PUBLIC_IP], "192.0.2.2");
        assert_eq!(
            normalize_mac(" 0A:0b:00:00:00:0C").as_deref(),
            Some("0a:0b:00:00:00:0c")
        );
        assert_eq!(normalize_mac("0a:0b:00:00:00"), None);
        assert_eq!(normalize_mac("0a:0b:00:00:00:zz"), None);
    }

    #[test]
    fn desired_state_from_the_nodes() {
        let mut unannotated = node("c", "10.42.2.0/24", "192.0.2.4", None);
        let mut hostgw = node("d", "10.42.3.0/24", "192.0.2.5", Some("0a:00:00:00:00:0d"));
        hostgw
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(BACKEND_TYPE.into(), "host-gw".into());
        let mut bad_mac = node("e", "10.42.4.0/24", "192.0.2.6", Some("0a:00:00:00:00:0e"));
        bad_mac
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(BACKEND_DATA.into(), r#"{"VNI":1,"VtepMAC":"nope"}"#.into());
        // The public IP comes from the annotation, not the InternalIP.
        let mut public = node("f", "10.42.5.0/24", "192.0.2.7", Some("0a:00:00:00:00:0f"));
        public
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PUBLIC_IP.into(), "198.51.100.7".into());
        unannotated.metadata.annotations = None;
        let nodes = node_set(vec![
            node("a", "10.42.7.0/24", "192.0.2.2", Some("0a:00:00:00:00:0a")),
            node("b", "10.42.1.0/24", "192.0.2.3", Some("0A:00:00:00:00:0B")),
            unannotated,
            hostgw,
            bad_mac,
            public,
            // Our own CIDR claimed by another node.
            node("g", "10.42.7.0/24", "192.0.2.8", Some("0a:00:00:00:00:10")),
        ]);
        let d = desired(&nodes, &settings());
        assert_eq!(
            d.device,
            Some(DeviceSpec {
                name: DEVICE.into(),
                vni: 1,
                port: 8472,
                local: ip4("192.0.2.2"),
                // The Node's podCIDR, not the default.
                address: ip4("10.42.7.0"),
            })
        );
        assert_eq!(d.node_name, "a");
        assert_eq!(
            d.published,
            annotations("0a:00:00:00:00:0a", ip4("192.0.2.2"))
        );
        assert_eq!(
            d.peers,
            BTreeMap::from([
                (
                    "10.42.1.0/24".to_string(),
                    Peer {
                        vtep: ip4("10.42.1.0"),
                        mac: "0a:00:00:00:00:0b".into(),
                        public_ip: ip4("192.0.2.3"),
                    }
                ),
                (
                    "10.42.5.0/24".to_string(),
                    Peer {
                        vtep: ip4("10.42.5.0"),
                        mac: "0a:00:00:00:00:0f".into(),
                        public_ip: ip4("198.51.100.7"),
                    }
                ),
            ])
        );
        // Before the Node is in (or without a podCIDR): the default subnet.
        let d = desired(&node_set(vec![]), &settings());
        assert_eq!(d.device.unwrap().address, ip4("10.42.0.0"));
        assert!(d.published.is_empty());
        let mut v6 = settings();
        v6.node_ip = "fd00::2".parse().unwrap();
        assert_eq!(desired(&node_set(vec![]), &v6).device, None);
    }

    #[tokio::test]
    async fn apply_publishes_and_programs_the_peers() {
        let f = fakes();
        let mut nodes = node_set(vec![
            node("a", "10.42.0.0/24", "192.0.2.2", None),
            node("b", "10.42.1.0/24", "192.0.2.3", Some("0a:00:00:00:00:0b")),
            node("c", "10.42.2.0/24", "192.0.2.4", Some("0a:00:00:00:00:0c")),
        ]);
        f.backend.apply(&desired(&nodes, &settings())).await;
        assert_eq!(
            *f.annotator.patches.lock().unwrap(),
            [(
                "a".to_string(),
                annotations("0a:00:00:00:00:0a", ip4("192.0.2.2"))
            )]
        );
        assert_eq!(
            *f.neighbours.entries.lock().unwrap(),
            BTreeMap::from([
                (ip4("10.42.1.0"), "0a:00:00:00:00:0b".to_string()),
                (ip4("10.42.2.0"), "0a:00:00:00:00:0c".to_string()),
            ])
        );
        assert_eq!(
            *f.fdb.entries.lock().unwrap(),
            BTreeMap::from([
                ("0a:00:00:00:00:0b".to_string(), ip4("192.0.2.3")),
                ("0a:00:00:00:00:0c".to_string(), ip4("192.0.2.4")),
            ])
        );
        assert_eq!(
            *f.routes.entries.lock().unwrap(),
            BTreeMap::from([
                ("10.42.1.0/24".to_string(), ip4("10.42.1.0")),
                ("10.42.2.0/24".to_string(), ip4("10.42.2.0")),
            ])
        );

        // Once the Node carries the annotations they are not written again.
        nodes.apply(Event::Apply(node(
            "a",
            "10.42.0.0/24",
            "192.0.2.2",
            Some("0a:00:00:00:00:0a"),
        )));
        f.backend.apply(&desired(&nodes, &settings())).await;
        assert_eq!(f.annotator.patches.lock().unwrap().len(), 1);

        // c's VTEP changes (a new device), b goes: b's entries go, c's are replaced.
        f.neighbours.calls.lock().unwrap().clear();
        f.fdb.calls.lock().unwrap().clear();
        f.routes.calls.lock().unwrap().clear();
        nodes.apply(Event::Delete(node("b", "10.42.1.0/24", "192.0.2.3", None)));
        nodes.apply(Event::Apply(node(
            "c",
            "10.42.2.0/24",
            "192.0.2.4",
            Some("0a:00:00:00:00:cc"),
        )));
        f.backend.apply(&desired(&nodes, &settings())).await;
        assert_eq!(
            *f.neighbours.calls.lock().unwrap(),
            ["set 10.42.2.0 0a:00:00:00:00:cc", "delete 10.42.1.0"]
        );
        assert_eq!(
            *f.fdb.calls.lock().unwrap(),
            [
                "set 0a:00:00:00:00:cc 192.0.2.4",
                "delete 0a:00:00:00:00:0b",
                "delete 0a:00:00:00:00:0c"
            ]
        );
        assert_eq!(*f.routes.calls.lock().unwrap(), ["delete 10.42.1.0/24"]);

        // A recreated device (a new MAC) is published again.
        *f.device.mac.lock().unwrap() = "0a:00:00:00:00:aa".into();
        f.backend.apply(&desired(&nodes, &settings())).await;
        let patches = f.annotator.patches.lock().unwrap().clone();
        assert_eq!(patches.len(), 2);
        assert_eq!(
            patches[1].1[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"0a:00:00:00:00:aa"}"#
        );
    }

    #[tokio::test]
    async fn a_device_that_cannot_be_made_programs_nothing() {
        let f = fakes();
        *f.device.fail.lock().unwrap() = true;
        let nodes = node_set(vec![
            node("a", "10.42.0.0/24", "192.0.2.2", None),
            node("b", "10.42.1.0/24", "192.0.2.3", Some("0a:00:00:00:00:0b")),
        ]);
        f.backend.apply(&desired(&nodes, &settings())).await;
        assert!(f.annotator.patches.lock().unwrap().is_empty());
        assert!(f.routes.entries.lock().unwrap().is_empty());
        assert!(f.neighbours.entries.lock().unwrap().is_empty());
    }

    #[derive(Default)]
    struct FakeHost;

    #[async_trait::async_trait]
    impl HostNet for FakeHost {
        async fn enable_forwarding(&self) -> Result<(), RouteError> {
            Ok(())
        }
        async fn masquerade(
            &self,
            _pod_cidrs: &std::collections::BTreeSet<String>,
        ) -> Result<(), RouteError> {
            Ok(())
        }
        fn remove_masquerade(&self) {}
    }

    #[tokio::test]
    async fn the_sync_loop_applies_only_changes_and_repairs_at_resync() {
        let f = fakes();
        let nodes = node_set(vec![
            node("a", "10.42.0.0/24", "192.0.2.2", Some("0a:00:00:00:00:0a")),
            node("b", "10.42.1.0/24", "192.0.2.3", Some("0a:00:00:00:00:0b")),
        ]);
        let mut applied = routes::Applied::default();
        let s = settings();
        routes::sync_backend(&nodes, &s, &f.backend, &FakeHost, &mut applied, false).await;
        routes::sync_backend(&nodes, &s, &f.backend, &FakeHost, &mut applied, false).await;
        assert_eq!(f.device.specs.lock().unwrap().len(), 1);
        // Someone flushed the neighbours: the resync puts them back.
        f.neighbours.entries.lock().unwrap().clear();
        routes::sync_backend(&nodes, &s, &f.backend, &FakeHost, &mut applied, true).await;
        assert_eq!(f.device.specs.lock().unwrap().len(), 2);
        assert_eq!(f.neighbours.entries.lock().unwrap().len(), 1);
        assert!(f.annotator.patches.lock().unwrap().is_empty());
    }

    fn spec() -> DeviceSpec {
        DeviceSpec {
            name: DEVICE.into(),
            vni: 1,
            port: 8472,
            local: ip4("172.30.9.6"),
            address: ip4("10.42.1.0"),
        }
    }

    const ADDRS: &str = r#"[{"ifindex":1,"ifname":"lo","mtu":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
        {"ifindex":3,"ifname":"eth0","mtu":1500,"addr_info":[{"family":"inet","local":"172.30.9.6","prefixlen":30}]}]"#;

    fn words(plan: &[Vec<String>]) -> Vec<String> {
        plan.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn device_plan_creates_a_missing_device() {
        let plan = device_plan(&spec(), r#"[{"ifname":"eth0"}]"#, ADDRS).unwrap();
        assert_eq!(
            words(&plan),
            [
                "link add skiff.vxlan type vxlan id 1 dev eth0 local 172.30.9.6 dstport 8472 nolearning",
                "link set skiff.vxlan mtu 1450",
                "addr add 10.42.1.0/32 dev skiff.vxlan",
                "link set skiff.vxlan up"
            ]
        );
        assert!(
            device_plan(
                &spec(),
                "[]",
                r#"[{"ifname":"lo","mtu":65536,"addr_info":[]}]"#
            )
            .unwrap_err()
            .contains("172.30.9.6")
        );
    }

    fn link(data: serde_json::Value, mtu: u32, up: bool) -> String {
        let flags = if up { json!(["UP"]) } else { json!([]) };
        json!([{"ifname": "skiff.vxlan", "mtu": mtu, "flags": flags, "address": "0a:00:00:00:00:0a",
            "linkinfo": {"info_kind": "vxlan", "info_data": data}}])
        .to_string()
    }

    fn good_data() -> serde_json::Value {
        json!({"id": 1, "local": "172.30.9.6", "link": "eth0", "port": 8472, "learning": false})
    }

    fn addrs_with(vxlan: &str) -> String {
        let mut v: Vec<serde_json::Value> = serde_json::from_str(ADDRS).unwrap();
        v.push(serde_json::from_str(vxlan).unwrap());
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn pods_get_the_mtu_of_the_underlying_interface_less_the_encapsulation() {
        assert_eq!(pod_mtu(ADDRS, Ipv4Addr::new(172, 30, 9, 6)), Ok(1450));
        assert!(pod_mtu(ADDRS, Ipv4Addr::new(10, 9, 9, 9)).is_err());
    }

    #[test]
    fn device_plan_keeps_a_good_device_and_fixes_the_rest() {
        let ok = addrs_with(
            r#"{"ifname":"skiff.vxlan","mtu":1450,"addr_info":[{"local":"10.42.1.0","prefixlen":32}]}"#,
        );
        let plan = device_plan(&spec(), &link(good_data(), 1450, true), &ok).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        // Down, a wrong MTU and another address (a changed podCIDR).
        let other = addrs_with(
            r#"{"ifname":"skiff.vxlan","mtu":1400,"addr_info":[{"local":"10.42.9.0","prefixlen":32}]}"#,
        );
        let plan = device_plan(&spec(), &link(good_data(), 1400, false), &other).unwrap();
        assert_eq!(
            words(&plan),
            [
                "link set skiff.vxlan mtu 1450",
                "addr flush dev skiff.vxlan",
                "addr add 10.42.1.0/32 dev skiff.vxlan",
                "link set skiff.vxlan up"
            ]
        );
        // Another VNI, port, local address or learning: made anew.
        for (k, v) in [
            ("id", json!(2)),
            ("port", json!(4789)),
            ("local", json!("172.30.9.9")),
            ("learning", json!(true)),
        ] {
            let mut data = good_data();
            data[k] = v;
            let plan = device_plan(&spec(), &link(data, 1450, true), &ok).unwrap();
            assert_eq!(words(&plan)[0], "link delete skiff.vxlan", "{k}");
            assert!(words(&plan)[1].starts_with("link add skiff.vxlan type vxlan"));
            assert_eq!(plan.len(), 5, "{k}: {plan:?}");
        }
    }

    #[test]
    fn parses_ip_and_bridge_json() {
        assert_eq!(
            parse_link_mac(&link(good_data(), 1450, true)).unwrap(),
            "0a:00:00:00:00:0a"
        );
        assert!(parse_link_mac("[]").is_err());
        let neigh = r#"[{"dst":"10.42.1.0","lladdr":"AA:bb:cc:dd:ee:01","state":["PERMANENT"]},{"dst":"10.42.2.0","state":["FAILED"]}]"#;
        assert_eq!(
            parse_neighbours(neigh).unwrap(),
            BTreeMap::from([(ip4("10.42.1.0"), "aa:bb:cc:dd:ee:01".to_string())])
        );
        let fdb = r#"[{"mac":"aa:bb:cc:dd:ee:01","dst":"172.30.9.10","flags":["self"],"state":"permanent"},
            {"mac":"00:00:00:00:00:00","dst":"172.30.9.1","flags":["self"],"state":"permanent"},
            {"mac":"33:33:00:00:00:01","flags":["self"],"state":"permanent"}]"#;
        assert_eq!(
            parse_fdb(fdb).unwrap(),
            BTreeMap::from([("aa:bb:cc:dd:ee:01".to_string(), ip4("172.30.9.10"))])
        );
        assert!(parse_fdb("").unwrap().is_empty());
        assert!(parse_neighbours("{").is_err());
    }
}
