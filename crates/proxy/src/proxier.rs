//! The proxier (↔ kube-proxy's nftables Proxier.syncProxyRules): keeps the
//! desired model, remembers what each service has programmed, and turns a
//! batch of changes into one nftables transaction touching only the changed
//! services' chains, sets and map elements. A full resync rewrites
//! everything: at start and after an nft error by deleting and recreating the
//! table; periodically by flushing and refilling it in place, which keeps the
//! session affinity sets' contents.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{Family, ServiceInfo, ServiceName, SliceInfo};
use crate::netfilter::Netfilter;
use crate::rules::{self, ElementKey, RenderCtx, ServiceRules, table_ref};
use crate::{Config, Error};

/// A change seen by the watchers.
#[derive(Debug, Clone)]
pub enum Update {
    ServiceApplied(Box<Service>),
    ServiceDeleted(Box<Service>),
    /// A complete (re)list of Services.
    ServicesListed(Vec<Service>),
    SliceApplied(Box<EndpointSlice>),
    SliceDeleted(Box<EndpointSlice>),
    /// A complete (re)list of EndpointSlices.
    SlicesListed(Vec<EndpointSlice>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Resync {
    None,
    /// Flush and refill the table in place.
    Soft,
    /// Delete and recreate the table (start, or the kernel's state is unknown).
    Hard,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    pub full: bool,
    /// Services whose rules were (re)written.
    pub services: usize,
    /// Size of the nft script; 0 when nothing had to change.
    pub script_bytes: usize,
}

/// The slice key: (namespace, slice name).
type SliceKey = (String, String);

/// The Services and EndpointSlices seen so far and the services changed
/// since the last sync: the model both the nftables [`Proxier`] and the
/// iptables one (`crate::iptables`) keep.
#[derive(Debug, Default)]
pub struct Desired {
    pub services: HashMap<ServiceName, ServiceInfo>,
    pub slices: HashMap<ServiceName, BTreeMap<String, SliceInfo>>,
    slice_owner: HashMap<SliceKey, ServiceName>,
    /// Services whose rules may have changed since the last sync.
    pub dirty: BTreeSet<ServiceName>,
    services_listed: bool,
    slices_listed: bool,
}

impl Desired {
    /// Both kinds have been listed once (kube-proxy waits for its informers too).
    pub fn ready(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    /// The slices of a service.
    pub fn slices_of(&self, name: &ServiceName) -> Vec<&SliceInfo> {
        self.slices
            .get(name)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// Record a change in the model.
    pub fn update(&mut self, update: Update) {
        match update {
            Update::ServiceApplied(svc) => {
                if let Some(name) = service_name(&svc) {
                    self.set_service(name, ServiceInfo::from_service(&svc));
                }
            }
            Update::ServiceDeleted(svc) => {
                if let Some(name) = service_name(&svc) {
                    self.set_service(name, None);
                }
            }
            Update::ServicesListed(list) => {
                let mut seen = HashSet::new();
                for svc in &list {
                    if let Some(name) = service_name(svc) {
                        seen.insert(name.clone());
                        self.set_service(name, ServiceInfo::from_service(svc));
                    }
                }
                let gone: Vec<ServiceName> = self
                    .services
                    .keys()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.set_service(name, None);
                }
                self.services_listed = true;
            }
            Update::SliceApplied(slice) => {
                if let Some(key) = slice_key(&slice) {
                    self.set_slice(key, SliceInfo::from_slice(&slice));
                }
            }
            Update::SliceDeleted(slice) => {
                if let Some(key) = slice_key(&slice) {
                    self.set_slice(key, None);
                }
            }
            Update::SlicesListed(list) => {
                let mut seen = HashSet::new();
                for slice in &list {
                    if let Some(key) = slice_key(slice) {
                        seen.insert(key.clone());
                        self.set_slice(key, SliceInfo::from_slice(slice));
                    }
                }
                let gone: Vec<SliceKey> = self
                    .slice_owner
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.set_slice(key, None);
                }
                self.slices_listed = true;
            }
        }
    }

    /// Set (or remove, with None) a service in the model; marks it dirty if it changed.
    pub fn set_service(&mut self, name: ServiceName, info: Option<ServiceInfo>) {
        let changed = match info {
            Some(info) => self.services.insert(name.clone(), info.clone()).as_ref() != Some(&info),
            None => self.services.remove(&name).is_some(),
        };
        if changed {
            self.dirty.insert(name);
        }
    }

    /// Set (or remove, with None) an EndpointSlice `(namespace, name)` in the
    /// model with the service it belongs to.
    pub fn set_slice(&mut self, key: SliceKey, slice: Option<(ServiceName, SliceInfo)>) {
        let new_owner = slice.as_ref().map(|(s, _)| s.clone());
        if let Some(old) = self.slice_owner.get(&key).cloned()
            && Some(&old) != new_owner.as_ref()
        {
            if let Some(m) = self.slices.get_mut(&old) {
                m.remove(&key.1);
                if m.is_empty() {
                    self.slices.remove(&old);
                }
            }
            self.slice_owner.remove(&key);
            self.dirty.insert(old);
        }
        if let Some((owner, info)) = slice {
            self.slice_owner.insert(key.clone(), owner.clone());
            let m = self.slices.entry(owner.clone()).or_default();
            if m.insert(key.1, info.clone()).as_ref() != Some(&info) {
                self.dirty.insert(owner);
            }
        }
    }
}

pub struct Proxier<N> {
    config: Config,
    nft: N,
    families: Vec<Family>,
    desired: Desired,
    programmed: HashMap<(Family, ServiceName), ServiceRules>,
    /// Which service holds a map key (two services claiming one externalIP:port: the first wins).
    owners: HashMap<(Family, ElementKey), ServiceName>,
    /// Services that lost an element to another; retried when any element is released.
    contested: BTreeSet<ServiceName>,
    resync: Resync,
}

impl<N: Netfilter> Proxier<N> {
    pub fn new(config: Config, nft: N) -> Self {
        let families = config.families();
        Proxier {
            config,
            nft,
            families,
            desired: Desired::default(),
            programmed: HashMap::new(),
            owners: HashMap::new(),
            contested: BTreeSet::new(),
            resync: Resync::Hard,
        }
    }

    pub fn netfilter(&self) -> &N {
        &self.nft
    }

    /// Both kinds have been listed once (kube-proxy waits for its informers too).
    pub fn ready(&self) -> bool {
        self.desired.ready()
    }

    /// Whether a sync has something to do.
    pub fn has_pending(&self) -> bool {
        !self.desired.dirty.is_empty() || self.resync != Resync::None
    }

    /// Ask for a periodic full resync at the next sync.
    pub fn request_resync(&mut self) {
        self.resync = self.resync.max(Resync::Soft);
    }

    /// Record a change in the model.
    pub fn update(&mut self, update: Update) {
        self.desired.update(update);
    }

    /// Set (or remove, with None) a service in the model; marks it dirty if it changed.
    pub fn set_service(&mut self, name: ServiceName, info: Option<ServiceInfo>) {
        self.desired.set_service(name, info);
    }

    /// Set (or remove, with None) an EndpointSlice `(namespace, name)` in the
    /// model with the service it belongs to.
    pub fn set_slice(&mut self, key: SliceKey, slice: Option<(ServiceName, SliceInfo)>) {
        self.desired.set_slice(key, slice);
    }

    fn render(&self, family: Family, name: &ServiceName) -> ServiceRules {
        let Some(info) = self.desired.services.get(name) else {
            return ServiceRules::default();
        };
        let ctx = RenderCtx {
            family,
            cluster_cidrs: self.config.cluster_cidrs(family),
            selection: self.config.selection,
        };
        let slices = self.desired.slices_of(name);
        rules::render_service(&ctx, name, info, &slices)
    }

    /// Drop the elements another service holds; record ownership of the rest.
    fn claim(&mut self, family: Family, name: &ServiceName, rules: &mut ServiceRules) {
        let mut lost = false;
        rules.elements.retain(|key, _| match self.owners.get(&(family, key.clone())) {
            Some(owner) if owner != name => {
                tracing::warn!(service = %name, other = %owner, element = %key.1, map = key.0, "address and port already used by another service; ignored");
                lost = true;
                false
            }
            _ => true,
        });
        for key in rules.elements.keys() {
            self.owners.insert((family, key.clone()), name.clone());
        }
        if lost {
            self.contested.insert(name.clone());
        }
    }

    /// Release what `old` held and `new` does not; true if anything was released.
    fn release(&mut self, family: Family, old: &ServiceRules, new: &ServiceRules) -> bool {
        let mut released = false;
        for key in old
            .elements
            .keys()
            .filter(|k| !new.elements.contains_key(*k))
        {
            self.owners.remove(&(family, key.clone()));
            released = true;
        }
        released
    }

    /// Bring the kernel to the model: a full resync if one is due, else only
    /// the dirty services.
    pub async fn sync(&mut self) -> Result<SyncStats, Error> {
        let result = if self.resync != Resync::None {
            self.sync_full().await
        } else {
            self.sync_changed().await
        };
        if result.is_err() {
            self.resync = Resync::Hard;
        }
        result
    }

    async fn sync_full(&mut self) -> Result<SyncStats, Error> {
        let hard = self.resync == Resync::Hard;
        let table = self.config.table.clone();
        let mut names: Vec<ServiceName> = self.desired.services.keys().cloned().collect();
        names.sort();
        self.owners.clear();
        self.contested.clear();
        let mut desired: HashMap<(Family, ServiceName), ServiceRules> = HashMap::new();
        let mut script = String::new();
        for family in self.families.clone() {
            let t = table_ref(family, &table);
            let mut per_service = Vec::new();
            for name in &names {
                let mut r = self.render(family, name);
                self.claim(family, name, &mut r);
                if !r.is_empty() {
                    per_service.push((name.clone(), r));
                }
            }
            if hard {
                let _ = writeln!(script, "add table {t}\ndelete table {t}");
                rules::static_definitions(&mut script, family, &table);
            } else {
                rules::static_definitions(&mut script, family, &table);
                let _ = writeln!(script, "flush table {t}");
                for map in [
                    rules::MAP_SERVICE_IPS,
                    rules::MAP_SERVICE_NODEPORTS,
                    rules::MAP_NO_ENDPOINT_SERVICES,
                    rules::MAP_NO_ENDPOINT_NODEPORTS,
                ] {
                    let _ = writeln!(script, "flush map {t} {map}");
                }
                let _ = writeln!(script, "flush set {t} {}", rules::SET_CLUSTER_IPS);
                // What was programmed and is no longer wanted (all chains are empty after the flush).
                let wanted_chains: HashSet<&String> = per_service
                    .iter()
                    .flat_map(|(_, r)| r.chains.keys())
                    .collect();
                let wanted_sets: HashSet<&String> = per_service
                    .iter()
                    .flat_map(|(_, r)| r.sets.keys())
                    .collect();
                for ((f, _), r) in &self.programmed {
                    if *f != family {
                        continue;
                    }
                    for chain in r.chains.keys().filter(|c| !wanted_chains.contains(c)) {
                        let _ = writeln!(script, "delete chain {t} {chain}");
                    }
                    for set in r.sets.keys().filter(|s| !wanted_sets.contains(s)) {
                        let _ = writeln!(script, "delete set {t} {set}");
                    }
                }
            }
            rules::static_rules(&mut script, family, &table, &self.config.service_cidr);
            for (_, r) in &per_service {
                for (set, def) in &r.sets {
                    let _ = writeln!(script, "add set {t} {set} {def}");
                }
                for chain in r.chains.keys() {
                    let _ = writeln!(script, "add chain {t} {chain}");
                }
            }
            for (_, r) in &per_service {
                for (chain, lines) in &r.chains {
                    for line in lines {
                        let _ = writeln!(script, "add rule {t} {chain} {line}");
                    }
                }
            }
            rules::element_statements(
                &mut script,
                "add",
                family,
                &table,
                per_service.iter().flat_map(|(_, r)| r.elements.iter()),
            );
            for (name, r) in per_service {
                desired.insert((family, name), r);
            }
        }
        self.nft.apply(&script).await?;
        let stats = SyncStats {
            full: true,
            services: names.len(),
            script_bytes: script.len(),
        };
        self.programmed = desired;
        self.desired.dirty.clear();
        self.resync = Resync::None;
        Ok(stats)
    }

    async fn sync_changed(&mut self) -> Result<SyncStats, Error> {
        let dirty: Vec<ServiceName> = std::mem::take(&mut self.desired.dirty)
            .into_iter()
            .collect();
        let table = self.config.table.clone();
        // Phases, in transaction order (see `diff`).
        let mut phases: [String; 6] = Default::default();
        let mut released = false;
        let mut touched = 0;
        for family in self.families.clone() {
            for name in &dirty {
                let old = self
                    .programmed
                    .remove(&(family, name.clone()))
                    .unwrap_or_default();
                let mut new = self.render(family, name);
                released |= self.release(family, &old, &new);
                self.claim(family, name, &mut new);
                if diff(&mut phases, family, &table, &old, &new) {
                    touched += 1;
                }
                if !new.is_empty() {
                    self.programmed.insert((family, name.clone()), new);
                }
            }
        }
        if released && !self.contested.is_empty() {
            let retry = std::mem::take(&mut self.contested);
            self.desired.dirty.extend(retry);
        }
        let script: String = phases.concat();
        if script.is_empty() {
            return Ok(SyncStats::default());
        }
        self.nft.apply(&script).await?;
        Ok(SyncStats {
            full: false,
            services: touched,
            script_bytes: script.len(),
        })
    }
}

/// Appends to `phases` what turns `old` into `new`; true if anything changes.
/// Phases: 0 delete changed/stale elements; 1 add new sets and declare new
/// chains; 2 (re)write new and changed chains; 3 add new/changed elements;
/// 4 flush stale chains; 5 delete stale chains and sets. Chains are declared
/// before any rule refers to them, and a chain or set is deleted only once
/// nothing refers to it.
fn diff(
    phases: &mut [String; 6],
    family: Family,
    table: &str,
    old: &ServiceRules,
    new: &ServiceRules,
) -> bool {
    if old == new {
        return false;
    }
    let t = table_ref(family, table);
    let removed = old
        .elements
        .iter()
        .filter(|(k, v)| new.elements.get(*k) != Some(*v));
    rules::element_statements(&mut phases[0], "delete", family, table, removed);
    for (set, def) in new.sets.iter().filter(|(s, _)| !old.sets.contains_key(*s)) {
        let _ = writeln!(phases[1], "add set {t} {set} {def}");
    }
    for (chain, lines) in &new.chains {
        match old.chains.get(chain) {
            Some(old_lines) if old_lines == lines => {}
            Some(_) => rules::chain_statements(&mut phases[2], family, table, chain, lines, true),
            None => {
                let _ = writeln!(phases[1], "add chain {t} {chain}");
                for line in lines {
                    let _ = writeln!(phases[2], "add rule {t} {chain} {line}");
                }
            }
        }
    }
    let added = new
        .elements
        .iter()
        .filter(|(k, v)| old.elements.get(*k) != Some(*v));
    rules::element_statements(&mut phases[3], "add", family, table, added);
    for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
        let _ = writeln!(phases[4], "flush chain {t} {chain}");
        let _ = writeln!(phases[5], "delete chain {t} {chain}");
    }
    for set in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
        let _ = writeln!(phases[5], "delete set {t} {set}");
    }
    true
}

