//! The controller's view of the cluster (Ingresses, IngressClasses,
//! Services, EndpointSlices and TLS Secrets, indexed by namespace/name) and
//! the build of a routing table and certificate table from it.
//!
//! A build walks the served Ingresses only and looks their Services,
//! slices and Secrets up by key: O(ingresses × their backends' endpoints),
//! independent of how many other Services the cluster has. Changes to
//! objects no served Ingress refers to do not trigger a build.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use rustls::sign::CertifiedKey;

use crate::routes::{Backend, HostKey, PathType, Table};
use crate::tls::{self, CertTable};

/// The annotation that makes an IngressClass the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated class annotation, still honoured by ingress-nginx.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// namespace, name.
pub type Key = (String, String);

fn key_of<K: kube::Resource>(o: &K) -> Key {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// Which Ingresses are ours.
#[derive(Debug, Clone)]
pub struct Classes {
    /// The IngressClass name (`skiff`).
    pub class_name: String,
    /// The IngressClass controller (`skiff.dev/ingress`).
    pub controller: String,
}

/// What a build produced.
#[derive(Debug, Default)]
pub struct Built {
    pub table: Table,
    pub certs: CertTable,
    /// The served Ingresses, oldest first.
    pub served: Vec<Key>,
}

/// The watched objects.
#[derive(Default)]
pub struct Cluster {
    ingresses: HashMap<Key, Ingress>,
    classes: HashMap<String, IngressClass>,
    services: HashMap<Key, Service>,
    /// By (namespace, service name), then slice name.
    slices: HashMap<Key, BTreeMap<String, EndpointSlice>>,
    /// TLS Secrets, parsed when they arrive.
    secrets: HashMap<Key, Result<Arc<CertifiedKey>, String>>,
    /// What the last build looked up: changes elsewhere need no build.
    used_services: HashSet<Key>,
    used_secrets: HashSet<Key>,
}

impl Cluster {
    // Each apply/delete says whether the routing may have changed.

    pub fn apply_ingress(&mut self, o: Ingress) -> bool {
        self.ingresses.insert(key_of(&o), o);
        true
    }
    pub fn delete_ingress(&mut self, o: &Ingress) -> bool {
        self.ingresses.remove(&key_of(o)).is_some()
    }
    pub fn replace_ingresses(&mut self, all: Vec<Ingress>) -> bool {
        self.ingresses = all.into_iter().map(|o| (key_of(&o), o)).collect();
        true
    }

    pub fn apply_class(&mut self, o: IngressClass) -> bool {
        self.classes.insert(o.name_any(), o);
        true
    }
    pub fn delete_class(&mut self, o: &IngressClass) -> bool {
        self.classes.remove(&o.name_any()).is_some()
    }
    pub fn replace_classes(&mut self, all: Vec<IngressClass>) -> bool {
        self.classes = all.into_iter().map(|o| (o.name_any(), o)).collect();
        true
    }

    pub fn apply_service(&mut self, o: Service) -> bool {
        let k = key_of(&o);
        let used = self.used_services.contains(&k);
        self.services.insert(k, o);
        used
    }
    pub fn delete_service(&mut self, o: &Service) -> bool {
        let k = key_of(o);
        self.services.remove(&k).is_some() && self.used_services.contains(&k)
    }
    pub fn replace_services(&mut self, all: Vec<Service>) -> bool {
        self.services = all.into_iter().map(|o| (key_of(&o), o)).collect();
        true
    }

    fn slice_service(o: &EndpointSlice) -> Option<Key> {
        let svc = o.labels().get(SERVICE_NAME_LABEL)?;
        Some((o.namespace().unwrap_or_default(), svc.clone()))
    }
    pub fn apply_slice(&mut self, o: EndpointSlice) -> bool {
        let Some(k) = Self::slice_service(&o) else {
            return false;
        };
        let used = self.used_services.contains(&k);
        self.slices.entry(k).or_default().insert(o.name_any(), o);
        used
    }
    pub fn delete_slice(&mut self, o: &EndpointSlice) -> bool {
        let Some(k) = Self::slice_service(o) else {
            return false;
        };
        let Some(by_name) = self.slices.get_mut(&k) else {
            return false;
        };
        let removed = by_name.remove(&o.name_any()).is_some();
        if by_name.is_empty() {
            self.slices.remove(&k);
        }
        removed && self.used_services.contains(&k)
    }
    pub fn replace_slices(&mut self, all: Vec<EndpointSlice>) -> bool {
        self.slices.clear();
        for o in all {
            if let Some(k) = Self::slice_service(&o) {
                self.slices.entry(k).or_default().insert(o.name_any(), o);
            }
        }
        true
    }

    fn parse_secret(o: &Secret) -> Result<Arc<CertifiedKey>, String> {
        tls::secret_key(o).map_err(|e| {
            tracing::warn!(secret = %format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()), error = %e, "unusable TLS secret");
            e.to_string()
        })
    }
    pub fn apply_secret(&mut self, o: Secret) -> bool {
        let k = key_of(&o);
        if o.type_.as_deref() != Some("kubernetes.io/tls") {
            return self.secrets.remove(&k).is_some() && self.used_secrets.contains(&k);
        }
        let parsed = Self::parse_secret(&o);
        self.secrets.insert(k.clone(), parsed);
        self.used_secrets.contains(&k)
    }
    pub fn delete_secret(&mut self, o: &Secret) -> bool {
        let k = key_of(o);
        self.secrets.remove(&k).is_some() && self.used_secrets.contains(&k)
    }
    pub fn replace_secrets(&mut self, all: Vec<Secret>) -> bool {
        self.secrets = all
            .iter()
            .filter(|o| o.type_.as_deref() == Some("kubernetes.io/tls"))
            .map(|o| (key_of(o), Self::parse_secret(o)))
            .collect();
        true
    }

    pub fn ingress(&self, key: &Key) -> Option<&Ingress> {
        self.ingresses.get(key)
    }

    /// Whether `ing` belongs to us: its class is ours (by name, or an
    /// IngressClass with our controller), or it has no class and ours is
    /// the default.
    pub fn serves(&self, classes: &Classes, ing: &Ingress) -> bool {
        let ours = |name: &str| {
            name == classes.class_name
                || self.classes.get(name).is_some_and(|c| {
                    c.spec
                        .as_ref()
                        .is_some_and(|s| s.controller.as_deref() == Some(&classes.controller))
                })
        };
        if let Some(name) = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return ours(name);
        }
        if let Some(name) = ing.annotations().get(LEGACY_CLASS_ANNOTATION) {
            return ours(name);
        }
        self.classes.get(&classes.class_name).is_some_and(|c| {
            c.annotations()
                .get(DEFAULT_CLASS_ANNOTATION)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
    }

    /// The ready endpoints of a Service port named by an Ingress backend:
    /// the Service's port (by number or name) → its name → the matching
    /// port of each EndpointSlice (the resolved targetPort) → the ready
    /// endpoints' addresses.
    pub fn endpoints(
        &self,
        namespace: &str,
        backend: &IngressBackend,
    ) -> (String, Vec<SocketAddr>) {
        let Some(svc) = backend.service.as_ref() else {
            return (format!("{namespace}/<resource backend>"), vec![]);
        };
        let port = svc.port.as_ref();
        let port_label = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(n), _) => n.to_string(),
            (None, Some(n)) => n.to_string(),
            (None, None) => "?".to_string(),
        };
        let name = format!("{namespace}/{}:{port_label}", svc.name);
        let key = (namespace.to_string(), svc.name.clone());
        let Some(service) = self.services.get(&key) else {
            return (name, vec![]);
        };
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let service_port = ports.iter().find(|p| {
            match (
                port.and_then(|p| p.number),
                port.and_then(|p| p.name.as_deref()),
            ) {
                (Some(n), _) => p.port == n,
                (None, Some(n)) => p.name.as_deref() == Some(n),
                (None, None) => ports.len() == 1,
            }
        });
        let Some(service_port) = service_port else {
            return (name, vec![]);
        };
        if service_port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            return (name, vec![]);
        }
        let port_name = service_port.name.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for slice in self.slices.get(&key).into_iter().flat_map(|m| m.values()) {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let target = slice
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|p| {
                    p.name.as_deref().unwrap_or_default() == port_name
                        && p.protocol.as_deref().is_none_or(|p| p == "TCP")
                })
                .and_then(|p| p.port);
            // A slice without the port: a numeric targetPort still names it.
            let target = target.or(match &service_port.target_port {
                Some(IntOrString::Int(n)) if slice.ports.is_none() => Some(*n),
                _ => None,
            });
            let Some(target) = target.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                // Consumers use the first address (the API's rule).
                if let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                    out.push(SocketAddr::new(ip, target));
                }
            }
        }
        out.sort();
        out.dedup();
        (name, out)
    }

    /// Builds the tables from the served Ingresses, oldest first (so the
    /// oldest wins conflicts), and records what it looked up.
    pub fn build(&mut self, classes: &Classes) -> Built {
        let mut served: Vec<&Ingress> = self
            .ingresses
            .values()
            .filter(|i| self.serves(classes, i))
            .collect();
        served.sort_by(|a, b| {
            let ka = (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.namespace(),
                a.name_any(),
            );
            let kb = (
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.namespace(),
                b.name_any(),
            );
            ka.cmp(&kb)
        });
        let mut built = Built::default();
        let mut backends: HashMap<(String, String), Arc<Backend>> = HashMap::new();
        let mut used_services = HashSet::new();
        let mut used_secrets = HashSet::new();
        for ing in &served {
            let ns = ing.namespace().unwrap_or_default();
            built.served.push((ns.clone(), ing.name_any()));
            let Some(spec) = ing.spec.as_ref() else {
                continue;
            };
            let mut backend = |b: &IngressBackend| -> Arc<Backend> {
                if let Some(s) = &b.service {
                    used_services.insert((ns.clone(), s.name.clone()));
                }
                let (name, eps) = self.endpoints(&ns, b);
                backends
                    .entry((ns.clone(), name.clone()))
                    .or_insert_with(|| Arc::new(Backend::new(name, eps)))
                    .clone()
            };
            let default = spec.default_backend.as_ref().map(&mut backend);
            if let Some(d) = &default {
                built.table.set_default(d.clone());
            }
            for rule in spec.rules.iter().flatten() {
                let host = HostKey::parse(rule.host.as_deref());
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let Some(path_type) = PathType::parse(&p.path_type) else {
                        continue;
                    };
                    let path = p.path.as_deref().unwrap_or("/");
                    let b = backend(&p.backend);
                    if !built.table.host_mut(&host).insert(path_type, path, b) {
                        tracing::debug!(ingress = %format!("{ns}/{}", ing.name_any()), path, "path already routed by an older ingress");
                    }
                }
                if let Some(d) = &default {
                    built.table.set_host_default(&host, d.clone());
                }
            }
            for t in spec.tls.iter().flatten() {
                let Some(secret_name) = t.secret_name.as_deref() else {
                    continue;
                };
                let k = (ns.clone(), secret_name.to_string());
                used_secrets.insert(k.clone());
                let Some(Ok(cert)) = self.secrets.get(&k) else {
                    continue;
                };
                // No hosts: the certificate serves the Ingress's rule hosts.
                let hosts: Vec<&str> = match t.hosts.as_deref() {
                    Some(h) if !h.is_empty() => h.iter().map(String::as_str).collect(),
                    _ => spec
                        .rules
                        .iter()
                        .flatten()
                        .filter_map(|r| r.host.as_deref())
                        .collect(),
                };
                for h in hosts {
                    built.certs.insert(h, cert.clone());
                }
            }
        }
        self.used_services = used_services;
        self.used_secrets = used_secrets;
        built
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn classes() -> Classes {
        Classes {
            class_name: "skiff".into(),
            controller: "skiff.dev/ingress".into(),
        }
    }

    fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn service(name: &str, ports: serde_json::Value) -> Service {
        obj(json!({"metadata": {"namespace": "default", "name": name}, "spec": {"ports": ports}}))
    }

    fn slice(
        name: &str,
        svc: &str,
        ports: serde_json::Value,
        endpoints: serde_json::Value,
    ) -> EndpointSlice {
        obj(
            json!({"metadata": {"namespace": "default", "name": name, "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}),
        )
    }

    fn backend(svc: &str, port: serde_json::Value) -> IngressBackend {
        obj(json!({"service": {"name": svc, "port": port}}))
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn resolves_ports_by_number_and_name_to_ready_endpoints() {
        let mut c = Cluster::default();
        c.apply_service(service("web", json!([{"name": "http", "port": 80, "targetPort": "web"}, {"name": "admin", "port": 9000, "targetPort": 9001}])));
        c.apply_slice(slice(
            "web-1",
            "web",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9001}]),
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]},
            ]),
        ));
        // A second slice whose pods resolved the named port differently.
        c.apply_slice(slice(
            "web-2",
            "web",
            json!([{"name": "http", "port": 8081}]),
            json!([{"addresses": ["10.0.0.4"]}]),
        ));
        let (name, eps) = c.endpoints("default", &backend("web", json!({"number": 80})));
        assert_eq!(name, "default/web:80");
        assert_eq!(
            eps,
            addrs(&["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.4:8081"])
        );
        let (_, eps) = c.endpoints("default", &backend("web", json!({"name": "http"})));
        assert_eq!(
            eps,
            addrs(&["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.4:8081"])
        );
        let (_, eps) = c.endpoints("default", &backend("web", json!({"name": "admin"})));
        assert_eq!(eps, addrs(&["10.0.0.1:9001", "10.0.0.3:9001"]));
        // Unknown port, unknown service, other namespace: nothing.
        assert!(
            c.endpoints("default", &backend("web", json!({"number": 81})))
                .1
                .is_empty()
        );
        assert!(
            c.endpoints("default", &backend("web", json!({"name": "nope"})))
                .1
                .is_empty()
        );
        assert!(
            c.endpoints("default", &backend("db", json!({"number": 80})))
                .1
                .is_empty()
        );
        assert!(
            c.endpoints("other", &backend("web", json!({"number": 80})))
                .1
                .is_empty()
        );
    }

    fn ingress(name: &str, class: Option<&str>, spec: serde_json::Value) -> Ingress {
        let mut spec = spec;
        if let Some(c) = class {
            spec["ingressClassName"] = json!(c);
        }
        obj(json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}))
    }

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        let ann = if default {
            json!({DEFAULT_CLASS_ANNOTATION: "true"})
        } else {
            json!({})
        };
        obj(
            json!({"metadata": {"name": name, "annotations": ann}, "spec": {"controller": controller}}),
        )
    }

    #[test]
    fn serves_its_class_and_classless_when_default() {
        let mut c = Cluster::default();
        let mine = ingress("a", Some("skiff"), json!({}));
        let other = ingress("b", Some("nginx"), json!({}));
        let classless = ingress("c", None, json!({}));
        assert!(c.serves(&classes(), &mine));
        assert!(!c.serves(&classes(), &other));
        assert!(!c.serves(&classes(), &classless));
        c.apply_class(class("skiff", "skiff.dev/ingress", true));
        assert!(c.serves(&classes(), &classless));
        c.apply_class(class("nginx", "k8s.io/ingress-nginx", false));
        assert!(!c.serves(&classes(), &other));
        c.apply_class(class("nginx", "skiff.dev/ingress", false));
        assert!(
            c.serves(&classes(), &other),
            "a class with our controller is ours"
        );
        c.apply_class(class("skiff", "skiff.dev/ingress", false));
        assert!(!c.serves(&classes(), &classless));
        let legacy: Ingress = obj(
            json!({"metadata": {"namespace": "default", "name": "d", "annotations": {LEGACY_CLASS_ANNOTATION: "skiff"}}, "spec": {}}),
        );
        assert!(c.serves(&classes(), &legacy));
    }

    #[test]
    fn builds_routes_and_tracks_what_matters() {
        let mut c = Cluster::default();
        c.apply_service(service("a", json!([{"port": 80, "targetPort": 8080}])));
        c.apply_slice(slice(
            "a-1",
            "a",
            json!([{"name": "", "port": 8080}]),
            json!([{"addresses": ["10.0.0.1"]}]),
        ));
        c.apply_service(service("b", json!([{"name": "http", "port": 80}])));
        c.apply_ingress(ingress(
            "ing",
            Some("skiff"),
            json!({"defaultBackend": {"service": {"name": "b", "port": {"name": "http"}}},
                   "rules": [{"host": "a.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "a", "port": {"number": 80}}}}]}}]}),
        ));
        c.apply_ingress(ingress(
            "not-mine",
            Some("nginx"),
            json!({"defaultBackend": {"service": {"name": "a", "port": {"number": 80}}}}),
        ));
        let built = c.build(&classes());
        assert_eq!(
            built.served,
            vec![("default".to_string(), "ing".to_string())]
        );
        let a = built.table.route("a.com", "/x").unwrap();
        assert_eq!(
            (a.name.as_str(), a.endpoints.clone()),
            ("default/a:80", addrs(&["10.0.0.1:8080"]))
        );
        let b = built.table.route("z.com", "/").unwrap();
        assert_eq!(b.name, "default/b:http");
        assert!(b.endpoints.is_empty());
        // Changes to referenced services and their slices need a rebuild;
        // others do not.
        assert!(c.apply_slice(slice(
            "b-1",
            "b",
            json!([{"name": "http", "port": 80}]),
            json!([{"addresses": ["10.0.0.2"]}])
        )));
        assert!(!c.apply_service(service("unrelated", json!([{"port": 80}]))));
        assert!(!c.apply_slice(slice("u-1", "unrelated", json!([]), json!([]))));
        let built = c.build(&classes());
        assert_eq!(
            built.table.route("z.com", "/").unwrap().endpoints,
            addrs(&["10.0.0.2:80"])
        );
    }
}
