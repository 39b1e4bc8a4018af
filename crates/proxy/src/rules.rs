//! Rule generation (↔ kube-proxy's pkg/proxy/nftables/proxier.go, KEP-3866).
//!
//! One table per address family (`ip <table>`, `ip6 <table>`) holding:
//! - verdict maps `service-ips` (daddr . l4proto . dport → goto a service or
//!   external chain) and `service-nodeports` (l4proto . dport → goto an
//!   external chain, matched on `fib daddr type local`, loopback excluded so
//!   `route_localnet` is never needed);
//! - `no-endpoint-services` / `no-endpoint-nodeports` maps sending new
//!   connections to services without endpoints to `reject-chain` from the
//!   filter hooks (ICMP port unreachable, TCP reset);
//! - per service port a `service-…` chain (masquerade mark for traffic from
//!   outside the pod CIDR, session affinity lookups, then the random choice
//!   of an endpoint, see [`Selection`]), an `external-…` chain for NodePort/externalIPs/LoadBalancer IPs
//!   (mark for masquerade, then the service chain), and per endpoint an
//!   `endpoint-…` chain (hairpin mark, affinity update, `dnat to ip:port`);
//! - base chains: nat prerouting and output (dstnat, priority -100) jumping to
//!   `services`; nat postrouting (srcnat, priority 100) masquerading what
//!   carries the mark; filter input/forward/output (priority -110) rejecting
//!   services without endpoints and filter forward/output after dnat rejecting
//!   ClusterIP ports that are not served and dropping unallocated ClusterIPs.
//!
//! Everything a service owns is a [`ServiceRules`], so a change is a diff of
//! two of them (see `proxier.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::model::{Cidr, Family, ServiceInfo, ServiceName, ServicePort, SliceInfo, endpoints_for};

/// The packet mark bit asking for masquerade (kube-proxy's 0x4000).
pub const MASQ_MARK: &str = "0x4000";

pub const MAP_SERVICE_IPS: &str = "service-ips";
pub const MAP_SERVICE_NODEPORTS: &str = "service-nodeports";
pub const MAP_NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const MAP_NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const SET_CLUSTER_IPS: &str = "cluster-ips";
pub const CHAIN_REJECT: &str = "reject-chain";
pub const CHAIN_MARK_MASQ: &str = "mark-for-masquerade";

/// How many elements go in one `add element` statement.
const ELEMENTS_PER_STATEMENT: usize = 1000;

/// The key of an element: which map or set, and the key text.
pub type ElementKey = (&'static str, String);

/// Everything one Service owns in one family's table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name → its definition (the session affinity sets).
    pub sets: BTreeMap<String, String>,
    /// (map or set, key) → the verdict (None for a set's element).
    pub elements: BTreeMap<ElementKey, Option<String>>,
}

impl ServiceRules {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }
}

/// How a service chain picks an endpoint at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// One rule per endpoint, `numgen random mod (N-i) == 0 goto endpoint-i`,
    /// the last a plain `goto` (each endpoint gets 1/N, as iptables mode's
    /// `statistic` cascade). The default: with no anonymous set per service
    /// the kernel's jump-loop checks stay linear; programming 5,000 services
    /// × 10 endpoints takes seconds instead of ~45 s with `Vmap`.
    #[default]
    Cascade,
    /// kube-proxy's `numgen random mod N vmap { 0 : goto endpoint-0, ... }`:
    /// one lookup per packet, but one anonymous verdict map per service,
    /// which the kernel walks on every jump it validates.
    Vmap,
}

/// What rendering needs besides the service.
#[derive(Debug, Clone)]
pub struct RenderCtx {
    pub family: Family,
    /// The pod CIDRs of this family: traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidrs: Vec<Cidr>,
    pub selection: Selection,
}

pub(crate) fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A chain or set name: `<prefix>-<8 base32 chars of a hash of id>-<id made safe>`
/// (↔ kube-proxy's `service-ULMVA6XW-ns1/svc1/tcp/p80`). The hash keeps names
/// unique when the readable part is changed or cut.
pub fn object_name(prefix: &str, id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let h = fnv1a(id);
    let hash: String = (0..8)
        .map(|i| ALPHABET[((h >> (59 - 5 * i)) & 31) as usize] as char)
        .collect();
    let readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/') {
                c
            } else {
                '.'
            }
        })
        .take(200)
        .collect();
    format!("{prefix}-{hash}-{readable}")
}

