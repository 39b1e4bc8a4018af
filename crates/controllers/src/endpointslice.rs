//! The EndpointSlice controller (↔ pkg/controller/endpointslice):
//! discovery.k8s.io/v1 EndpointSlices (IPv4) for every Service with a
//! selector, owned by the Service and labelled with its name and this
//! controller's managed-by value. Endpoints carry ready/serving/terminating
//! conditions, their pod, node and zone; pods are grouped by the ports the
//! service's targetPorts resolve to, at most 100 per slice. A service with
//! no endpoints keeps one empty placeholder slice.
//!
//! Slices are named by the API server (generateName), so a reconcile
//! waits until the informer has seen this controller's previous writes
//! (as the EndpointSliceTracker does) before planning new ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::loopkit::Store;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::time::Instant;

use crate::endpoints::{
    HEADLESS_LABEL, TRIGGER_TIME_ANNOTATION, find_port, is_headless, is_pod_ready,
    pod_hostname_for, pod_ipv4, pod_reference, selector_matches, service_selector,
    services_for_pod, services_for_pod_change, should_pod_be_in_endpoints, trigger_time_now,
};
use crate::loopkit::{self, Key, Outcome, WorkQueue, informer, is_status};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const CONTROLLER: &str = "endpointslice";
/// How long a reconcile waits for the informer to show our own writes
/// before planning anyway.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);
const STALE_RETRY: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Planning (pure).

/// What to do to a service's slices.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }

    /// Delete every one of `slices`.
    pub fn delete_all(slices: &[&EndpointSlice]) -> Plan {
        Plan {
            delete: slices
                .iter()
                .map(|s| s.metadata.name.clone().unwrap_or_default())
                .collect(),
            ..Plan::default()
        }
    }
}

/// A key that is the same for the same set of ports in any order.
pub(crate) fn port_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or(""),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

fn endpoint_key(e: &Endpoint) -> String {
    match e.target_ref.as_ref() {
        Some(r) => format!(
            "{}/{}",
            r.namespace.as_deref().unwrap_or(""),
            r.name.as_deref().unwrap_or("")
        ),
        None => e.addresses.join(","),
    }
}

/// The endpoint a pod contributes (↔ podToEndpoint), or `None` if it has no IPv4.
pub fn pod_endpoint(pod: &Pod, svc: &Service, zone: Option<String>) -> Option<Endpoint> {
    let ip = pod_ipv4(pod)?;
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = publish_not_ready || is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish_not_ready || (serving && !terminating);
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: pod_hostname_for(pod, svc),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
        zone,
        ..Default::default()
    })
}

/// The ports a pod serves for the service, sorted.
pub fn pod_ports(pod: &Pod, svc: &Service) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            find_port(pod, sp).map(|n| EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort_by(|a, b| {
        (a.name.as_deref(), a.port, a.protocol.as_deref()).cmp(&(
            b.name.as_deref(),
            b.port,
            b.protocol.as_deref(),
        ))
    });
    ports
}

/// The labels every slice of the service carries.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The controller owner reference to the service.
pub fn service_owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn new_slice(
    svc: &Service,
    ports: &[EndpointPort],
    endpoints: Vec<Endpoint>,
    now: &str,
) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(slice_name_prefix(&name)),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            annotations: Some(BTreeMap::from([(
                TRIGGER_TIME_ANNOTATION.to_string(),
                now.to_string(),
            )])),
            owner_references: Some(vec![service_owner(svc)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: (!ports.is_empty()).then(|| ports.to_vec()),
    }
}

/// The generateName of a service's slices: its name and a dash (the name
/// cut so that the generated name stays a valid object name).
pub(crate) fn slice_name_prefix(service: &str) -> String {
    let mut prefix: String = service.chars().take(57).collect();
    prefix.push('-');
    prefix
}

