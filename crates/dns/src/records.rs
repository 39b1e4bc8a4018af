//! The record set: Services and EndpointSlices folded into an index keyed
//! the way queries arrive (`<svc>.<ns>` and IP addresses), so answering a
//! query is a hash lookup, and the name resolution of the Kubernetes DNS
//! specification over it (as CoreDNS's kubernetes plugin).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::Error;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How deep an ExternalName pointing into the cluster zone is followed.
const MAX_CNAME_CHAIN: usize = 8;

/// The outcome of looking a name up in the record set.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The name exists with records of the asked type.
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, but not with the asked type (NOERROR, empty answer).
    NoData,
    /// The name is in the cluster zone and does not exist.
    NxDomain,
    /// Not ours: forward upstream.
    Forward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    /// Lower-case: tcp, udp, sctp.
    proto: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    External(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceInfo {
    kind: Kind,
    ports: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceInfo {
    /// `<svc>.<ns>` of the owning Service.
    owner: String,
    /// Ready endpoints: (hostname, addresses).
    endpoints: Vec<(Option<String>, Vec<IpAddr>)>,
    ports: Vec<Port>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Host {
    addrs: Vec<IpAddr>,
    ports: Vec<Port>,
}

/// What a query for `<svc>.<ns>` and the names below it can be answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    ports: Vec<Port>,
    /// Headless services only: ready endpoints by host label (the
    /// endpoint's hostname, or its address with dashes).
    hosts: BTreeMap<String, Host>,
}

#[derive(Debug)]
struct Index {
    /// Lower-case, no trailing dot.
    zone: String,
    zone_name: Name,
    soa: Record,
    ttl: u32,
    services: HashMap<String, ServiceInfo>,
    /// `<ns>/<slice name>` → slice.
    slices: HashMap<String, SliceInfo>,
    /// `<svc>.<ns>` → the `<ns>/<slice name>` keys of its slices.
    slices_by_service: HashMap<String, Vec<String>>,
    entries: HashMap<String, Arc<Entry>>,
    /// Services per namespace, for the empty non-terminal `<ns>.svc.<zone>`.
    namespaces: HashMap<String, usize>,
    /// Address → the names (without trailing dot) that PTR queries answer.
    ptr: HashMap<IpAddr, Vec<String>>,
    serial: u32,
}

/// The shared, indexed record set. Cheap to clone; writers (the watchers)
/// and readers (queries) share it.
#[derive(Debug, Clone)]
pub struct Records {
    inner: Arc<RwLock<Index>>,
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<(String, String)> {
    Some((
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone()?,
    ))
}

fn service_info(svc: &Service) -> ServiceInfo {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())?
                    .to_ascii_lowercase(),
                proto: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        Kind::External(
            spec.external_name
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        )
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                spec.cluster_ip
                    .as_deref()
                    .and_then(|s| s.parse::<IpAddr>().ok()),
            );
        }
        Kind::ClusterIp(ips)
    };
    ServiceInfo { kind, ports }
}

fn slice_info(slice: &EndpointSlice, ns: &str) -> Option<SliceInfo> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let endpoints = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .map(|e| {
            let addrs: Vec<IpAddr> = e.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            (
                e.hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .map(|h| h.to_ascii_lowercase()),
                addrs,
            )
        })
        .filter(|(_, addrs)| !addrs.is_empty())
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())?
                    .to_ascii_lowercase(),
                proto: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    Some(SliceInfo {
        owner: format!("{svc}.{ns}"),
        endpoints,
        ports,
    })
}

/// `10.1.2.3` → `10-1-2-3`; `fd00::1` → `fd00--1` (the endpoint and pod label form).
fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn undashed(label: &str) -> Option<IpAddr> {
    if label.contains("--") || label.matches('-').count() > 3 {
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    } else {
        label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    }
}

fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        let mut octets = [0u8; 4];
        for (i, l) in labels.iter().rev().enumerate() {
            octets[i] = l.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for n in nibbles.iter().rev() {
        if n.len() != 1 {
            return None;
        }
        value = (value << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

fn build_entry(info: &ServiceInfo, slices: &[&SliceInfo]) -> Entry {
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    if info.kind == Kind::Headless {
        for slice in slices {
            for (hostname, addrs) in &slice.endpoints {
                let labels: Vec<(String, Vec<IpAddr>)> = match hostname {
                    Some(h) => vec![(h.clone(), addrs.clone())],
                    None => addrs.iter().map(|a| (dashed(a), vec![*a])).collect(),
                };
                for (label, addrs) in labels {
                    let host = hosts.entry(label).or_default();
                    for a in addrs {
                        if !host.addrs.contains(&a) {
                            host.addrs.push(a);
                        }
                    }
                    for p in &slice.ports {
                        if !host.ports.contains(p) {
                            host.ports.push(p.clone());
                        }
                    }
                }
            }
        }
    }
    Entry {
        kind: info.kind.clone(),
        ports: info.ports.clone(),
        hosts,
    }
}

fn entry_ptrs(key: &str, entry: &Entry, zone: &str) -> Vec<(IpAddr, String)> {
    match &entry.kind {
        Kind::ClusterIp(ips) => ips
            .iter()
            .map(|ip| (*ip, format!("{key}.svc.{zone}")))
            .collect(),
        Kind::Headless => entry
            .hosts
            .iter()
            .flat_map(|(label, host)| {
                host.addrs
                    .iter()
                    .map(move |a| (*a, format!("{label}.{key}.svc.{zone}")))
            })
            .collect(),
        Kind::External(_) => Vec::new(),
    }
}

fn name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn ip_record(owner: &Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

fn wants(qtype: RecordType, ip: &IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A | RecordType::ANY, IpAddr::V4(_))
            | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_))
    )
}

fn answer_or_nodata(answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
    if answers.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Answer {
            answers,
            additionals,
        }
    }
}

impl Index {
    fn recompute(&mut self, key: &str) {
        let old = self.entries.remove(key);
        if let Some(old) = &old {
            for (ip, target) in entry_ptrs(key, old, &self.zone) {
                if let Some(names) = self.ptr.get_mut(&ip) {
                    names.retain(|n| *n != target);
                    if names.is_empty() {
                        self.ptr.remove(&ip);
                    }
                }
            }
        }
        let Some(info) = self.services.get(key) else {
            self.serial = self.serial.wrapping_add(1);
            return;
        };
        let slices: Vec<&SliceInfo> = self
            .slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect();
        let entry = build_entry(info, &slices);
        for (ip, target) in entry_ptrs(key, &entry, &self.zone) {
            let names = self.ptr.entry(ip).or_default();
            if !names.contains(&target) {
                names.push(target);
            }
        }
        self.entries.insert(key.to_string(), Arc::new(entry));
        self.serial = self.serial.wrapping_add(1);
    }

    fn set_service(&mut self, key: String, info: Option<ServiceInfo>) {
        let ns = key
            .split_once('.')
            .map(|(_, ns)| ns.to_string())
            .unwrap_or_default();
        match info {
            Some(info) => {
                if self.services.get(&key) == Some(&info) {
                    return;
                }
                if self.services.insert(key.clone(), info).is_none() {
                    *self.namespaces.entry(ns).or_default() += 1;
                }
            }
            None => {
                if self.services.remove(&key).is_none() {
                    return;
                }
                if let Some(n) = self.namespaces.get_mut(&ns) {
                    *n -= 1;
                    if *n == 0 {
                        self.namespaces.remove(&ns);
                    }
                }
            }
        }
        self.recompute(&key);
    }

    fn set_slice(&mut self, slice_key: String, info: Option<SliceInfo>) {
        if self.slices.get(&slice_key) == info.as_ref() {
            return;
        }
        let mut affected = Vec::new();
        if let Some(old) = self.slices.remove(&slice_key) {
            if let Some(keys) = self.slices_by_service.get_mut(&old.owner) {
                keys.retain(|k| *k != slice_key);
                if keys.is_empty() {
                    self.slices_by_service.remove(&old.owner);
                }
            }
            affected.push(old.owner);
        }
        if let Some(info) = info {
            self.slices_by_service
                .entry(info.owner.clone())
                .or_default()
                .push(slice_key.clone());
            if !affected.contains(&info.owner) {
                affected.push(info.owner.clone());
            }
            self.slices.insert(slice_key, info);
        }
        for key in affected {
            if self.services.contains_key(&key) {
                self.recompute(&key);
            }
        }
    }

