//! Pod DNS (↔ pkg/kubelet/network/dns): the resolv.conf a pod's sandbox
//! gets from its dnsPolicy and dnsConfig, the cluster DNS service and
//! domain, and the host's resolv.conf.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::DnsConfig;

/// The kubelet's limits (validation.MaxDNSNameservers, MaxDNSSearchPaths, MaxDNSSearchListChars).
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;

/// What a resolv.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parse a resolv.conf as the kubelet does: `nameserver` lines add, the
/// last `search` line wins (without trailing dots), `options` add.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut r = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => {
                if let Some(ns) = fields.next() {
                    r.nameservers.push(ns.to_string());
                }
            }
            Some("search") | Some("domain") => {
                r.searches = fields
                    .filter(|s| *s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => r.options.extend(fields.map(str::to_string)),
            _ => {}
        }
    }
    r
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    None,
    Cluster,
    Host,
}

fn kind(pod: &Pod) -> Kind {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst")
    {
        "None" => Kind::None,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        "Default" => Kind::Host,
        // ClusterFirst: host networking falls back to the host's resolver.
        _ if host_network => Kind::Host,
        _ => Kind::Cluster,
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// Merge options by name: later ones (the pod's) replace earlier ones.
fn merge_options(base: &[String], extra: &[(String, Option<String>)]) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: String, full: String| match out.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = full,
        None => out.push((name, full)),
    };
    for o in base {
        let name = o.split(':').next().unwrap_or(o).to_string();
        put(name, o.clone());
    }
    for (name, value) in extra {
        let full = match value {
            Some(v) => format!("{name}:{v}"),
            None => name.clone(),
        };
        put(name.clone(), full);
    }
    out.into_iter().map(|(_, full)| full).collect()
}

