//! The EndpointSliceMirroring controller (↔ pkg/controller/endpointslicemirroring):
//! the Endpoints of a Service without a selector (written by hand or by
//! another controller) are mirrored into discovery.k8s.io/v1 EndpointSlices,
//! so that the service proxy and DNS, which read only slices, see them.
//!
//! An Endpoints is mirrored unless it carries the label
//! `endpointslice.kubernetes.io/skip-mirror: "true"` or a leader-election
//! annotation, or its Service is missing or has a selector (the EndpointSlice
//! controller then owns the service's slices). Each subset's ports and
//! address family make one slice (subsets with the same ports share it), of
//! at most [`MAX_ENDPOINTS_PER_SUBSET`] endpoints; `addresses` are ready,
//! `notReadyAddresses` not. Slices are labelled with the service's name and
//! this controller's managed-by value plus the Endpoints' labels, carry its
//! annotations (but the trigger time and kubectl's last-applied), and are
//! owned by the Endpoints. When mirroring stops, the mirrored slices go.
//!
//! Planning is pure ([`plan_mirror`]); writes and the wait for the informer
//! to show them are the EndpointSlice controller's
//! ([`crate::endpointslice::apply_plan`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta};
use kube::runtime::watcher;
use skiff_runtime::events::EventType;

use crate::endpoints::TRIGGER_TIME_ANNOTATION;
use crate::endpointslice::{
    MANAGED_BY_LABEL, Plan, SERVICE_NAME_LABEL, Tracker, apply_plan, lock, port_key,
    service_slices, slice_name_prefix, slice_service,
};
use crate::loopkit::{self, Key, Outcome, Store, WorkQueue, informer};

/// The managed-by value of mirrored slices.
pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// An Endpoints with this label set to "true" is not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Endpoints used as leader-election locks carry this annotation; they are not mirrored.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The most addresses mirrored per subset (kube-controller-manager's
/// --mirroring-max-endpoints-per-subset default).
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;
const CONTROLLER: &str = "endpointslicemirroring";
const STALE_RETRY: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Planning (pure).

/// Whether an Endpoints may be mirrored at all (its Service is checked apart).
pub fn should_mirror(endpoints: &Endpoints) -> bool {
    let skip = endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    let leader = endpoints
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
    !skip && !leader
}

/// A service with a selector has its slices made by the EndpointSlice controller.
fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

/// The address family of an IP as EndpointSlices name it, and its canonical
/// text (an IPv4-mapped IPv6 address counts as IPv4, as Go's To4 does).
fn parse_address(ip: &str) -> Option<(&'static str, String)> {
    match ip.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(("IPv4", v4.to_string())),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(("IPv4", v4.to_string())),
            None => Some(("IPv6", v6.to_string())),
        },
    }
}

/// An Endpoints address as a slice endpoint (↔ addressToEndpoint), or
/// `None` if it is not an IP.
fn address_to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    let (family, ip) = parse_address(&address.ip)?;
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Default::default()
    };
    Some((family, endpoint))
}

/// Endpoints ports as slice ports (the protocol defaults to TCP, as the API
/// server's defaulting of Endpoints does).
fn slice_ports(ports: &[CorePort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// What makes two endpoints the same one (↔ the endpoint set's hash:
/// addresses, hostname and target).
fn endpoint_identity(e: &Endpoint) -> String {
    let mut addresses = e.addresses.clone();
    addresses.sort();
    let target = e.target_ref.as_ref();
    format!(
        "{}|{}|{}/{}",
        addresses.join(","),
        e.hostname.as_deref().unwrap_or_default(),
        target
            .and_then(|t| t.namespace.as_deref())
            .unwrap_or_default(),
        target.and_then(|t| t.name.as_deref()).unwrap_or_default()
    )
}

/// The endpoints wanted for one address family and set of ports.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub address_type: &'static str,
    pub ports: Vec<EndpointPort>,
    /// In the Endpoints' order, each endpoint once (a later duplicate replaces an earlier one).
    pub endpoints: Vec<Endpoint>,
}

impl Group {
    fn insert(&mut self, endpoint: Endpoint) {
        let id = endpoint_identity(&endpoint);
        match self
            .endpoints
            .iter_mut()
            .find(|e| endpoint_identity(e) == id)
        {
            Some(e) => *e = endpoint,
            None => self.endpoints.push(endpoint),
        }
    }
}

/// The desired state of an Endpoints' slices (↔ desiredCalc).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// By address family and port key.
    pub groups: BTreeMap<String, Group>,
    /// Addresses that are not IPs.
    pub invalid: usize,
    /// Addresses not mirrored (invalid ones included).
    pub skipped: usize,
}

