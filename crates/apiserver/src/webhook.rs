//! Dynamic admission control (k8s.io/apiserver's `admission/plugin/webhook`):
//! MutatingWebhookConfiguration and ValidatingWebhookConfiguration objects
//! are followed from the watch cache (never read per request); a write that
//! their rules, namespaceSelector and objectSelector match is sent as an
//! AdmissionReview (admission.k8s.io/v1) over HTTPS to a URL or to a
//! Service's endpoint, verified with the webhook's caBundle. Mutating
//! webhooks run one after the other and their JSON patches are applied
//! (and re-invoked once when `reinvocationPolicy: IfNeeded` and a later
//! webhook changed the object); validating webhooks run in parallel.
//! A webhook that fails (unreachable, timeout, garbage) follows its
//! failurePolicy. Configurations themselves are never sent to webhooks, so
//! a broken webhook can always be removed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::selector::LabelSelector;
use skiff_api::value::strings;
use tokio::net::TcpStream;

use crate::authz::UserInfo;
use crate::state::ApiServer;
use crate::status::ApiError;

const MUTATING: &str = "/registry/mutatingwebhookconfigurations/";
const VALIDATING: &str = "/registry/validatingwebhookconfigurations/";
const GROUP: &str = "admissionregistration.k8s.io";
/// A webhook's default and largest timeout (timeoutSeconds).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: u64 = 30;
/// How much of a webhook's answer is read.
const MAX_RESPONSE: usize = 3 * 1024 * 1024;
/// Idle connections kept per webhook.
const MAX_IDLE: usize = 16;

/// One rule of a webhook or an admission policy (RuleWithOperations,
/// NamedRuleWithOperations).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    scope: String,
    /// Only these objects (a policy's resourceNames); empty: all.
    names: Vec<String>,
}

impl Rule {
    pub(crate) fn from_value(r: &Value) -> Rule {
        Rule {
            operations: strings(r.get("operations")),
            groups: strings(r.get("apiGroups")),
            versions: strings(r.get("apiVersions")),
            resources: strings(r.get("resources")),
            scope: r
                .get("scope")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string(),
            names: strings(r.get("resourceNames")),
        }
    }
}

/// Whether the namespace and object selectors admit `a` (as webhooks and
/// policies match): objects by their new or old labels; namespaced objects
/// by their namespace's labels, a Namespace by its own; cluster-scoped
/// objects are not filtered by namespace.
pub(crate) fn selectors_match(
    server: &ApiServer,
    namespace_selector: &LabelSelector,
    object_selector: &LabelSelector,
    a: &Attributes<'_>,
) -> bool {
    let object_ok = object_selector.is_empty()
        || [a.object, a.old]
            .into_iter()
            .flatten()
            .any(|o| object_selector.matches(&labels_of(Some(o))));
    if !object_ok {
        return false;
    }
    if namespace_selector.is_empty() {
        return true;
    }
    let namespace_labels = if a.info.group.is_empty() && a.info.kind == "Namespace" {
        labels_of(a.object.or(a.old))
    } else if let Some(ns) = a.namespace.filter(|_| a.info.namespaced) {
        let key = format!("/registry/namespaces/{ns}");
        labels_of(server.cache.get(&key).as_ref().map(|o| &o.value))
    } else {
        return true;
    };
    namespace_selector.matches(&namespace_labels)
}

/// Where a webhook is served.
#[derive(Debug, Clone)]
enum Target {
    Url(String),
    Service {
        namespace: String,
        name: String,
        path: String,
        port: u16,
    },
}

/// One webhook of a configuration.
struct Hook {
    /// "config/webhook" for logs.
    name: String,
    target: Target,
    tls: Arc<rustls::ClientConfig>,
    rules: Vec<Rule>,
    /// failurePolicy Fail (the v1 default) or Ignore.
    fail: bool,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
    /// sideEffects None or NoneOnDryRun: may be called for dry runs.
    dry_run_safe: bool,
    timeout: Duration,
    reinvoke: bool,
    /// A configuration that could not be read: every matching request
    /// fails or ignores it per failurePolicy.
    broken: Option<String>,
    /// matchConditions (CEL over object, oldObject, request): all must
    /// hold for the webhook to be called.
    conditions: Vec<(String, skiff_api::cel::Expression)>,
    /// Kept-alive connections (address, sender), as client-go's transport.
    idle: Mutex<Vec<(String, Sender)>>,
}

#[derive(Default)]
struct Hooks {
    mutating: Vec<Arc<Hook>>,
    validating: Vec<Arc<Hook>>,
}

