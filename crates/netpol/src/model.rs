//! What is kept of Pods, Namespaces and NetworkPolicies, and label selection.
//!
//! Everything here is plain data parsed from the API objects; the policy
//! semantics (which pods are isolated, which peers and ports are allowed)
//! follow the Kubernetes documentation of networking.k8s.io/v1 NetworkPolicy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label the API server puts on every namespace (set here too when missing).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub type Labels = BTreeMap<String, String>;

/// A parsed label selector. An empty one selects everything; an invalid one
/// (unknown operator) selects nothing, as the API server would have refused it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    exprs: Vec<(String, Op)>,
    invalid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Selector {
        Selector {
            labels: BTreeMap::new(),
            exprs: Vec::new(),
            invalid: false,
        }
    }

    pub fn from_k8s(sel: &LabelSelector) -> Selector {
        let mut invalid = false;
        let mut exprs: Vec<(String, Op)> = sel
            .match_expressions
            .iter()
            .flatten()
            .map(|r| {
                let values: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                let op = match r.operator.as_str() {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    _ => {
                        invalid = true;
                        Op::DoesNotExist
                    }
                };
                (r.key.clone(), op)
            })
            .collect();
        exprs.sort();
        exprs.dedup();
        Selector {
            labels: sel.match_labels.clone().unwrap_or_default(),
            exprs,
            invalid,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        if self.invalid {
            return false;
        }
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op)| match op {
                Op::In(vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Op::NotIn(vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Op::Exists => labels.contains_key(k),
                Op::DoesNotExist => !labels.contains_key(k),
            })
    }

    /// A stable text form (names the peer sets).
    pub fn canonical(&self) -> String {
        let mut out: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (k, op) in &self.exprs {
            out.push(match op {
                Op::In(vs) => format!(
                    "{k} in ({})",
                    vs.iter().cloned().collect::<Vec<_>>().join(",")
                ),
                Op::NotIn(vs) => format!(
                    "{k} notin ({})",
                    vs.iter().cloned().collect::<Vec<_>>().join(",")
                ),
                Op::Exists => k.clone(),
                Op::DoesNotExist => format!("!{k}"),
            });
        }
        if self.invalid {
            out.push("<invalid>".into());
        }
        out.join(",")
    }
}

/// An IPv4 CIDR, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr4 {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr4 {
    /// `a.b.c.d/n` (or a bare address, /32). None for IPv6 or garbage.
    pub fn parse(s: &str) -> Option<Cidr4> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, p.parse::<u8>().ok()?),
            None => (s, 32),
        };
        let ip: Ipv4Addr = ip.trim().parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Some(Cidr4 {
            addr: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The protocol of a port (the service proxy's: parse and nft names).
pub use skiff_proxy::model::Protocol;

/// A container port with a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// What is kept of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node: Option<String>,
    pub host_network: bool,
    /// The pod's IPv4 addresses (status.podIPs; IPv6 ones are not enforced).
    pub ips: Vec<Ipv4Addr>,
    pub ports: Vec<NamedPort>,
    /// Succeeded or Failed: its address may already belong to another pod.
    pub finished: bool,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut ips: Vec<Ipv4Addr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.and_then(|s| s.pod_ip.as_deref()))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        let mut ports: Vec<NamedPort> = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().filter(|n| !n.is_empty())?,
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok().filter(|p| *p > 0)?,
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        let phase = status.and_then(|s| s.phase.as_deref());
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            ips,
            ports,
            finished: matches!(phase, Some("Succeeded" | "Failed")),
        }
    }

    /// Subject to policies and a possible peer: has an address of its own and runs.
    pub fn active(&self) -> bool {
        !self.host_network && !self.finished && !self.ips.is_empty()
    }

    /// The ports of this pod named `name` with `protocol`.
    pub fn named_ports<'a>(
        &'a self,
        name: &'a str,
        protocol: Protocol,
    ) -> impl Iterator<Item = u16> + 'a {
        self.ports
            .iter()
            .filter(move |p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A namespace's labels, with [`NAMESPACE_NAME_LABEL`] always present.
pub fn namespace_labels(ns: &Namespace) -> Labels {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels.entry(NAMESPACE_NAME_LABEL.into()).or_insert(name);
    labels
}

/// Which namespaces a pod peer looks in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespaces {
    /// The policy's own namespace (a peer with only a podSelector).
    Same(String),
    Matching(Selector),
}