fn group_key(address_type: &str, ports: &[EndpointPort]) -> String {
    format!("{address_type}/{}", port_key(ports))
}

/// Group an Endpoints' addresses by address family and ports, at most
/// `max` per subset.
pub fn desired(endpoints: &Endpoints, max: usize) -> Desired {
    let mut d = Desired::default();
    for subset in endpoints.subsets.iter().flatten() {
        let ports = slice_ports(subset.ports.as_deref().unwrap_or_default());
        for family in ["IPv4", "IPv6"] {
            let group = d.groups.entry(group_key(family, &ports)).or_default();
            group.address_type = family;
            group.ports = ports.clone();
        }
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut total = 0usize;
        let mut added = 0usize;
        for (address, is_ready) in ready.chain(not_ready) {
            total = total.saturating_add(1);
            if added >= max {
                continue;
            }
            match address_to_endpoint(address, is_ready) {
                Some((family, endpoint)) => {
                    if let Some(group) = d.groups.get_mut(&group_key(family, &ports)) {
                        group.insert(endpoint);
                    }
                    added += 1;
                }
                None => d.invalid = d.invalid.saturating_add(1),
            }
        }
        d.skipped = d.skipped.saturating_add(total - added);
    }
    d
}

/// The controller owner reference to the Endpoints.
fn endpoints_owner(endpoints: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: endpoints.metadata.name.clone().unwrap_or_default(),
        uid: endpoints.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The Endpoints' annotations a mirrored slice carries.
fn mirrored_annotations(endpoints: &Endpoints) -> BTreeMap<String, String> {
    let mut annotations = endpoints.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(TRIGGER_TIME_ANNOTATION);
    annotations.remove(LAST_APPLIED_ANNOTATION);
    annotations
}

/// A mirrored slice of `group` (↔ newEndpointSlice): named `name`, or
/// generated from the Endpoints' name.
fn mirrored_slice(
    endpoints: &Endpoints,
    group: &Group,
    name: Option<&str>,
    max: usize,
) -> EndpointSlice {
    let service = endpoints.metadata.name.clone().unwrap_or_default();
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), service.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    EndpointSlice {
        metadata: ObjectMeta {
            name: name.map(str::to_string),
            generate_name: name.is_none().then(|| slice_name_prefix(&service)),
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(mirrored_annotations(endpoints)),
            owner_references: Some(vec![endpoints_owner(endpoints)]),
            ..Default::default()
        },
        address_type: group.address_type.into(),
        endpoints: group.endpoints.iter().take(max).cloned().collect(),
        ports: Some(group.ports.clone()),
    }
}

/// Whether `slice` already mirrors `group` with the Endpoints' labels and
/// annotations (↔ the early return of reconcileByPortMapping).
fn mirrors(slice: &EndpointSlice, endpoints: &Endpoints, group: &Group, max: usize) -> bool {
    let wanted: BTreeMap<String, &Endpoint> = group
        .endpoints
        .iter()
        .take(max)
        .map(|e| (endpoint_identity(e), e))
        .collect();
    let same_endpoints = slice.endpoints.len() == wanted.len()
        && slice
            .endpoints
            .iter()
            .all(|e| wanted.get(&endpoint_identity(e)) == Some(&e));
    let mut labels = slice.metadata.labels.clone().unwrap_or_default();
    labels.remove(MANAGED_BY_LABEL);
    labels.remove(SERVICE_NAME_LABEL);
    same_endpoints
        && labels == endpoints.metadata.labels.clone().unwrap_or_default()
        && slice.metadata.annotations.clone().unwrap_or_default() == mirrored_annotations(endpoints)
}