/// The webhooks in force.
#[derive(Default)]
pub struct Webhooks {
    configs: Mutex<BTreeMap<String, Value>>,
    hooks: RwLock<Arc<Hooks>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhooks")
    }
}

fn tls_config(ca_bundle: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(b64) = ca_bundle {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("caBundle: {e}"))?;
        for der in rustls_pemfile::certs(&mut pem.as_slice()) {
            let der: CertificateDer<'static> = der.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(der).map_err(|e| format!("caBundle: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn hook_from(config: &str, h: &Value, mutating: bool) -> Hook {
    let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
    let cc = h.get("clientConfig").cloned().unwrap_or_default();
    let target = match (cc.get("url").and_then(Value::as_str), cc.get("service")) {
        (Some(url), _) => Target::Url(url.to_string()),
        (None, Some(svc)) => Target::Service {
            namespace: svc["namespace"].as_str().unwrap_or_default().to_string(),
            name: svc["name"].as_str().unwrap_or_default().to_string(),
            path: svc["path"].as_str().unwrap_or("/").to_string(),
            port: svc
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        },
        (None, None) => Target::Url(String::new()),
    };
    let (tls, mut broken) = match tls_config(cc.get("caBundle").and_then(Value::as_str)) {
        Ok(t) => (t, None),
        Err(e) => (
            tls_config(None).unwrap_or_else(|_| Arc::new(empty_tls())),
            Some(e),
        ),
    };
    let selector = |key: &str| match h.get(key) {
        Some(sel) if sel.is_object() => LabelSelector::from_object(sel).map_err(|e| e.to_string()),
        _ => Ok(LabelSelector::default()),
    };
    let namespace_selector = selector("namespaceSelector").unwrap_or_else(|e| {
        broken.get_or_insert(e);
        LabelSelector::default()
    });
    let object_selector = selector("objectSelector").unwrap_or_else(|e| {
        broken.get_or_insert(e);
        LabelSelector::default()
    });
    let rules = h
        .get("rules")
        .and_then(Value::as_array)
        .map(|rs| rs.iter().map(Rule::from_value).collect())
        .unwrap_or_default();
    let conditions = h
        .get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let src = c
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match skiff_api::cel::Expression::compile(
                src,
                &["object", "oldObject", "request", "authorizer"],
            ) {
                Ok(e) => Some((name.to_string(), e)),
                Err(e) => {
                    broken.get_or_insert(format!("matchCondition '{name}': {e}"));
                    None
                }
            }
        })
        .collect();
    let side_effects = h
        .get("sideEffects")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    Hook {
        name: format!("{config}/{name}"),
        target,
        tls,
        rules,
        fail: h.get("failurePolicy").and_then(Value::as_str) != Some("Ignore"),
        namespace_selector,
        object_selector,
        dry_run_safe: matches!(side_effects, "None" | "NoneOnDryRun"),
        timeout: h
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_TIMEOUT, |s| {
                Duration::from_secs(s.clamp(1, MAX_TIMEOUT))
            }),
        reinvoke: mutating
            && h.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded"),
        broken,
        conditions,
        idle: Mutex::new(Vec::new()),
    }
}

fn empty_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

impl Webhooks {
    fn apply(&self, key: &str, config: Option<&Value>) {
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        match config {
            Some(c) => configs.insert(key.to_string(), c.clone()),
            None => configs.remove(key),
        };
        // Kubernetes calls configurations in name order, then each
        // configuration's webhooks in order.
        let mut hooks = Hooks::default();
        let mut ordered: Vec<(&str, bool, &Value)> = configs
            .iter()
            .map(|(k, v)| {
                let mutating = k.starts_with(MUTATING);
                let name = k
                    .trim_start_matches(MUTATING)
                    .trim_start_matches(VALIDATING);
                (name, mutating, v)
            })
            .collect();
        ordered.sort_by_key(|(name, _, _)| *name);
        for (name, mutating, config) in ordered {
            for h in config
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let hook = Arc::new(hook_from(name, h, mutating));
                if mutating {
                    hooks.mutating.push(hook);
                } else {
                    hooks.validating.push(hook);
                }
            }
        }
        *self.hooks.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(hooks);
    }

    fn current(&self) -> Arc<Hooks> {
        self.hooks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Follow the configurations in the watch cache.
pub fn start(server: &Arc<ApiServer>) {
    for prefix in [MUTATING, VALIDATING] {
        let s = server.clone();
        crate::cache::follow(&server.cache, prefix, move |ev| match ev {
            crate::cache::Followed::Put(o) => s.webhooks.apply(&o.key, Some(&o.value)),
            crate::cache::Followed::Delete(key) => s.webhooks.apply(key, None),
        });
    }
}

/// Where the warnings of webhooks go (the request's `Warning` headers).
pub trait Warnings: Sync {
    fn warn(&self, warning: String);
}

/// Warnings nobody reads.
pub struct Discard;

impl Warnings for Discard {
    fn warn(&self, _: String) {}
}

/// What is being admitted.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    pub operation: &'static str,
    pub info: &'static ResourceInfo,
    pub sub: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    pub user: &'a UserInfo,
    pub field_manager: &'a str,
    pub warnings: &'a dyn Warnings,
}

fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

impl Rule {
    pub(crate) fn matches(&self, a: &Attributes<'_>) -> bool {
        if !self.names.is_empty() && !self.names.iter().any(|n| n == a.name) {
            return false;
        }
        if !listed(&self.operations, a.operation)
            || !listed(&self.groups, a.info.group)
            || !listed(&self.versions, a.info.version)
        {
            return false;
        }
        let scope_ok = match self.scope.as_str() {
            "Namespaced" => a.info.namespaced,
            "Cluster" => !a.info.namespaced,
            _ => true,
        };
        if !scope_ok {
            return false;
        }
        let plural = a.info.plural;
        self.resources.iter().any(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
            let res_ok = res == "*" || res == plural;
            match (sub, a.sub) {
                ("", None) => res_ok,
                ("", Some(_)) => false,
                ("*", _) => res_ok,
                (s, Some(asub)) => res_ok && s == asub,
                (_, None) => false,
            }
        })
    }
}

fn labels_of(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn exempt(info: &ResourceInfo) -> bool {
    info.group == GROUP
}

impl Hook {
    fn matches(&self, server: &ApiServer, a: &Attributes<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(a))
            && selectors_match(server, &self.namespace_selector, &self.object_selector, a)
    }
}

/// The AdmissionReview sent for `a` (with `object` as it is now).
fn review(a: &Attributes<'_>, object: Option<&Value>, uid: &str) -> Value {
    let options = match a.operation {
        "CREATE" => {
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": a.field_manager})
        }
        "UPDATE" => {
            json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": a.field_manager})
        }
        "DELETE" => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
        "CONNECT" => object.cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    // A CONNECT's object is its options (PodExecOptions, ...), and so is its kind.
    let kind_name = match (
        a.operation,
        object.and_then(|o| o.get("kind")).and_then(Value::as_str),
    ) {
        ("CONNECT", Some(k)) => k,
        _ => a.info.kind,
    };
    let kind = json!({"group": a.info.group, "version": a.info.version, "kind": kind_name});
    let resource =
        json!({"group": a.info.group, "version": a.info.version, "resource": a.info.plural});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": a.name,
        "operation": a.operation,
        "userInfo": {
            "username": a.user.name,
            "groups": a.user.groups,
        },
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": a.old.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": options,
    });
    if !a.user.uid.is_empty() {
        request["userInfo"]["uid"] = json!(a.user.uid);
    }
    if !a.user.extra.is_empty() {
        request["userInfo"]["extra"] = json!(a.user.extra);
    }
    if let Some(ns) = a.namespace.filter(|_| a.info.namespaced) {
        request["namespace"] = json!(ns);
    }
    if let Some(sub) = a.sub {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Why a call failed (the failurePolicy decides what that means).
struct CallError(String);

/// (address to dial, TLS server name, request path, URL for messages).
fn resolve(
    server: &ApiServer,
    target: &Target,
) -> Result<(String, String, String, String), String> {
    match target {
        Target::Url(url) => {
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
            if uri.scheme_str() != Some("https") {
                return Err(format!("webhook URL {url:?} is not https"));
            }
            let host = uri
                .host()
                .ok_or_else(|| format!("webhook URL {url:?} has no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let path = uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string());
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Ok((addr, host, path, url.clone()))
        }
        Target::Service {
            namespace,
            name,
            path,
            port,
        } => {
            let url = format!("https://{name}.{namespace}.svc:{port}{path}");
            let svc = server
                .cache
                .get(&format!("/registry/services/specs/{namespace}/{name}"))
                .ok_or_else(|| format!("service \"{name}\" not found"))?;
            let svc_port = svc
                .value
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .and_then(|ps| {
                    ps.iter()
                        .find(|p| p["port"].as_u64() == Some(u64::from(*port)))
                })
                .cloned()
                .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
            let host_name = format!("{name}.{namespace}.svc");
            if let Some(ext) = svc
                .value
                .pointer("/spec/externalName")
                .and_then(Value::as_str)
            {
                return Ok((format!("{ext}:{port}"), host_name, path.clone(), url));
            }
            // The endpoints behind the port (as kube-apiserver with
            // --enable-aggregator-routing): a ready address and the port
            // the Service's port names.
            let port_name = svc_port
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let eps = server
                .cache
                .get(&format!("/registry/services/endpoints/{namespace}/{name}"))
                .ok_or_else(|| format!("service \"{name}\" has no endpoints"))?;
            for subset in eps
                .value
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(target_port) = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter().find(|p| {
                            p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name
                        })
                    })
                    .and_then(|p| p["port"].as_u64())
                else {
                    continue;
                };
                if let Some(ip) = subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(|a| a["ip"].as_str())
                {
                    let addr = if ip.contains(':') {
                        format!("[{ip}]:{target_port}")
                    } else {
                        format!("{ip}:{target_port}")
                    };
                    return Ok((addr, host_name, path.clone(), url));
                }
            }
            Err(format!("no endpoints available for service \"{name}\""))
        }
    }
}

