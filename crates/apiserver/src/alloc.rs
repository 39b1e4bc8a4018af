//! Service ClusterIP and NodePort allocation that is safe across several API
//! servers on one store, as Kubernetes 1.33's IPAddress allocator: every
//! allocated address is claimed by atomically creating a key in the store
//! (`/registry/ipaddresses/<ip>`, an IPAddress object whose parentRef names
//! the Service; `/registry/servicenodeports/<port>` for NodePorts), so two
//! servers can never hand out the same one: the loser of a create race sees
//! the key exist and moves on to the next candidate.
//!
//! The watch cache (fed by the store's watch, so it sees other servers'
//! claims) is the fast-path bitmap of what is taken; a small local map covers
//! the claims this server has in flight or made but not yet seen in the
//! cache. A repair pass removes claims whose Service is gone (a crash
//! between the claim and the Service write), after seeing them orphaned
//! twice in a row.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_store::{Store, StoreError};

use crate::cache::WatchCache;
use crate::state::ApiServer;

pub const IP_PREFIX: &str = "/registry/ipaddresses/";
pub const PORT_PREFIX: &str = "/registry/servicenodeports/";
const SERVICE_PREFIX: &str = "/registry/services/specs/";

pub fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

pub fn port_key(port: u16) -> String {
    format!("{PORT_PREFIX}{port}")
}

/// The Service a claim belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    pub namespace: String,
    pub name: String,
}

impl Parent {
    pub fn of(svc: &Value) -> Parent {
        let s = |p: &str| {
            svc.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Parent {
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
        }
    }

    fn to_json(&self) -> Value {
        json!({"group": "", "resource": "services", "namespace": self.namespace, "name": self.name})
    }

    fn matches(&self, claim: &Value) -> bool {
        let r = claim.pointer("/spec/parentRef");
        let s = |k: &str| {
            r.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        s("resource") == "services" && s("namespace") == self.namespace && s("name") == self.name
    }
}

fn ip_claim(ip: Ipv4Addr, parent: &Parent) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": ip.to_string(), "creationTimestamp": crate::handlers::now_rfc3339(),
            "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
        "spec": {"parentRef": parent.to_json()}})
}

fn port_claim(port: u16, parent: &Parent) -> Value {
    json!({"apiVersion": "skiff.internal/v1", "kind": "ServiceNodePort",
        "metadata": {"name": port.to_string(), "creationTimestamp": crate::handlers::now_rfc3339()},
        "spec": {"parentRef": parent.to_json()}})
}

/// What claiming a key gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This call created the claim (at this store revision).
    Owned(i64),
    /// The claim already names the same Service (an idempotent retry, or a
    /// concurrent create of the same Service on another server): usable, but
    /// not this call's to release.
    Adopted,
    /// Another Service holds it.
    Taken,
}

/// Atomically create the claim `key` for `parent`.
pub async fn claim(
    store: &dyn Store,
    key: &str,
    value: &Value,
    parent: &Parent,
) -> Result<Claim, StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Backend(e.to_string()))?;
    match store.create(key, bytes).await {
        Ok(kv) => Ok(Claim::Owned(kv.mod_revision)),
        Err(StoreError::AlreadyExists(_)) => {
            let Some(kv) = store.get(key).await? else {
                // Released in between: a retry decides.
                return Ok(Claim::Taken);
            };
            let existing: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            Ok(if parent.matches(&existing) {
                Claim::Adopted
            } else {
                Claim::Taken
            })
        }
        Err(e) => Err(e),
    }
}