/// One entry of a rule's `from`/`to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods selected by labels in the selected namespaces.
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    /// An IP block with exceptions.
    Block { cidr: Cidr4, except: Vec<Cidr4> },
    /// Matches nothing (an IPv6 block, or an empty peer the API server would refuse).
    Nothing,
}

impl Peer {
    fn from_k8s(p: &NetworkPolicyPeer, policy_ns: &str) -> Peer {
        if let Some(block) = &p.ip_block {
            let Some(cidr) = Cidr4::parse(&block.cidr) else {
                return Peer::Nothing;
            };
            let mut except: Vec<Cidr4> = block
                .except
                .iter()
                .flatten()
                .filter_map(|e| Cidr4::parse(e))
                .collect();
            except.sort();
            except.dedup();
            return Peer::Block { cidr, except };
        }
        let namespaces = match &p.namespace_selector {
            Some(sel) => Namespaces::Matching(Selector::from_k8s(sel)),
            None => Namespaces::Same(policy_ns.to_string()),
        };
        match (&p.pod_selector, &p.namespace_selector) {
            (None, None) => Peer::Nothing,
            (Some(sel), _) => Peer::Pods {
                namespaces,
                pods: Selector::from_k8s(sel),
            },
            (None, Some(_)) => Peer::Pods {
                namespaces,
                pods: Selector::everything(),
            },
        }
    }

    /// Whether `pod` (in a namespace labelled `ns_labels`) is one of this peer's pods.
    pub fn selects(&self, pod: &PodInfo, ns_labels: &Labels) -> bool {
        match self {
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    Namespaces::Same(ns) => *ns == pod.namespace,
                    Namespaces::Matching(sel) => sel.matches(ns_labels),
                };
                ns_ok && pods.matches(&pod.labels)
            }
            Peer::Block { .. } | Peer::Nothing => false,
        }
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortSpec {
    /// Every port of the protocol (`port` omitted).
    All(Protocol),
    /// `port` (and `endPort`), inclusive.
    Range(Protocol, u16, u16),
    /// A named container port, resolved on the destination pod.
    Named(Protocol, String),
    /// Matches nothing (an unknown protocol or a bad port).
    Nothing,
}

impl PortSpec {
    fn from_k8s(p: &NetworkPolicyPort) -> PortSpec {
        let Some(proto) = Protocol::parse(p.protocol.as_deref()) else {
            return PortSpec::Nothing;
        };
        match &p.port {
            None => PortSpec::All(proto),
            Some(IntOrString::Int(n)) => {
                let Ok(start) = u16::try_from(*n) else {
                    return PortSpec::Nothing;
                };
                let end = match p.end_port {
                    Some(e) => match u16::try_from(e) {
                        Ok(e) if e >= start => e,
                        _ => return PortSpec::Nothing,
                    },
                    None => start,
                };
                PortSpec::Range(proto, start, end)
            }
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) => PortSpec::Range(
                    proto,
                    n,
                    p.end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .filter(|e| *e >= n)
                        .unwrap_or(n),
                ),
                Err(_) => PortSpec::Named(proto, s.clone()),
            },
        }
    }
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// None: every peer (`from`/`to` empty or missing).
    pub peers: Option<Vec<Peer>>,
    /// Empty: every port (`ports` empty or missing).
    pub ports: Vec<PortSpec>,
}

impl Rule {
    fn new(
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
        ns: &str,
    ) -> Rule {
        let peers = peers
            .filter(|p| !p.is_empty())
            .map(|ps| ps.iter().map(|p| Peer::from_k8s(p, ns)).collect());
        let ports = ports
            .into_iter()
            .flatten()
            .map(PortSpec::from_k8s)
            .collect();
        Rule { peers, ports }
    }
}