async fn post(server: &ApiServer, hook: &Hook, body: Vec<u8>) -> Result<Value, CallError> {
    let (addr, host, path, url) = resolve(server, &hook.target).map_err(CallError)?;
    let call = async {
        let mut sender = match hook.idle_connection(&addr) {
            Some(s) => s,
            None => connect(hook, &addr, &host).await?,
        };
        let req = Request::post(path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        hook.keep_connection(addr.clone(), sender);
        if !status.is_success() {
            return Err(format!(
                "the server responded with status {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("bad response: {e}"))
    };
    match tokio::time::timeout(hook.timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError(format!(
            "failed to call webhook: Post \"{url}\": {e}"
        ))),
        Err(_) => Err(CallError(format!(
            "failed to call webhook: Post \"{url}\": context deadline exceeded"
        ))),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A new HTTPS connection to a webhook.
async fn connect(hook: &Hook, addr: &str, host: &str) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?,
    };
    let tls = tokio_rustls::TlsConnector::from(hook.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Hook {
    /// A kept-alive connection to `addr` that can take a request now.
    fn idle_connection(&self, addr: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((a, sender)) = idle.pop() {
            if a == addr && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keep a connection for the next call (a few per webhook).
    fn keep_connection(&self, addr: String, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((addr, sender));
        }
    }
}

/// What a webhook said.
struct Answer {
    warnings: Vec<String>,
    allowed: bool,
    status: Value,
    patch: Option<Value>,
}

fn answer(resp: &Value, uid: &str) -> Result<Answer, CallError> {
    let r = resp
        .get("response")
        .ok_or_else(|| CallError("webhook response was absent".into()))?;
    if r.get("uid").and_then(Value::as_str) != Some(uid) {
        return Err(CallError(format!(
            "expected response.uid=\"{uid}\", got \"{}\"",
            r.get("uid").and_then(Value::as_str).unwrap_or_default()
        )));
    }
    let patch = match r.get("patch").and_then(Value::as_str) {
        None => None,
        Some(b64) => {
            if r.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
                return Err(CallError(format!(
                    "unsupported patch type \"{}\"",
                    r.get("patchType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| CallError(format!("patch: {e}")))?;
            Some(serde_json::from_slice(&bytes).map_err(|e| CallError(format!("patch: {e}")))?)
        }
    };
    Ok(Answer {
        warnings: r
            .get("warnings")
            .and_then(Value::as_array)
            .map(|ws| {
                ws.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        allowed: r.get("allowed").and_then(Value::as_bool).unwrap_or(false),
        status: r
            .get("result")
            .or_else(|| r.get("status"))
            .cloned()
            .unwrap_or(Value::Null),
        patch,
    })
}

/// The Status a denial becomes (↔ webhookerrors.ToStatusErr).
fn denied(hook: &Hook, status: &Value) -> ApiError {
    let short = hook.name.rsplit('/').next().unwrap_or(&hook.name);
    let by = format!("admission webhook \"{short}\" denied the request");
    let message = status
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let text = match (message, reason) {
        (Some(m), _) => format!("{by}: {m}"),
        (None, Some(r)) => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    // The Status reasons Kubernetes defines (ApiError keeps static ones).
    const REASONS: [&str; 12] = [
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
    ];
    let reason = reason
        .and_then(|r| REASONS.iter().find(|known| **known == r).copied())
        .unwrap_or("");
    ApiError::new(code, reason, text)
}

fn failed(hook: &Hook, e: &CallError) -> ApiError {
    let short = hook.name.rsplit('/').next().unwrap_or(&hook.name);
    ApiError::internal(format!("failed calling webhook \"{short}\": {}", e.0))
}

/// Call one webhook; Ok(None) when its failure is ignored.
async fn call(
    server: &ApiServer,
    hook: &Hook,
    a: &Attributes<'_>,
    object: Option<&Value>,
) -> Result<Option<Answer>, ApiError> {
    // matchConditions: a false one skips the webhook; an error follows the
    // failurePolicy.
    if hook.broken.is_none() && !hook.conditions.is_empty() {
        let request = crate::admission_policy::request_value(a);
        let null = Value::Null;
        let vars = [
            ("object", object.unwrap_or(&null)),
            ("oldObject", a.old.unwrap_or(&null)),
            ("request", &request),
        ];
        for (name, cond) in &hook.conditions {
            match cond.eval_bool(&vars) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => {
                    let e = CallError(format!("matchCondition '{name}': {e}"));
                    if hook.fail {
                        return Err(failed(hook, &e));
                    }
                    return Ok(None);
                }
            }
        }
    }
    if a.dry_run && !hook.dry_run_safe {
        let short = hook.name.rsplit('/').next().unwrap_or(&hook.name);
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{short}\" does not support dry run"
        )));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let result = match &hook.broken {
        Some(e) => Err(CallError(e.clone())),
        None => {
            let body = serde_json::to_vec(&review(a, object, &uid))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            post(server, hook, body)
                .await
                .and_then(|r| answer(&r, &uid))
        }
    };
    match result {
        Ok(ans) => {
            for w in &ans.warnings {
                a.warnings.warn(w.clone());
            }
            Ok(Some(ans))
        }
        Err(e) if hook.fail => Err(failed(hook, &e)),
        Err(e) => {
            tracing::warn!(webhook = %hook.name, error = %e.0, "webhook failed; failurePolicy Ignore");
            Ok(None)
        }
    }
}

/// Run the mutating webhooks that match over `obj`; returns whether any
/// changed it. `decode` checks a patched object as the request's body
/// would be (typed decode or schema).
pub async fn mutate(
    server: &ApiServer,
    a: &Attributes<'_>,
    obj: &mut Value,
    decode: impl Fn(Value) -> Result<Value, ApiError>,
) -> Result<bool, ApiError> {
    if exempt(a.info) {
        return Ok(false);
    }
    let hooks = server.webhooks.current();
    if hooks.mutating.is_empty() {
        return Ok(false);
    }
    // Selectors see the object as it comes in.
    let incoming = obj.clone();
    let view = Attributes {
        object: Some(&incoming),
        ..*a
    };
    let matching: Vec<&Arc<Hook>> = hooks
        .mutating
        .iter()
        .filter(|h| h.matches(server, &view))
        .collect();
    let mut changed_at: Option<usize> = None;
    for (i, hook) in matching.iter().enumerate() {
        if apply_one(server, hook, a, obj, &decode).await? {
            changed_at = Some(i);
        }
    }
    // Reinvocation (IfNeeded): once, for a webhook that ran before a
    // later one changed the object.
    if let Some(last) = changed_at {
        for hook in matching.iter().take(last).filter(|h| h.reinvoke) {
            apply_one(server, hook, a, obj, &decode).await?;
        }
    }
    Ok(changed_at.is_some())
}

async fn apply_one(
    server: &ApiServer,
    hook: &Hook,
    a: &Attributes<'_>,
    obj: &mut Value,
    decode: &impl Fn(Value) -> Result<Value, ApiError>,
) -> Result<bool, ApiError> {
    let Some(ans) = call(server, hook, a, Some(obj)).await? else {
        return Ok(false);
    };
    if !ans.allowed {
        return Err(denied(hook, &ans.status));
    }
    let Some(patch) = ans.patch else {
        return Ok(false);
    };
    let patched = skiff_api::patch::json_patch(obj, &patch).map_err(|e| {
        let e = CallError(format!("JSON patch: {e}"));
        failed(hook, &e)
    })?;
    if patched == *obj {
        return Ok(false);
    }
    *obj = decode(patched)?;
    Ok(true)
}

/// Run the validating webhooks that match (in parallel); the first
/// denial or failure is the answer.
pub async fn validate(server: &ApiServer, a: &Attributes<'_>) -> Result<(), ApiError> {
    if exempt(a.info) {
        return Ok(());
    }
    let hooks = server.webhooks.current();
    if hooks.validating.is_empty() {
        return Ok(());
    }
    let calls = hooks
        .validating
        .iter()
        .filter(|h| h.matches(server, a))
        .map(|h| async move {
            match call(server, h, a, a.object).await? {
                Some(ans) if !ans.allowed => Err(denied(h, &ans.status)),
                _ => Ok(()),
            }
        });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(
        info: &'static ResourceInfo,
        op: &'static str,
        sub: Option<&'a str>,
        user: &'a UserInfo,
    ) -> Attributes<'a> {
        Attributes {
            operation: op,
            info,
            sub,
            namespace: Some("default"),
            name: "x",
            object: None,
            old: None,
            dry_run: false,
            user,
            field_manager: "test",
            warnings: &Discard,
        }
    }

    #[test]
    fn rules_match_resources_subresources_and_scope() {
        let pods = skiff_api::registry::registry()
            .lookup("", "v1", "pods")
            .unwrap();
        let nodes = skiff_api::registry::registry()
            .lookup("", "v1", "nodes")
            .unwrap();
        let user = UserInfo::default();
        let rule = |ops: &[&str], res: &[&str], scope: &str| Rule {
            operations: ops.iter().map(|s| s.to_string()).collect(),
            groups: vec!["".into()],
            versions: vec!["v1".into()],
            resources: res.iter().map(|s| s.to_string()).collect(),
            scope: scope.into(),
            names: Vec::new(),
        };
        assert!(rule(&["CREATE"], &["pods"], "*").matches(&attrs(pods, "CREATE", None, &user)));
        assert!(!rule(&["CREATE"], &["pods"], "*").matches(&attrs(pods, "UPDATE", None, &user)));
        assert!(!rule(&["*"], &["pods"], "*").matches(&attrs(
            pods,
            "UPDATE",
            Some("status"),
            &user
        )));
        assert!(rule(&["*"], &["pods/status"], "*").matches(&attrs(
            pods,
            "UPDATE",
            Some("status"),
            &user
        )));
        assert!(rule(&["*"], &["pods/*"], "*").matches(&attrs(
            pods,
            "UPDATE",
            Some("status"),
            &user
        )));
        assert!(rule(&["*"], &["*/status"], "*").matches(&attrs(
            pods,
            "UPDATE",
            Some("status"),
            &user
        )));
        assert!(rule(&["*"], &["*"], "*").matches(&attrs(nodes, "CREATE", None, &user)));
        assert!(!rule(&["*"], &["*"], "Namespaced").matches(&attrs(nodes, "CREATE", None, &user)));
        assert!(rule(&["*"], &["*"], "Cluster").matches(&attrs(nodes, "CREATE", None, &user)));
        // resourceNames (a policy's NamedRuleWithOperations): only those objects.
        let named = Rule {
            names: vec!["x".into()],
            ..rule(&["*"], &["pods"], "*")
        };
        assert!(named.matches(&attrs(pods, "CREATE", None, &user)));
        let other = Rule {
            names: vec!["y".into()],
            ..rule(&["*"], &["pods"], "*")
        };
        assert!(!other.matches(&attrs(pods, "CREATE", None, &user)));
    }

    #[test]
    fn answers_and_denials() {
        let hook = hook_from(
            "cfg",
            &json!({"name": "deny.example.com", "sideEffects": "None"}),
            false,
        );
        assert!(hook.fail && hook.dry_run_safe);
        let ans = answer(
            &json!({"response": {"uid": "u", "allowed": false, "status": {"code": 403, "message": "no"}}}),
            "u",
        )
        .unwrap_or_else(|e| panic!("{}", e.0));
        let e = denied(&hook, &ans.status);
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: no"
        );
        let e = denied(&hook, &Value::Null);
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request without explanation"
        );
        assert!(answer(&json!({"response": {"uid": "other", "allowed": true}}), "u").is_err());
        let patch = base64::engine::general_purpose::STANDARD
            .encode(r#"[{"op":"add","path":"/a","value":1}]"#);
        let ans = answer(
            &json!({"response": {"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": patch}}),
            "u",
        )
        .unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(
            ans.patch,
            Some(json!([{"op": "add", "path": "/a", "value": 1}]))
        );
    }
}