/// Delete the claim `key` if it still belongs to `parent`.
pub async fn unclaim(store: &dyn Store, key: &str, parent: &Parent) -> Result<(), StoreError> {
    let Some(kv) = store.get(key).await? else {
        return Ok(());
    };
    let existing: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    if !parent.matches(&existing) {
        return Ok(());
    }
    match store.delete(key, kv.mod_revision).await {
        Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The allocator's local state: the ranges, the scan cursors, and this
/// server's claims in flight (revision 0) or made at a revision the watch
/// cache has not reached yet.
pub struct Allocators {
    pub cidr: (Ipv4Addr, u8),
    pub node_ports: (u16, u16),
    ips: HashMap<u32, i64>,
    ports: HashMap<u16, i64>,
    next_ip: u32,
    next_port: u16,
}

/// Whether a local entry still marks its value as taken, given the cache's revision.
fn locally_held(rev: Option<&i64>, cache_revision: i64) -> bool {
    matches!(rev, Some(0)) || rev.is_some_and(|r| *r > cache_revision)
}

impl Allocators {
    pub fn new(cidr: (Ipv4Addr, u8), node_ports: (u16, u16)) -> Allocators {
        Allocators {
            cidr,
            node_ports,
            ips: HashMap::new(),
            ports: HashMap::new(),
            next_ip: 0,
            next_port: 0,
        }
    }

    fn range(&self) -> (u32, u32) {
        let base = u32::from(self.cidr.0) & (u32::MAX << (32 - u32::from(self.cidr.1)));
        let size = 1u32 << (32 - u32::from(self.cidr.1));
        (base, size)
    }

    /// The n-th address of the service range (1: the kubernetes Service, 10: DNS).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.range().0 + n)
    }

    pub fn check_ip(&self, ip: Ipv4Addr) -> Result<(), String> {
        let (base, size) = self.range();
        let n = u32::from(ip);
        if n <= base || n >= base + size - 1 {
            return Err(format!(
                "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                self.cidr.0, self.cidr.1
            ));
        }
        Ok(())
    }

    pub fn check_port(&self, p: u16) -> Result<(), String> {
        let (lo, hi) = self.node_ports;
        if p < lo || p > hi {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
            ));
        }
        Ok(())
    }

    /// Mark `ip` in flight unless this server holds it already.
    fn begin_ip(&mut self, ip: Ipv4Addr, cache_revision: i64) -> bool {
        let n = u32::from(ip);
        if locally_held(self.ips.get(&n), cache_revision) {
            return false;
        }
        self.ips.insert(n, 0);
        true
    }

    fn begin_port(&mut self, p: u16, cache_revision: i64) -> bool {
        if locally_held(self.ports.get(&p), cache_revision) {
            return false;
        }
        self.ports.insert(p, 0);
        true
    }

    /// The next free address after the cursor (skipping the low band kept
    /// for well-known addresses), marked in flight. `taken` says whether the
    /// cache holds a claim.
    fn next_free_ip(
        &mut self,
        cache_revision: i64,
        taken: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        self.prune(cache_revision);
        let (base, size) = self.range();
        let low = (size / 16).clamp(1, 256);
        for _ in 0..size {
            self.next_ip = if self.next_ip < low || self.next_ip >= size - 2 {
                low
            } else {
                self.next_ip + 1
            };
            let ip = Ipv4Addr::from(base + self.next_ip);
            if !locally_held(self.ips.get(&u32::from(ip)), cache_revision) && !taken(ip) {
                self.ips.insert(u32::from(ip), 0);
                return Some(ip);
            }
        }
        None
    }

    fn next_free_port(&mut self, cache_revision: i64, taken: impl Fn(u16) -> bool) -> Option<u16> {
        let (lo, hi) = self.node_ports;
        for _ in lo..=hi {
            self.next_port = if self.next_port < lo || self.next_port >= hi {
                lo
            } else {
                self.next_port + 1
            };
            let p = self.next_port;
            if !locally_held(self.ports.get(&p), cache_revision) && !taken(p) {
                self.ports.insert(p, 0);
                return Some(p);
            }
        }
        None
    }

    /// Record how a claim ended: held at `revision`, or forgotten (None).
    fn finish_ip(&mut self, ip: Ipv4Addr, revision: Option<i64>) {
        match revision {
            Some(r) => self.ips.insert(u32::from(ip), r),
            None => self.ips.remove(&u32::from(ip)),
        };
    }

    fn finish_port(&mut self, p: u16, revision: Option<i64>) {
        match revision {
            Some(r) => self.ports.insert(p, r),
            None => self.ports.remove(&p),
        };
    }

    /// Drop entries the cache has caught up with (it is authoritative for them).
    fn prune(&mut self, cache_revision: i64) {
        if self.ips.len() > 256 {
            self.ips
                .retain(|_, r| locally_held(Some(r), cache_revision));
        }
        if self.ports.len() > 256 {
            self.ports
                .retain(|_, r| locally_held(Some(r), cache_revision));
        }
    }
}

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The value is invalid or unavailable (a field error for the client).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Allocator<'a> {
    pub server: &'a ApiServer,
}

