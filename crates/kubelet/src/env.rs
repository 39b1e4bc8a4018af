//! Container environments (↔ kubelet's makeEnvironmentVariables): env
//! values with $(VAR) expansion, valueFrom fieldRef, resourceFieldRef,
//! configMapKeyRef and secretKeyRef, envFrom, and the service links
//! (↔ pkg/kubelet/envvars).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::Api;
use kube::runtime::reflector::Store;

/// Where configMaps and secrets come from (the API; a stub in tests).
#[async_trait::async_trait]
pub trait Lookup: Send + Sync {
    /// The data of a configMap; None when it does not exist.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String>;
    /// The (decoded) data of a secret; None when it does not exist.
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String>;
    /// A configMap's data and binaryData as files' bytes (volumes); None when it does not exist.
    async fn config_map_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(self.config_map(namespace, name).await?.map(into_bytes))
    }
    /// A secret's data as files' bytes (volumes); None when it does not exist.
    async fn secret_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(self.secret(namespace, name).await?.map(into_bytes))
    }
    /// A service account token bound to a pod (↔ TokenRequest).
    async fn service_account_token(
        &self,
        namespace: &str,
        request: &TokenRequest,
    ) -> Result<Token, String> {
        let _ = (namespace, request);
        Err("service account tokens are not available".into())
    }
    /// Every Service known (↔ the kubelet's service lister), for the
    /// service links; an error while they have not been read once.
    fn services(&self) -> Result<Vec<Arc<Service>>, String> {
        Ok(Vec::new())
    }
    /// The handler of RuntimeClass `name` (↔ the kubelet's RuntimeClass
    /// manager, a reflector, not a GET per pod); None when it does not exist.
    fn runtime_class_handler(&self, name: &str) -> Result<Option<String>, String> {
        let _ = name;
        Ok(None)
    }
}

fn into_bytes(m: BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    m.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
}

/// What a projected serviceAccountToken asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub service_account: String,
    /// Empty: the API server's audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

/// A token and how long it is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expiration_seconds: i64,
}

/// Looks nothing up: every configMap and secret is missing.
pub struct NoLookup;

#[async_trait::async_trait]
impl Lookup for NoLookup {
    async fn config_map(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(None)
    }
    async fn secret(&self, _: &str, _: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(None)
    }
}

/// A [`Lookup`] that holds one of a shared set of permits while it asks:
/// the pod workers' API requests are bounded together (see
/// [`crate::pods::API_CONCURRENCY`]).
pub struct Limited<L> {
    inner: L,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl<L> Limited<L> {
    pub fn new(inner: L, slots: std::sync::Arc<tokio::sync::Semaphore>) -> Self {
        Limited { inner, slots }
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, String> {
        self.slots.acquire().await.map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl<L: Lookup> Lookup for Limited<L> {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let _permit = self.permit().await?;
        self.inner.config_map(namespace, name).await
    }
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let _permit = self.permit().await?;
        self.inner.secret(namespace, name).await
    }
    async fn config_map_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let _permit = self.permit().await?;
        self.inner.config_map_files(namespace, name).await
    }
    async fn secret_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let _permit = self.permit().await?;
        self.inner.secret_files(namespace, name).await
    }
    async fn service_account_token(
        &self,
        namespace: &str,
        request: &TokenRequest,
    ) -> Result<Token, String> {
        let _permit = self.permit().await?;
        self.inner.service_account_token(namespace, request).await
    }
    fn services(&self) -> Result<Vec<Arc<Service>>, String> {
        self.inner.services()
    }
    fn runtime_class_handler(&self, name: &str) -> Result<Option<String>, String> {
        self.inner.runtime_class_handler(name)
    }
}

/// Reads configMaps and secrets through the API, and Services and
/// RuntimeClasses from shared reflectors (one watch each for the node, not
/// a LIST per pod).
pub struct ApiLookup {
    pub client: kube::Client,
    /// None: no service links (as a kubelet without a service lister).
    pub services: Option<Store<Service>>,
    /// None: no RuntimeClass is known.
    pub runtime_classes: Option<Store<RuntimeClass>>,
}