pub(crate) fn port_id(svc: &ServiceName, port: &ServicePort) -> String {
    let pname = if port.name.is_empty() {
        port.port.to_string()
    } else {
        port.name.clone()
    };
    format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        port.protocol.nft(),
        pname
    )
}

pub(crate) fn dnat_target(ep: &SocketAddr) -> String {
    match ep.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", ep.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", ep.port()),
    }
}

fn reject_verdict() -> Option<String> {
    Some(format!("goto {CHAIN_REJECT}"))
}

/// The rules of one Service in one family, given its EndpointSlices.
pub fn render_service(
    ctx: &RenderCtx,
    name: &ServiceName,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
) -> ServiceRules {
    let mut out = ServiceRules::default();
    let fam = ctx.family;
    let k = fam.keyword();
    let (cluster_ips, external_ips) = svc.addresses(fam);
    if cluster_ips.is_empty() {
        return out; // the service is not of this family (NodePorts follow its families, as kube-proxy)
    }
    let masq_source = match ctx.cluster_cidrs.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        many => Some(format!(
            "{{ {} }}",
            many.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };

    for port in &svc.ports {
        let id = port_id(name, port);
        let proto = port.protocol.nft();
        let endpoints = endpoints_for(port, fam, slices.iter().copied());
        for cip in &cluster_ips {
            out.elements
                .insert((SET_CLUSTER_IPS, cip.to_string()), None);
        }
        if endpoints.is_empty() {
            for ip in cluster_ips.iter().chain(&external_ips) {
                out.elements.insert(
                    (
                        MAP_NO_ENDPOINT_SERVICES,
                        format!("{ip} . {proto} . {}", port.port),
                    ),
                    reject_verdict(),
                );
            }
            if let Some(np) = port.node_port {
                out.elements.insert(
                    (MAP_NO_ENDPOINT_NODEPORTS, format!("{proto} . {np}")),
                    reject_verdict(),
                );
            }
            continue;
        }

        let svc_chain = object_name("service", &id);
        let mut svc_rules = Vec::new();
        if let Some(src) = &masq_source {
            for cip in &cluster_ips {
                svc_rules.push(format!(
                    "{k} daddr {cip} {proto} dport {} {k} saddr != {src} jump {CHAIN_MARK_MASQ}",
                    port.port
                ));
            }
        }
        let mut vmap = Vec::new();
        let mut cascade = Vec::new();
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let ep_id = format!("{id}__{}/{}", ep.ip(), ep.port());
            let ep_chain = object_name("endpoint", &ep_id);
            let mut ep_rules = vec![format!("{k} saddr {} jump {CHAIN_MARK_MASQ}", ep.ip())];
            if let Some(timeout) = svc.affinity_timeout {
                // The timeout is part of the set's name, so changing it makes a new set.
                let set = object_name("affinity", &format!("{ep_id}@{timeout}"));
                out.sets.insert(
                    set.clone(),
                    format!(
                        "{{ type {}; flags dynamic,timeout; timeout {timeout}s; }}",
                        fam.addr_type()
                    ),
                );
                svc_rules.push(format!("{k} saddr @{set} goto {ep_chain}"));
                ep_rules.push(format!("update @{set} {{ {k} saddr }}"));
            }
            ep_rules.push(format!("meta l4proto {proto} dnat to {}", dnat_target(ep)));
            out.chains.insert(ep_chain.clone(), ep_rules);
            vmap.push(format!("{i} : goto {ep_chain}"));
            cascade.push(if i + 1 < n {
                format!("numgen random mod {} == 0 goto {ep_chain}", n - i)
            } else {
                format!("goto {ep_chain}")
            });
        }
        match ctx.selection {
            Selection::Vmap => svc_rules.push(format!(
                "numgen random mod {n} vmap {{ {} }}",
                vmap.join(", ")
            )),
            Selection::Cascade => svc_rules.extend(cascade),
        }
        out.chains.insert(svc_chain.clone(), svc_rules);

        for cip in &cluster_ips {
            out.elements.insert(
                (MAP_SERVICE_IPS, format!("{cip} . {proto} . {}", port.port)),
                Some(format!("goto {svc_chain}")),
            );
        }
        if !external_ips.is_empty() || port.node_port.is_some() {
            let ext_chain = object_name("external", &id);
            out.chains.insert(
                ext_chain.clone(),
                vec![
                    format!("jump {CHAIN_MARK_MASQ}"),
                    format!("goto {svc_chain}"),
                ],
            );
            for ip in &external_ips {
                out.elements.insert(
                    (MAP_SERVICE_IPS, format!("{ip} . {proto} . {}", port.port)),
                    Some(format!("goto {ext_chain}")),
                );
            }
            if let Some(np) = port.node_port {
                out.elements.insert(
                    (MAP_SERVICE_NODEPORTS, format!("{proto} . {np}")),
                    Some(format!("goto {ext_chain}")),
                );
            }
        }
    }
    out
}

