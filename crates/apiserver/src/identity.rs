//! API server identity Leases, as kube-apiserver 1.26+: each server keeps
//! Lease `apiserver-<id>` in kube-system (holder `apiserver-<id>_<uuid>`,
//! label `apiserver.kubernetes.io/identity: kube-apiserver`, a 3600 s
//! duration renewed every 10 s), and garbage-collects the expired identity
//! Leases of servers that are gone (kube-apiserver's apiserver lease GC).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::registry::{ResourceInfo, registry};

use crate::handlers::{Req, create_object, write_update};
use crate::output::Output;
use crate::request::Query;
use crate::state::ApiServer;
use crate::status::{ApiError, ApiResult};

pub const NAMESPACE: &str = "kube-system";
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
pub const IDENTITY_VALUE: &str = "kube-apiserver";
pub const LEASE_DURATION_SECONDS: i64 = 3600;
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
pub const GC_PERIOD: Duration = Duration::from_secs(3600);

/// Who this server is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The Lease name, `apiserver-<id>`.
    pub lease_name: String,
    /// `<lease name>_<uuid>`, new on every start.
    pub holder: String,
    pub hostname: String,
}

impl Identity {
    /// The id is a hash of the host name and the advertised address, so that
    /// several servers on one host (on loopback addresses) stay distinct and
    /// a restarted server takes back its own Lease.
    pub fn new(hostname: &str, advertise_address: &str) -> Identity {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{hostname}/{advertise_address}").as_bytes(),
        );
        let id: String = digest.as_ref()[..13]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let lease_name = format!("apiserver-{id}");
        let holder = format!("{lease_name}_{}", uuid::Uuid::new_v4());
        Identity {
            lease_name,
            holder,
            hostname: hostname.to_string(),
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn now_micro(now: jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn lease_info() -> ApiResult<&'static ResourceInfo> {
    registry()
        .lookup_kind("coordination.k8s.io/v1", "Lease")
        .ok_or_else(|| ApiError::internal("Lease is not registered"))
}

/// Create or renew this server's identity Lease.
pub async fn renew(
    server: &Arc<ApiServer>,
    identity: &Identity,
    now: jiff::Timestamp,
) -> ApiResult<()> {
    let info = lease_info()?;
    let query = Query::default();
    let req = Req {
        server,
        info,
        namespace: Some(NAMESPACE.into()),
        query: &query,
        output: Output::Json,
        field_manager: "kube-apiserver".into(),
        dry_run: false,
        warnings: Default::default(),
        duplicate_fields: Vec::new(),
        user: crate::authz::UserInfo::apiserver(),
    };
    let time = now_micro(now);
    match server.cache.get(&req.key(&identity.lease_name)) {
        None => {
            let mut lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": identity.lease_name, "namespace": NAMESPACE,
                    "labels": {IDENTITY_LABEL: IDENTITY_VALUE, "kubernetes.io/hostname": identity.hostname}},
                "spec": {"holderIdentity": identity.holder, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "acquireTime": time, "renewTime": time}});
            match create_object(&req, &mut lease).await {
                Ok(_) => Ok(()),
                // Another start got there first (or the cache lags): the next renewal updates it.
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(current) => {
            let mut lease = current.value.clone();
            lease["spec"]["holderIdentity"] = json!(identity.holder);
            lease["spec"]["leaseDurationSeconds"] = json!(LEASE_DURATION_SECONDS);
            lease["spec"]["renewTime"] = json!(time);
            lease["metadata"]["labels"][IDENTITY_LABEL] = json!(IDENTITY_VALUE);
            match write_update(&req, lease, &current.value, current.revision, None).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// Whether an identity Lease is expired at `now` (one without a renew time
/// or duration is invalid and counts as expired, as in kube-apiserver).
pub fn expired(lease: &Value, now: jiff::Timestamp) -> bool {
    let renew = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok());
    let duration = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64);
    match (renew, duration) {
        (Some(r), Some(d)) => r.as_second().saturating_add(d) < now.as_second(),
        _ => true,
    }
}

/// Delete the expired identity Leases of other servers. Returns their names.
pub async fn collect_garbage(
    server: &ApiServer,
    identity: &Identity,
    now: jiff::Timestamp,
) -> ApiResult<Vec<String>> {
    let info = lease_info()?;
    let prefix = info.key(Some(NAMESPACE), "");
    let (leases, _, _) = server.cache.list(&prefix, None, 0, |o| {
        o.value
            .pointer("/metadata/labels")
            .and_then(|l| l.get(IDENTITY_LABEL))
            .and_then(Value::as_str)
            == Some(IDENTITY_VALUE)
    });
    let mut deleted = Vec::new();
    for lease in leases {
        let name = lease
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name == identity.lease_name || !expired(&lease.value, now) {
            continue;
        }
        match server.store.delete(&lease.key, lease.revision).await {
            Ok(_) => {
                tracing::info!(lease = %name, "deleted the expired identity Lease of a gone API server");
                deleted.push(name);
            }
            // Renewed or deleted meanwhile.
            Err(
                skiff_store::StoreError::Conflict { .. } | skiff_store::StoreError::NotFound(_),
            ) => {}
            Err(e) => return Err(ApiError::from_store(e, info.group, info.plural, &name)),
        }
    }
    Ok(deleted)
}

/// Renew every `RENEW_INTERVAL` and collect garbage every `GC_PERIOD`
/// while the server exists.
pub async fn run(server: Weak<ApiServer>, identity: Identity) {
    let mut renew_tick = tokio::time::interval(RENEW_INTERVAL);
    let mut gc_tick = tokio::time::interval(GC_PERIOD);
    renew_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = renew_tick.tick() => {
                let Some(server) = server.upgrade() else { return };
                if let Err(e) = renew(&server, &identity, jiff::Timestamp::now()).await {
                    tracing::warn!(lease = %identity.lease_name, error = %e.message, "cannot renew the API server identity Lease");
                }
            }
            _ = gc_tick.tick() => {
                let Some(server) = server.upgrade() else { return };
                if let Err(e) = collect_garbage(&server, &identity, jiff::Timestamp::now()).await {
                    tracing::warn!(error = %e.message, "identity Lease garbage collection failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_per_address_and_start() {
        let a = Identity::new("host", "127.0.0.1:6443");
        let b = Identity::new("host", "127.0.0.2:6443");
        let a2 = Identity::new("host", "127.0.0.1:6443");
        assert_ne!(a.lease_name, b.lease_name);
        assert_eq!(a.lease_name, a2.lease_name);
        assert_ne!(a.holder, a2.holder);
        assert!(a.holder.starts_with(&format!("{}_", a.lease_name)));
        assert!(a.lease_name.len() <= 63);
    }

    #[test]
    fn expiry() {
        let now: jiff::Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let lease =
            |renew: &str| json!({"spec": {"renewTime": renew, "leaseDurationSeconds": 3600}});
        assert!(!expired(&lease("2026-12-03T09:30:00.000000Z"), now));
        assert!(expired(&lease("2026-12-03T08:59:59.000000Z"), now));
        assert!(expired(
            &json!({"spec": {"leaseDurationSeconds": 3600}}),
            now
        ));
        assert_eq!(now_micro(now), "2026-12-03T10:00:00.000000Z");
    }
}