impl ApiLookup {
    fn client(&self) -> kube::Client {
        self.client.clone()
    }
}

#[async_trait::async_trait]
impl Lookup for ApiLookup {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client(), namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.entry(k)
                        .or_insert_with(|| String::from_utf8_lossy(&v.0).into_owned());
                }
                Ok(Some(data))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client(), namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    data.insert(k, v);
                }
                Ok(Some(data))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn config_map_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client(), namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut files: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    files.entry(k).or_insert(v.0);
                }
                Ok(Some(files))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn secret_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client(), namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => {
                let mut files: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                // stringData, should the API server have kept it (Kubernetes merges it into data on write).
                for (k, v) in s.string_data.unwrap_or_default() {
                    files.insert(k, v.into_bytes());
                }
                Ok(Some(files))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn service_account_token(
        &self,
        namespace: &str,
        request: &TokenRequest,
    ) -> Result<Token, String> {
        use k8s_openapi::api::authentication::v1::{
            BoundObjectReference, TokenRequest as ApiTokenRequest, TokenRequestSpec,
        };
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let body = ApiTokenRequest {
            spec: TokenRequestSpec {
                audiences: request.audiences.clone(),
                expiration_seconds: Some(request.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(request.pod_name.clone()),
                    uid: Some(request.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let out = api
            .create_token_request(&request.service_account, &Default::default(), &body)
            .await
            .map_err(|e| e.to_string())?;
        let status = out.status.ok_or_else(|| {
            format!(
                "the TokenRequest for service account {:?} returned no token",
                request.service_account
            )
        })?;
        Ok(Token {
            token: status.token,
            expiration_seconds: out
                .spec
                .expiration_seconds
                .unwrap_or(request.expiration_seconds),
        })
    }
    fn services(&self) -> Result<Vec<Arc<Service>>, String> {
        let Some(store) = &self.services else {
            return Ok(Vec::new());
        };
        use futures::FutureExt;
        // ↔ getServiceEnvVarMap before serviceHasSynced.
        if store.wait_until_ready().now_or_never().is_none() {
            return Err(
                "services have not yet been read at least once, cannot construct envvars".into(),
            );
        }
        Ok(store.state())
    }
    fn runtime_class_handler(&self, name: &str) -> Result<Option<String>, String> {
        let Some(store) = &self.runtime_classes else {
            return Ok(None);
        };
        use futures::FutureExt;
        if store.wait_until_ready().now_or_never().is_none() {
            return Err("RuntimeClasses have not yet been read at least once".into());
        }
        Ok(store
            .get(&kube::runtime::reflector::ObjectRef::new(name))
            .map(|rc| rc.handler.clone()))
    }
}

/// Expand $(VAR) from `vars`; $$ is a literal $; unknown references stay as written.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a fieldRef path.
pub fn field_ref(pod: &Pod, path: &str, host_ip: &str, pod_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let v = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ip.into(),
        "status.hostIPs" => host_ip.into(),
        "status.podIP" => pod_ip.into(),
        "status.podIPs" => pod_ip.into(),
        p => {
            let (map, key) = if let Some(k) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                (m.labels.as_ref(), k)
            } else if let Some(k) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                (m.annotations.as_ref(), k)
            } else {
                return None;
            };
            map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
        }
    };
    Some(v)
}

/// What a container's environment is made from besides the pod.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnvContext<'a> {
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    /// The node's allocatable memory in bytes: the value of a
    /// resourceFieldRef to limits.memory when the container sets none.
    pub memory_capacity: u64,
}

/// A container's environment, in order, and the warnings to record as
/// events (envFrom keys skipped as invalid names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    pub vars: Vec<(String, String)>,
    /// (reason, message) of Warning events.
    pub warnings: Vec<(String, String)>,
}

/// Whether `name` is a valid environment variable name (↔
/// validation.IsEnvVarName: `[-._a-zA-Z][-._a-zA-Z0-9]*`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// A service's name as an environment variable prefix (↔ makeEnvVariableName).
fn service_env_name(name: &str) -> String {
    let n = name.replace(['.', '-'], "_").to_ascii_uppercase();
    if n.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{n}")
    } else {
        n
    }
}