    fn lookup(&self, qname: &Name, qtype: RecordType, depth: usize) -> Lookup {
        let lower = qname.to_ascii().to_ascii_lowercase();
        let s = lower.trim_end_matches('.');
        let zone = self.zone.as_str();
        if s == zone {
            return match qtype {
                RecordType::SOA | RecordType::ANY => Lookup::Answer {
                    answers: vec![self.soa.clone()],
                    additionals: vec![],
                },
                _ => Lookup::NoData,
            };
        }
        let Some(rest) = s.strip_suffix(zone).and_then(|r| r.strip_suffix('.')) else {
            if s.ends_with(".in-addr.arpa") || s.ends_with(".ip6.arpa") {
                return self.lookup_ptr(qname, s, qtype);
            }
            return Lookup::Forward;
        };
        let labels: Vec<&str> = rest.split('.').collect();
        match labels.as_slice() {
            ["svc"] | ["pod"] => Lookup::NoData,
            [ns, "svc"] => {
                if self.namespaces.contains_key(*ns) {
                    Lookup::NoData
                } else {
                    Lookup::NxDomain
                }
            }
            [svc, ns, "svc"] => self.lookup_service(qname, &format!("{svc}.{ns}"), qtype, depth),
            [first, svc, ns, "svc"] => {
                let key = format!("{svc}.{ns}");
                let Some(entry) = self.entries.get(&key) else {
                    return Lookup::NxDomain;
                };
                if let Some(proto) = first.strip_prefix('_') {
                    let exists = match entry.kind {
                        Kind::Headless => entry
                            .hosts
                            .values()
                            .any(|h| h.ports.iter().any(|p| p.proto == proto)),
                        _ => entry.ports.iter().any(|p| p.proto == proto),
                    };
                    return if exists {
                        Lookup::NoData
                    } else {
                        Lookup::NxDomain
                    };
                }
                let Some(host) = entry.hosts.get(*first) else {
                    return Lookup::NxDomain;
                };
                let answers: Vec<Record> = host
                    .addrs
                    .iter()
                    .filter(|a| wants(qtype, a))
                    .map(|a| ip_record(qname, *a, self.ttl))
                    .collect();
                answer_or_nodata(answers, vec![])
            }
            [port, proto, svc, ns, "svc"] => {
                let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_'))
                else {
                    return Lookup::NxDomain;
                };
                self.lookup_srv(qname, &format!("{svc}.{ns}"), port, proto, qtype)
            }
            [ip, ns, "pod"] => match undashed(ip) {
                Some(addr) => {
                    let _ = ns;
                    let answers = if wants(qtype, &addr) {
                        vec![ip_record(qname, addr, self.ttl)]
                    } else {
                        vec![]
                    };
                    answer_or_nodata(answers, vec![])
                }
                None => Lookup::NxDomain,
            },
            [_ns, "pod"] => Lookup::NoData,
            _ => Lookup::NxDomain,
        }
    }