/// What is kept of a NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    /// Some when the policy is of type Ingress: the pods it selects are
    /// isolated for ingress and these rules allow (an empty list allows nothing).
    pub ingress: Option<Vec<Rule>>,
    /// The same for Egress.
    pub egress: Option<Vec<Rule>>,
}

impl PolicyInfo {
    pub fn from_policy(np: &NetworkPolicy) -> PolicyInfo {
        let namespace = np.metadata.namespace.clone().unwrap_or_default();
        let spec = np.spec.clone().unwrap_or_default();
        // policyTypes defaults as the API server sets them: Ingress always,
        // Egress when the policy has egress rules.
        let types: Vec<String> = match spec.policy_types.filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => {
                let mut t = vec!["Ingress".to_string()];
                if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push("Egress".into());
                }
                t
            }
        };
        let has = |t: &str| types.iter().any(|x| x == t);
        let ingress = has("Ingress").then(|| {
            spec.ingress
                .iter()
                .flatten()
                .map(|r| Rule::new(r.from.as_ref(), r.ports.as_ref(), &namespace))
                .collect()
        });
        let egress = has("Egress").then(|| {
            spec.egress
                .iter()
                .flatten()
                .map(|r| Rule::new(r.to.as_ref(), r.ports.as_ref(), &namespace))
                .collect()
        });
        PolicyInfo {
            pod_selector: spec
                .pod_selector
                .as_ref()
                .map(Selector::from_k8s)
                .unwrap_or_else(Selector::everything),
            name: np.metadata.name.clone().unwrap_or_default(),
            namespace,
            ingress,
            egress,
        }
    }

    /// Whether this policy applies to `pod`.
    pub fn selects(&self, pod: &PodInfo) -> bool {
        self.namespace == pod.namespace && self.pod_selector.matches(&pod.labels)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(v: serde_json::Value) -> Selector {
        Selector::from_k8s(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel(json!({})).matches(&l));
        assert!(sel(json!({})).matches(&Labels::new()));
        assert!(sel(json!({"matchLabels": {"app": "web"}})).matches(&l));
        assert!(!sel(json!({"matchLabels": {"app": "db"}})).matches(&l));
        assert!(sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]})).matches(&l));
        assert!(!sel(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]})).matches(&l));
        assert!(sel(json!({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["front"]}]})).matches(&l));
        assert!(
            sel(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})).matches(&l)
        );
        assert!(
            !sel(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}))
                .matches(&l)
        );
        assert!(
            !sel(json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]})).matches(&l)
        );
        assert_eq!(
            sel(json!({"matchLabels": {"b": "2", "a": "1"}})).canonical(),
            "a=1,b=2"
        );
    }

    fn policy(spec: serde_json::Value) -> PolicyInfo {
        PolicyInfo::from_policy(
            &serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn policy_types_default_to_ingress_and_to_egress_with_egress_rules() {
        let p = policy(json!({"podSelector": {}}));
        assert_eq!(
            p.ingress,
            Some(vec![]),
            "no rules: isolated for ingress, nothing allowed"
        );
        assert_eq!(p.egress, None);
        let p = policy(json!({"podSelector": {}, "egress": [{}]}));
        assert!(p.ingress.is_some());
        assert_eq!(
            p.egress,
            Some(vec![Rule {
                peers: None,
                ports: vec![]
            }])
        );
        let p = policy(json!({"podSelector": {}, "egress": []}));
        assert_eq!(p.egress, None, "an empty egress list does not imply Egress");
        let p = policy(json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
    }

    #[test]
    fn peers_and_ports_are_parsed() {
        let p = policy(json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"role": "client"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "a"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"role": "client"}}},
                    {"ipBlock": {"cidr": "10.1.2.3/16", "except": ["10.1.5.0/24"]}},
                    {"ipBlock": {"cidr": "fd00::/8"}}
                ],
                "ports": [
                    {"port": 80},
                    {"protocol": "UDP", "port": 5000, "endPort": 5010},
                    {"port": "http"},
                    {"protocol": "SCTP"},
                    {"protocol": "ICMP", "port": 1}
                ]
            }]
        }));
        let rule = &p.ingress.unwrap()[0];
        let client = sel(json!({"matchLabels": {"role": "client"}}));
        let team = sel(json!({"matchLabels": {"team": "a"}}));
        assert_eq!(
            rule.peers.as_deref().unwrap(),
            [
                Peer::Pods {
                    namespaces: Namespaces::Same("ns".into()),
                    pods: client.clone()
                },
                Peer::Pods {
                    namespaces: Namespaces::Matching(team.clone()),
                    pods: Selector::everything()
                },
                Peer::Pods {
                    namespaces: Namespaces::Matching(team),
                    pods: client
                },
                Peer::Block {
                    cidr: Cidr4::parse("10.1.0.0/16").unwrap(),
                    except: vec![Cidr4::parse("10.1.5.0/24").unwrap()]
                },
                Peer::Nothing,
            ]
        );
        assert_eq!(
            rule.ports,
            [
                PortSpec::Range(Protocol::Tcp, 80, 80),
                PortSpec::Range(Protocol::Udp, 5000, 5010),
                PortSpec::Named(Protocol::Tcp, "http".into()),
                PortSpec::All(Protocol::Sctp),
                PortSpec::Nothing,
            ]
        );
        assert_eq!(
            Cidr4::parse("10.1.2.3/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn pods_keep_addresses_ports_and_activity() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}, {"ip": "fd00::5"}]}
        }))
        .unwrap();
        let info = PodInfo::from_pod(&pod);
        assert_eq!(info.ips, vec![Ipv4Addr::new(10, 42, 0, 5)]);
        assert_eq!(
            info.ports,
            vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080
            }]
        );
        assert!(info.active());
        assert_eq!(
            info.named_ports("http", Protocol::Tcp).collect::<Vec<_>>(),
            vec![8080]
        );
        assert_eq!(info.named_ports("http", Protocol::Udp).count(), 0);
        let host = PodInfo {
            host_network: true,
            ..info.clone()
        };
        assert!(!host.active());
        let done = PodInfo {
            finished: true,
            ..info
        };
        assert!(!done.active());
    }

    #[test]
    fn peers_select_by_namespace_and_pod_labels() {
        let pod = PodInfo {
            namespace: "other".into(),
            name: "c".into(),
            labels: labels(&[("role", "client")]),
            node: None,
            host_network: false,
            ips: vec![Ipv4Addr::new(10, 42, 0, 9)],
            ports: vec![],
            finished: false,
        };
        let ns_labels = labels(&[("team", "a"), (NAMESPACE_NAME_LABEL, "other")]);
        let client = sel(json!({"matchLabels": {"role": "client"}}));
        assert!(
            !Peer::Pods {
                namespaces: Namespaces::Same("ns".into()),
                pods: client.clone()
            }
            .selects(&pod, &ns_labels)
        );
        assert!(
            Peer::Pods {
                namespaces: Namespaces::Same("other".into()),
                pods: client.clone()
            }
            .selects(&pod, &ns_labels)
        );
        let team_a = sel(json!({"matchLabels": {"team": "a"}}));
        assert!(
            Peer::Pods {
                namespaces: Namespaces::Matching(team_a.clone()),
                pods: client
            }
            .selects(&pod, &ns_labels)
        );
        let server = sel(json!({"matchLabels": {"role": "server"}}));
        assert!(
            !Peer::Pods {
                namespaces: Namespaces::Matching(team_a),
                pods: server
            }
            .selects(&pod, &ns_labels)
        );
        let by_name = sel(json!({"matchLabels": {NAMESPACE_NAME_LABEL: "other"}}));
        assert!(
            Peer::Pods {
                namespaces: Namespaces::Matching(by_name),
                pods: Selector::everything()
            }
            .selects(&pod, &ns_labels)
        );
    }
}