/// The service links of a pod in `namespace` (↔ getServiceEnvVarMap and
/// envvars.FromServices): the Services of its namespace when
/// `enable_service_links`, and always the `kubernetes` Service of
/// `default`; headless Services and those without a ClusterIP give none.
pub fn service_env(
    services: &[Arc<Service>],
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(s);
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, s);
        }
    }
    let mut out = Vec::new();
    for (name, s) in chosen {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = service_env_name(&name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", service_env_name(pn)),
                    p.port.to_string(),
                ));
            }
        }
        // Docker link variables.
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_ascii_lowercase();
            let url = format!("{lower}://{ip}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
            out.push((pp, url));
        }
    }
    out
}

/// The environment of `c`, in order, or why it cannot be made (a
/// CreateContainerConfigError).
pub async fn container_env(
    pod: &Pod,
    c: &Container,
    ctx: EnvContext<'_>,
    lookup: &dyn Lookup,
) -> Result<Environment, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let enable_links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let services = service_env(&lookup.services()?, ns, enable_links);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    // $(VAR) sees the container's own variables first, then the service links.
    let mut vars: HashMap<String, String> = services.iter().cloned().collect();
    let set = |out: &mut Vec<(String, String)>,
               vars: &mut HashMap<String, String>,
               k: String,
               v: String| {
        if let Some(slot) = out.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v.clone();
        } else {
            out.push((k.clone(), v.clone()));
        }
        vars.insert(k, v);
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what, kind, name) = if let Some(r) = &from.config_map_ref {
            (
                lookup.config_map(ns, &r.name).await?,
                r.optional.unwrap_or(false),
                format!("configmap \"{}\"", r.name),
                "configMap",
                &r.name,
            )
        } else if let Some(r) = &from.secret_ref {
            (
                lookup.secret(ns, &r.name).await?,
                r.optional.unwrap_or(false),
                format!("secret \"{}\"", r.name),
                "secret",
                &r.name,
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                let mut invalid = Vec::new();
                for (k, v) in d {
                    let key = format!("{prefix}{k}");
                    if is_env_var_name(&key) {
                        set(&mut out, &mut vars, key, v);
                    } else {
                        invalid.push(key);
                    }
                }
                if !invalid.is_empty() {
                    // ↔ makeEnvironmentVariables' InvalidEnvironmentVariableNames event.
                    warnings.push((
                        "InvalidEnvironmentVariableNames".to_string(),
                        format!(
                            "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                            invalid.join(", ")
                        ),
                    ));
                }
            }
            None if optional => {}
            None => return Err(format!("{what} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, ctx.host_ip, ctx.pod_ip)
                    .ok_or_else(|| format!("unsupported fieldRef {}", f.field_path))?
            } else if let Some(r) = &from.resource_field_ref {
                let container = r
                    .container_name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&c.name);
                crate::volumes::resource_value(
                    pod,
                    container,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    ctx.memory_capacity,
                )?
            } else if let Some(r) = &from.config_map_key_ref {
                match lookup.config_map(ns, &r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key, ns, r.name
                            ));
                        }
                    },
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match lookup.secret(ns, &r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key, ns, r.name
                            ));
                        }
                    },
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, &mut vars, e.name.clone(), value);
    }
    // The service links the container did not set itself.
    for (k, v) in services {
        if !out.iter().any(|(name, _)| *name == k) {
            out.push((k, v));
        }
    }
    Ok(Environment {
        vars: out,
        warnings,
    })
}