/// The `table` prefix of every statement: `ip skiff-proxy`.
pub fn table_ref(family: Family, table: &str) -> String {
    format!("{} {table}", family.table_family())
}

/// Statements creating the table's fixed part (idempotent `add`s, then the
/// fixed chains' rules; the caller flushes first when redefining).
pub fn static_definitions(out: &mut String, family: Family, table: &str) {
    let t = table_ref(family, table);
    let at = family.addr_type();
    let _ = writeln!(out, "add table {t}");
    let _ = writeln!(
        out,
        "add map {t} {MAP_SERVICE_IPS} {{ type {at} . inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(
        out,
        "add map {t} {MAP_SERVICE_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(
        out,
        "add map {t} {MAP_NO_ENDPOINT_SERVICES} {{ type {at} . inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(
        out,
        "add map {t} {MAP_NO_ENDPOINT_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}"
    );
    let _ = writeln!(out, "add set {t} {SET_CLUSTER_IPS} {{ type {at}; }}");
    for (chain, hook) in BASE_CHAINS {
        let _ = writeln!(out, "add chain {t} {chain} {{ {hook}; policy accept; }}");
    }
    for chain in REGULAR_CHAINS {
        let _ = writeln!(out, "add chain {t} {chain}");
    }
}

const BASE_CHAINS: [(&str, &str); 7] = [
    ("nat-prerouting", "type nat hook prerouting priority -100"),
    ("nat-output", "type nat hook output priority -100"),
    ("nat-postrouting", "type nat hook postrouting priority 100"),
    ("filter-input", "type filter hook input priority -110"),
    ("filter-forward", "type filter hook forward priority -110"),
    ("filter-output", "type filter hook output priority -110"),
    (
        "filter-output-post-dnat",
        "type filter hook output priority -90",
    ),
];

const REGULAR_CHAINS: [&str; 7] = [
    "services",
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "cluster-ips-check",
    CHAIN_REJECT,
    CHAIN_MARK_MASQ,
    "masquerading",
];