/// Plan the slices of `svc` from the pods its selector matches and the
/// slices this controller already manages for it (↔ the reconciler):
/// existing slices keep the endpoints still wanted (updated in place), take
/// new ones while they have room, and are deleted when left empty; what
/// does not fit goes to new slices of at most `max` endpoints.
pub fn plan_slices(
    svc: &Service,
    pods: &[&Pod],
    zone_of: &dyn Fn(&str) -> Option<String>,
    existing: &[&EndpointSlice],
    max: usize,
    now: &str,
) -> Plan {
    let max = max.max(1);
    // port key → (ports, endpoint key → endpoint)
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, BTreeMap<String, Endpoint>)> =
        BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let zone = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(zone_of);
        let Some(ep) = pod_endpoint(pod, svc, zone) else {
            continue;
        };
        let ports = pod_ports(pod, svc);
        groups
            .entry(port_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()))
            .1
            .insert(endpoint_key(&ep), ep);
    }
    let placeholder = groups.values().all(|(_, eps)| eps.is_empty());
    if placeholder {
        groups.clear();
        groups.insert(String::new(), (Vec::new(), BTreeMap::new()));
    }
    let labels = slice_labels(svc);
    let owner = vec![service_owner(svc)];
    let mut sorted_existing: Vec<&EndpointSlice> = existing.to_vec();
    sorted_existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let mut plan = Plan::default();
    let mut by_ports: HashMap<String, Vec<&EndpointSlice>> = HashMap::new();
    for s in sorted_existing {
        let key = port_key(s.ports.as_deref().unwrap_or_default());
        if groups.contains_key(&key) && s.address_type == "IPv4" {
            by_ports.entry(key).or_default().push(s);
        } else {
            plan.delete
                .push(s.metadata.name.clone().unwrap_or_default());
        }
    }
    for (key, (ports, mut wanted)) in groups {
        let olds = by_ports.remove(&key).unwrap_or_default();
        let mut kept: Vec<(&EndpointSlice, Vec<Endpoint>)> = olds
            .into_iter()
            .map(|s| {
                let eps: Vec<Endpoint> = s
                    .endpoints
                    .iter()
                    .filter_map(|e| wanted.remove(&endpoint_key(e)))
                    .collect();
                (s, eps)
            })
            .collect();
        let mut remaining: std::collections::VecDeque<Endpoint> = wanted.into_values().collect();
        for (_, eps) in kept.iter_mut() {
            while eps.len() < max {
                let Some(e) = remaining.pop_front() else {
                    break;
                };
                eps.push(e);
            }
        }
        let mut keep_placeholder = placeholder;
        for (slice, eps) in kept {
            if eps.is_empty() && !keep_placeholder {
                plan.delete
                    .push(slice.metadata.name.clone().unwrap_or_default());
                continue;
            }
            keep_placeholder = false;
            let new_ports = (!ports.is_empty()).then(|| ports.clone());
            let same = slice.endpoints == eps
                && slice.ports == new_ports
                && slice.metadata.labels.as_ref() == Some(&labels)
                && slice.metadata.owner_references.as_ref() == Some(&owner);
            if !same {
                let mut updated = slice.clone();
                updated.endpoints = eps;
                updated.ports = new_ports;
                updated.metadata.labels = Some(labels.clone());
                updated.metadata.owner_references = Some(owner.clone());
                updated.metadata.managed_fields = None;
                updated
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(TRIGGER_TIME_ANNOTATION.into(), now.into());
                plan.update.push(updated);
            }
        }
        if keep_placeholder {
            plan.create.push(new_slice(svc, &ports, Vec::new(), now));
        }
        let remaining: Vec<Endpoint> = remaining.into();
        for chunk in remaining.chunks(max) {
            plan.create
                .push(new_slice(svc, &ports, chunk.to_vec(), now));
        }
    }
    plan
}

// ---------------------------------------------------------------------------
// Tracking our own writes until the informer shows them.

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expect {
    /// The slice exists with at least this resourceVersion.
    AtLeast(String),
    Deleted,
}

fn rv_at_least(have: Option<&str>, want: &str) -> bool {
    match (
        have.and_then(|h| h.parse::<u64>().ok()),
        want.parse::<u64>().ok(),
    ) {
        (Some(h), Some(w)) => h >= w,
        _ => have == Some(want),
    }
}

/// The writes made per service that the slice informer has not shown yet
/// (↔ the EndpointSliceTracker).
#[derive(Default)]
pub(crate) struct Tracker {
    pending: HashMap<Key, (Instant, Vec<(String, Expect)>)>,
}

impl Tracker {
    pub(crate) fn note_write(&mut self, svc: &Key, slice: String, what: Expect) {
        let entry = self
            .pending
            .entry(svc.clone())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        entry.0 = Instant::now();
        entry.1.retain(|(n, _)| n != &slice);
        entry.1.push((slice, what));
    }