/// A memory quantity in bytes ("128Mi", "1G", "1000").
pub fn parse_bytes(q: &str) -> Option<u64> {
    let units: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * mult as f64) as u64);
        }
    }
    q.parse::<f64>().ok().map(|n| n as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Counts the lookups in flight and the most seen at once.
    #[derive(Default)]
    struct Slow {
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Lookup for Slow {
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(n, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            self.now.fetch_sub(1, SeqCst);
            Ok(None)
        }
        async fn secret(
            &self,
            ns: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            self.config_map(ns, name).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn limited_lookups_share_their_permits() {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
        let limited = Limited::new(Slow::default(), slots.clone());
        let asks = (0..6).map(|i| {
            let limited = &limited;
            async move {
                if i % 2 == 0 {
                    limited.config_map("ns", "a").await
                } else {
                    limited.secret_files("ns", "b").await.map(|_| None)
                }
            }
        });
        let results = futures::future::join_all(asks).await;
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(
            limited.inner.most.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
        // A permit held elsewhere (a status write) leaves one for lookups.
        let _held = slots.acquire().await.unwrap();
        let limited = Limited::new(Slow::default(), slots.clone());
        futures::future::join_all((0..3).map(|_| limited.config_map("ns", "a"))).await;
        assert_eq!(
            limited.inner.most.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[test]
    fn expansion() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    struct Stub;
    #[async_trait::async_trait]
    impl Lookup for Stub {
        async fn config_map(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok((name == "cm").then(|| [("k".to_string(), "from-cm".to_string())].into()))
        }
        async fn secret(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn env_values() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-b"},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}
                ]}]}
        }))
        .unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let ctx = EnvContext {
            host_ip: "192.168.0.1",
            pod_ip: "10.42.0.5",
            memory_capacity: 1 << 30,
        };
        let env = container_env(&pod, c, ctx, &Stub).await.unwrap().vars;
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("CM_k").as_deref(), Some("from-cm"));
        assert_eq!(get("B").as_deref(), Some("a-b"));
        assert_eq!(get("NAME").as_deref(), Some("p"));
        assert_eq!(get("APP").as_deref(), Some("web"));
        assert_eq!(get("IP").as_deref(), Some("10.42.0.5"));
        assert_eq!(get("MEM").as_deref(), Some("67108864"));
        assert_eq!(get("CPU").as_deref(), Some("1"));
        assert_eq!(get("K").as_deref(), Some("from-cm"));
        assert_eq!(get("OPT"), None);

        let missing: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}]}}))
        .unwrap();
        let err = container_env(
            &missing,
            &missing.spec.as_ref().unwrap().containers[0],
            EnvContext::default(),
            &Stub,
        )
        .await
        .unwrap_err();
        assert!(err.contains("not found"), "{err}");
    }

    /// ConfigMaps with the keys of the conformance tests, a key that is no
    /// variable name, and Services in two namespaces.
    struct Cluster {
        services: Vec<Arc<Service>>,
        synced: bool,
    }

    #[async_trait::async_trait]
    impl Lookup for Cluster {
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok(Some(
                [("data-1", "value-1"), ("data.2", "value-2"), ("1bad", "x")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
        }
        async fn secret(
            &self,
            ns: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, String> {
            self.config_map(ns, name).await
        }
        fn services(&self) -> Result<Vec<Arc<Service>>, String> {
            if !self.synced {
                return Err("services have not yet been read at least once".into());
            }
            Ok(self.services.clone())
        }
    }

    fn service(ns: &str, name: &str, ip: &str, ports: Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}}))
            .unwrap(),
        )
    }

    fn cluster() -> Cluster {
        Cluster {
            services: vec![
                service(
                    "default",
                    "kubernetes",
                    "10.43.0.1",
                    json!([{"name": "https", "port": 443}]),
                ),
                service(
                    "ns",
                    "fooservice",
                    "10.43.0.7",
                    json!([{"port": 8765, "protocol": "TCP"}]),
                ),
                service(
                    "ns",
                    "my-db.v2",
                    "10.43.0.8",
                    json!([
                    {"name": "sql", "port": 5432},
                    {"name": "metrics-port", "port": 9187, "protocol": "UDP"}]),
                ),
                service("ns", "headless", "None", json!([{"port": 80}])),
                service("other", "elsewhere", "10.43.0.9", json!([{"port": 80}])),
            ],
            synced: true,
        }
    }

    fn env_pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    #[tokio::test]
    async fn env_from_keeps_dashed_and_dotted_keys_and_skips_invalid_ones() {
        let pod = env_pod(
            json!({"enableServiceLinks": false, "containers": [{"name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}}, {"prefix": "p-", "secretRef": {"name": "s"}}]}]}),
        );
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = container_env(&pod, c, EnvContext::default(), &cluster())
            .await
            .unwrap();
        let names: Vec<&str> = env.vars.iter().map(|(k, _)| k.as_str()).collect();
        for want in ["data-1", "data.2", "p-data-1", "p-data.2", "p-1bad"] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        assert!(!names.contains(&"1bad"), "{names:?}");
        assert_eq!(
            env.warnings,
            vec![(
                "InvalidEnvironmentVariableNames".to_string(),
                "Keys [1bad] from the EnvFrom configMap ns/cm were skipped since they are considered invalid environment variable names.".to_string()
            )]
        );
        assert!(is_env_var_name("-a.b_c9") && !is_env_var_name("") && !is_env_var_name("a b"));
    }

    #[tokio::test]
    async fn service_links_follow_the_kubelet() {
        let pod = env_pod(json!({"containers": [{"name": "c",
            "env": [{"name": "FOOSERVICE_SERVICE_PORT", "value": "mine"},
                    {"name": "URL", "value": "http://$(FOOSERVICE_SERVICE_HOST):$(FOOSERVICE_SERVICE_PORT)"}]}]}));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = container_env(&pod, c, EnvContext::default(), &cluster())
            .await
            .unwrap()
            .vars;
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("FOOSERVICE_SERVICE_HOST"), Some("10.43.0.7"));
        // The container's own value wins, for itself and for $(VAR).
        assert_eq!(get("FOOSERVICE_SERVICE_PORT"), Some("mine"));
        assert_eq!(get("URL"), Some("http://10.43.0.7:mine"));
        assert_eq!(get("FOOSERVICE_PORT"), Some("tcp://10.43.0.7:8765"));
        assert_eq!(
            get("FOOSERVICE_PORT_8765_TCP"),
            Some("tcp://10.43.0.7:8765")
        );
        assert_eq!(get("FOOSERVICE_PORT_8765_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("FOOSERVICE_PORT_8765_TCP_PORT"), Some("8765"));
        assert_eq!(get("FOOSERVICE_PORT_8765_TCP_ADDR"), Some("10.43.0.7"));
        assert_eq!(get("MY_DB_V2_SERVICE_PORT"), Some("5432"));
        assert_eq!(get("MY_DB_V2_SERVICE_PORT_SQL"), Some("5432"));
        assert_eq!(get("MY_DB_V2_SERVICE_PORT_METRICS_PORT"), Some("9187"));
        assert_eq!(get("MY_DB_V2_PORT_9187_UDP"), Some("udp://10.43.0.8:9187"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None);

        // enableServiceLinks: false keeps only the master service.
        let off = env_pod(json!({"enableServiceLinks": false, "containers": [{"name": "c"}]}));
        let env = container_env(
            &off,
            &off.spec.as_ref().unwrap().containers[0],
            EnvContext::default(),
            &cluster(),
        )
        .await
        .unwrap()
        .vars;
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"KUBERNETES_SERVICE_HOST"), "{names:?}");
        assert!(!names.contains(&"FOOSERVICE_SERVICE_HOST"), "{names:?}");

        // Before the Services are read once, no environment can be made.
        let unsynced = Cluster {
            synced: false,
            ..cluster()
        };
        let err = container_env(
            &off,
            &off.spec.as_ref().unwrap().containers[0],
            EnvContext::default(),
            &unsynced,
        )
        .await
        .unwrap_err();
        assert!(err.contains("services have not yet been read"), "{err}");
    }

    #[tokio::test]
    async fn resource_limits_default_to_the_node_allocatable() {
        let pod = env_pod(json!({"containers": [{"name": "c", "env": [
            {"name": "MEMORY_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
            {"name": "MEMORY_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MEMORY_REQUEST", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}}]}]}));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let ctx = EnvContext {
            memory_capacity: 2 << 30,
            ..Default::default()
        };
        let env = container_env(&pod, c, ctx, &NoLookup).await.unwrap().vars;
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("MEMORY_LIMIT").as_deref(), Some("2147483648"));
        assert_eq!(get("MEMORY_LIMIT_MI").as_deref(), Some("2048"));
        assert!(get("CPU_LIMIT").unwrap().parse::<u32>().unwrap() >= 1);
        assert_eq!(get("MEMORY_REQUEST").as_deref(), Some("0"));
    }
}
