//! What exists from the first start: the namespaces default, kube-system,
//! kube-public and kube-node-lease, the `kubernetes` Service and its
//! Endpoints, and the system PriorityClasses.

use std::sync::Arc;

use serde_json::{Value, json};
use skiff_api::registry::registry;

use crate::handlers::{Req, create_object};
use crate::output::Output;
use crate::request::Query;
use crate::state::ApiServer;
use crate::status::ApiResult;

/// Create an object through the normal create path; an existing one is left alone.
pub async fn ensure(
    server: &Arc<ApiServer>,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    obj: Value,
) -> ApiResult<()> {
    let info = registry().lookup_kind(api_version, kind).ok_or_else(|| {
        crate::status::ApiError::internal(format!("unknown kind {api_version} {kind}"))
    })?;
    let query = Query::default();
    let req = loopback(server, info, namespace, &query);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if server.cache.get(&req.key(&name)).is_some() {
        return Ok(());
    }
    let mut obj =
        (info.roundtrip)(obj).map_err(|e| crate::status::ApiError::internal(e.to_string()))?;
    if let Some(ns) = namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    match create_object(&req, &mut obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Write `obj` over the stored object of the same name (the RBAC policy
/// reconciliation), through the normal update path.
pub async fn replace(
    server: &Arc<ApiServer>,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    obj: Value,
) -> ApiResult<()> {
    let info = registry().lookup_kind(api_version, kind).ok_or_else(|| {
        crate::status::ApiError::internal(format!("unknown kind {api_version} {kind}"))
    })?;
    let query = Query::default();
    let req = loopback(server, info, namespace, &query);
    let name = crate::handlers::name_of(&obj).to_string();
    let (old, revision) = crate::handlers::read_current(&req, &name).await?;
    crate::handlers::write_update(&req, obj, &old, revision, None)
        .await
        .map(|_| ())
}

/// A request of the API server itself.
fn loopback<'a>(
    server: &'a Arc<ApiServer>,
    info: &'static skiff_api::registry::ResourceInfo,
    namespace: Option<&str>,
    query: &'a Query,
) -> Req<'a> {
    Req {
        server,
        info,
        namespace: namespace.map(str::to_string),
        query,
        output: Output::Json,
        field_manager: "skiff-apiserver".into(),
        dry_run: false,
        warnings: Default::default(),
        duplicate_fields: Vec::new(),
        user: crate::authz::UserInfo::apiserver(),
    }
}

pub async fn bootstrap(server: &Arc<ApiServer>, port: u16) -> ApiResult<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            server,
            "v1",
            "Namespace",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let first_ip = server
        .allocators
        .lock()
        .map(|a| a.nth(1).to_string())
        .unwrap_or_default();
    ensure(
        server,
        "v1",
        "Service",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": first_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}], "sessionAffinity": "None", "type": "ClusterIP"}}),
    )
    .await?;
    let host = server
        .advertise_address
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_default();
    ensure(
        server,
        "v1",
        "Endpoints",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
    )
    .await?;
    // The same endpoints as an EndpointSlice, as kube-apiserver's endpoint
    // reconciler writes it (pkg/controlplane/reconcilers/endpointsadapter.go):
    // what the service proxy routes the `kubernetes` ClusterIP by.
    let address_type = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => "IPv6",
        _ => "IPv4",
    };
    ensure(
        server,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        Some("default"),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": address_type,
            "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
    )
    .await?;
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        ensure(
            server,
            "scheduling.k8s.io/v1",
            "PriorityClass",
            None,
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "description": description}),
        )
        .await?;
    }
    Ok(())
}