/// Plan the mirrored slices of `endpoints` from the slices this controller
/// already made for it (↔ reconcile and finalize): per group, the first
/// existing slice is updated in place if it differs, the others deleted; a
/// group without one gets a new slice; slices of groups no longer wanted
/// are deleted, or reused for new groups of the same address family.
pub fn plan_mirror(
    endpoints: &Endpoints,
    desired: &Desired,
    existing: &[&EndpointSlice],
    max: usize,
) -> Plan {
    let max = max.max(1);
    let mut by_key: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut sorted = existing.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for s in sorted {
        let key = group_key(&s.address_type, s.ports.as_deref().unwrap_or_default());
        by_key.entry(key).or_default().push(s);
    }
    let mut plan = Plan::default();
    // Slices to delete, with their address family (for reuse).
    let mut deletes: Vec<&EndpointSlice> = Vec::new();
    for (key, group) in &desired.groups {
        let olds = by_key.remove(key).unwrap_or_default();
        if group.endpoints.is_empty() {
            deletes.extend(olds);
            continue;
        }
        let first = olds.first().copied();
        deletes.extend(olds.iter().skip(1).copied());
        match first {
            Some(s) if mirrors(s, endpoints, group, max) => {}
            Some(s) => {
                let mut slice = mirrored_slice(endpoints, group, s.metadata.name.as_deref(), max);
                slice.metadata.resource_version = s.metadata.resource_version.clone();
                plan.update.push(slice);
            }
            None => plan
                .create
                .push(mirrored_slice(endpoints, group, None, max)),
        }
    }
    deletes.extend(by_key.into_values().flatten());
    // Reuse a slice to delete for a slice to create of the same family (↔ recycleSlices).
    let creates = std::mem::take(&mut plan.create);
    for mut slice in creates {
        match deletes
            .iter()
            .position(|d| d.address_type == slice.address_type)
        {
            Some(i) => {
                let old = deletes.remove(i);
                slice.metadata.generate_name = None;
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                plan.update.push(slice);
            }
            None => plan.create.push(slice),
        }
    }
    plan.delete = deletes
        .into_iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    plan
}

// ---------------------------------------------------------------------------
// The controller.

struct Stores {
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
}

pub async fn run(ctx: crate::Context) {
    let client = ctx.client.clone();
    let queue = Arc::new(WorkQueue::<Key>::new());

    // A service matters when it is (or was) without a selector.
    let q = queue.clone();
    let (services, svc_informer) = ctx.informers.get::<Service>().informer(move |ev, old| {
        if let Some(svc) = loopkit::event_object(ev)
            && (!has_selector(svc) || old.is_some_and(|o| !has_selector(&o)))
        {
            q.add(Key::of(svc));
        }
    });
    let q = queue.clone();
    let (endpoints, endpoints_informer) = informer(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        move |ev, old| {
            if let Some(ep) = loopkit::event_object(ev)
                && (should_mirror(ep) || old.is_some_and(|o| should_mirror(&o)))
            {
                q.add(Key::of(ep));
            }
        },
    );
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

    let worker = async {
        let ready = loopkit::wait_ready(&services).await
            && loopkit::wait_ready(&endpoints).await
            && loopkit::wait_ready(&slices).await;
        if !ready {
            return;
        }
        let stores = Stores {
            services: services.clone(),
            endpoints: endpoints.clone(),
            slices: slices.clone(),
        };
        for ep in stores.endpoints.state().iter() {
            queue.add(Key::of(ep.as_ref()));
        }
        for key in stores
            .slices
            .state()
            .iter()
            .filter_map(|s| slice_service(s))
        {
            queue.add(key);
        }
        let tracker = Mutex::new(Tracker::default());
        loop {
            let key = queue.next().await;
            let outcome =
                crate::loopkit::guarded(CONTROLLER, &key, reconcile(&ctx, &stores, &tracker, &key))
                    .await;
            queue.finish(CONTROLLER, key, outcome);
        }
    };
    tokio::join!(svc_informer, endpoints_informer, slice_informer, worker);
}

async fn reconcile(
    ctx: &crate::Context,
    stores: &Stores,
    tracker: &Mutex<Tracker>,
    key: &Key,
) -> Outcome {
    if !lock(tracker).caught_up(key, &stores.slices) {
        return Ok(Some(STALE_RETRY));
    }
    let all_slices = service_slices(&stores.slices, key);
    let existing: Vec<&EndpointSlice> = all_slices.iter().map(|s| s.as_ref()).collect();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.namespace);

    let ep = stores
        .endpoints
        .get(&key.object_ref())
        .filter(|ep| should_mirror(ep));
    let svc = stores.services.get(&key.object_ref());
    let (Some(ep), Some(_)) = (ep, svc.filter(|s| !has_selector(s))) else {
        // Nothing (or no longer anything) to mirror: the mirrored slices go.
        return apply_plan(&api, tracker, key, Plan::delete_all(&existing)).await;
    };

    let want = desired(&ep, MAX_ENDPOINTS_PER_SUBSET);
    if want.invalid > 0 || want.skipped > want.invalid {
        report_skipped(ctx, &ep, &want).await;
    }
    let mut plan = plan_mirror(&ep, &want, &existing, MAX_ENDPOINTS_PER_SUBSET);
    // No new slices for an Endpoints being deleted.
    if ep.metadata.deletion_timestamp.is_some() {
        plan.create.clear();
    }
    if plan.is_empty() {
        return Ok(None);
    }
    tracing::debug!(endpoints = %key, create = plan.create.len(), update = plan.update.len(), delete = plan.delete.len(), "mirroring endpoints");
    apply_plan(&api, tracker, key, plan).await
}