    fn lookup_service(&self, qname: &Name, key: &str, qtype: RecordType, depth: usize) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::NxDomain;
        };
        let ttl = self.ttl;
        match &entry.kind {
            Kind::ClusterIp(ips) => {
                let answers = ips
                    .iter()
                    .filter(|a| wants(qtype, a))
                    .map(|a| ip_record(qname, *a, ttl))
                    .collect();
                answer_or_nodata(answers, vec![])
            }
            Kind::Headless => {
                let mut answers: Vec<Record> = Vec::new();
                let mut seen: Vec<IpAddr> = Vec::new();
                for host in entry.hosts.values() {
                    for a in host.addrs.iter().filter(|a| wants(qtype, a)) {
                        if !seen.contains(a) {
                            seen.push(*a);
                            answers.push(ip_record(qname, *a, ttl));
                        }
                    }
                }
                answer_or_nodata(answers, vec![])
            }
            Kind::External(target) => {
                let Some(target_name) = name(target) else {
                    return Lookup::NoData;
                };
                let mut answers = vec![Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::CNAME(CNAME(target_name.clone())),
                )];
                let mut additionals = vec![];
                if qtype != RecordType::CNAME
                    && depth < MAX_CNAME_CHAIN
                    && self.in_zone(target)
                    && let Lookup::Answer {
                        answers: more,
                        additionals: extra,
                    } = self.lookup(&target_name, qtype, depth + 1)
                {
                    answers.extend(more);
                    additionals.extend(extra);
                }
                Lookup::Answer {
                    answers,
                    additionals,
                }
            }
        }
    }

    fn in_zone(&self, target: &str) -> bool {
        target == self.zone
            || target
                .strip_suffix(&self.zone)
                .is_some_and(|r| r.ends_with('.'))
    }

    fn lookup_srv(
        &self,
        qname: &Name,
        key: &str,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::NxDomain;
        };
        let ttl = self.ttl;
        let zone = &self.zone;
        // (target label or None for the service itself, port)
        let mut targets: Vec<(Option<&str>, u16)> = Vec::new();
        match &entry.kind {
            Kind::Headless => {
                for (label, host) in &entry.hosts {
                    for p in host
                        .ports
                        .iter()
                        .filter(|p| p.name == port && p.proto == proto)
                    {
                        targets.push((Some(label.as_str()), p.port));
                    }
                }
            }
            Kind::ClusterIp(_) => {
                for p in entry
                    .ports
                    .iter()
                    .filter(|p| p.name == port && p.proto == proto)
                {
                    targets.push((None, p.port));
                }
            }
            Kind::External(_) => {}
        }
        if targets.is_empty() {
            return Lookup::NxDomain;
        }
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Lookup::NoData;
        }
        let weight = u16::try_from((100 / targets.len()).max(1)).unwrap_or(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (label, port) in targets {
            let target = match label {
                Some(l) => format!("{l}.{key}.svc.{zone}"),
                None => format!("{key}.svc.{zone}"),
            };
            let Some(target_name) = name(&target) else {
                continue;
            };
            answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::SRV(SRV::new(0, weight, port, target_name.clone())),
            ));
            let addrs: Vec<IpAddr> = match (&entry.kind, label) {
                (Kind::ClusterIp(ips), _) => ips.clone(),
                (_, Some(l)) => entry
                    .hosts
                    .get(l)
                    .map(|h| h.addrs.clone())
                    .unwrap_or_default(),
                _ => vec![],
            };
            for a in addrs {
                let r = ip_record(&target_name, a, ttl);
                if !additionals.contains(&r) {
                    additionals.push(r);
                }
            }
        }
        Lookup::Answer {
            answers,
            additionals,
        }
    }

    fn lookup_ptr(&self, qname: &Name, s: &str, qtype: RecordType) -> Lookup {
        let Some(ip) = reverse_ip(s) else {
            return Lookup::Forward;
        };
        let Some(names) = self.ptr.get(&ip) else {
            return Lookup::Forward;
        };
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Lookup::NoData;
        }
        let answers = names
            .iter()
            .filter_map(|n| name(n))
            .map(|n| Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(n))))
            .collect();
        answer_or_nodata(answers, vec![])
    }
}