    /// Whether the informer shows every write we made for `svc` (forgetting
    /// the satisfied and the timed-out expectations).
    pub(crate) fn caught_up(&mut self, svc: &Key, slices: &Store<EndpointSlice>) -> bool {
        let Some((since, list)) = self.pending.get_mut(svc) else {
            return true;
        };
        list.retain(|(name, what)| {
            let current = slices.get(&ObjectRef::new(name).within(&svc.namespace));
            let met = match what {
                Expect::Deleted => current.is_none(),
                Expect::AtLeast(rv) => rv_at_least(
                    current
                        .as_ref()
                        .and_then(|s| s.metadata.resource_version.as_deref()),
                    rv,
                ),
            };
            !met
        });
        if list.is_empty() || since.elapsed() > EXPECTATION_TIMEOUT {
            self.pending.remove(svc);
            return true;
        }
        false
    }
}

// ---------------------------------------------------------------------------
// The controller.

struct Stores {
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
}

/// The service a slice belongs to (its service-name label).
pub(crate) fn slice_service(slice: &EndpointSlice) -> Option<Key> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(Key::new(
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        name,
    ))
}

/// The slices in `slices` of service `key`.
pub(crate) fn service_slices(slices: &Store<EndpointSlice>, key: &Key) -> Vec<Arc<EndpointSlice>> {
    slices
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && slice_service(s).as_ref() == Some(key)
        })
        .collect()
}

fn node_zone(node: &Node) -> Option<&String> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
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
    // A node's zone changes the zone of its pods' endpoints.
    let q = queue.clone();
    let svcs = services.clone();
    let pods_for_nodes = pods.clone();
    let (nodes, node_informer) = ctx.informers.get::<Node>().informer(move |ev, old| {
        let Some(node) = loopkit::event_object(ev) else {
            return;
        };
        if old.as_deref().map(node_zone) == Some(node_zone(node)) {
            return;
        }
        let name = node.metadata.name.as_deref().unwrap_or_default();
        for pod in pods_for_nodes
            .state()
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
        {
            services_for_pod(&svcs, pod)
                .into_iter()
                .for_each(|k| q.add(k));
        }
    });
    let q = queue.clone();
    let (slices, slice_informer) = informer(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        move |ev, _| {
            if let Some(key) = loopkit::event_object(ev).and_then(slice_service) {
                q.add(key);
            }
        },
    );
    let q = queue.clone();
    let slice_store = slices.clone();
    let svc_store = services.clone();
    let resync = async move {
        let mut tick = loopkit::ticker(Duration::from_secs(300));
        loop {
            tick.tick().await;
            slice_store
                .state()
                .iter()
                .filter_map(|s| slice_service(s))
                .for_each(|k| q.add(k));
            svc_store
                .state()
                .iter()
                .for_each(|s| q.add(Key::of(s.as_ref())));
        }
    };

    let worker = async {
        let ready = loopkit::wait_ready(&services).await
            && loopkit::wait_ready(&pods).await
            && loopkit::wait_ready(&nodes).await
            && loopkit::wait_ready(&slices).await;
        if !ready {
            return;
        }
        let stores = Stores {
            services: services.clone(),
            pods: pods.clone(),
            nodes: nodes.clone(),
            slices: slices.clone(),
        };
        slices
            .state()
            .iter()
            .filter_map(|s| slice_service(s))
            .for_each(|k| queue.add(k));
        let tracker = Mutex::new(Tracker::default());
        loop {
            let key = queue.next().await;
            let outcome = crate::loopkit::guarded(
                CONTROLLER,
                &key,
                reconcile(&client, &stores, &tracker, &key),
            )
            .await;
            queue.finish(CONTROLLER, key, outcome);
        }
    };
    tokio::join!(
        svc_informer,
        pod_informer,
        node_informer,
        slice_informer,
        resync,
        worker
    );
}