/// Warning events on the Endpoints for addresses not mirrored.
async fn report_skipped(ctx: &crate::Context, ep: &Endpoints, want: &Desired) {
    let reference = skiff_runtime::events::reference(ep);
    if want.invalid > 0 {
        ctx.recorder
            .record(
                &reference,
                EventType::Warning,
                "InvalidIPAddress",
                &format!(
                    "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                    want.invalid
                ),
            )
            .await;
    }
    if want.skipped > want.invalid {
        ctx.recorder
            .record(
                &reference,
                EventType::Warning,
                "TooManyAddressesToMirror",
                &format!(
                    "A max of {MAX_ENDPOINTS_PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                    want.skipped
                ),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointSubset, ObjectReference};

    fn address(ip: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32) -> CorePort {
        CorePort {
            name: Some(name.into()),
            port,
            ..Default::default()
        }
    }

    fn endpoints(subsets: Vec<EndpointSubset>) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("ns".into()),
                uid: Some("ep-uid".into()),
                labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
                annotations: Some(BTreeMap::from([
                    ("note".to_string(), "kept".to_string()),
                    (TRIGGER_TIME_ANNOTATION.to_string(), "T".to_string()),
                    (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
                ])),
                ..Default::default()
            },
            subsets: Some(subsets),
        }
    }

    fn subset(ready: &[&str], not_ready: &[&str], ports: Vec<CorePort>) -> EndpointSubset {
        EndpointSubset {
            addresses: Some(ready.iter().map(|ip| address(ip)).collect()),
            not_ready_addresses: Some(not_ready.iter().map(|ip| address(ip)).collect()),
            ports: Some(ports),
        }
    }

    /// Give planned creates names, as the API server would.
    fn materialize(plan: &Plan) -> Vec<EndpointSlice> {
        plan.create
            .iter()
            .chain(plan.update.iter())
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                if s.metadata.name.is_none() {
                    s.metadata.name = Some(format!("db-{i}"));
                }
                s
            })
            .collect()
    }

    fn ready_of(s: &EndpointSlice) -> Vec<(String, Option<bool>)> {
        s.endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses.join(","),
                    e.conditions.as_ref().and_then(|c| c.ready),
                )
            })
            .collect()
    }

    #[test]
    fn mirrors_a_subset_into_a_labelled_owned_slice() {
        let ep = endpoints(vec![subset(
            &["10.1.2.3"],
            &["10.1.2.4"],
            vec![port("", 80)],
        )]);
        let want = desired(&ep, 1000);
        let plan = plan_mirror(&ep, &want, &[], 1000);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (1, 0, 0)
        );
        let s = &plan.create[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("db-"));
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("db")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations,
            BTreeMap::from([("note".to_string(), "kept".to_string())])
        );
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Endpoints", "db", "ep-uid", Some(true))
        );
        assert_eq!(
            ready_of(s),
            [
                ("10.1.2.3".to_string(), Some(true)),
                ("10.1.2.4".to_string(), Some(false))
            ]
        );
        let ports = s.ports.clone().unwrap_or_default();
        assert_eq!(
            (
                ports[0].name.as_deref(),
                ports[0].port,
                ports[0].protocol.as_deref()
            ),
            (Some(""), Some(80), Some("TCP"))
        );

        // Applied: nothing more to do.
        let existing = materialize(&plan);
        let refs: Vec<&EndpointSlice> = existing.iter().collect();
        assert!(plan_mirror(&ep, &want, &refs, 1000).is_empty());
        // A label change on the Endpoints is mirrored in place.
        let mut relabelled = ep.clone();
        relabelled.metadata.labels = None;
        let plan = plan_mirror(&relabelled, &desired(&relabelled, 1000), &refs, 1000);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        let labels = plan.update[0].metadata.labels.clone().unwrap_or_default();
        assert!(!labels.contains_key("team"));
    }

    #[test]
    fn address_and_port_changes_update_or_replace_slices() {
        let ep = endpoints(vec![subset(&["10.1.2.3"], &[], vec![port("", 80)])]);
        let plan = plan_mirror(&ep, &desired(&ep, 1000), &[], 1000);
        let mut existing = materialize(&plan);
        existing[0].metadata.resource_version = Some("7".into());
        let refs: Vec<&EndpointSlice> = existing.iter().collect();

        // A new address: the slice is updated in place (optimistically, at its version).
        let moved = endpoints(vec![subset(&["10.2.3.4"], &[], vec![port("", 80)])]);
        let plan = plan_mirror(&moved, &desired(&moved, 1000), &refs, 1000);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("db-0"));
        assert_eq!(
            plan.update[0].metadata.resource_version.as_deref(),
            Some("7")
        );
        assert_eq!(
            ready_of(&plan.update[0]),
            [("10.2.3.4".to_string(), Some(true))]
        );

        // A new port: a new group, whose slice reuses the old one.
        let reported = endpoints(vec![subset(&["10.1.2.3"], &[], vec![port("", 8080)])]);
        let plan = plan_mirror(&reported, &desired(&reported, 1000), &refs, 1000);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("db-0"));
        let ports = plan.update[0].ports.clone().unwrap_or_default();
        assert_eq!(ports[0].port, Some(8080));

        // No addresses left: the slice goes.
        let empty = endpoints(vec![subset(&[], &[], vec![port("", 80)])]);
        let plan = plan_mirror(&empty, &desired(&empty, 1000), &refs, 1000);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 0, 1)
        );
    }

    #[test]
    fn families_and_ports_split_slices_and_subsets_with_the_same_ports_share_one() {
        let ep = endpoints(vec![
            subset(&["10.0.0.1", "fd00::1"], &[], vec![port("http", 80)]),
            subset(&["10.0.0.2"], &[], vec![port("http", 80)]),
            subset(&["10.0.0.3"], &[], vec![port("metrics", 9100)]),
        ]);
        let plan = plan_mirror(&ep, &desired(&ep, 1000), &[], 1000);
        let mut shapes: Vec<(String, usize)> = plan
            .create
            .iter()
            .map(|s| (s.address_type.clone(), s.endpoints.len()))
            .collect();
        shapes.sort();
        assert_eq!(
            shapes,
            [
                ("IPv4".to_string(), 1),
                ("IPv4".to_string(), 2),
                ("IPv6".to_string(), 1)
            ]
        );
    }

    #[test]
    fn invalid_and_excess_addresses_are_counted_not_mirrored() {
        let ep = endpoints(vec![subset(
            &["10.0.0.1", "not-an-ip", "10.0.0.2", "10.0.0.3"],
            &["10.0.0.4"],
            vec![port("", 80)],
        )]);
        let want = desired(&ep, 2);
        assert_eq!((want.invalid, want.skipped), (1, 3));
        let plan = plan_mirror(&ep, &want, &[], 2);
        assert_eq!(
            ready_of(&plan.create[0]),
            [
                ("10.0.0.1".to_string(), Some(true)),
                ("10.0.0.2".to_string(), Some(true))
            ]
        );
        // An IPv4-mapped IPv6 address is IPv4.
        assert_eq!(
            parse_address("::ffff:10.0.0.9"),
            Some(("IPv4", "10.0.0.9".to_string()))
        );
    }

    #[test]
    fn address_details_are_carried_over() {
        let mut a = address("10.0.0.1");
        a.hostname = Some("db-0".into());
        a.node_name = Some("node-a".into());
        a.target_ref = Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some("db-0".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        });
        let (family, e) = address_to_endpoint(&a, false).expect("an endpoint");
        assert_eq!(family, "IPv4");
        assert_eq!(e.hostname.as_deref(), Some("db-0"));
        assert_eq!(e.node_name.as_deref(), Some("node-a"));
        assert_eq!(e.target_ref, a.target_ref);
        assert_eq!(e.conditions.and_then(|c| c.ready), Some(false));
    }

    #[test]
    fn skip_mirror_label_and_leader_annotation_stop_mirroring() {
        let mut ep = endpoints(vec![]);
        assert!(should_mirror(&ep));
        ep.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(SKIP_MIRROR_LABEL.into(), "true".into());
        assert!(!should_mirror(&ep));
        let mut leader = endpoints(vec![]);
        leader
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(LEADER_ANNOTATION.into(), "{}".into());
        assert!(!should_mirror(&leader));
    }
}
