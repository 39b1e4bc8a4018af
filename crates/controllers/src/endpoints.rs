//! The endpoints controller (↔ pkg/controller/endpoint): one core/v1
//! Endpoints object per Service with a selector, named after it, listing
//! the IPs of the pods the selector matches: ready pods in
//! `subsets[].addresses`, the others in `notReadyAddresses`, with the ports
//! the service's targetPorts resolve to on each pod. Services without a
//! selector keep whatever Endpoints their users write; the `kubernetes`
//! Service's Endpoints belong to the API server.
//!
//! The pod helpers here (readiness, port resolution, who belongs in
//! endpoints) are shared with the EndpointSlice controller.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::loopkit::Store;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::watcher;

use crate::loopkit::{self, Key, Outcome, WorkQueue, informer, is_status};

pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints objects hold at most this many addresses (the rest are dropped
/// and the object annotated over-capacity), as in Kubernetes.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
const CONTROLLER: &str = "endpoints";

// ---------------------------------------------------------------------------
// Pod and service helpers (shared with the EndpointSlice controller).

/// The pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's IPv4 address (status.podIP, else the first IPv4 of podIPs).
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let is_v4 = |s: &str| s.parse::<Ipv4Addr>().is_ok();
    if let Some(ip) = status.pod_ip.as_deref().filter(|ip| is_v4(ip)) {
        return Some(ip.to_string());
    }
    status
        .pod_ips
        .as_ref()?
        .iter()
        .map(|p| p.ip.as_str())
        .find(|ip| is_v4(ip))
        .map(str::to_string)
}

/// Whether a pod is listed at all (↔ ShouldPodBeInEndpoints): it has an
/// IP, is not terminating (unless `include_terminating`), and will run
/// again (not finished for good under its restart policy).
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ipv4(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
    {
        "Never" => phase != "Failed" && phase != "Succeeded",
        "OnFailure" => phase != "Succeeded",
        _ => true,
    }
}

/// The selector of a service the endpoint controllers manage: `None` for
/// services without one (or ExternalName services).
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Every selector pair is among the labels.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The services in the pod's namespace whose selector matches it.
pub fn services_for_pod(services: &Store<Service>, pod: &Pod) -> Vec<Key> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            service_selector(s)
                .is_some_and(|sel| selector_matches(sel, pod.metadata.labels.as_ref()))
        })
        .map(|s| Key::of(s.as_ref()))
        .collect()
}