pub(crate) fn lock(tracker: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    tracker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn reconcile(
    client: &kube::Client,
    stores: &Stores,
    tracker: &Mutex<Tracker>,
    key: &Key,
) -> Outcome {
    // The API server owns the `kubernetes` Service's endpoints.
    if key.namespace == "default" && key.name == "kubernetes" {
        return Ok(None);
    }
    if !lock(tracker).caught_up(key, &stores.slices) {
        return Ok(Some(STALE_RETRY));
    }
    let all_slices = service_slices(&stores.slices, key);
    let existing: Vec<&EndpointSlice> = all_slices.iter().map(|s| s.as_ref()).collect();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);

    let svc = stores.services.get(&key.object_ref());
    let selector = svc.as_deref().and_then(service_selector);
    let (Some(svc), Some(selector)) = (svc.as_deref(), selector) else {
        // Gone, or no longer selecting pods: our slices go.
        return apply_plan(&api, tracker, key, Plan::delete_all(&existing)).await;
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
    let zone_of = |node: &str| {
        stores
            .nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| node_zone(&n).cloned())
    };
    let plan = plan_slices(
        svc,
        &pods,
        &zone_of,
        &existing,
        MAX_ENDPOINTS_PER_SLICE,
        &trigger_time_now(),
    );
    if plan.is_empty() {
        return Ok(None);
    }
    tracing::debug!(service = %key, create = plan.create.len(), update = plan.update.len(), delete = plan.delete.len(), "syncing endpoint slices");
    apply_plan(&api, tracker, key, plan).await
}

