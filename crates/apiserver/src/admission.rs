//! What happens to an object between decoding and storage: system metadata,
//! defaulting, mutating admission (service account, default tolerations,
//! priority, ClusterIP and NodePort allocation), and the rules of updates
//! (status vs spec, immutable system fields, generation).

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;

use crate::handlers::{Req, name_of, now_rfc3339};
use crate::state::ApiServer;
use crate::status::{ApiError, ApiResult, Cause};

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5)
        .map(|_| NAME_CHARS[rng.random_range(0..NAME_CHARS.len())] as char)
        .collect()
}

fn meta_mut(obj: &mut Value) -> ApiResult<&mut serde_json::Map<String, Value>> {
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("metadata is required"))
}

fn has_spec(info: &ResourceInfo) -> bool {
    !matches!(
        (info.group, info.kind),
        (
            "",
            "ConfigMap" | "Secret" | "ServiceAccount" | "Event" | "Endpoints"
        ) | ("events.k8s.io", "Event")
            | ("discovery.k8s.io", "EndpointSlice")
            | ("rbac.authorization.k8s.io", _)
            | ("apps", "ControllerRevision")
            | ("scheduling.k8s.io", "PriorityClass")
            | ("storage.k8s.io", "StorageClass")
    )
}

/// Namespaced objects need their namespace to exist and not be terminating.
pub async fn ensure_namespace_active(req: &Req<'_>) -> ApiResult<()> {
    if !req.info.namespaced {
        return Ok(());
    }
    let ns = req.namespace.as_deref().unwrap_or_default();
    let key = format!("/registry/namespaces/{ns}");
    let mut found = req.server.cache.get(&key);
    if found.is_none() {
        req.server.cache.sync().await?;
        found = req.server.cache.get(&key);
    }
    let ns_obj = found.ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
    if ns_obj
        .value
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        let mut e = ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            crate::status::qualified(req.info.group, req.info.plural),
            req.query.get("name").unwrap_or_default()
        ));
        e.details = Some((
            req.info.group.to_string(),
            req.info.plural.to_string(),
            String::new(),
        ));
        return Err(e);
    }
    Ok(())
}

/// System metadata, status reset, defaulting and mutating admission of a new object.
/// A Secret's write-only stringData is merged into data, over the same
/// keys (as the v1 → internal conversion does), and not stored.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(m) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = m.remove("stringData") else {
        return;
    };
    let data = m.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    let Some(data) = data.as_object_mut() else {
        return;
    };
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        data.insert(
            k,
            json!(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
}

pub fn prepare_create(req: &Req<'_>, obj: &mut Value) -> ApiResult<()> {
    if req.info.group.is_empty() && req.info.kind == "Secret" {
        merge_string_data(obj);
    }
    let info = req.info;
    let now = now_rfc3339();
    {
        let meta = meta_mut(obj)?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty()
            && let Some(prefix) = meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        {
            let mut base = prefix.to_string();
            base.truncate(63 - 5);
            meta.insert(
                "name".into(),
                json!(format!("{base}{}", generated_suffix())),
            );
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        if has_spec(info) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    // Status is the controllers' to write: a create starts from an empty one.
    if info.has_subresource("status")
        && info.kind != "Node"
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    skiff_api::defaults::apply_defaults(info.group, info.kind, obj);
    match (info.group, info.kind) {
        ("", "Pod") => admit_pod(req, obj)?,
        ("batch", "Job") => generate_job_selector(obj),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("", "ReplicationController") => {
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({}));
            }
        }
        _ => {}
    }
    crate::podsecurity::admit(req, obj, None, None)?;
    crate::certificates::prepare_create(req, obj)?;
    record_manager(req, None, obj);
    Ok(())
}

fn record_manager(req: &Req<'_>, old: Option<&Value>, obj: &mut Value) {
    *obj = skiff_api::apply::record_update(old, obj, &req.field_manager, &now_rfc3339());
}

/// A Job without a manual selector selects its pods by its uid, and its
/// template carries the matching labels (as the Job registry strategy does).
fn generate_job_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = job
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if job
        .pointer("/spec/selector")
        .is_some_and(|s| s.as_object().is_some_and(|m| !m.is_empty()))
    {
        return;
    }
    if job.get("spec").is_none_or(|s| !s.is_object()) {
        return;
    }
    job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    if !job
        .pointer("/spec/template/metadata")
        .is_some_and(Value::is_object)
    {
        if !job.pointer("/spec/template").is_some_and(Value::is_object) {
            job["spec"]["template"] = json!({});
        }
        job["spec"]["template"]["metadata"] = json!({});
    }
    let meta = &mut job["spec"]["template"]["metadata"];
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta["labels"] = json!({});
    }
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("job-name", &name),
    ] {
        meta["labels"][k] = json!(v);
    }
}