/// The fixed chains' rules (after `static_definitions` and a flush).
pub fn static_rules(out: &mut String, family: Family, table: &str, service_cidrs: &[Cidr]) {
    let t = table_ref(family, table);
    let k = family.keyword();
    let lo = family.loopback();
    let local = format!("fib daddr type local {k} daddr != {lo}");
    let mut rule = |chain: &str, r: &str| {
        let _ = writeln!(out, "add rule {t} {chain} {r}");
    };
    rule("nat-prerouting", "jump services");
    rule("nat-output", "jump services");
    rule("nat-postrouting", "jump masquerading");
    rule("filter-input", "ct state new jump nodeport-endpoints-check");
    rule("filter-input", "ct state new jump service-endpoints-check");
    rule(
        "filter-forward",
        "ct state new jump service-endpoints-check",
    );
    rule("filter-forward", "ct state new jump cluster-ips-check");
    rule("filter-output", "ct state new jump service-endpoints-check");
    rule(
        "filter-output-post-dnat",
        "ct state new jump cluster-ips-check",
    );
    rule(
        "services",
        &format!("{k} daddr . meta l4proto . th dport vmap @{MAP_SERVICE_IPS}"),
    );
    rule(
        "services",
        &format!("{local} meta l4proto . th dport vmap @{MAP_SERVICE_NODEPORTS}"),
    );
    rule(
        "service-endpoints-check",
        &format!("{k} daddr . meta l4proto . th dport vmap @{MAP_NO_ENDPOINT_SERVICES}"),
    );
    rule(
        "nodeport-endpoints-check",
        &format!("{local} meta l4proto . th dport vmap @{MAP_NO_ENDPOINT_NODEPORTS}"),
    );
    // After dnat: a ClusterIP still as destination is a port the service does not serve.
    rule(
        "cluster-ips-check",
        &format!("{k} daddr @{SET_CLUSTER_IPS} reject"),
    );
    for cidr in service_cidrs.iter().filter(|c| c.family() == family) {
        rule("cluster-ips-check", &format!("{k} daddr {cidr} drop"));
    }
    rule(CHAIN_REJECT, "meta l4proto tcp reject with tcp reset");
    rule(CHAIN_REJECT, "reject");
    rule(
        CHAIN_MARK_MASQ,
        &format!("meta mark set meta mark or {MASQ_MARK}"),
    );
    rule(
        "masquerading",
        &format!("meta mark & {MASQ_MARK} == 0 return"),
    );
    rule(
        "masquerading",
        &format!("meta mark set meta mark xor {MASQ_MARK}"),
    );
    rule("masquerading", "masquerade fully-random");
}

/// `add element` (verb "add") or `delete element` (verb "delete", keys only)
/// statements for `elements`, grouped by map.
pub fn element_statements<'a>(
    out: &mut String,
    verb: &str,
    family: Family,
    table: &str,
    elements: impl IntoIterator<Item = (&'a ElementKey, &'a Option<String>)>,
) {
    let t = table_ref(family, table);
    let mut by_map: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((map, key), value) in elements {
        let text = match (verb, value) {
            ("add", Some(v)) => format!("{key} : {v}"),
            _ => key.clone(),
        };
        by_map.entry(map).or_default().push(text);
    }
    for (map, items) in by_map {
        for chunk in items.chunks(ELEMENTS_PER_STATEMENT) {
            let _ = writeln!(out, "{verb} element {t} {map} {{ {} }}", chunk.join(", "));
        }
    }
}

