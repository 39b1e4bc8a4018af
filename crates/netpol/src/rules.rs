//! The nftables ruleset: the desired state computed from the model, and the
//! scripts that create it or move the kernel from one state to the next.
//!
//! Layout of table `inet <table>`:
//!
//! ```text
//! chain forward { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept      # replies of allowed connections
//!     ip saddr vmap @egress                    # local pod isolated for egress → jump eg-<ip>
//!     ip daddr vmap @ingress                   # local pod isolated for ingress → jump in-<ip>
//! }
//! chain eg-10-42-0-5 { <peer> <ports> return; ...; drop }   # allowed → on to the ingress check
//! chain in-10-42-0-7 { <peer> <ports> accept; ...; drop }
//! set peer-<hash> { type ipv4_addr; }                     # the pods of one (namespaces, pods) selector
//! set np-tcp-http { type ipv4_addr . inet_service; }      # (pod IP, port) of every pod's port named http
//! ```
//!
//! The forward hook runs after prerouting, so traffic sent to a ClusterIP
//! has already been DNATed by the service proxy and is judged on the real
//! destination pod; masquerading happens later (postrouting), so the source
//! is still the real pod. Pods on one bridge reach each other at layer 2:
//! their packets pass this hook only with br_netfilter and
//! `net.bridge.bridge-nf-call-iptables=1` (see the crate docs).
//!
//! A pod's chains depend only on the policies selecting it and its own named
//! ports; the peers live in sets, so pods coming and going change set
//! elements, not chains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::model::{Labels, Namespaces, Peer, PodInfo, PolicyInfo, PortSpec, Protocol, Rule};

/// The kind of a named set (decides its type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetKind {
    /// Pod IPs: `type ipv4_addr`.
    Peers,
    /// (pod IP, port): `type ipv4_addr . inet_service`.
    NamedPort,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Set name → (kind, elements as nft text).
    pub sets: BTreeMap<String, (SetKind, BTreeSet<String>)>,
    /// Per-pod chain name → its rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Pod IP → its ingress chain.
    pub ingress: BTreeMap<Ipv4Addr, String>,
    /// Pod IP → its egress chain.
    pub egress: BTreeMap<Ipv4Addr, String>,
}

/// What the desired state is computed from.
pub struct Inputs<'a> {
    pub node: &'a str,
    pub pods: &'a [&'a PodInfo],
    pub policies: &'a [&'a PolicyInfo],
    pub namespaces: &'a HashMap<String, Labels>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The address of the other side.
    fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "ip saddr",
            Direction::Egress => "ip daddr",
        }
    }
    fn allow(self) -> &'static str {
        match self {
            Direction::Ingress => "accept",
            Direction::Egress => "return",
        }
    }
}

/// The name of a pod's chain.
pub fn chain_name(prefix: &str, ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{prefix}-{}-{}-{}-{}", o[0], o[1], o[2], o[3])
}

/// The set holding the pods of a (namespaces, pods) peer.
pub fn peer_set_name(namespaces: &Namespaces, pods: &crate::model::Selector) -> String {
    let key = match namespaces {
        Namespaces::Same(ns) => format!("ns={ns}|pods={}", pods.canonical()),
        Namespaces::Matching(sel) => format!("nssel={}|pods={}", sel.canonical(), pods.canonical()),
    };
    format!("peer-{:016x}", fnv1a(key.as_bytes()))
}