/// Where the ServiceAccount admission plugin mounts the API credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether the pod gets a token: the pod's automountServiceAccountToken,
/// else its ServiceAccount's, else true.
fn automount_token(req: &Req<'_>, pod: &Value) -> bool {
    if let Some(b) = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
    {
        return b;
    }
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sa = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    req.server
        .cache
        .get(&format!("/registry/serviceaccounts/{ns}/{sa}"))
        .and_then(|o| {
            o.value
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// The ServiceAccount admission plugin's `kube-api-access-<suffix>`
/// projected volume (bound token, cluster CA, namespace), mounted read-only
/// into every container that does not mount something there already.
fn mount_service_account_token(pod: &mut Value, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let kinds = ["initContainers", "containers", "ephemeralContainers"];
    let mounted_already = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|m| {
                m.iter().any(|m| {
                    m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT)
                })
            })
    };
    let needs = kinds.iter().any(|k| {
        spec.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| !mounted_already(c)))
    });
    if !needs {
        return;
    }
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match spec
        .entry("volumes")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        Some(v) => v.push(volume),
        None => return,
    }
    for k in kinds {
        for c in spec
            .get_mut(k)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if mounted_already(c) {
                continue;
            }
            if let Some(mounts) = c
                .as_object_mut()
                .map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])))
                .and_then(Value::as_array_mut)
            {
                mounts.push(
                    json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT}),
                );
            }
        }
    }
}

/// ServiceAccount, DefaultTolerationSeconds and Priority admission.
fn admit_pod(req: &Req<'_>, pod: &mut Value) -> ApiResult<()> {
    admit_runtime_class(req, pod)?;
    let pod_name = name_of(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let sa = spec
            .get("serviceAccount")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        spec.insert("serviceAccountName".into(), json!(sa));
    }
    let mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    if !mirror && automount_token(req, pod) {
        mount_service_account_token(pod, &generated_suffix());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str);
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                (k == Some(key) || (k.is_none() && op == "Exists"))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !tolerated {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    // The Priority admission plugin: priority (and preemptionPolicy) from
    // the named PriorityClass, or the global default; an unknown class is
    // refused.
    let class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pc = if class.is_empty() {
        None
    } else {
        match req
            .server
            .cache
            .get(&format!("/registry/priorityclasses/{class}"))
        {
            Some(pc) => Some(pc),
            None => {
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                    pod_name
                )));
            }
        }
    };
    if spec.get("priority").is_none() {
        let value = pc
            .as_ref()
            .and_then(|pc| pc.value.get("value").and_then(Value::as_i64))
            .unwrap_or(0);
        spec.insert("priority".into(), json!(value));
    }
    if spec.get("preemptionPolicy").is_none()
        && let Some(policy) = pc
            .as_ref()
            .and_then(|pc| pc.value.get("preemptionPolicy"))
            .filter(|p| p.is_string())
    {
        spec.insert("preemptionPolicy".into(), policy.clone());
    }
    Ok(())
}