/// Create, update and delete the slices of `plan` (the slices of service
/// `key`), noting each write in `tracker`.
pub(crate) async fn apply_plan(
    api: &Api<EndpointSlice>,
    tracker: &Mutex<Tracker>,
    key: &Key,
    plan: Plan,
) -> Outcome {
    for slice in &plan.create {
        match api.create(&PostParams::default(), slice).await {
            Ok(created) => {
                if let (Some(name), Some(rv)) =
                    (created.metadata.name, created.metadata.resource_version)
                {
                    lock(tracker).note_write(key, name, Expect::AtLeast(rv));
                }
            }
            // The namespace is going away.
            Err(e) if is_status(&e, 403) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    for slice in &plan.update {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let updated = api.replace(&name, &PostParams::default(), slice).await?;
        if let Some(rv) = updated.metadata.resource_version {
            lock(tracker).note_write(key, name, Expect::AtLeast(rv));
        }
    }
    for name in plan.delete {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
        lock(tracker).note_write(key, name, Expect::Deleted);
    }
    Ok(None)
}

/// Every slice this controller manages for a service, straight from the API
/// (for callers that do not run the informers, e.g. tests and tools).
pub async fn list_service_slices(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> Result<Vec<EndpointSlice>, kube::Error> {
    list_managed_slices(client, namespace, service, MANAGED_BY).await
}

/// Every slice of a service whose managed-by label is `managed_by`, straight from the API.
pub async fn list_managed_slices(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    managed_by: &str,
) -> Result<Vec<EndpointSlice>, kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!(
        "{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={managed_by}"
    ));
    Ok(api.list(&lp).await?.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(name: &str, ip: &str, ready: bool, port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                cluster_ip: Some("10.43.0.20".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn zone(node: &str) -> Option<String> {
        (node == "node-a").then(|| "zone-1".to_string())
    }

    /// Turn a plan's creates into "existing" slices with names.
    fn materialize(plan: &Plan, start: usize) -> Vec<EndpointSlice> {
        plan.create
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                s.metadata.name = Some(format!("web-{}", start + i));
                s
            })
            .collect()
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let svc = service();
        let ready = pod("a", "10.42.0.1", true, 8080);
        let not_ready = pod("b", "10.42.0.2", false, 8080);
        let mut terminating = pod("c", "10.42.0.3", true, 8080);
        terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let cases = [
            (&ready, (true, true, false)),
            (&not_ready, (false, false, false)),
            (&terminating, (false, true, true)),
        ];
        for (p, (r, s, t)) in cases {
            let e = pod_endpoint(p, &svc, None).expect("an endpoint");
            let c = e.conditions.expect("conditions");
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(r), Some(s), Some(t)),
                "{:?}",
                p.metadata.name
            );
        }
        let mut publish = service();
        if let Some(s) = publish.spec.as_mut() {
            s.publish_not_ready_addresses = Some(true);
        }
        let c = pod_endpoint(&terminating, &publish, None)
            .and_then(|e| e.conditions)
            .expect("conditions");
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(true), Some(true), Some(true))
        );
    }

    #[test]
    fn first_plan_creates_labelled_owned_slices() {
        let svc = service();
        let a = pod("a", "10.42.0.1", true, 8080);
        let b = pod("b", "10.42.0.2", false, 8080);
        let plan = plan_slices(&svc, &[&a, &b], &zone, &[], 100, "T");
        assert_eq!(plan.create.len(), 1);
        assert!(plan.update.is_empty() && plan.delete.is_empty());
        let s = &plan.create[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Service", "web", "svc-uid", Some(true))
        );
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.endpoints[0].zone.as_deref(), Some("zone-1"));
        assert_eq!(s.endpoints[0].node_name.as_deref(), Some("node-a"));
        let ports = s.ports.clone().unwrap_or_default();
        assert_eq!(
            (
                ports[0].name.as_deref(),
                ports[0].port,
                ports[0].protocol.as_deref()
            ),
            (Some("http"), Some(8080), Some("TCP"))
        );

        // Applied: the same inputs plan nothing.
        let existing = materialize(&plan, 0);
        let refs: Vec<&EndpointSlice> = existing.iter().collect();
        assert!(plan_slices(&svc, &[&a, &b], &zone, &refs, 100, "T2").is_empty());
        // b becomes ready: an in-place update.
        let b_ready = pod("b", "10.42.0.2", true, 8080);
        let plan = plan_slices(&svc, &[&a, &b_ready], &zone, &refs, 100, "T2");
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        assert!(
            plan.update[0]
                .endpoints
                .iter()
                .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        );
    }

    #[test]
    fn slices_hold_at_most_max_endpoints() {
        let svc = service();
        let pods: Vec<Pod> = (0..7)
            .map(|i| pod(&format!("p{i}"), &format!("10.42.0.{i}"), true, 8080))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = plan_slices(&svc, &refs, &zone, &[], 3, "T");
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        // Remove two pods from the first slice, add one: the gap is filled in place, the rest untouched.
        let existing = materialize(&plan, 0);
        let slices: Vec<&EndpointSlice> = existing.iter().collect();
        let mut next: Vec<&Pod> = refs
            .iter()
            .copied()
            .filter(|p| !matches!(p.metadata.name.as_deref(), Some("p0" | "p1")))
            .collect();
        let extra = pod("p9", "10.42.0.9", true, 8080);
        next.push(&extra);
        let plan = plan_slices(&svc, &next, &zone, &slices, 3, "T2");
        assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].endpoints.len(), 2);
    }

    #[test]
    fn different_ports_split_slices_and_empty_slices_go() {
        let svc = service();
        let a = pod("a", "10.42.0.1", true, 8080);
        let b = pod("b", "10.42.0.2", true, 9090);
        let plan = plan_slices(&svc, &[&a, &b], &zone, &[], 100, "T");
        assert_eq!(plan.create.len(), 2);
        let existing = materialize(&plan, 0);
        let slices: Vec<&EndpointSlice> = existing.iter().collect();
        // b goes away: its slice is deleted.
        let plan = plan_slices(&svc, &[&a], &zone, &slices, 100, "T2");
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 0, 1)
        );
        // Everyone goes: one placeholder slice (no endpoints, no ports) stays.
        let plan = plan_slices(&svc, &[], &zone, &slices, 100, "T3");
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (1, 0, 2)
        );
        assert!(plan.create[0].endpoints.is_empty() && plan.create[0].ports.is_none());
        // ... and is kept as is.
        let placeholder = materialize(&plan, 5);
        let slices2: Vec<&EndpointSlice> = placeholder.iter().collect();
        assert!(plan_slices(&svc, &[], &zone, &slices2, 100, "T4").is_empty());
        // No slices and no pods: a placeholder is created.
        let plan = plan_slices(&svc, &[], &zone, &[], 100, "T");
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        // Duplicated endpoints across slices are kept once.
        let mut dup = existing.clone();
        dup[1].endpoints = dup[0].endpoints.clone();
        dup[1].ports = dup[0].ports.clone();
        let slices: Vec<&EndpointSlice> = dup.iter().collect();
        let plan = plan_slices(&svc, &[&a], &zone, &slices, 100, "T4");
        assert_eq!((plan.update.len(), plan.delete.len()), (0, 1));
    }

    #[test]
    fn resource_versions_compare_numerically() {
        assert!(rv_at_least(Some("10"), "9"));
        assert!(rv_at_least(Some("10"), "10"));
        assert!(!rv_at_least(Some("9"), "10"));
        assert!(!rv_at_least(None, "10"));
        assert!(rv_at_least(Some("abc"), "abc"));
    }
}