/// The set of (IP, port) of every pod's port `name`/`protocol`.
pub fn named_port_set_name(protocol: Protocol, name: &str) -> String {
    // Port names are IANA_SVC_NAMEs (lowercase letters, digits, '-'); anything else is hashed.
    if !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        format!("np-{}-{name}", protocol.nft())
    } else {
        format!("np-{}-{:016x}", protocol.nft(), fnv1a(name.as_bytes()))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a set needs to be filled from the pods.
enum SetSource {
    Peer(Peer),
    NamedPort(Protocol, String),
}

/// Compute the desired state: chains for this node's isolated pods, the sets they use.
pub fn desired(inputs: &Inputs<'_>) -> Desired {
    let mut out = Desired::default();
    let mut sources: BTreeMap<String, SetSource> = BTreeMap::new();
    let mut locals: Vec<&PodInfo> = inputs
        .pods
        .iter()
        .copied()
        .filter(|p| p.active() && p.node.as_deref() == Some(inputs.node))
        .collect();
    locals.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut policies: Vec<&PolicyInfo> = inputs.policies.to_vec();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for pod in locals {
        let selecting: Vec<&PolicyInfo> = policies
            .iter()
            .copied()
            .filter(|p| p.selects(pod))
            .collect();
        for (dir, prefix) in [(Direction::Ingress, "in"), (Direction::Egress, "eg")] {
            let applying: Vec<(&PolicyInfo, &Vec<Rule>)> = selecting
                .iter()
                .filter_map(|p| match dir {
                    Direction::Ingress => p.ingress.as_ref().map(|r| (*p, r)),
                    Direction::Egress => p.egress.as_ref().map(|r| (*p, r)),
                })
                .collect();
            if applying.is_empty() {
                continue;
            }
            let mut rules = Vec::new();
            for (policy, policy_rules) in applying {
                let comment = format!(" comment \"{}/{}\"", policy.namespace, policy.name);
                for rule in policy_rules {
                    for line in rule_lines(dir, rule, pod, &mut sources) {
                        rules.push(format!("{line}{}{comment}", dir.allow()));
                    }
                }
            }
            rules.push("drop".into());
            for ip in &pod.ips {
                // Two pods claiming one address: the first (by name) keeps it.
                let map = match dir {
                    Direction::Ingress => &mut out.ingress,
                    Direction::Egress => &mut out.egress,
                };
                if map.contains_key(ip) {
                    continue;
                }
                let chain = chain_name(prefix, *ip);
                map.insert(*ip, chain.clone());
                out.chains.insert(chain, rules.clone());
            }
        }
    }
    // Fill the sets the chains use.
    let active: Vec<&PodInfo> = inputs.pods.iter().copied().filter(|p| p.active()).collect();
    let no_labels = Labels::new();
    for (name, source) in sources {
        let (kind, elements) = match source {
            SetSource::Peer(peer) => {
                let elements = active
                    .iter()
                    .filter(|p| {
                        peer.selects(p, inputs.namespaces.get(&p.namespace).unwrap_or(&no_labels))
                    })
                    .flat_map(|p| p.ips.iter().map(|ip| ip.to_string()))
                    .collect();
                (SetKind::Peers, elements)
            }
            SetSource::NamedPort(proto, port_name) => {
                let elements = active
                    .iter()
                    .flat_map(|p| {
                        p.named_ports(&port_name, proto)
                            .flat_map(|port| p.ips.iter().map(move |ip| format!("{ip} . {port}")))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (SetKind::NamedPort, elements)
            }
        };
        out.sets.insert(name, (kind, elements));
    }
    out
}

/// The match parts (each ending in a space, or empty) of one rule for `pod`.
fn rule_lines(
    dir: Direction,
    rule: &Rule,
    pod: &PodInfo,
    sources: &mut BTreeMap<String, SetSource>,
) -> Vec<String> {
    let field = dir.peer_field();
    let peers: Vec<String> = match &rule.peers {
        None => vec![String::new()],
        Some(peers) => peers
            .iter()
            .filter_map(|peer| match peer {
                Peer::Pods { namespaces, pods } => {
                    let name = peer_set_name(namespaces, pods);
                    sources
                        .entry(name.clone())
                        .or_insert_with(|| SetSource::Peer(peer.clone()));
                    Some(format!("{field} @{name} "))
                }
                Peer::Block { cidr, except } if except.is_empty() => {
                    Some(format!("{field} {cidr} "))
                }
                Peer::Block { cidr, except } => {
                    let except: Vec<String> = except.iter().map(|c| c.to_string()).collect();
                    Some(format!(
                        "{field} {cidr} {field} != {{ {} }} ",
                        except.join(", ")
                    ))
                }
                Peer::Nothing => None,
            })
            .collect(),
    };
    let ports: Vec<String> = if rule.ports.is_empty() {
        vec![String::new()]
    } else {
        let mut all: BTreeSet<Protocol> = BTreeSet::new();
        let mut ranges: BTreeMap<Protocol, BTreeSet<(u16, u16)>> = BTreeMap::new();
        let mut named: BTreeSet<(Protocol, String)> = BTreeSet::new();
        for spec in &rule.ports {
            match spec {
                PortSpec::All(proto) => {
                    all.insert(*proto);
                }
                PortSpec::Range(proto, a, b) => {
                    ranges.entry(*proto).or_default().insert((*a, *b));
                }
                // Ingress: the destination is this pod, resolve here.
                PortSpec::Named(proto, name) if dir == Direction::Ingress => {
                    for port in pod.named_ports(name, *proto) {
                        ranges.entry(*proto).or_default().insert((port, port));
                    }
                }
                // Egress: the destination's own port of that name, through a set.
                PortSpec::Named(proto, name) => {
                    named.insert((*proto, name.clone()));
                }
                PortSpec::Nothing => {}
            }
        }
        let mut out: Vec<String> = all
            .iter()
            .map(|p| format!("meta l4proto {} ", p.nft()))
            .collect();
        for (proto, set) in ranges.into_iter().filter(|(p, _)| !all.contains(p)) {
            let items: Vec<String> = set
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            let ports = if items.len() == 1 {
                items[0].clone()
            } else {
                format!("{{ {} }}", items.join(", "))
            };
            out.push(format!("meta l4proto {} th dport {ports} ", proto.nft()));
        }
        for (proto, name) in named.into_iter().filter(|(p, _)| !all.contains(p)) {
            let set = named_port_set_name(proto, &name);
            sources
                .entry(set.clone())
                .or_insert_with(|| SetSource::NamedPort(proto, name));
            out.push(format!(
                "meta l4proto {} ip daddr . th dport @{set} ",
                proto.nft()
            ));
        }
        out
    };
    peers
        .iter()
        .flat_map(|peer| ports.iter().map(move |port| format!("{peer}{port}")))
        .collect()
}

fn table_ref(table: &str) -> String {
    format!("inet {table}")
}

/// The script that (re)creates the whole table in one transaction.
pub fn full_script(table: &str, desired: &Desired) -> String {
    let t = table_ref(table);
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"
    );
    let _ = writeln!(s, "add map {t} ingress {{ type ipv4_addr : verdict; }}");
    let _ = writeln!(s, "add map {t} egress {{ type ipv4_addr : verdict; }}");
    let _ = writeln!(
        s,
        "add rule {t} forward ct state established,related accept"
    );
    let _ = writeln!(s, "add rule {t} forward ip saddr vmap @egress");
    let _ = writeln!(s, "add rule {t} forward ip daddr vmap @ingress");
    s.push_str(&diff_script(table, &Desired::default(), desired));
    s
}

fn elements(items: &[String]) -> String {
    format!("{{ {} }}", items.join(", "))
}

/// The script that moves the kernel from `old` to `new` (empty when nothing changes):
/// set elements added and deleted, only changed chains rewritten.
pub fn diff_script(table: &str, old: &Desired, new: &Desired) -> String {
    let t = table_ref(table);
    let mut s = String::new();
    // New sets, then elements gained.
    for (name, (kind, elems)) in &new.sets {
        let had = old.sets.get(name);
        if had.is_none() {
            let ty = match kind {
                SetKind::Peers => "ipv4_addr",
                SetKind::NamedPort => "ipv4_addr . inet_service",
            };
            let _ = writeln!(s, "add set {t} {name} {{ type {ty}; }}");
        }
        let gained: Vec<String> = elems
            .iter()
            .filter(|e| had.is_none_or(|(_, o)| !o.contains(*e)))
            .cloned()
            .collect();
        if !gained.is_empty() {
            let _ = writeln!(s, "add element {t} {name} {}", elements(&gained));
        }
    }
    // New and changed chains.
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(old_rules) if old_rules == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain {t} {name}");
            }
            None => {
                let _ = writeln!(s, "add chain {t} {name}");
            }
        }
        for rule in rules {
            let _ = writeln!(s, "add rule {t} {name} {rule}");
        }
    }
    // Dispatch maps.
    for (map, old_map, new_map) in [
        ("egress", &old.egress, &new.egress),
        ("ingress", &old.ingress, &new.ingress),
    ] {
        let gone: Vec<String> = old_map
            .iter()
            .filter(|(ip, c)| new_map.get(ip) != Some(c))
            .map(|(ip, _)| ip.to_string())
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(s, "delete element {t} {map} {}", elements(&gone));
        }
        let added: Vec<String> = new_map
            .iter()
            .filter(|(ip, c)| old_map.get(ip) != Some(c))
            .map(|(ip, c)| format!("{ip} : jump {c}"))
            .collect();
        if !added.is_empty() {
            let _ = writeln!(s, "add element {t} {map} {}", elements(&added));
        }
    }
    // Chains no longer needed (no map element points at them any more).
    for name in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
        let _ = writeln!(s, "delete chain {t} {name}");
    }
    // Elements lost, then sets no longer used (their rules are gone by now).
    for (name, (_, elems)) in &old.sets {
        match new.sets.get(name) {
            None => {
                let _ = writeln!(s, "delete set {t} {name}");
            }
            Some((_, new_elems)) => {
                let lost: Vec<String> = elems
                    .iter()
                    .filter(|e| !new_elems.contains(*e))
                    .cloned()
                    .collect();
                if !lost.is_empty() {
                    let _ = writeln!(s, "delete element {t} {name} {}", elements(&lost));
                }
            }
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::model::NAMESPACE_NAME_LABEL;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    pub(crate) fn pod_obj(
        ns: &str,
        name: &str,
        node: &str,
        ip: &str,
        labels: serde_json::Value,
    ) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    pub(crate) fn policy_obj(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: serde_json::Value) -> PodInfo {
        PodInfo::from_pod(&pod_obj(ns, name, node, ip, labels))
    }

    fn policy(ns: &str, name: &str, spec: serde_json::Value) -> PolicyInfo {
        PolicyInfo::from_policy(&policy_obj(ns, name, spec))
    }

    fn compute(
        pods: &[PodInfo],
        policies: &[PolicyInfo],
        namespaces: &[(&str, &[(&str, &str)])],
    ) -> Desired {
        let pods: Vec<&PodInfo> = pods.iter().collect();
        let policies: Vec<&PolicyInfo> = policies.iter().collect();
        let namespaces: HashMap<String, Labels> = namespaces
            .iter()
            .map(|(n, l)| {
                let mut labels: Labels = l
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                labels.insert(NAMESPACE_NAME_LABEL.into(), n.to_string());
                (n.to_string(), labels)
            })
            .collect();
        desired(&Inputs {
            node: "n1",
            pods: &pods,
            policies: &policies,
            namespaces: &namespaces,
        })
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn cluster() -> Vec<PodInfo> {
        vec![
            pod("default", "web", "n1", "10.42.0.2", json!({"app": "web"})),
            pod(
                "default",
                "web-remote",
                "n2",
                "10.42.1.2",
                json!({"app": "web"}),
            ),
            pod(
                "default",
                "client-a",
                "n1",
                "10.42.0.3",
                json!({"role": "client"}),
            ),
            pod(
                "default",
                "client-b",
                "n2",
                "10.42.1.3",
                json!({"role": "other"}),
            ),
            pod(
                "team",
                "client-c",
                "n2",
                "10.42.1.4",
                json!({"role": "client"}),
            ),
        ]
    }

    #[test]
    fn default_deny_isolates_only_local_selected_pods() {
        let mut pods = cluster();
        pods.push(PodInfo {
            host_network: true,
            ..pod(
                "default",
                "host",
                "n1",
                "192.168.1.10",
                json!({"app": "web"}),
            )
        });
        let d = compute(
            &pods,
            &[policy(
                "default",
                "deny",
                json!({"podSelector": {"matchLabels": {"app": "web"}}}),
            )],
            &[],
        );
        assert_eq!(
            d.ingress,
            BTreeMap::from([(ip("10.42.0.2"), "in-10-42-0-2".to_string())]),
            "web-remote is another node's, host is hostNetwork"
        );
        assert!(d.egress.is_empty());
        assert_eq!(
            d.chains,
            BTreeMap::from([("in-10-42-0-2".to_string(), vec!["drop".to_string()])])
        );
        assert!(d.sets.is_empty());
        // An empty podSelector selects every pod of the namespace, and only those.
        let d = compute(
            &pods,
            &[policy(
                "default",
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            )],
            &[],
        );
        assert_eq!(
            d.ingress.keys().copied().collect::<Vec<_>>(),
            vec![ip("10.42.0.2"), ip("10.42.0.3")]
        );
        assert_eq!(
            d.egress.keys().copied().collect::<Vec<_>>(),
            vec![ip("10.42.0.2"), ip("10.42.0.3")]
        );
        assert_eq!(d.chains["eg-10-42-0-3"], vec!["drop"]);
    }

    #[test]
    fn pod_peers_become_sets_and_ports_match_clauses() {
        let policies = [
            policy("default", "deny", json!({"podSelector": {}})),
            policy(
                "default",
                "allow-clients",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}, {"port": 8000, "endPort": 8100}, {"protocol": "UDP"}]}]}),
            ),
        ];
        let d = compute(&cluster(), &policies, &[]);
        let client = crate::model::Selector::from_k8s(
            &serde_json::from_value(json!({"matchLabels": {"role": "client"}})).unwrap(),
        );
        let peers = peer_set_name(&Namespaces::Same("default".into()), &client);
        assert_eq!(
            d.sets[&peers],
            (SetKind::Peers, set(&["10.42.0.3"])),
            "client-c is in another namespace"
        );
        assert_eq!(
            d.chains["in-10-42-0-2"],
            vec![
                format!(
                    "ip saddr @{peers} meta l4proto udp accept comment \"default/allow-clients\""
                ),
                format!(
                    "ip saddr @{peers} meta l4proto tcp th dport {{ 80, 8000-8100 }} accept comment \"default/allow-clients\""
                ),
                "drop".to_string(),
            ]
        );
        // The client itself is only selected by the deny-all policy.
        assert_eq!(d.chains["in-10-42-0-3"], vec!["drop"]);
    }

    #[test]
    fn namespace_selectors_alone_and_combined_with_pod_selectors() {
        let spec = json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "yes"}}},
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}
        ]}]});
        let d = compute(
            &cluster(),
            &[policy("default", "p", spec)],
            &[("default", &[]), ("team", &[("team", "yes")])],
        );
        let rules = &d.chains["in-10-42-0-2"];
        assert_eq!(rules.len(), 3);
        let set_of = |rule: &str| {
            rule.split_whitespace()
                .nth(2)
                .unwrap()
                .trim_start_matches('@')
                .to_string()
        };
        assert_eq!(
            d.sets[&set_of(&rules[0])].1,
            set(&["10.42.1.4"]),
            "every pod of namespace team"
        );
        assert_eq!(
            d.sets[&set_of(&rules[1])].1,
            set(&["10.42.0.3", "10.42.1.4"]),
            "clients of every namespace"
        );
        assert_eq!(
            rules[0],
            format!(
                "ip saddr @{} accept comment \"default/p\"",
                set_of(&rules[0])
            )
        );
    }

    #[test]
    fn ip_blocks_with_exceptions() {
        let spec = json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16", "10.43.0.0/16"]}},
            {"ipBlock": {"cidr": "192.168.1.1/32"}},
            {"ipBlock": {"cidr": "fd00::/8"}}
        ]}]});
        let d = compute(&cluster(), &[policy("default", "p", spec)], &[]);
        assert_eq!(
            d.chains["eg-10-42-0-3"],
            vec![
                "ip daddr 10.0.0.0/8 ip daddr != { 10.42.0.0/16, 10.43.0.0/16 } return comment \"default/p\"",
                "ip daddr 192.168.1.1/32 return comment \"default/p\"",
                "drop"
            ]
        );
        assert!(
            d.ingress.is_empty(),
            "policyTypes [Egress] does not isolate for ingress"
        );
    }

    #[test]
    fn named_ports_resolve_on_the_destination_pod() {
        let mut pods = cluster();
        // A web pod whose "http" is 9090.
        let mut other: Pod = pod_obj(
            "default",
            "web-9090",
            "n1",
            "10.42.0.9",
            json!({"app": "web"}),
        );
        other.spec.as_mut().unwrap().containers[0]
            .ports
            .as_mut()
            .unwrap()[0]
            .container_port = 9090;
        pods.push(PodInfo::from_pod(&other));
        let ingress = policy(
            "default",
            "in",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}, {"port": "nope"}]}]}),
        );
        let egress = policy(
            "default",
            "out",
            json!({"podSelector": {"matchLabels": {"role": "client"}}, "egress": [{"ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"}]}]}),
        );
        let d = compute(&pods, &[ingress, egress], &[]);
        assert_eq!(
            d.chains["in-10-42-0-2"][0],
            "meta l4proto tcp th dport 8080 accept comment \"default/in\""
        );
        assert_eq!(
            d.chains["in-10-42-0-9"][0],
            "meta l4proto tcp th dport 9090 accept comment \"default/in\""
        );
        assert_eq!(
            d.chains["eg-10-42-0-3"],
            vec![
                "meta l4proto tcp ip daddr . th dport @np-tcp-http return comment \"default/out\"",
                "meta l4proto udp ip daddr . th dport @np-udp-dns return comment \"default/out\"",
                "drop"
            ]
        );
        assert_eq!(
            d.sets["np-tcp-http"],
            (
                SetKind::NamedPort,
                set(&[
                    "10.42.0.2 . 8080",
                    "10.42.0.3 . 8080",
                    "10.42.0.9 . 9090",
                    "10.42.1.2 . 8080",
                    "10.42.1.3 . 8080",
                    "10.42.1.4 . 8080"
                ])
            )
        );
        // A port name no pod has allows nothing on that entry; a rule whose ports all resolve to nothing allows nothing.
        let only_missing = policy(
            "default",
            "in",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "nope"}]}]}),
        );
        assert_eq!(
            compute(&pods, &[only_missing], &[]).chains["in-10-42-0-2"],
            vec!["drop"]
        );
    }

    #[test]
    fn empty_rules_allow_everything_and_policies_add_up() {
        let policies = [
            policy(
                "default",
                "a",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
            ),
            policy(
                "default",
                "b",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 80}]}], "egress": [{}]}),
            ),
        ];
        let d = compute(&cluster(), &policies, &[]);
        assert_eq!(
            d.chains["in-10-42-0-2"],
            vec![
                "accept comment \"default/a\"",
                "meta l4proto tcp th dport 80 accept comment \"default/b\"",
                "drop"
            ]
        );
        assert_eq!(
            d.chains["eg-10-42-0-2"],
            vec!["return comment \"default/b\"", "drop"]
        );
    }

    #[test]
    fn diffs_touch_only_what_changed() {
        let deny = policy(
            "default",
            "deny",
            json!({"podSelector": {"matchLabels": {"app": "web"}}}),
        );
        let allow = policy(
            "default",
            "allow",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        );
        let mut pods = cluster();
        let before = compute(&pods, &[deny.clone(), allow.clone()], &[]);
        let peers = before.sets.keys().next().unwrap().clone();
        assert_eq!(diff_script("t", &before, &before), "");
        // A client comes: one element.
        pods.push(pod(
            "default",
            "client-d",
            "n2",
            "10.42.1.9",
            json!({"role": "client"}),
        ));
        let after = compute(&pods, &[deny.clone(), allow.clone()], &[]);
        assert_eq!(
            diff_script("t", &before, &after),
            format!("add element inet t {peers} {{ 10.42.1.9 }}\n")
        );
        assert_eq!(
            diff_script("t", &after, &before),
            format!("delete element inet t {peers} {{ 10.42.1.9 }}\n")
        );
        // A local web pod comes: its chain and its map element.
        pods.push(pod(
            "default",
            "web-2",
            "n1",
            "10.42.0.7",
            json!({"app": "web"}),
        ));
        let more = compute(&pods, &[deny.clone(), allow.clone()], &[]);
        let chain = &more.chains["in-10-42-0-7"];
        let mut expected = "add chain inet t in-10-42-0-7\n".to_string();
        for r in chain {
            expected.push_str(&format!("add rule inet t in-10-42-0-7 {r}\n"));
        }
        expected.push_str("add element inet t ingress { 10.42.0.7 : jump in-10-42-0-7 }\n");
        assert_eq!(diff_script("t", &after, &more), expected);
        assert_eq!(
            diff_script("t", &more, &after),
            "delete element inet t ingress { 10.42.0.7 }\ndelete chain inet t in-10-42-0-7\n"
        );
        // The allowing policy goes: the chains are rewritten, the set deleted last.
        let denied = compute(&pods, &[deny], &[]);
        assert_eq!(
            diff_script("t", &more, &denied),
            format!(
                "flush chain inet t in-10-42-0-2\nadd rule inet t in-10-42-0-2 drop\nflush chain inet t in-10-42-0-7\nadd rule inet t in-10-42-0-7 drop\ndelete set inet t {peers}\n"
            )
        );
    }

    /// The scripts are valid nft: applied for real in a private network
    /// namespace when running as root with nft and unshare installed.
    #[test]
    fn scripts_apply_with_real_nft() {
        let usable = std::process::Command::new("unshare")
            .args(["-n", "nft", "list", "tables"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !usable {
            eprintln!("skipping: needs root, nft and unshare");
            return;
        }
        let deny = policy(
            "default",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        );
        let allow = policy(
            "default",
            "allow",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}, {"namespaceSelector": {}, "podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                             "ports": [{"port": 80}, {"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}, {"protocol": "SCTP"}]}],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "yes"}}}], "ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"}]}, {}]}),
        );
        let pods = cluster();
        let one = compute(
            &pods,
            &[deny.clone(), allow.clone()],
            &[("team", &[("team", "yes")])],
        );
        let two = compute(&pods[..3], std::slice::from_ref(&deny), &[]);
        let dir = std::env::temp_dir().join(format!("skiff-netpol-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), full_script("t", &one)).unwrap();
        std::fs::write(dir.join("b"), diff_script("t", &one, &two)).unwrap();
        std::fs::write(dir.join("c"), diff_script("t", &two, &one)).unwrap();
        let cmd = format!(
            "nft -f {0}/a && nft -f {0}/b && nft -f {0}/c && nft -f {0}/a && nft list table inet t",
            dir.display()
        );
        let out = std::process::Command::new("unshare")
            .args(["-n", "sh", "-c", &cmd])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "nft refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains("10.42.0.2 : jump in-10-42-0-2"),
            "{listing}"
        );
        assert!(listing.contains("chain eg-10-42-0-3"), "{listing}");
    }
}
