//! The desired model (↔ kube-proxy's ServicePortMap and EndpointsMap): what
//! the proxy keeps of Services and EndpointSlices, and the choice of
//! endpoints for a service port.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The session affinity timeout when the Service does not set one (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// An address family; the proxy programs one nftables table per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    /// The nftables table family (`ip`, `ip6`).
    pub fn table_family(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    /// The payload keyword in matches (`ip saddr`, `ip6 saddr`).
    pub fn keyword(self) -> &'static str {
        self.table_family()
    }
    /// The nftables address type.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    /// The loopback range NodePorts are not answered on (no route_localnet).
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1",
        }
    }
}

/// An address range such as `10.42.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/prefix)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: invalid address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{s:?}: invalid prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: prefix length over {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// The nftables name (`tcp`, `udp`, `sctp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name ("" for a single unnamed port): the key endpoints match on.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// What the proxy keeps of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// status.loadBalancer.ingress[].ip
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// sessionAffinity ClientIP's timeout in seconds; None without affinity.
    pub affinity_timeout: Option<u32>,
}

impl ServiceInfo {
    /// The proxy's view of a Service; None for what it does not proxy
    /// (ExternalName and headless services, as kube-proxy).
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        if cluster_ips.is_empty()
            && let Some(ip) = spec.cluster_ip.as_deref().and_then(|s| s.parse().ok())
        {
            cluster_ips.push(ip);
        }
        if cluster_ips.is_empty() {
            return None; // headless ("None") or not yet allocated
        }
        let node_ports = matches!(
            spec.type_.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                    node_port: if node_ports {
                        p.node_port
                            .and_then(|n| u16::try_from(n).ok())
                            .filter(|n| *n != 0)
                    } else {
                        None
                    },
                })
            })
            .collect();
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        let load_balancer_ips = if spec.type_.as_deref() == Some("LoadBalancer") {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
            u32::try_from(t.max(1)).unwrap_or(DEFAULT_AFFINITY_TIMEOUT as u32)
        });
        Some(ServiceInfo {
            cluster_ips,
            external_ips,
            load_balancer_ips,
            ports,
            affinity_timeout,
        })
    }

    /// The ClusterIPs of `family`, and the externalIPs and LoadBalancer
    /// ingress IPs of `family` (sorted, deduplicated).
    pub fn addresses(&self, family: Family) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let in_family = |ips: &[IpAddr]| {
            ips.iter()
                .copied()
                .filter(|ip| Family::of(ip) == family)
                .collect::<Vec<_>>()
        };
        let mut external = in_family(&self.external_ips);
        external.extend(in_family(&self.load_balancer_ips));
        external.sort();
        external.dedup();
        (in_family(&self.cluster_ips), external)
    }
}

/// One endpoint of a slice, with its conditions resolved as the API says
/// (ready unset means ready; serving unset means ready; terminating unset means not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A port of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// What the proxy keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceInfo {
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

impl SliceInfo {
    /// The service the slice belongs to and the slice's view; None for slices
    /// without the service-name label or of FQDN addresses.
    pub fn from_slice(slice: &EndpointSlice) -> Option<(ServiceName, SliceInfo)> {
        let namespace = slice.metadata.namespace.as_deref()?;
        let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
        if slice.address_type == "FQDN" {
            return None;
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip: IpAddr = e.addresses.first()?.parse().ok()?;
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                Some(Endpoint {
                    ip,
                    ready,
                    serving,
                    terminating,
                })
            })
            .collect();
        Some((
            ServiceName::new(namespace, service),
            SliceInfo { ports, endpoints },
        ))
    }
}

/// The endpoints traffic to `port` goes to in `family` (↔ kube-proxy's
/// CategorizeEndpoints for cluster traffic policy): the ready ones, or, when
/// none is ready, the serving and terminating ones. Sorted and deduplicated.
pub fn endpoints_for<'a>(
    port: &ServicePort,
    family: Family,
    slices: impl IntoIterator<Item = &'a SliceInfo>,
) -> Vec<SocketAddr> {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for slice in slices {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in slice
            .endpoints
            .iter()
            .filter(|e| Family::of(&e.ip) == family)
        {
            let addr = SocketAddr::new(ep.ip, sp.port);
            if ep.ready {
                ready.insert(addr);
            } else if ep.serving && ep.terminating {
                fallback.insert(addr);
            }
        }
    }
    let chosen = if ready.is_empty() { fallback } else { ready };
    chosen.into_iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> SliceInfo {
        let s: EndpointSlice = serde_json::from_value(v).unwrap();
        SliceInfo::from_slice(&s).unwrap().1
    }

    #[test]
    fn service_conversion() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"],
                     "externalIPs": ["192.0.2.9"], "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080, "targetPort": 8080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
        }))
        .unwrap();
        let info = ServiceInfo::from_service(&svc).unwrap();
        assert_eq!(
            info.cluster_ips,
            vec!["10.43.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            info.external_ips,
            vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            info.load_balancer_ips,
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            info.ports,
            vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080)
            }]
        );
        assert_eq!(info.affinity_timeout, Some(10800));

        let headless: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}}))
                .unwrap();
        assert!(ServiceInfo::from_service(&headless).is_none());
        let ext: Service = serde_json::from_value(
            json!({"spec": {"type": "ExternalName", "externalName": "x.example"}}),
        )
        .unwrap();
        assert!(ServiceInfo::from_service(&ext).is_none());
        // A ClusterIP service ignores nodePort fields.
        let cip: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "10.43.0.6", "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30000}]}})).unwrap();
        let info = ServiceInfo::from_service(&cip).unwrap();
        assert_eq!(info.ports[0].node_port, None);
        assert_eq!(info.ports[0].protocol, Protocol::Udp);
        assert_eq!(info.affinity_timeout, None);
    }

    #[test]
    fn ready_endpoints_then_terminating_fallback() {
        let port = ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        };
        let s = slice(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.4"], "conditions": {"ready": false, "serving": false}},
                {"addresses": ["10.42.0.5"]}
            ]
        }));
        let got = endpoints_for(&port, Family::V4, [&s]);
        assert_eq!(
            got,
            vec![
                "10.42.0.2:8080".parse().unwrap(),
                "10.42.0.5:8080".parse().unwrap()
            ]
        );
        assert!(endpoints_for(&port, Family::V6, [&s]).is_empty());

        let terminating = slice(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.4"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]
        }));
        assert_eq!(
            endpoints_for(&port, Family::V4, [&terminating]),
            vec!["10.42.0.3:8080".parse().unwrap()]
        );
        // A port name the slice does not have gets nothing.
        let other = ServicePort {
            name: "metrics".into(),
            ..port
        };
        assert!(endpoints_for(&other, Family::V4, [&s]).is_empty());
    }

    #[test]
    fn cidr_parse() {
        let c: Cidr = "10.42.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert_eq!(c.family(), Family::V4);
        assert!("10.42.0.0".parse::<Cidr>().is_err());
        assert!("10.42.0.0/33".parse::<Cidr>().is_err());
        assert_eq!("fd00::/64".parse::<Cidr>().unwrap().family(), Family::V6);
    }
}