fn service_name(svc: &Service) -> Option<ServiceName> {
    Some(ServiceName::new(
        svc.metadata.namespace.as_deref()?,
        svc.metadata.name.as_deref()?,
    ))
}

fn slice_key(slice: &EndpointSlice) -> Option<SliceKey> {
    Some((
        slice.metadata.namespace.clone()?,
        slice.metadata.name.clone()?,
    ))
}

/// What [`run_loop`] drives: the nftables [`Proxier`] or the iptables one
/// (`crate::iptables::IptablesProxier`).
pub trait Syncer {
    fn config(&self) -> &Config;
    /// Record a change in the model.
    fn update(&mut self, update: Update);
    /// Both kinds have been listed once.
    fn ready(&self) -> bool;
    /// Whether a sync has something to do.
    fn has_pending(&self) -> bool;
    /// Ask for a periodic full resync at the next sync.
    fn request_resync(&mut self);
    /// Bring the kernel to the model.
    fn sync(&mut self) -> impl Future<Output = Result<SyncStats, Error>> + Send;
}

impl<N: Netfilter> Syncer for Proxier<N> {
    fn config(&self) -> &Config {
        &self.config
    }
    fn update(&mut self, update: Update) {
        Proxier::update(self, update);
    }
    fn ready(&self) -> bool {
        Proxier::ready(self)
    }
    fn has_pending(&self) -> bool {
        Proxier::has_pending(self)
    }
    fn request_resync(&mut self) {
        Proxier::request_resync(self);
    }
    fn sync(&mut self) -> impl Future<Output = Result<SyncStats, Error>> + Send {
        Proxier::sync(self)
    }
}