/// `add chain` + `flush chain` + `add rule`s: (re)defines a chain's contents.
pub fn chain_statements(
    out: &mut String,
    family: Family,
    table: &str,
    chain: &str,
    rules: &[String],
    flush: bool,
) {
    let t = table_ref(family, table);
    let _ = writeln!(out, "add chain {t} {chain}");
    if flush {
        let _ = writeln!(out, "flush chain {t} {chain}");
    }
    for r in rules {
        let _ = writeln!(out, "add rule {t} {chain} {r}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Protocol, SlicePort};

    fn ctx() -> RenderCtx {
        RenderCtx {
            family: Family::V4,
            cluster_cidrs: vec!["10.42.0.0/16".parse().unwrap()],
            selection: Selection::Vmap,
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn web(node_port: Option<u16>) -> ServiceInfo {
        ServiceInfo {
            cluster_ips: vec![ip("10.43.0.5")],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port,
            }],
            ..Default::default()
        }
    }
    fn slice(ips: &[&str]) -> SliceInfo {
        SliceInfo {
            ports: vec![SlicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: ips
                .iter()
                .map(|i| Endpoint {
                    ip: ip(i),
                    ready: true,
                    serving: true,
                    terminating: false,
                })
                .collect(),
        }
    }
    fn name() -> ServiceName {
        ServiceName::new("default", "web")
    }

    #[test]
    fn names_are_safe_and_stable() {
        let n = object_name("endpoint", "ns/svc/tcp/http__fd00::1/80");
        assert!(n.starts_with("endpoint-"));
        assert!(n.ends_with("-ns/svc/tcp/http__fd00..1/80"), "{n}");
        assert_eq!(n, object_name("endpoint", "ns/svc/tcp/http__fd00::1/80"));
        assert_ne!(
            object_name("service", "a/b/tcp/x"),
            object_name("service", "a/b/tcp/y")
        );
        // Names that only differ in unsafe characters still differ by their hash.
        assert_ne!(object_name("x", "a:b"), object_name("x", "a.b"));
    }

    #[test]
    fn cluster_ip_service() {
        let s = slice(&["10.42.0.2", "10.42.1.3"]);
        let r = render_service(&ctx(), &name(), &web(None), &[&s]);
        let svc = object_name("service", "default/web/tcp/http");
        let ep0 = object_name("endpoint", "default/web/tcp/http__10.42.0.2/8080");
        let ep1 = object_name("endpoint", "default/web/tcp/http__10.42.1.3/8080");
        assert_eq!(r.chains.len(), 3, "{:?}", r.chains.keys());
        assert_eq!(
            r.chains[&svc],
            vec![
                "ip daddr 10.43.0.5 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
                    .to_string(),
                format!("numgen random mod 2 vmap {{ 0 : goto {ep0}, 1 : goto {ep1} }}"),
            ]
        );
        assert_eq!(
            r.chains[&ep0],
            vec![
                "ip saddr 10.42.0.2 jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat to 10.42.0.2:8080".into()
            ]
        );
        assert_eq!(
            r.elements[&(MAP_SERVICE_IPS, "10.43.0.5 . tcp . 80".into())],
            Some(format!("goto {svc}"))
        );
        assert!(
            r.elements
                .contains_key(&(SET_CLUSTER_IPS, "10.43.0.5".into()))
        );
        assert_eq!(r.elements.len(), 2);
        assert!(r.sets.is_empty());
        // The other family gets nothing.
        let v6 = RenderCtx {
            family: Family::V6,
            cluster_cidrs: vec![],
            selection: Selection::Vmap,
        };
        assert!(render_service(&v6, &name(), &web(None), &[&s]).is_empty());
    }

    #[test]
    fn cascade_selection() {
        let s = slice(&["10.42.0.2", "10.42.0.3", "10.42.0.4"]);
        let ctx = RenderCtx {
            selection: Selection::Cascade,
            ..ctx()
        };
        let r = render_service(&ctx, &name(), &web(None), &[&s]);
        let svc = object_name("service", "default/web/tcp/http");
        let ep = |ip: &str| object_name("endpoint", &format!("default/web/tcp/http__{ip}/8080"));
        assert_eq!(
            r.chains[&svc][1..],
            [
                format!("numgen random mod 3 == 0 goto {}", ep("10.42.0.2")),
                format!("numgen random mod 2 == 0 goto {}", ep("10.42.0.3")),
                format!("goto {}", ep("10.42.0.4")),
            ]
        );
        let one = slice(&["10.42.0.2"]);
        let r = render_service(&ctx, &name(), &web(None), &[&one]);
        assert_eq!(r.chains[&svc][1..], [format!("goto {}", ep("10.42.0.2"))]);
    }

    #[test]
    fn node_port_external_and_load_balancer() {
        let mut info = web(Some(30080));
        info.external_ips = vec![ip("192.0.2.9")];
        info.load_balancer_ips = vec![ip("192.0.2.1"), ip("192.0.2.9")];
        let s = slice(&["10.42.0.2"]);
        let r = render_service(&ctx(), &name(), &info, &[&s]);
        let svc = object_name("service", "default/web/tcp/http");
        let ext = object_name("external", "default/web/tcp/http");
        assert_eq!(
            r.chains[&ext],
            vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {svc}")
            ]
        );
        assert_eq!(
            r.elements[&(MAP_SERVICE_NODEPORTS, "tcp . 30080".into())],
            Some(format!("goto {ext}"))
        );
        assert_eq!(
            r.elements[&(MAP_SERVICE_IPS, "192.0.2.9 . tcp . 80".into())],
            Some(format!("goto {ext}"))
        );
        assert_eq!(
            r.elements[&(MAP_SERVICE_IPS, "192.0.2.1 . tcp . 80".into())],
            Some(format!("goto {ext}"))
        );
        assert_eq!(
            r.elements[&(MAP_SERVICE_IPS, "10.43.0.5 . tcp . 80".into())],
            Some(format!("goto {svc}"))
        );
        assert_eq!(r.elements.len(), 5);
    }

    #[test]
    fn no_endpoints_rejects() {
        let mut info = web(Some(30080));
        info.external_ips = vec![ip("192.0.2.9")];
        let r = render_service(&ctx(), &name(), &info, &[]);
        assert!(r.chains.is_empty());
        let reject = Some("goto reject-chain".to_string());
        assert_eq!(
            r.elements[&(MAP_NO_ENDPOINT_SERVICES, "10.43.0.5 . tcp . 80".into())],
            reject
        );
        assert_eq!(
            r.elements[&(MAP_NO_ENDPOINT_SERVICES, "192.0.2.9 . tcp . 80".into())],
            reject
        );
        assert_eq!(
            r.elements[&(MAP_NO_ENDPOINT_NODEPORTS, "tcp . 30080".into())],
            reject
        );
        assert!(
            r.elements
                .contains_key(&(SET_CLUSTER_IPS, "10.43.0.5".into()))
        );
        assert_eq!(r.elements.len(), 4);
    }

    #[test]
    fn session_affinity() {
        let mut info = web(None);
        info.affinity_timeout = Some(600);
        let s = slice(&["10.42.0.2", "10.42.0.3"]);
        let r = render_service(&ctx(), &name(), &info, &[&s]);
        let svc = object_name("service", "default/web/tcp/http");
        let ep0 = object_name("endpoint", "default/web/tcp/http__10.42.0.2/8080");
        let set0 = object_name("affinity", "default/web/tcp/http__10.42.0.2/8080@600");
        assert_eq!(r.sets.len(), 2);
        assert_eq!(
            r.sets[&set0],
            "{ type ipv4_addr; flags dynamic,timeout; timeout 600s; }"
        );
        assert_eq!(r.chains[&svc][1], format!("ip saddr @{set0} goto {ep0}"));
        assert!(r.chains[&svc][3].starts_with("numgen random mod 2 vmap"));
        assert_eq!(r.chains[&ep0][1], format!("update @{set0} {{ ip saddr }}"));
        assert_eq!(r.chains[&ep0][2], "meta l4proto tcp dnat to 10.42.0.2:8080");
    }

    #[test]
    fn ipv6_service() {
        let info = ServiceInfo {
            cluster_ips: vec![ip("fd43::5")],
            ports: vec![ServicePort {
                name: "".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
            }],
            ..Default::default()
        };
        let s = SliceInfo {
            ports: vec![SlicePort {
                name: "".into(),
                protocol: Protocol::Udp,
                port: 5353,
            }],
            endpoints: vec![Endpoint {
                ip: ip("fd42::2"),
                ready: true,
                serving: true,
                terminating: false,
            }],
        };
        let ctx = RenderCtx {
            family: Family::V6,
            cluster_cidrs: vec!["fd42::/56".parse().unwrap()],
            selection: Selection::Cascade,
        };
        let r = render_service(&ctx, &name(), &info, &[&s]);
        let svc = object_name("service", "default/web/udp/53");
        assert_eq!(
            r.chains[&svc][0],
            "ip6 daddr fd43::5 udp dport 53 ip6 saddr != fd42::/56 jump mark-for-masquerade"
        );
        let ep = object_name("endpoint", "default/web/udp/53__fd42::2/5353");
        assert_eq!(r.chains[&ep][1], "meta l4proto udp dnat to [fd42::2]:5353");
    }

    #[test]
    fn static_part() {
        let mut s = String::new();
        static_definitions(&mut s, Family::V4, "skiff-proxy");
        static_rules(
            &mut s,
            Family::V4,
            "skiff-proxy",
            &["10.43.0.0/16".parse().unwrap()],
        );
        assert!(s.contains("add chain ip skiff-proxy nat-prerouting { type nat hook prerouting priority -100; policy accept; }"));
        assert!(s.contains("add rule ip skiff-proxy nat-postrouting jump masquerading"));
        assert!(s.contains("add rule ip skiff-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"));
        assert!(s.contains("add rule ip skiff-proxy cluster-ips-check ip daddr 10.43.0.0/16 drop"));
        assert!(s.contains("add rule ip skiff-proxy masquerading masquerade fully-random"));
    }
}