/// The DNS configuration of `pod`'s sandbox.
pub fn pod_dns(
    pod: &Pod,
    cluster_dns: &[IpAddr],
    cluster_domain: &str,
    host: &ResolvConf,
) -> DnsConfig {
    let mut kind = kind(pod);
    if kind == Kind::Cluster && cluster_dns.is_empty() {
        tracing::warn!(
            "the pod's DNS policy is ClusterFirst but no cluster DNS is configured; falling back to the host's"
        );
        kind = Kind::Host;
    }
    let mut d = match kind {
        Kind::None => DnsConfig::default(),
        Kind::Host => DnsConfig {
            servers: host.nameservers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
        Kind::Cluster => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut searches = Vec::new();
            if !cluster_domain.is_empty() {
                searches = vec![
                    format!("{ns}.svc.{cluster_domain}"),
                    format!("svc.{cluster_domain}"),
                    cluster_domain.to_string(),
                ];
            }
            push_unique(&mut searches, host.searches.iter().cloned());
            DnsConfig {
                servers: cluster_dns.iter().map(ToString::to_string).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(pc) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        push_unique(&mut d.servers, pc.nameservers.iter().flatten().cloned());
        push_unique(&mut d.searches, pc.searches.iter().flatten().cloned());
        let extra: Vec<(String, Option<String>)> = pc
            .options
            .iter()
            .flatten()
            .filter_map(|o| {
                o.name
                    .clone()
                    .map(|n| (n, o.value.clone().filter(|v| !v.is_empty())))
            })
            .collect();
        d.options = merge_options(&d.options, &extra);
    }
    // Fit the resolver's limits, as the kubelet does.
    d.servers.truncate(MAX_NAMESERVERS);
    d.searches.truncate(MAX_SEARCHES);
    while d.searches.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS {
        d.searches.pop();
    }
    d
}

/// [`pod_dns`] with the host's resolv.conf read from `path` (empty when unreadable).
pub fn pod_dns_from(
    pod: &Pod,
    cluster_dns: &[IpAddr],
    cluster_domain: &str,
    path: &std::path::Path,
) -> DnsConfig {
    let host = match std::fs::read_to_string(path) {
        Ok(t) => parse_resolv_conf(&t),
        Err(e) => {
            tracing::debug!(error = %e, path = %path.display(), "reading the host's resolv.conf failed");
            ResolvConf::default()
        }
    };
    pod_dns(pod, cluster_dns, cluster_domain, &host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec}),
        )
        .unwrap()
    }

    fn host() -> ResolvConf {
        parse_resolv_conf(
            "# generated\nnameserver 192.168.1.1\nnameserver 8.8.8.8 ; second\nsearch corp.example. lab.example\noptions edns0 ndots:2\n",
        )
    }

    fn dns() -> Vec<IpAddr> {
        vec!["10.43.0.10".parse().unwrap()]
    }

    #[test]
    fn parses_resolv_conf() {
        let h = host();
        assert_eq!(h.nameservers, vec!["192.168.1.1", "8.8.8.8"]);
        assert_eq!(h.searches, vec!["corp.example", "lab.example"]);
        assert_eq!(h.options, vec!["edns0", "ndots:2"]);
        assert_eq!(
            parse_resolv_conf("search a\nsearch b c\n").searches,
            vec!["b", "c"]
        );
    }

    #[test]
    fn cluster_first() {
        let d = pod_dns(
            &pod(json!({"containers": []})),
            &dns(),
            "cluster.local",
            &host(),
        );
        assert_eq!(d.servers, vec!["10.43.0.10"]);
        assert_eq!(
            d.searches,
            vec![
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "lab.example"
            ]
        );
        assert_eq!(d.options, vec!["ndots:5"]);
        let explicit = pod_dns(
            &pod(json!({"dnsPolicy": "ClusterFirst", "containers": []})),
            &dns(),
            "cluster.local",
            &host(),
        );
        assert_eq!(explicit, d);
    }

    #[test]
    fn host_network_and_default() {
        let h = host();
        let want = DnsConfig {
            servers: h.nameservers.clone(),
            searches: h.searches.clone(),
            options: h.options.clone(),
        };
        assert_eq!(
            pod_dns(
                &pod(json!({"hostNetwork": true, "containers": []})),
                &dns(),
                "cluster.local",
                &h
            ),
            want
        );
        assert_eq!(
            pod_dns(
                &pod(json!({"dnsPolicy": "Default", "containers": []})),
                &dns(),
                "cluster.local",
                &h
            ),
            want
        );
        let with_host_net = pod_dns(
            &pod(
                json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []}),
            ),
            &dns(),
            "cluster.local",
            &h,
        );
        assert_eq!(with_host_net.servers, vec!["10.43.0.10"]);
        assert_eq!(with_host_net.options, vec!["ndots:5"]);
        // No cluster DNS configured: the host's.
        assert_eq!(
            pod_dns(&pod(json!({"containers": []})), &[], "cluster.local", &h),
            want
        );
    }

    #[test]
    fn none_uses_only_the_pods_dns_config() {
        let p = pod(json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["my.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        let d = pod_dns(&p, &dns(), "cluster.local", &host());
        assert_eq!(
            d,
            DnsConfig {
                servers: vec!["1.1.1.1".into()],
                searches: vec!["my.example".into()],
                options: vec!["ndots:2".into(), "edns0".into()]
            }
        );
    }

    #[test]
    fn dns_config_merges() {
        let p = pod(json!({"containers": [], "dnsConfig": {
            "nameservers": ["10.43.0.10", "1.1.1.1"], "searches": ["svc.cluster.local", "extra.example"],
            "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}]}}));
        let d = pod_dns(&p, &dns(), "cluster.local", &ResolvConf::default());
        assert_eq!(d.servers, vec!["10.43.0.10", "1.1.1.1"]);
        assert_eq!(
            d.searches,
            vec![
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "extra.example"
            ]
        );
        assert_eq!(d.options, vec!["ndots:1", "single-request"]);
    }

    #[test]
    fn limits() {
        let searches: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let p = pod(
            json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {"nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"], "searches": searches}}),
        );
        let d = pod_dns(&p, &dns(), "cluster.local", &ResolvConf::default());
        assert_eq!(d.servers.len(), 3);
        assert_eq!(d.searches.len(), 32);
    }
}