/// The sync loop (↔ kube-proxy's BoundedFrequencyRunner): applies updates to
/// the model as they come and syncs once both kinds are listed, at most once
/// per `min_sync_period` (changes arriving meanwhile are batched into the
/// next sync), with a full resync every `sync_period` and a retry after a
/// failed sync. Returns when `shutdown` completes or the updates end.
pub async fn run_loop<S: Syncer>(
    proxier: &mut S,
    updates: &mut mpsc::UnboundedReceiver<Update>,
    shutdown: impl Future<Output = ()>,
) {
    let min = proxier.config().min_sync_period;
    let period = proxier.config().sync_period.max(Duration::from_secs(1));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_sync: Option<Instant> = None;
    let mut next_sync: Option<Instant> = None;
    let mut resync_at = Instant::now() + period;
    let schedule = |next: &mut Option<Instant>, last: Option<Instant>| {
        if next.is_none() {
            let now = Instant::now();
            *next = Some(last.map(|l| (l + min).max(now)).unwrap_or(now));
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            update = updates.recv() => {
                let Some(update) = update else { return };
                proxier.update(update);
                if proxier.ready() && proxier.has_pending() {
                    schedule(&mut next_sync, last_sync);
                }
            }
            _ = tokio::time::sleep_until(next_sync.unwrap_or_else(Instant::now)), if next_sync.is_some() => {
                next_sync = None;
                last_sync = Some(Instant::now());
                match proxier.sync().await {
                    Ok(stats) => {
                        tracing::debug!(full = stats.full, services = stats.services, bytes = stats.script_bytes, "proxy rules synced");
                        if proxier.has_pending() {
                            schedule(&mut next_sync, last_sync);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "syncing proxy rules failed; retrying with a full resync");
                        next_sync = Some(Instant::now() + min.max(Duration::from_secs(1)));
                    }
                }
            }
            _ = tokio::time::sleep_until(resync_at) => {
                resync_at = Instant::now() + period;
                proxier.request_resync();
                if proxier.ready() {
                    schedule(&mut next_sync, last_sync);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::netfilter::Recorder;
    use crate::rules::object_name;
    use serde_json::json;

    fn config() -> Config {
        Config {
            table: "t".into(),
            ..Config::default()
        }
    }

    fn service(name: &str, ip: &str) -> Box<Service> {
        Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}
            }))
            .unwrap(),
        )
    }

    fn slice(svc: &str, ips: &[&str]) -> Box<EndpointSlice> {
        let eps: Vec<_> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{svc}-abc"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": eps
            }))
            .unwrap(),
        )
    }

    fn listed(p: &mut Proxier<Recorder>) {
        p.update(Update::ServicesListed(vec![
            *service("web", "10.43.0.5"),
            *service("api", "10.43.0.6"),
        ]));
        p.update(Update::SlicesListed(vec![
            *slice("web", &["10.42.0.2", "10.42.0.3"]),
            *slice("api", &["10.42.0.4"]),
        ]));
    }

    #[tokio::test]
    async fn full_sync_recreates_table() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        assert!(p.ready());
        let stats = p.sync().await.unwrap();
        assert!(stats.full);
        let s = rec.take().pop().unwrap();
        assert!(s.starts_with("add table ip t\ndelete table ip t\n"), "{s}");
        let web = object_name("service", "default/web/tcp/http");
        let api = object_name("service", "default/api/tcp/http");
        assert!(s.contains(&format!("add chain ip t {web}\n")));
        assert!(s.contains(&format!("add chain ip t {api}\n")));
        assert!(s.contains(&format!("10.43.0.5 . tcp . 80 : goto {web}")));
        // Chains are declared before any rule refers to them.
        let declared = s.find(&format!("add chain ip t {web}")).unwrap();
        let used = s.find(&format!("goto {web}")).unwrap();
        assert!(declared < used);
        assert!(!p.has_pending());
        // Nothing changed: no transaction at all.
        assert_eq!(p.sync().await.unwrap(), SyncStats::default());
        assert!(rec.take().is_empty());
    }

    #[tokio::test]
    async fn one_endpoint_change_touches_only_that_service() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        p.sync().await.unwrap();
        rec.take();

        p.update(Update::SliceApplied(slice(
            "web",
            &["10.42.0.2", "10.42.0.9"],
        )));
        let stats = p.sync().await.unwrap();
        assert!(!stats.full);
        assert_eq!(stats.services, 1);
        let s = rec.take().pop().unwrap();
        let svc = object_name("service", "default/web/tcp/http");
        let old_ep = object_name("endpoint", "default/web/tcp/http__10.42.0.3/8080");
        let new_ep = object_name("endpoint", "default/web/tcp/http__10.42.0.9/8080");
        let kept_ep = object_name("endpoint", "default/web/tcp/http__10.42.0.2/8080");
        let expected = format!(
            "add chain ip t {new_ep}\n\
             add rule ip t {new_ep} ip saddr 10.42.0.9 jump mark-for-masquerade\n\
             add rule ip t {new_ep} meta l4proto tcp dnat to 10.42.0.9:8080\n\
             add chain ip t {svc}\n\
             flush chain ip t {svc}\n\
             add rule ip t {svc} ip daddr 10.43.0.5 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade\n\
             add rule ip t {svc} numgen random mod 2 == 0 goto {kept_ep}\n\
             add rule ip t {svc} goto {new_ep}\n\
             flush chain ip t {old_ep}\n\
             delete chain ip t {old_ep}\n"
        );
        assert_eq!(s, expected);
        assert!(!s.contains("default/api"));
        assert!(
            !s.contains("element"),
            "the map entry still points at the same service chain"
        );
    }

    #[tokio::test]
    async fn removal_and_no_endpoints() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        p.sync().await.unwrap();
        rec.take();

        // The last endpoint goes: the service rejects.
        p.update(Update::SliceApplied(slice("api", &[])));
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        let svc = object_name("service", "default/api/tcp/http");
        let ep = object_name("endpoint", "default/api/tcp/http__10.42.0.4/8080");
        assert!(
            s.contains("delete element ip t service-ips { 10.43.0.6 . tcp . 80 }\n"),
            "{s}"
        );
        assert!(s.contains("add element ip t no-endpoint-services { 10.43.0.6 . tcp . 80 : goto reject-chain }\n"), "{s}");
        assert!(s.contains(&format!("delete chain ip t {svc}\n")));
        assert!(s.contains(&format!("delete chain ip t {ep}\n")));
        assert!(
            !s.contains("cluster-ips"),
            "the ClusterIP stays in cluster-ips"
        );
        // Element deletions come first, chain deletions last.
        assert!(s.find("delete element").unwrap() < s.find("delete chain").unwrap());

        // The service goes: everything it had goes.
        p.update(Update::ServiceDeleted(service("api", "10.43.0.6")));
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        assert_eq!(
            s,
            "delete element ip t cluster-ips { 10.43.0.6 }\ndelete element ip t no-endpoint-services { 10.43.0.6 . tcp . 80 }\n"
        );

        // A relist without "web" removes it too.
        p.update(Update::ServicesListed(vec![]));
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        assert!(
            s.contains("delete element ip t service-ips { 10.43.0.5 . tcp . 80 }"),
            "{s}"
        );
        assert!(s.contains(&format!(
            "delete chain ip t {}",
            object_name("service", "default/web/tcp/http")
        )));
        assert!(p.programmed.is_empty());
        assert!(p.owners.is_empty());
    }

    #[tokio::test]
    async fn affinity_sets_come_and_go() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        p.sync().await.unwrap();
        rec.take();
        let mut svc = service("api", "10.43.0.6");
        svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        p.update(Update::ServiceApplied(svc.clone()));
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        let set = object_name("affinity", "default/api/tcp/http__10.42.0.4/8080@10800");
        assert!(
            s.starts_with(&format!(
                "add set ip t {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }}\n"
            )),
            "{s}"
        );
        assert!(s.contains(&format!("update @{set} {{ ip saddr }}")));
        svc.spec.as_mut().unwrap().session_affinity = Some("None".into());
        p.update(Update::ServiceApplied(svc));
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        assert!(s.ends_with(&format!("delete set ip t {set}\n")), "{s}");
    }

    #[tokio::test]
    async fn periodic_resync_keeps_table_and_error_recreates_it() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        p.sync().await.unwrap();
        rec.take();
        p.update(Update::ServiceDeleted(service("api", "10.43.0.6")));
        p.request_resync();
        assert!(p.sync().await.unwrap().full);
        let s = rec.take().pop().unwrap();
        assert!(!s.contains("delete table"), "{s}");
        assert!(s.contains("flush table ip t\n"));
        assert!(s.contains("flush map ip t service-ips\n"));
        // The gone service's chains are deleted (the flush emptied them).
        assert!(s.contains(&format!(
            "delete chain ip t {}\n",
            object_name("service", "default/api/tcp/http")
        )));
        assert!(s.contains(&format!(
            "goto {}",
            object_name("service", "default/web/tcp/http")
        )));

        *rec.fail.lock().unwrap() = true;
        p.update(Update::SliceApplied(slice("web", &["10.42.0.7"])));
        assert!(p.sync().await.is_err());
        assert!(p.has_pending());
        *rec.fail.lock().unwrap() = false;
        let stats = p.sync().await.unwrap();
        assert!(stats.full);
        let s = rec.take().pop().unwrap();
        assert!(s.starts_with("add table ip t\ndelete table ip t\n"));
        assert!(s.contains("dnat to 10.42.0.7:8080"));
    }

    #[tokio::test]
    async fn conflicting_external_ip_goes_to_the_first_service() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        p.sync().await.unwrap();
        for (name, ip) in [("api", "10.43.0.6"), ("web", "10.43.0.5")] {
            let mut svc = service(name, ip);
            svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.1".into()]);
            p.update(Update::ServiceApplied(svc));
        }
        rec.take();
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        assert_eq!(s.matches("192.0.2.1 . tcp . 80").count(), 1, "{s}");
        assert!(s.contains(&format!(
            "192.0.2.1 . tcp . 80 : goto {}",
            object_name("external", "default/api/tcp/http")
        )));
        // When "api" lets go, "web" gets it on the next sync.
        p.update(Update::ServiceDeleted(service("api", "10.43.0.6")));
        p.sync().await.unwrap();
        assert!(p.has_pending());
        p.sync().await.unwrap();
        let s = rec.take().concat();
        assert!(
            s.contains(&format!(
                "192.0.2.1 . tcp . 80 : goto {}",
                object_name("external", "default/web/tcp/http")
            )),
            "{s}"
        );
    }

    #[tokio::test]
    async fn slice_moving_to_another_service() {
        let rec = Recorder::default();
        let mut p = Proxier::new(config(), rec.clone());
        listed(&mut p);
        p.sync().await.unwrap();
        rec.take();
        // The "web" slice is relabelled to "api".
        let mut moved = slice("api", &["10.42.0.8"]);
        moved.metadata.name = Some("web-abc".into());
        p.update(Update::SliceApplied(moved));
        p.sync().await.unwrap();
        let s = rec.take().pop().unwrap();
        assert!(
            s.contains(
                "add element ip t no-endpoint-services { 10.43.0.5 . tcp . 80 : goto reject-chain }"
            ),
            "{s}"
        );
        assert!(
            s.contains("numgen random mod 2 == 0 goto"),
            "api now has two endpoints: {s}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_within_min_sync_period_are_batched() {
        let rec = Recorder::default();
        let mut p = Proxier::new(
            Config {
                min_sync_period: Duration::from_secs(1),
                sync_period: Duration::from_secs(300),
                ..config()
            },
            rec.clone(),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            run_loop(&mut p, &mut rx, async {
                let _ = stop_rx.await;
            })
            .await;
            p
        });
        // No sync before both kinds are listed.
        tx.send(Update::ServicesListed(vec![*service("web", "10.43.0.5")]))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(rec.scripts.lock().unwrap().is_empty());
        tx.send(Update::SlicesListed(vec![*slice("web", &["10.42.0.2"])]))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        {
            let scripts = rec.scripts.lock().unwrap();
            assert_eq!(scripts.len(), 1, "the first sync is immediate");
            assert_eq!(scripts[0].0 - start, Duration::from_secs(3));
        }
        // Three changes within the next second: one transaction, one second after the last sync.
        for (i, ip) in ["10.42.0.3", "10.42.0.4", "10.42.0.5"]
            .into_iter()
            .enumerate()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Update::SliceApplied(slice("web", &["10.42.0.2", ip])))
                .unwrap();
            assert_eq!(
                rec.scripts.lock().unwrap().len(),
                1,
                "change {i} is held back"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        {
            let scripts = rec.scripts.lock().unwrap();
            assert_eq!(scripts.len(), 2);
            assert_eq!(scripts[1].0 - start, Duration::from_secs(4));
            assert!(scripts[1].1.contains("dnat to 10.42.0.5:8080"));
            assert!(
                !scripts[1].1.contains("10.42.0.3"),
                "intermediate states are never programmed"
            );
        }
        // A change long after the last sync goes out at once.
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(Update::SliceApplied(slice("web", &["10.42.0.6"])))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(rec.scripts.lock().unwrap().len(), 3);
        assert_eq!(
            rec.scripts.lock().unwrap()[2].0 - start,
            Duration::from_millis(14_110)
        );
        // The periodic full resync (5 min after start) rewrites the table in place.
        tokio::time::sleep(Duration::from_secs(300)).await;
        {
            let scripts = rec.scripts.lock().unwrap();
            assert_eq!(scripts.len(), 4);
            assert_eq!(scripts[3].0 - start, Duration::from_secs(300));
            assert!(scripts[3].1.contains("flush table ip t"));
        }
        stop_tx.send(()).unwrap();
        let p = task.await.unwrap();
        assert!(!p.has_pending());
    }
}