impl Records {
    /// An empty record set for `zone` (e.g. `cluster.local`) whose records
    /// have `ttl` seconds.
    pub fn new(zone: &str, ttl: u32) -> Result<Records, Error> {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let zone_name = name(&zone)
            .filter(|_| !zone.is_empty())
            .ok_or_else(|| Error::Domain(zone.clone()))?;
        let mname = name(&format!("ns.dns.{zone}")).ok_or_else(|| Error::Domain(zone.clone()))?;
        let rname =
            name(&format!("hostmaster.{zone}")).ok_or_else(|| Error::Domain(zone.clone()))?;
        let soa = Record::from_rdata(
            zone_name.clone(),
            ttl,
            RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, ttl)),
        );
        Ok(Records {
            inner: Arc::new(RwLock::new(Index {
                zone,
                zone_name,
                soa,
                ttl,
                services: HashMap::new(),
                slices: HashMap::new(),
                slices_by_service: HashMap::new(),
                entries: HashMap::new(),
                namespaces: HashMap::new(),
                ptr: HashMap::new(),
                serial: 1,
            })),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or updates a Service.
    pub fn apply_service(&self, svc: &Service) {
        let Some((ns, name)) = key_of(&svc.metadata) else {
            return;
        };
        self.write()
            .set_service(format!("{name}.{ns}"), Some(service_info(svc)));
    }

    /// Removes a Service.
    pub fn delete_service(&self, svc: &Service) {
        let Some((ns, name)) = key_of(&svc.metadata) else {
            return;
        };
        self.write().set_service(format!("{name}.{ns}"), None);
    }

    /// Adds or updates an EndpointSlice (slices without the
    /// `kubernetes.io/service-name` label are ignored).
    pub fn apply_endpoint_slice(&self, slice: &EndpointSlice) {
        let Some((ns, name)) = key_of(&slice.metadata) else {
            return;
        };
        let info = slice_info(slice, &ns);
        self.write().set_slice(format!("{ns}/{name}"), info);
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, slice: &EndpointSlice) {
        let Some((ns, name)) = key_of(&slice.metadata) else {
            return;
        };
        self.write().set_slice(format!("{ns}/{name}"), None);
    }

    /// Replaces every Service (after a watcher's relist).
    pub fn replace_services(&self, services: &[Service]) {
        let mut index = self.write();
        let fresh: HashMap<String, ServiceInfo> = services
            .iter()
            .filter_map(|s| {
                key_of(&s.metadata).map(|(ns, name)| (format!("{name}.{ns}"), service_info(s)))
            })
            .collect();
        let gone: Vec<String> = index
            .services
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            index.set_service(key, None);
        }
        for (key, info) in fresh {
            index.set_service(key, Some(info));
        }
    }

    /// Replaces every EndpointSlice (after a watcher's relist).
    pub fn replace_endpoint_slices(&self, slices: &[EndpointSlice]) {
        let mut index = self.write();
        let fresh: HashMap<String, SliceInfo> = slices
            .iter()
            .filter_map(|s| {
                let (ns, name) = key_of(&s.metadata)?;
                Some((format!("{ns}/{name}"), slice_info(s, &ns)?))
            })
            .collect();
        let gone: Vec<String> = index
            .slices
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            index.set_slice(key, None);
        }
        for (key, info) in fresh {
            index.set_slice(key, Some(info));
        }
    }

    /// Looks `qname` up (case-insensitively) for records of `qtype`.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        self.read().lookup(qname, qtype, 0)
    }

    /// The zone's SOA record, with the current serial (for the authority
    /// section of negative answers).
    pub fn soa(&self) -> Record {
        let index = self.read();
        let mut soa = index.soa.clone();
        if let RData::SOA(data) = &mut soa.data {
            data.serial = index.serial;
        }
        soa
    }

    /// The cluster zone, e.g. `cluster.local.`.
    pub fn zone(&self) -> Name {
        self.read().zone_name.clone()
    }

    /// How many Services the set holds.
    pub fn service_count(&self) -> usize {
        self.read().services.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    /// web (ClusterIP, named port http/TCP 80 and dns/UDP 53), db (headless,
    /// two ready StatefulSet pods with hostnames, one not ready, one ready
    /// without hostname), ext (ExternalName), alias (ExternalName into the
    /// zone), v6 (IPv6 ClusterIP).
    fn fixture() -> Records {
        let r = Records::new("cluster.local", 5).unwrap();
        r.apply_service(&service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 9000}]}
        })));
        r.apply_service(&service(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        })));
        r.apply_endpoint_slice(&slice(json!({
            "metadata": {"name": "db-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "hostname": "db-1", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
                {"addresses": ["10.42.0.8"]}
            ]
        })));
        r.apply_service(&service(json!({
            "metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        })));
        r.apply_service(&service(json!({
            "metadata": {"name": "alias", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"}
        })));
        r.apply_service(&service(json!({
            "metadata": {"name": "v6", "namespace": "shop"},
            "spec": {"clusterIP": "fd00:43::10", "clusterIPs": ["fd00:43::10"]}
        })));
        r
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The answer section as (name, type, rdata text), lower-cased names.
    fn answers(l: &Lookup) -> Vec<String> {
        match l {
            Lookup::Answer { answers, .. } => {
                let mut v: Vec<String> = answers
                    .iter()
                    .map(|r| format!("{} {}", r.record_type(), r.data))
                    .collect();
                v.sort();
                v
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn additionals(l: &Lookup) -> Vec<String> {
        match l {
            Lookup::Answer { additionals, .. } => {
                let mut v: Vec<String> = additionals
                    .iter()
                    .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                    .collect();
                v.sort();
                v
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_service_a_and_nodata() {
        let r = fixture();
        let l = r.lookup(&n("web.shop.svc.cluster.local."), RecordType::A);
        assert_eq!(answers(&l), vec!["A 10.43.0.20"]);
        if let Lookup::Answer { answers, .. } = &l {
            assert_eq!(answers[0].ttl, 5);
            assert_eq!(answers[0].name, n("web.shop.svc.cluster.local."));
        }
        // The name exists, but not with AAAA: NODATA, not NXDOMAIN.
        assert_eq!(
            r.lookup(&n("web.shop.svc.cluster.local."), RecordType::AAAA),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup(&n("web.shop.svc.cluster.local."), RecordType::MX),
            Lookup::NoData
        );
        assert_eq!(
            answers(&r.lookup(&n("v6.shop.svc.cluster.local."), RecordType::AAAA)),
            vec!["AAAA fd00:43::10"]
        );
        assert_eq!(
            r.lookup(&n("v6.shop.svc.cluster.local."), RecordType::A),
            Lookup::NoData
        );
    }

    #[test]
    fn case_insensitive() {
        let r = fixture();
        let q = n("WEB.Shop.SVC.Cluster.Local.");
        let l = r.lookup(&q, RecordType::A);
        assert_eq!(answers(&l), vec!["A 10.43.0.20"]);
        // The answer keeps the query's spelling (0x20 randomization works).
        if let Lookup::Answer { answers, .. } = &l {
            assert!(answers[0].name.eq_case(&q));
        }
    }

    #[test]
    fn nxdomain_for_missing_names() {
        let r = fixture();
        for name in [
            "nope.shop.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "web.shop.cluster.local.",
            "x.web.shop.svc.cluster.local.",
            "db-2.db.shop.svc.cluster.local.",
            "_nope._tcp.web.shop.svc.cluster.local.",
            "_http._udp.web.shop.svc.cluster.local.",
            "_sctp.web.shop.svc.cluster.local.",
            "a.b.c.d.e.f.svc.cluster.local.",
            "other.svc.cluster.local.",
            "foo.cluster.local.",
            "google.com.shop.svc.cluster.local.",
        ] {
            assert_eq!(
                r.lookup(&n(name), RecordType::A),
                Lookup::NxDomain,
                "{name}"
            );
        }
    }

    #[test]
    fn empty_non_terminals_and_apex_are_nodata() {
        let r = fixture();
        for name in [
            "svc.cluster.local.",
            "shop.svc.cluster.local.",
            "pod.cluster.local.",
            "shop.pod.cluster.local.",
            "_tcp.web.shop.svc.cluster.local.",
            "cluster.local.",
        ] {
            assert_eq!(r.lookup(&n(name), RecordType::A), Lookup::NoData, "{name}");
        }
        let soa = r.lookup(&n("cluster.local."), RecordType::SOA);
        assert_eq!(answers(&soa).len(), 1);
        assert!(
            answers(&soa)[0].starts_with("SOA ns.dns.cluster.local. hostmaster.cluster.local."),
            "{:?}",
            answers(&soa)
        );
    }

    #[test]
    fn headless_service_ready_endpoints() {
        let r = fixture();
        let l = r.lookup(&n("db.shop.svc.cluster.local."), RecordType::A);
        assert_eq!(
            answers(&l),
            vec!["A 10.42.0.5", "A 10.42.0.6", "A 10.42.0.8"]
        );
        assert_eq!(
            answers(&r.lookup(&n("db-0.db.shop.svc.cluster.local."), RecordType::A)),
            vec!["A 10.42.0.5"]
        );
        assert_eq!(
            answers(&r.lookup(&n("10-42-0-8.db.shop.svc.cluster.local."), RecordType::A)),
            vec!["A 10.42.0.8"]
        );
        assert_eq!(
            r.lookup(&n("db-0.db.shop.svc.cluster.local."), RecordType::AAAA),
            Lookup::NoData
        );
        // A ClusterIP service has no per-endpoint names.
        assert_eq!(
            r.lookup(&n("db-0.web.shop.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );

        // db-2 becomes ready; db-0's slice entry goes away.
        r.apply_endpoint_slice(&slice(json!({
            "metadata": {"name": "db-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": true}}]
        })));
        assert_eq!(
            answers(&r.lookup(&n("db.shop.svc.cluster.local."), RecordType::A)),
            vec!["A 10.42.0.7"]
        );
        assert_eq!(
            r.lookup(&n("db-0.db.shop.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            r.lookup(&n("5.0.42.10.in-addr.arpa."), RecordType::PTR),
            Lookup::Forward
        );

        // All slices gone: the service still exists, without addresses.
        r.delete_endpoint_slice(&slice(json!({
            "metadata": {"name": "db-abc", "namespace": "shop"}, "addressType": "IPv4", "endpoints": []
        })));
        assert_eq!(
            r.lookup(&n("db.shop.svc.cluster.local."), RecordType::A),
            Lookup::NoData
        );
    }

    #[test]
    fn headless_endpoints_merge_across_slices() {
        let r = fixture();
        r.apply_endpoint_slice(&slice(json!({
            "metadata": {"name": "db-v6", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv6",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["fd00:42::5"], "hostname": "db-0"}]
        })));
        assert_eq!(
            answers(&r.lookup(&n("db.shop.svc.cluster.local."), RecordType::AAAA)),
            vec!["AAAA fd00:42::5"]
        );
        assert_eq!(
            answers(&r.lookup(&n("db-0.db.shop.svc.cluster.local."), RecordType::AAAA)),
            vec!["AAAA fd00:42::5"]
        );
        assert_eq!(
            answers(&r.lookup(&n("db-0.db.shop.svc.cluster.local."), RecordType::A)),
            vec!["A 10.42.0.5"]
        );
    }

    #[test]
    fn srv_for_named_ports() {
        let r = fixture();
        let l = r.lookup(
            &n("_http._tcp.web.shop.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(
            answers(&l),
            vec!["SRV 0 100 80 web.shop.svc.cluster.local."]
        );
        assert_eq!(
            additionals(&l),
            vec!["web.shop.svc.cluster.local. A 10.43.0.20"]
        );
        let l = r.lookup(&n("_dns._udp.web.shop.svc.cluster.local."), RecordType::SRV);
        assert_eq!(
            answers(&l),
            vec!["SRV 0 100 53 web.shop.svc.cluster.local."]
        );
        // The SRV name exists but has no A record.
        assert_eq!(
            r.lookup(&n("_http._tcp.web.shop.svc.cluster.local."), RecordType::A),
            Lookup::NoData
        );

        let l = r.lookup(&n("_pg._tcp.db.shop.svc.cluster.local."), RecordType::SRV);
        assert_eq!(
            answers(&l),
            vec![
                "SRV 0 33 5432 10-42-0-8.db.shop.svc.cluster.local.",
                "SRV 0 33 5432 db-0.db.shop.svc.cluster.local.",
                "SRV 0 33 5432 db-1.db.shop.svc.cluster.local.",
            ]
        );
        assert_eq!(
            additionals(&l),
            vec![
                "10-42-0-8.db.shop.svc.cluster.local. A 10.42.0.8",
                "db-0.db.shop.svc.cluster.local. A 10.42.0.5",
                "db-1.db.shop.svc.cluster.local. A 10.42.0.6",
            ]
        );
    }

    #[test]
    fn external_name_is_a_cname() {
        let r = fixture();
        let l = r.lookup(&n("ext.shop.svc.cluster.local."), RecordType::A);
        assert_eq!(answers(&l), vec!["CNAME example.com."]);
        assert_eq!(
            answers(&r.lookup(&n("ext.shop.svc.cluster.local."), RecordType::CNAME)),
            vec!["CNAME example.com."]
        );
        // An ExternalName into the zone is followed.
        let l = r.lookup(&n("alias.shop.svc.cluster.local."), RecordType::A);
        assert_eq!(
            answers(&l),
            vec!["A 10.43.0.20", "CNAME web.shop.svc.cluster.local."]
        );
    }

    #[test]
    fn pod_records() {
        let r = fixture();
        assert_eq!(
            answers(&r.lookup(&n("10-42-1-7.shop.pod.cluster.local."), RecordType::A)),
            vec!["A 10.42.1.7"]
        );
        assert_eq!(
            answers(&r.lookup(&n("fd00-42--7.shop.pod.cluster.local."), RecordType::AAAA)),
            vec!["AAAA fd00:42::7"]
        );
        assert_eq!(
            r.lookup(&n("10-42-1-7.shop.pod.cluster.local."), RecordType::AAAA),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup(&n("10-42-1.shop.pod.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            r.lookup(&n("not-an-ip.shop.pod.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn ptr_records() {
        let r = fixture();
        assert_eq!(
            answers(&r.lookup(&n("20.0.43.10.in-addr.arpa."), RecordType::PTR)),
            vec!["PTR web.shop.svc.cluster.local."]
        );
        assert_eq!(
            answers(&r.lookup(&n("5.0.42.10.IN-ADDR.ARPA."), RecordType::PTR)),
            vec!["PTR db-0.db.shop.svc.cluster.local."]
        );
        assert_eq!(
            answers(&r.lookup(&n("8.0.42.10.in-addr.arpa."), RecordType::PTR)),
            vec!["PTR 10-42-0-8.db.shop.svc.cluster.local."]
        );
        let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(
            answers(&r.lookup(&n(v6), RecordType::PTR)),
            vec!["PTR v6.shop.svc.cluster.local."]
        );
        // Not-ready endpoints and unknown addresses are not ours: forwarded.
        assert_eq!(
            r.lookup(&n("7.0.42.10.in-addr.arpa."), RecordType::PTR),
            Lookup::Forward
        );
        assert_eq!(
            r.lookup(&n("1.1.168.192.in-addr.arpa."), RecordType::PTR),
            Lookup::Forward
        );
        // The service goes, and its PTR with it.
        r.delete_service(&service(
            json!({"metadata": {"name": "web", "namespace": "shop"}}),
        ));
        assert_eq!(
            r.lookup(&n("20.0.43.10.in-addr.arpa."), RecordType::PTR),
            Lookup::Forward
        );
        assert_eq!(
            r.lookup(&n("web.shop.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
    }

    /// The conformance suite's probes run `dig +search` with the pod's
    /// resolv.conf (ndots:5, search `<ns>.svc.<zone> svc.<zone> <zone>`):
    /// every search candidate before the real name must be NXDOMAIN, or
    /// dig stops there with an empty answer; the name itself answers.
    #[test]
    fn dig_search_walks_past_every_candidate_to_the_name() {
        let r = fixture();
        let search = [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ];
        for (name, qtype, fqdn) in [
            ("web", RecordType::A, "web.shop.svc.cluster.local."),
            ("web.shop", RecordType::A, "web.shop.svc.cluster.local."),
            ("web.shop.svc", RecordType::A, "web.shop.svc.cluster.local."),
            (
                "web.shop.svc.cluster.local",
                RecordType::A,
                "web.shop.svc.cluster.local.",
            ),
            ("db.shop.svc", RecordType::A, "db.shop.svc.cluster.local."),
            (
                "db-0.db.shop.svc",
                RecordType::A,
                "db-0.db.shop.svc.cluster.local.",
            ),
            (
                "_http._tcp.web.shop.svc",
                RecordType::SRV,
                "_http._tcp.web.shop.svc.cluster.local.",
            ),
            (
                "_pg._tcp.db.shop.svc",
                RecordType::SRV,
                "_pg._tcp.db.shop.svc.cluster.local.",
            ),
            (
                "ext.shop.svc",
                RecordType::CNAME,
                "ext.shop.svc.cluster.local.",
            ),
        ] {
            let mut candidates: Vec<String> = Vec::new();
            if name.matches('.').count() < 5 {
                candidates.extend(search.iter().map(|d| format!("{name}.{d}.")));
            }
            candidates.push(format!("{name}."));
            let (found, l) = candidates
                .iter()
                .map(|c| (c.clone(), r.lookup(&n(c), qtype)))
                .find(|(_, l)| *l != Lookup::NxDomain)
                .unwrap();
            assert_eq!(found, fqdn, "{name}");
            assert!(matches!(l, Lookup::Answer { .. }), "{name}: {l:?}");
        }
    }

    #[test]
    fn other_names_are_forwarded() {
        let r = fixture();
        assert_eq!(r.lookup(&n("example.com."), RecordType::A), Lookup::Forward);
        assert_eq!(
            r.lookup(&n("cluster.local.example.com."), RecordType::A),
            Lookup::Forward
        );
        assert_eq!(
            r.lookup(&n("xcluster.local."), RecordType::A),
            Lookup::Forward
        );
    }

    #[test]
    fn relist_replaces_everything() {
        let r = fixture();
        r.replace_services(&[service(json!({
            "metadata": {"name": "api", "namespace": "prod"},
            "spec": {"clusterIP": "10.43.1.1", "clusterIPs": ["10.43.1.1"]}
        }))]);
        r.replace_endpoint_slices(&[]);
        assert_eq!(r.service_count(), 1);
        assert_eq!(
            r.lookup(&n("web.shop.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            r.lookup(&n("shop.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            r.lookup(&n("20.0.43.10.in-addr.arpa."), RecordType::PTR),
            Lookup::Forward
        );
        assert_eq!(
            answers(&r.lookup(&n("api.prod.svc.cluster.local."), RecordType::A)),
            vec!["A 10.43.1.1"]
        );
    }

    #[test]
    fn custom_zone() {
        let r = Records::new("Corp.Example.", 30).unwrap();
        r.apply_service(&service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"]}
        })));
        let l = r.lookup(&n("web.shop.svc.corp.example."), RecordType::A);
        assert_eq!(answers(&l), vec!["A 10.43.0.20"]);
        assert_eq!(
            r.lookup(&n("web.shop.svc.cluster.local."), RecordType::A),
            Lookup::Forward
        );
        assert!(Records::new("", 5).is_err());
    }
}