/// Whether admitting this object looks up other objects in the cache.
pub fn reads_cache(info: &ResourceInfo, obj: &Value) -> bool {
    info.group.is_empty()
        && info.kind == "Pod"
        && ["runtimeClassName", "priorityClassName"].iter().any(|f| {
            obj.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
}

/// The RuntimeClass admission plugin (plugin/pkg/admission/runtimeclass):
/// a pod naming a RuntimeClass gets its overhead and scheduling constraints,
/// and a pod naming one that does not exist is refused.
fn admit_runtime_class(req: &Req<'_>, pod: &mut Value) -> ApiResult<()> {
    let Some(class) = pod
        .pointer("/spec/runtimeClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let forbidden =
        |why: String| ApiError::forbidden(format!("pods \"{}\" is forbidden: {why}", name_of(pod)));
    let Some(rc) = req
        .server
        .cache
        .get(&format!("/registry/runtimeclasses/{class}"))
    else {
        return Err(forbidden(format!(
            "pod rejected: RuntimeClass \"{class}\" not found"
        )));
    };
    let rc = &rc.value;
    if let Some(fixed) = rc.pointer("/overhead/podFixed").filter(|v| !v.is_null()) {
        match pod.pointer("/spec/overhead") {
            Some(existing) if !existing.is_null() && existing != fixed => {
                return Err(forbidden(
                    "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
                        .into(),
                ));
            }
            _ => {
                if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("overhead".into(), fixed.clone());
                }
            }
        }
    } else if pod
        .pointer("/spec/overhead")
        .is_some_and(|o| o.as_object().is_some_and(|m| !m.is_empty()))
    {
        return Err(forbidden(
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
                .into(),
        ));
    }
    let Some(scheduling) = rc.get("scheduling").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let pod_name = name_of(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(selector) = scheduling.get("nodeSelector").and_then(Value::as_object) {
        let pod_selector = spec.entry("nodeSelector").or_insert_with(|| json!({}));
        if let Some(ps) = pod_selector.as_object_mut() {
            for (k, v) in selector {
                match ps.get(k) {
                    Some(existing) if existing != v => {
                        return Err(ApiError::forbidden(format!(
                            "pods \"{pod_name}\" is forbidden: conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}",
                            v.as_str().unwrap_or_default(),
                            existing.as_str().unwrap_or_default()
                        )));
                    }
                    _ => {
                        ps.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    if let Some(extra) = scheduling.get("tolerations").and_then(Value::as_array) {
        let list = spec.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            for t in extra {
                if !list.contains(t) {
                    list.push(t.clone());
                }
            }
        }
    }
    Ok(())
}

/// Resources claimed for one object (only those this request claimed:
/// released again when the object is not stored).
#[derive(Default)]
pub struct Allocated {
    parent: Option<crate::alloc::Parent>,
    ips: Vec<Ipv4Addr>,
    ports: Vec<u16>,
}

fn invalid_field(req: &Req<'_>, obj: &Value, field: &str, value: &str, message: &str) -> ApiError {
    ApiError::invalid(
        req.info.group,
        req.info.kind,
        name_of(obj),
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{value}\": {message}"),
            field: field.into(),
        }],
    )
}

fn alloc_error(
    req: &Req<'_>,
    obj: &Value,
    field: &str,
    value: &str,
    e: crate::alloc::AllocError,
) -> ApiError {
    match e {
        crate::alloc::AllocError::Invalid(m) => invalid_field(req, obj, field, value, &m),
        crate::alloc::AllocError::Store(e) => {
            ApiError::from_store(e, req.info.group, req.info.plural, name_of(obj))
        }
    }
}

/// ClusterIP and NodePort allocation for a new Service: each value is
/// claimed in the store (see [`crate::alloc`]), so several API servers on
/// one store never hand out the same one.
pub async fn allocate(req: &Req<'_>, obj: &mut Value) -> ApiResult<Allocated> {
    let mut out = Allocated::default();
    if req.info.kind != "Service" || !req.info.group.is_empty() {
        return Ok(out);
    }
    let mut parent = crate::alloc::Parent::of(obj);
    if parent.namespace.is_empty() {
        parent.namespace = req.namespace.clone().unwrap_or_default();
    }
    out.parent = Some(parent.clone());
    let allocator = crate::alloc::Allocator { server: req.server };
    let svc_type = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if svc_type != "ExternalName" {
        let wanted = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if wanted != "None" {
            let ip = if wanted.is_empty() {
                None
            } else {
                Some(wanted.parse::<Ipv4Addr>().map_err(|_| {
                    invalid_field(
                        req,
                        obj,
                        "spec.clusterIPs[0]",
                        &wanted,
                        "must be a valid IP address",
                    )
                })?)
            };
            let (ip, owned) = allocator
                .ip(ip, &parent, req.dry_run)
                .await
                .map_err(|e| alloc_error(req, obj, "spec.clusterIPs", &wanted, e))?;
            if owned {
                out.ips.push(ip);
            }
            obj["spec"]["clusterIP"] = json!(ip.to_string());
            obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
        } else {
            obj["spec"]["clusterIPs"] = json!(["None"]);
        }
        obj["spec"]["ipFamilies"] = json!(["IPv4"]);
        obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        let n = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n {
            let wanted = obj["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|p| *p != 0)
                .map(|p| p as u16);
            match allocator.port(wanted, &parent, req.dry_run).await {
                Ok((p, owned)) => {
                    if owned {
                        out.ports.push(p);
                    }
                    obj["spec"]["ports"][i]["nodePort"] = json!(p);
                }
                Err(e) => {
                    release(req.server, &out).await;
                    return Err(alloc_error(
                        req,
                        obj,
                        &format!("spec.ports[{i}].nodePort"),
                        &wanted.unwrap_or(0).to_string(),
                        e,
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// What an update of a Service claimed (released again when the update is
/// not stored) and what it gives up (released once it is stored).
#[derive(Default)]
pub struct ServiceUpdate {
    pub claimed: Allocated,
    pub released: Allocated,
}

fn node_ports_of(svc: &Value) -> Vec<(i64, String, u16)> {
    let has_node_ports = matches!(
        svc.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    );
    if !has_node_ports {
        return Vec::new();
    }
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let node_port = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|n| *n != 0)?;
            Some((
                p.get("port").and_then(Value::as_i64).unwrap_or(0),
                p.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string(),
                u16::try_from(node_port).ok()?,
            ))
        })
        .collect()
}

/// ClusterIP and NodePorts across a Service update (↔ the service REST's
/// patchAllocatedValues, dropTypeDependentFields and allocateUpdate): a
/// ClusterIP left out is carried over and may not change once set; a
/// nodePort left out is carried over from the old port with the same port
/// and protocol, a new one is claimed (or allocated), and those no longer
/// used are released after the write; a type without node ports drops the
/// unchanged ones; ExternalName gives up the ClusterIP, and a change away
/// from ExternalName allocates one.
pub async fn allocate_update(
    req: &Req<'_>,
    new: &mut Value,
    old: &Value,
) -> ApiResult<ServiceUpdate> {
    let mut out = ServiceUpdate::default();
    if req.info.kind != "Service" || !req.info.group.is_empty() {
        return Ok(out);
    }
    let mut parent = crate::alloc::Parent::of(old);
    if parent.namespace.is_empty() {
        parent.namespace = req.namespace.clone().unwrap_or_default();
    }
    out.claimed.parent = Some(parent.clone());
    out.released.parent = Some(parent.clone());
    let allocator = crate::alloc::Allocator { server: req.server };
    let type_of = |v: &Value| {
        v.pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string()
    };
    let (old_type, new_type) = (type_of(old), type_of(new));
    let old_ip = if old_type == "ExternalName" {
        String::new()
    } else {
        old.pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };

    // The ClusterIP.
    if new_type == "ExternalName" {
        if let Ok(ip) = old_ip.parse::<Ipv4Addr>() {
            out.released.ips.push(ip);
        }
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(k);
            }
        }
    } else {
        let wanted = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if wanted.is_empty() && !old_ip.is_empty() {
            new["spec"]["clusterIP"] = json!(old_ip);
            new["spec"]["clusterIPs"] = old
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or_else(|| json!([old_ip]));
        } else if !old_ip.is_empty() && wanted != old_ip {
            return Err(invalid_field(
                req,
                new,
                "spec.clusterIPs[0]",
                &wanted,
                "may not change once set",
            ));
        } else if old_ip.is_empty() && wanted != "None" {
            let ip = if wanted.is_empty() {
                None
            } else {
                Some(wanted.parse::<Ipv4Addr>().map_err(|_| {
                    invalid_field(
                        req,
                        new,
                        "spec.clusterIPs[0]",
                        &wanted,
                        "must be a valid IP address",
                    )
                })?)
            };
            let (ip, owned) = allocator
                .ip(ip, &parent, req.dry_run)
                .await
                .map_err(|e| alloc_error(req, new, "spec.clusterIPs", &wanted, e))?;
            if owned {
                out.claimed.ips.push(ip);
            }
            new["spec"]["clusterIP"] = json!(ip.to_string());
            new["spec"]["clusterIPs"] = json!([ip.to_string()]);
        } else if old_ip.is_empty() && wanted == "None" {
            new["spec"]["clusterIPs"] = json!(["None"]);
        }
        if new.pointer("/spec/ipFamilies").is_none() {
            new["spec"]["ipFamilies"] = json!(["IPv4"]);
        }
        if new.pointer("/spec/ipFamilyPolicy").is_none() {
            new["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }

    // NodePorts.
    let old_ports = node_ports_of(old);
    let held = |p: u16| old_ports.iter().any(|(_, _, n)| *n == p);
    let n = new
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if new_type == "NodePort" || new_type == "LoadBalancer" {
        for i in 0..n {
            let port = new["spec"]["ports"][i]
                .get("port")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let protocol = new["spec"]["ports"][i]
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            let mut wanted = new["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|p| *p != 0)
                .and_then(|p| u16::try_from(p).ok());
            if wanted.is_none() {
                wanted = old_ports
                    .iter()
                    .find(|(p, proto, _)| *p == port && *proto == protocol)
                    .map(|(_, _, n)| *n);
            }
            if let Some(p) = wanted
                && held(p)
            {
                new["spec"]["ports"][i]["nodePort"] = json!(p);
                continue;
            }
            match allocator.port(wanted, &parent, req.dry_run).await {
                Ok((p, owned)) => {
                    if owned {
                        out.claimed.ports.push(p);
                    }
                    new["spec"]["ports"][i]["nodePort"] = json!(p);
                }
                Err(e) => {
                    release(req.server, &out.claimed).await;
                    return Err(alloc_error(
                        req,
                        new,
                        &format!("spec.ports[{i}].nodePort"),
                        &wanted.unwrap_or(0).to_string(),
                        e,
                    ));
                }
            }
        }
    } else {
        for i in 0..n {
            let Some(p) = new["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|p| *p != 0)
            else {
                continue;
            };
            if u16::try_from(p).is_ok_and(held) {
                if let Some(m) = new["spec"]["ports"][i].as_object_mut() {
                    m.remove("nodePort");
                }
            } else {
                release(req.server, &out.claimed).await;
                return Err(invalid_field(
                    req,
                    new,
                    &format!("spec.ports[{i}].nodePort"),
                    &p.to_string(),
                    &format!("may not be used when `type` is '{new_type}'"),
                ));
            }
        }
    }
    let kept: Vec<u16> = node_ports_of(new).into_iter().map(|(_, _, n)| n).collect();
    out.released.ports = old_ports
        .into_iter()
        .map(|(_, _, n)| n)
        .filter(|n| !kept.contains(n))
        .collect();
    out.released.ports.dedup();
    Ok(out)
}

pub async fn release(server: &ApiServer, a: &Allocated) {
    let Some(parent) = &a.parent else { return };
    let allocator = crate::alloc::Allocator { server };
    for ip in &a.ips {
        allocator.release_ip(*ip, parent).await;
    }
    for p in &a.ports {
        allocator.release_port(*p, parent).await;
    }
}

/// Give back what a deleted object held.
pub async fn release_object(server: &ApiServer, info: &ResourceInfo, obj: &Value) {
    if info.kind != "Service" || !info.group.is_empty() {
        return;
    }
    let (ip, ports) = crate::alloc::service_addresses(obj);
    let a = Allocated {
        parent: Some(crate::alloc::Parent::of(obj)),
        ips: ip.into_iter().collect(),
        ports,
    };
    release(server, &a).await;
}

/// Carry over what an update may not change, per subresource.
pub fn prepare_update(
    req: &Req<'_>,
    new: &mut Value,
    old: &Value,
    sub: Option<&str>,
) -> ApiResult<()> {
    let info = req.info;
    if info.group.is_empty() && info.kind == "Secret" {
        merge_string_data(new);
    }
    let csr = (info.group, info.kind) == ("certificates.k8s.io", "CertificateSigningRequest");
    if csr {
        crate::certificates::prepare_update(req, new, old, sub)?;
    }
    match sub {
        _ if csr => {}
        Some("status") => {
            // Only status changes through /status (metadata labels/annotations too, as Kubernetes allows,
            // except a Deployment's labels: its status strategy resets them).
            let status = new.get("status").cloned();
            let labels = new
                .pointer("/metadata/labels")
                .cloned()
                .filter(|_| (info.group, info.kind) != ("apps", "Deployment"));
            let annotations = new.pointer("/metadata/annotations").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(l) = labels {
                merged["metadata"]["labels"] = l;
            }
            if let Some(a) = annotations {
                merged["metadata"]["annotations"] = a;
            }
            *new = merged;
        }
        Some("ephemeralcontainers") => {
            // Only spec.ephemeralContainers changes through this subresource.
            let ephemeral = new.pointer("/spec/ephemeralContainers").cloned();
            let mut merged = old.clone();
            if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
                match ephemeral {
                    Some(e) if !e.is_null() => {
                        spec.insert("ephemeralContainers".into(), e);
                    }
                    _ => {
                        spec.remove("ephemeralContainers");
                    }
                }
            }
            *new = merged;
        }
        Some("finalize") => {
            let finalizers = new.pointer("/spec/finalizers").cloned();
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = finalizers.unwrap_or_else(|| json!([]));
            *new = merged;
        }
        _ => {
            if info.group.is_empty() && info.kind == "Pod" {
                // Ephemeral containers change only through their subresource.
                let ephemeral = old.pointer("/spec/ephemeralContainers").cloned();
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    match ephemeral {
                        Some(e) => {
                            spec.insert("ephemeralContainers".into(), e);
                        }
                        None => {
                            spec.remove("ephemeralContainers");
                        }
                    }
                }
            }
            if info.has_subresource("status") && info.kind != "Node" {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
    }
    // System metadata is the server's.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    {
        let meta = meta_mut(new)?;
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "generateName",
        ] {
            match old_meta.get(k) {
                Some(v) => {
                    meta.insert(k.into(), v.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
        // Finalizers cannot be added to an object being deleted.
        if old_meta.get("deletionTimestamp").is_some() {
            let old_f: Vec<Value> = old_meta
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(new_f) = meta.get("finalizers").and_then(Value::as_array)
                && new_f.iter().any(|f| !old_f.contains(f))
            {
                return Err(ApiError::forbidden(
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
    }
    skiff_api::defaults::apply_defaults(info.group, info.kind, new);
    if has_spec(info) && sub.is_none() {
        let changed = new.get("spec") != old.get("spec")
            || (info.kind != "Pod" && strip_meta_status(new) != strip_meta_status(old));
        if changed {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            new["metadata"]["generation"] = json!(generation);
        }
    }
    crate::podsecurity::admit(req, new, Some(old), sub)?;
    if new != old {
        record_manager(req, Some(old), new);
    }
    Ok(())
}

fn strip_meta_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Whether finalizers still hold an object being deleted: metadata.finalizers,
/// and for a Namespace also spec.finalizers (cleared through /finalize).
pub fn has_finalizers(info: &ResourceInfo, obj: &Value) -> bool {
    let non_empty = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    };
    non_empty("/metadata/finalizers")
        || (info.kind == "Namespace" && info.group.is_empty() && non_empty("/spec/finalizers"))
}

/// The grace period a delete gets, or None for an immediate delete.
pub fn graceful_period(info: &ResourceInfo, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if info.kind != "Pod" || !info.group.is_empty() {
        return None;
    }
    let unscheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if unscheduled || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let grace = requested.unwrap_or_else(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    // A negative grace period becomes 1 s (pod strategy's CheckGracefulDelete).
    match grace {
        0 => None,
        g if g < 0 => Some(1),
        g => Some(g),
    }
}

/// Kinds whose finished delete answers with a Status rather than the object.
pub fn delete_returns_status(info: &ResourceInfo) -> bool {
    !matches!(
        (info.group, info.kind),
        ("", "Pod" | "Service" | "Namespace" | "Node")
    )
}

/// The autoscaling/v1 Scale of a scalable resource.
pub fn scale_of(obj: &Value) -> Value {
    let selector = match obj.pointer("/spec/selector") {
        Some(Value::Object(m))
            if m.contains_key("matchLabels") || m.contains_key("matchExpressions") =>
        {
            selector_string(obj.pointer("/spec/selector"))
        }
        // ReplicationController: a plain map.
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    scale(
        obj,
        obj.pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1),
        obj.pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        &selector,
    )
}

/// An autoscaling/v1 Scale of `obj` (its identity from the object's
/// metadata) with the given replicas and selector.
pub fn scale(obj: &Value, replicas: i64, status_replicas: i64, selector: &str) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": status_replicas, "selector": selector},
    })
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut parts = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

/// Set (or replace) a pod condition.
pub fn set_pod_condition(
    pod: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let mut cond = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    let conds = pod["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(list) = conds.and_then(Value::as_array_mut) {
        match list
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        {
            Some(c) => *c = cond,
            None => list.push(cond),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_selector_strings() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}, "status": {"replicas": 1}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web,tier in (a,b)");
    }

    #[test]
    fn service_account_credentials_are_mounted_into_every_container_once() {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "own", "mountPath": SERVICE_ACCOUNT_MOUNT}]}]}});
        mount_service_account_token(&mut pod, "x7k2q");
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0]["name"], "kube-api-access-x7k2q");
        assert_eq!(
            vols[0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        assert_eq!(
            vols[0]["projected"]["sources"][1]["configMap"]["name"],
            "kube-root-ca.crt"
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["volumeMounts"][0]["mountPath"],
            SERVICE_ACCOUNT_MOUNT
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
            true
        );
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "its own mount is kept"
        );
        let mut all_own = json!({"spec": {"containers": [{"name": "b", "volumeMounts": [{"name": "own", "mountPath": SERVICE_ACCOUNT_MOUNT}]}]}});
        mount_service_account_token(&mut all_own, "aaaaa");
        assert!(all_own["spec"].get("volumes").is_none());
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s =
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "new", "c": "z"}});
        merge_string_data(&mut s);
        assert_eq!(s, json!({"data": {"a": "eA==", "b": "bmV3", "c": "eg=="}}));
        let mut only = json!({"stringData": {"k": "v"}});
        merge_string_data(&mut only);
        assert_eq!(only, json!({"data": {"k": "dg=="}}));
    }

    #[test]
    fn job_selectors_are_generated_from_the_uid() {
        let mut job =
            json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {}}}});
        generate_job_selector(&mut job);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u-1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        let mut manual = json!({"metadata": {"uid": "u"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        generate_job_selector(&mut manual);
        assert_eq!(manual["spec"]["selector"]["matchLabels"]["a"], "b");
    }

    #[test]
    fn grace_periods() {
        let pods = skiff_api::registry::registry()
            .lookup("", "v1", "pods")
            .unwrap();
        let unscheduled = json!({"spec": {}});
        assert_eq!(graceful_period(pods, &unscheduled, None), None);
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        assert_eq!(graceful_period(pods, &bound, None), Some(30));
        assert_eq!(graceful_period(pods, &bound, Some(0)), None);
        assert_eq!(graceful_period(pods, &bound, Some(5)), Some(5));
    }
}