impl Allocator<'_> {
    fn store(&self) -> &dyn Store {
        &*self.server.store
    }

    fn cache(&self) -> &WatchCache {
        &self.server.cache
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Allocators> {
        self.server
            .allocators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Claim a ClusterIP for `parent`: `wanted`, or the next free one. The
    /// bool says whether the claim is this call's (to release on failure).
    /// A dry run checks but claims nothing.
    pub async fn ip(
        &self,
        wanted: Option<Ipv4Addr>,
        parent: &Parent,
        dry_run: bool,
    ) -> Result<(Ipv4Addr, bool), AllocError> {
        if let Some(ip) = wanted {
            self.local().check_ip(ip).map_err(AllocError::Invalid)?;
            let already = || AllocError::Invalid("provided IP is already allocated".into());
            if dry_run {
                if self.store().get(&ip_key(ip)).await?.is_some() {
                    return Err(already());
                }
                return Ok((ip, false));
            }
            if !self.local().begin_ip(ip, self.cache().revision()) {
                return Err(already());
            }
            let result = claim(self.store(), &ip_key(ip), &ip_claim(ip, parent), parent).await;
            let mut local = self.local();
            return match result {
                Ok(Claim::Owned(rev)) => {
                    local.finish_ip(ip, Some(rev));
                    Ok((ip, true))
                }
                Ok(Claim::Adopted) => {
                    local.finish_ip(ip, None);
                    Ok((ip, false))
                }
                Ok(Claim::Taken) => {
                    local.finish_ip(ip, None);
                    Err(already())
                }
                Err(e) => {
                    local.finish_ip(ip, None);
                    Err(e.into())
                }
            };
        }
        let (_, size) = self.local().range();
        for _ in 0..size {
            let candidate = {
                let cache = self.cache();
                self.local()
                    .next_free_ip(cache.revision(), |ip| cache.get(&ip_key(ip)).is_some())
            };
            let Some(ip) = candidate else { break };
            if dry_run {
                self.local().finish_ip(ip, None);
                return Ok((ip, false));
            }
            let result = claim(self.store(), &ip_key(ip), &ip_claim(ip, parent), parent).await;
            let mut local = self.local();
            match result {
                Ok(Claim::Owned(rev)) => {
                    local.finish_ip(ip, Some(rev));
                    return Ok((ip, true));
                }
                // Another server got there first (the cache had not seen it yet).
                Ok(Claim::Adopted | Claim::Taken) => local.finish_ip(ip, None),
                Err(e) => {
                    local.finish_ip(ip, None);
                    return Err(e.into());
                }
            }
        }
        Err(AllocError::Invalid("range is full".into()))
    }

    /// Claim a NodePort for `parent` (as [`Allocator::ip`]).
    pub async fn port(
        &self,
        wanted: Option<u16>,
        parent: &Parent,
        dry_run: bool,
    ) -> Result<(u16, bool), AllocError> {
        if let Some(p) = wanted {
            self.local().check_port(p).map_err(AllocError::Invalid)?;
            let already = || AllocError::Invalid("provided port is already allocated".into());
            if dry_run {
                if self.store().get(&port_key(p)).await?.is_some() {
                    return Err(already());
                }
                return Ok((p, false));
            }
            if !self.local().begin_port(p, self.cache().revision()) {
                return Err(already());
            }
            let result = claim(self.store(), &port_key(p), &port_claim(p, parent), parent).await;
            let mut local = self.local();
            return match result {
                Ok(Claim::Owned(rev)) => {
                    local.finish_port(p, Some(rev));
                    Ok((p, true))
                }
                Ok(Claim::Adopted) => {
                    local.finish_port(p, None);
                    Ok((p, false))
                }
                Ok(Claim::Taken) => {
                    local.finish_port(p, None);
                    Err(already())
                }
                Err(e) => {
                    local.finish_port(p, None);
                    Err(e.into())
                }
            };
        }
        let (lo, hi) = self.local().node_ports;
        for _ in lo..=hi {
            let candidate = {
                let cache = self.cache();
                self.local()
                    .next_free_port(cache.revision(), |p| cache.get(&port_key(p)).is_some())
            };
            let Some(p) = candidate else { break };
            if dry_run {
                self.local().finish_port(p, None);
                return Ok((p, false));
            }
            let result = claim(self.store(), &port_key(p), &port_claim(p, parent), parent).await;
            let mut local = self.local();
            match result {
                Ok(Claim::Owned(rev)) => {
                    local.finish_port(p, Some(rev));
                    return Ok((p, true));
                }
                Ok(Claim::Adopted | Claim::Taken) => local.finish_port(p, None),
                Err(e) => {
                    local.finish_port(p, None);
                    return Err(e.into());
                }
            }
        }
        Err(AllocError::Invalid("range is full".into()))
    }

    /// Give back a ClusterIP `parent` held.
    pub async fn release_ip(&self, ip: Ipv4Addr, parent: &Parent) {
        if let Err(e) = unclaim(self.store(), &ip_key(ip), parent).await {
            tracing::warn!(%ip, error = %e, "cannot release a ClusterIP claim; the repair pass will");
        }
        self.local().finish_ip(ip, None);
    }

    pub async fn release_port(&self, p: u16, parent: &Parent) {
        if let Err(e) = unclaim(self.store(), &port_key(p), parent).await {
            tracing::warn!(port = p, error = %e, "cannot release a NodePort claim; the repair pass will");
        }
        self.local().finish_port(p, None);
    }
}

/// The ClusterIP and NodePorts a Service holds.
pub fn service_addresses(svc: &Value) -> (Option<Ipv4Addr>, Vec<u16>) {
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .collect();
    (ip, ports)
}

/// Make sure every stored Service's addresses are claimed (at start;
/// idempotent, and safe while other servers do the same).
pub async fn claim_existing(server: &ApiServer) -> Result<(), StoreError> {
    let (services, _, _) = server.cache.list(SERVICE_PREFIX, None, 0, |_| true);
    for s in services {
        let parent = Parent::of(&s.value);
        let (ip, ports) = service_addresses(&s.value);
        let range_ok = ip.is_some_and(|ip| {
            server
                .allocators
                .lock()
                .map(|a| a.check_ip(ip).is_ok())
                .unwrap_or(false)
        });
        if let Some(ip) = ip.filter(|_| range_ok)
            && claim(&*server.store, &ip_key(ip), &ip_claim(ip, &parent), &parent).await?
                == Claim::Taken
        {
            tracing::warn!(%ip, service = %format!("{}/{}", parent.namespace, parent.name), "ClusterIP is claimed by another Service");
        }
        for p in ports {
            if claim(
                &*server.store,
                &port_key(p),
                &port_claim(p, &parent),
                &parent,
            )
            .await?
                == Claim::Taken
            {
                tracing::warn!(port = p, service = %format!("{}/{}", parent.namespace, parent.name), "NodePort is claimed by another Service");
            }
        }
    }
    Ok(())
}

/// Claims (key, mod_revision) whose Service is gone or no longer holds the value.
fn orphans(cache: &WatchCache) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (prefix, is_ip) in [(IP_PREFIX, true), (PORT_PREFIX, false)] {
        let (claims, _, _) = cache.list(prefix, None, 0, |_| true);
        for c in claims {
            let value = c.key.trim_start_matches(prefix);
            let r = c.value.pointer("/spec/parentRef");
            let s = |k: &str| {
                r.and_then(|r| r.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let held = cache
                .get(&format!("{SERVICE_PREFIX}{}/{}", s("namespace"), s("name")))
                .is_some_and(|svc| {
                    let (ip, ports) = service_addresses(&svc.value);
                    if is_ip {
                        ip.is_some_and(|ip| ip.to_string() == value)
                    } else {
                        ports.iter().any(|p| p.to_string() == value)
                    }
                });
            if !held {
                out.push((c.key.clone(), c.revision));
            }
        }
    }
    out
}

/// Every `period`, delete the claims found orphaned, unchanged, on the
/// previous pass too (so a claim whose Service is being created is left alone).
pub async fn repair_loop(server: Weak<ApiServer>, period: Duration) {
    let mut suspects: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        let found = orphans(&server.cache);
        let mut next = HashMap::new();
        for (key, rev) in found {
            if suspects.get(&key) == Some(&rev) {
                match server.store.delete(&key, rev).await {
                    Ok(_) => tracing::info!(key, "released an orphaned allocation"),
                    Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                    Err(e) => {
                        tracing::warn!(key, error = %e, "cannot release an orphaned allocation")
                    }
                }
            } else {
                next.insert(key, rev);
            }
        }
        suspects = next;
    }
}

/// Start the repair pass for `server`.
pub fn spawn_repair(server: &Arc<ApiServer>) {
    tokio::spawn(repair_loop(
        Arc::downgrade(server),
        Duration::from_secs(180),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_skip_local_and_cached_claims() {
        let mut a = Allocators::new((Ipv4Addr::new(10, 43, 0, 0), 24), (30000, 30002));
        // The low band of a /24 is 16 addresses; in-flight .16 and cached .17 are skipped.
        assert!(a.begin_ip(Ipv4Addr::new(10, 43, 0, 16), 5));
        let ip = a
            .next_free_ip(5, |ip| ip == Ipv4Addr::new(10, 43, 0, 17))
            .unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 43, 0, 18));
        // A claim made at revision 9 holds until the cache reaches 9.
        a.finish_ip(ip, Some(9));
        assert!(!a.begin_ip(ip, 8));
        assert!(a.begin_ip(ip, 9));
        assert!(a.check_ip(Ipv4Addr::new(10, 43, 0, 255)).is_err());
        assert!(a.check_ip(Ipv4Addr::new(10, 43, 1, 1)).is_err());
        assert!(a.check_ip(Ipv4Addr::new(10, 43, 0, 254)).is_ok());
        assert_eq!(a.next_free_port(0, |p| p == 30000), Some(30001));
        assert_eq!(a.next_free_port(0, |_| false), Some(30002));
        assert_eq!(a.next_free_port(0, |_| false), Some(30000));
        assert_eq!(a.next_free_port(0, |_| false), None);
    }
}