/// The services whose endpoints may change with this pod event: those
/// matching it now and those that matched it before.
pub fn services_for_pod_change(
    services: &Store<Service>,
    pod: &Pod,
    old: Option<&Pod>,
) -> Vec<Key> {
    let mut keys = services_for_pod(services, pod);
    if let Some(old) = old {
        for k in services_for_pod(services, old) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// The container port a service port targets on this pod (↔ FindPort):
/// a number as is, a name looked up among the pod's container ports with
/// the same protocol. `None` if the name is not found.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The service has no cluster IP ("None").
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pod's hostname is published when it names itself for this
/// headless service (spec.hostname and spec.subdomain = the service name).
pub fn pod_hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_ns = pod.metadata.namespace == svc.metadata.namespace;
    (same_ns && spec.subdomain.as_deref() == svc.metadata.name.as_deref() && is_headless(svc))
        .then(|| hostname.to_string())
}

/// A reference to the pod, as endpoints carry it.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The labels of a service's endpoints: the service's, plus the headless
/// marker for headless services.
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// An RFC 3339 "now" for the trigger-time annotation.
pub fn trigger_time_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ---------------------------------------------------------------------------
// The Endpoints computation.

fn endpoint_port(sp: &ServicePort, port: i32) -> EndpointPort {
    EndpointPort {
        name: sp.name.clone().filter(|n| !n.is_empty()),
        port,
        protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
        app_protocol: sp.app_protocol.clone(),
    }
}

fn port_key(ports: &[EndpointPort]) -> String {
    ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port,
                p.protocol.as_deref().unwrap_or(""),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The subsets of a service's Endpoints from the pods its selector matches
/// (the caller filters by selector): addresses grouped by identical port
/// sets (as RepackSubsets), sorted, so equal inputs give equal outputs.
pub fn compute_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_ports = spec.ports.as_deref().unwrap_or_default();
    // port key → (ports, ready addresses, not-ready addresses)
    type Group = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let mut ports: Vec<EndpointPort> = Vec::new();
        if service_ports.is_empty() {
            if !is_headless(svc) {
                continue;
            }
        } else {
            for sp in service_ports {
                match find_port(pod, sp) {
                    Some(n) => ports.push(endpoint_port(sp, n)),
                    None => {
                        tracing::debug!(pod = ?pod.metadata.name, port = ?sp.name, "no suitable port on pod")
                    }
                }
            }
            if ports.is_empty() {
                continue;
            }
        }
        ports.sort_by(|a, b| {
            (a.name.as_deref(), a.port, a.protocol.as_deref()).cmp(&(
                b.name.as_deref(),
                b.port,
                b.protocol.as_deref(),
            ))
        });
        let address = EndpointAddress {
            ip,
            hostname: pod_hostname_for(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let entry = groups
            .entry(port_key(&ports))
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish_not_ready || is_pod_ready(pod) {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    let sort = |v: &mut Vec<EndpointAddress>| {
        v.sort_by(|a, b| {
            (
                a.ip.as_str(),
                a.target_ref.as_ref().and_then(|r| r.uid.as_deref()),
            )
                .cmp(&(
                    b.ip.as_str(),
                    b.target_ref.as_ref().and_then(|r| r.uid.as_deref()),
                ))
        });
    };
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            sort(&mut ready);
            sort(&mut not_ready);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// Keep at most `max` addresses, ready ones first; true if any were dropped.
pub fn truncate_subsets(subsets: &mut Vec<EndpointSubset>, max: usize) -> bool {
    let total: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if total <= max {
        return false;
    }
    let mut budget = max;
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    for s in subsets.iter_mut() {
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    for s in subsets.iter_mut() {
        if s.addresses.as_ref().is_some_and(Vec::is_empty) {
            s.addresses = None;
        }
        if s.not_ready_addresses.as_ref().is_some_and(Vec::is_empty) {
            s.not_ready_addresses = None;
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    true
}

/// The Endpoints a service should have, or `None` if `existing` already is
/// right. Existing annotations are kept; the trigger time is set to `now`
/// whenever something changes.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[&Pod],
    existing: Option<&Endpoints>,
    now: &str,
) -> Option<Endpoints> {
    let mut subsets = compute_subsets(svc, pods);
    let truncated = truncate_subsets(&mut subsets, MAX_ENDPOINTS_ADDRESSES);
    let labels = endpoint_labels(svc);
    if let Some(ep) = existing {
        let same_subsets = ep.subsets.clone().unwrap_or_default() == subsets;
        let same_labels = ep.metadata.labels.clone().unwrap_or_default() == labels;
        let over = ep
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION))
            .is_some();
        if same_subsets && same_labels && over == truncated {
            return None;
        }
    }
    let mut meta = existing
        .map(|e| e.metadata.clone())
        .unwrap_or_else(|| ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            ..Default::default()
        });
    meta.labels = (!labels.is_empty()).then_some(labels);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(TRIGGER_TIME_ANNOTATION.into(), now.into());
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    meta.managed_fields = None;
    Some(Endpoints {
        metadata: meta,
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

// ---------------------------------------------------------------------------
// The controller.

struct Stores {
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

pub async fn run(ctx: crate::Context) {
    let client = ctx.client.clone();
    let queue = Arc::new(WorkQueue::<Key>::new());

    let q = queue.clone();
    let (services, svc_informer) = ctx.informers.get::<Service>().informer(move |ev, _| {
        if let Some(svc) = loopkit::event_object(ev) {
            q.add(Key::of(svc));
        }
    });
    let q = queue.clone();
    let svcs = services.clone();
    let (pods, pod_informer) = ctx
        .informers
        .get::<Pod>()
        .informer(move |ev, old| match ev {
            // After a relist, pods deleted while disconnected left no event: look at every service.
            watcher::Event::InitDone => {
                svcs.state().iter().for_each(|s| q.add(Key::of(s.as_ref())))
            }
            _ => {
                if let Some(pod) = loopkit::event_object(ev) {
                    services_for_pod_change(&svcs, pod, old.as_deref())
                        .into_iter()
                        .for_each(|k| q.add(k));
                }
            }
        });
    let q = queue.clone();
    // As Kubernetes' endpoints controller: a deleted Endpoints object is
    // recreated if its Service still wants one; adds and updates are ours
    // or someone's manual ones, and leftovers are swept at start.
    let (endpoints, ep_informer) = informer(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        move |ev, _| {
            if let watcher::Event::Delete(ep) = ev {
                q.add(Key::of(ep));
            }
        },
    );
    let q = queue.clone();
    let ep_store = endpoints.clone();
    let svc_store = services.clone();
    let resync = async move {
        // Endpoints of services deleted while the watch was down: a slow sweep.
        let mut tick = loopkit::ticker(std::time::Duration::from_secs(300));
        loop {
            tick.tick().await;
            ep_store
                .state()
                .iter()
                .for_each(|e| q.add(Key::of(e.as_ref())));
            svc_store
                .state()
                .iter()
                .for_each(|s| q.add(Key::of(s.as_ref())));
        }
    };

    let worker = async {
        if !(loopkit::wait_ready(&services).await
            && loopkit::wait_ready(&pods).await
            && loopkit::wait_ready(&endpoints).await)
        {
            return;
        }
        let stores = Stores {
            services: services.clone(),
            pods: pods.clone(),
            endpoints: endpoints.clone(),
        };
        endpoints
            .state()
            .iter()
            .for_each(|e| queue.add(Key::of(e.as_ref())));
        loop {
            let key = queue.next().await;
            let outcome =
                crate::loopkit::guarded(CONTROLLER, &key, reconcile(&client, &stores, &key)).await;
            queue.finish(CONTROLLER, key, outcome);
        }
    };
    tokio::join!(svc_informer, pod_informer, ep_informer, resync, worker);
}

async fn reconcile(client: &kube::Client, stores: &Stores, key: &Key) -> Outcome {
    if key.namespace == "default" && key.name == "kubernetes" {
        return Ok(None);
    }
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &key.namespace);
    let existing = stores.endpoints.get(&key.object_ref());
    let Some(svc) = stores.services.get(&key.object_ref()) else {
        // The service is gone: so are its endpoints. The Endpoints and the
        // Service come from different watches, so the Service may just not
        // be in the cache yet: ask the API before deleting.
        let services: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        if existing.is_some() && services.get_opt(&key.name).await?.is_none() {
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(service = %key, "deleted the endpoints of a deleted service")
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(None);
    };
    let Some(selector) = service_selector(&svc) else {
        return Ok(None);
    };
    let all_pods = stores.pods.state();
    let pods: Vec<&Pod> = all_pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && selector_matches(selector, p.metadata.labels.as_ref())
        })
        .collect();
    let Some(desired) = desired_endpoints(&svc, &pods, existing.as_deref(), &trigger_time_now())
    else {
        return Ok(None);
    };
    let result = if existing.is_some() {
        api.replace(&key.name, &PostParams::default(), &desired)
            .await
            .map(|_| ())
    } else {
        api.create(&PostParams::default(), &desired)
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => {
            tracing::debug!(service = %key, "endpoints updated");
            Ok(None)
        }
        // Namespace terminating: nothing more to do.
        Err(e) if is_status(&e, 403) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some("dns".into()),
                            container_port: 5353,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_string),
                pod_ips: ip.map(|i| vec![PodIP { ip: i.to_string() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    pub(crate) fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ports: Some(ports),
                cluster_ip: Some("10.43.0.10".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn sport(
        name: &str,
        port: i32,
        target: Option<IntOrString>,
        protocol: &str,
    ) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: target,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    #[test]
    fn find_port_cases() {
        let p = pod("a", Some("10.42.0.5"), true);
        let cases = [
            (
                sport("x", 80, Some(IntOrString::Int(9090)), "TCP"),
                Some(9090),
            ),
            (sport("x", 80, None, "TCP"), Some(80)),
            (
                sport("x", 80, Some(IntOrString::String("http".into())), "TCP"),
                Some(8080),
            ),
            (
                sport("x", 53, Some(IntOrString::String("dns".into())), "UDP"),
                Some(5353),
            ),
            (
                sport("x", 53, Some(IntOrString::String("dns".into())), "TCP"),
                None,
            ),
            (
                sport("x", 80, Some(IntOrString::String("nope".into())), "TCP"),
                None,
            ),
        ];
        for (sp, want) in cases {
            assert_eq!(find_port(&p, &sp), want, "{sp:?}");
        }
    }

    #[test]
    fn who_belongs_in_endpoints() {
        let mut terminating = pod("t", Some("10.42.0.9"), true);
        terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut finished = pod("f", Some("10.42.0.8"), false);
        if let Some(s) = finished.spec.as_mut() {
            s.restart_policy = Some("Never".into());
        }
        if let Some(s) = finished.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        let mut failed_on_failure = finished.clone();
        if let Some(s) = failed_on_failure.spec.as_mut() {
            s.restart_policy = Some("OnFailure".into());
        }
        if let Some(s) = failed_on_failure.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        let mut v6 = pod("v6", None, true);
        if let Some(s) = v6.status.as_mut() {
            s.pod_ip = Some("fd00::1".into());
            s.pod_ips = Some(vec![
                PodIP {
                    ip: "fd00::1".into(),
                },
                PodIP {
                    ip: "10.42.0.7".into(),
                },
            ]);
        }
        let cases: Vec<(&str, Pod, bool, bool)> = vec![
            ("ready", pod("a", Some("10.42.0.5"), true), false, true),
            ("not ready", pod("b", Some("10.42.0.6"), false), false, true),
            ("no ip", pod("c", None, true), false, false),
            ("terminating", terminating.clone(), false, false),
            ("terminating tolerated", terminating, true, true),
            ("succeeded, restart never", finished, false, false),
            ("failed, restart on failure", failed_on_failure, false, true),
            ("dual stack takes the v4 ip", v6.clone(), false, true),
        ];
        for (name, p, include_terminating, want) in cases {
            assert_eq!(
                should_pod_be_in_endpoints(&p, include_terminating),
                want,
                "{name}"
            );
        }
        assert_eq!(pod_ipv4(&v6).as_deref(), Some("10.42.0.7"));
    }

    #[test]
    fn selectors() {
        let sel = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]);
        assert!(selector_matches(&sel, Some(&labels)));
        assert!(!selector_matches(&sel, None));
        assert!(!selector_matches(
            &sel,
            Some(&BTreeMap::from([("app".to_string(), "db".to_string())]))
        ));
        let mut svc = service(vec![]);
        assert!(service_selector(&svc).is_some());
        if let Some(s) = svc.spec.as_mut() {
            s.selector = Some(BTreeMap::new());
        }
        assert!(service_selector(&svc).is_none());
        let mut ext = service(vec![]);
        if let Some(s) = ext.spec.as_mut() {
            s.type_ = Some("ExternalName".into());
        }
        assert!(service_selector(&ext).is_none());
    }

    #[test]
    fn subsets_split_ready_and_group_ports() {
        let svc = service(vec![
            sport("http", 80, Some(IntOrString::String("http".into())), "TCP"),
            sport("metrics", 9100, Some(IntOrString::Int(9100)), "TCP"),
        ]);
        let a = pod("a", Some("10.42.0.5"), true);
        let b = pod("b", Some("10.42.0.6"), false);
        let mut c = pod("c", Some("10.42.0.4"), true);
        // c has no "http" port: it only serves metrics, so it lands in its own subset.
        if let Some(s) = c.spec.as_mut() {
            s.containers[0].ports = None;
        }
        let no_ip = pod("d", None, true);
        let subsets = compute_subsets(&svc, &[&a, &b, &c, &no_ip]);
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let full = subsets
            .iter()
            .find(|s| s.ports.as_ref().map(Vec::len) == Some(2))
            .expect("a two-port subset");
        let ready: Vec<&str> = full
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        let not_ready: Vec<&str> = full
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ready, ["10.42.0.5"]);
        assert_eq!(not_ready, ["10.42.0.6"]);
        let addr = &full.addresses.as_ref().expect("addresses")[0];
        assert_eq!(addr.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            addr.target_ref.as_ref().and_then(|r| r.name.as_deref()),
            Some("a")
        );
        assert_eq!(
            addr.target_ref.as_ref().and_then(|r| r.kind.as_deref()),
            Some("Pod")
        );
        let ports: Vec<(Option<&str>, i32)> = full
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port))
            .collect();
        assert_eq!(ports, [(Some("http"), 8080), (Some("metrics"), 9100)]);
        let metrics_only = subsets
            .iter()
            .find(|s| s.ports.as_ref().map(Vec::len) == Some(1))
            .expect("a one-port subset");
        assert_eq!(
            metrics_only.addresses.as_ref().map(|a| a[0].ip.as_str()),
            Some("10.42.0.4")
        );
    }

    #[test]
    fn publish_not_ready_and_headless() {
        let mut svc = service(vec![sport("http", 80, Some(IntOrString::Int(8080)), "TCP")]);
        if let Some(s) = svc.spec.as_mut() {
            s.publish_not_ready_addresses = Some(true);
        }
        let b = pod("b", Some("10.42.0.6"), false);
        let subsets = compute_subsets(&svc, &[&b]);
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(1));
        assert!(subsets[0].not_ready_addresses.is_none());

        // Headless without ports: addresses without ports, hostnames for pods naming the service.
        let mut headless = service(vec![]);
        if let Some(s) = headless.spec.as_mut() {
            s.cluster_ip = Some("None".into());
        }
        let mut h = pod("h", Some("10.42.0.3"), true);
        if let Some(s) = h.spec.as_mut() {
            s.hostname = Some("h0".into());
            s.subdomain = Some("web".into());
        }
        let subsets = compute_subsets(&headless, &[&h]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert_eq!(
            subsets[0]
                .addresses
                .as_ref()
                .and_then(|a| a[0].hostname.as_deref()),
            Some("h0")
        );
        assert_eq!(
            endpoint_labels(&headless)
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
        // A portless service with a cluster IP gets nothing.
        assert!(compute_subsets(&service(vec![]), &[&h]).is_empty());
    }

    #[test]
    fn desired_endpoints_only_when_changed() {
        let svc = service(vec![sport("http", 80, Some(IntOrString::Int(8080)), "TCP")]);
        let a = pod("a", Some("10.42.0.5"), true);
        let first = desired_endpoints(&svc, &[&a], None, "T1").expect("new endpoints");
        assert_eq!(first.metadata.name.as_deref(), Some("web"));
        assert_eq!(
            first
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("a")
        );
        assert_eq!(
            first
                .metadata
                .annotations
                .as_ref()
                .and_then(|l| l.get(TRIGGER_TIME_ANNOTATION))
                .map(String::as_str),
            Some("T1")
        );
        assert!(desired_endpoints(&svc, &[&a], Some(&first), "T2").is_none());
        let b = pod("b", Some("10.42.0.6"), false);
        let second = desired_endpoints(&svc, &[&a, &b], Some(&first), "T2").expect("changed");
        assert_eq!(
            second
                .metadata
                .annotations
                .as_ref()
                .and_then(|l| l.get(TRIGGER_TIME_ANNOTATION))
                .map(String::as_str),
            Some("T2")
        );
        // No pods: no subsets at all.
        let empty = desired_endpoints(&svc, &[], Some(&second), "T3").expect("changed");
        assert!(empty.subsets.is_none());
    }

    #[test]
    fn truncation_keeps_ready_first() {
        let addr = |i: usize| EndpointAddress {
            ip: format!("10.0.0.{i}"),
            ..Default::default()
        };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..3).map(addr).collect()),
            not_ready_addresses: Some((3..6).map(addr).collect()),
            ports: None,
        }];
        assert!(!truncate_subsets(&mut subsets.clone(), 6));
        assert!(truncate_subsets(&mut subsets, 4));
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(3));
        assert_eq!(
            subsets[0].not_ready_addresses.as_ref().map(Vec::len),
            Some(1)
        );
        let mut only_ready = vec![subsets[0].clone()];
        assert!(truncate_subsets(&mut only_ready, 2));
        assert!(only_ready[0].not_ready_addresses.is_none());
    }
}
