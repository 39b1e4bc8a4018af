//! The API server's shared state and its entry point.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde_json::{Value, json};
use skiff_store::Store;
use tokio::net::TcpListener;

use crate::authz::UserInfo;
use crate::cache::WatchCache;
use crate::metrics::Metrics;
use crate::status::ApiError;
use crate::tls::{Pki, TlsError};

/// How to run the API server.
#[derive(Clone)]
pub struct Config {
    pub bind_address: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    pub data_dir: PathBuf,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// The Service ClusterIP range (10.43.0.0/16 by default).
    pub service_cidr: (Ipv4Addr, u8),
    pub node_port_range: (u16, u16),
    pub store: Arc<dyn Store>,
    /// History kept by the watch cache for watches that resume.
    pub watch_history: crate::cache::History,
    /// Authorize requests (Node, RBAC). Off only for benchmarks
    /// (`--authorization-mode AlwaysAllow`).
    pub authorization: bool,
    /// The Pod Security level of namespaces without the labels.
    pub pod_security_default: crate::podsecurity::Level,
    /// How connections are kept in check (security review D1).
    pub limits: ConnectionLimits,
    /// Max-inflight, priority and fairness, watches per user.
    pub flow_control: crate::flowcontrol::Config,
    /// The longest a request that is not long-running may take (the
    /// `timeout` query parameter may ask for less), as kube-apiserver's
    /// `--request-timeout`.
    pub request_timeout: std::time::Duration,
}

/// What one client connection may hold, as kube-apiserver's http.Server
/// bounds it: a connection that does not finish its TLS handshake, or
/// send a request's headers, in time is closed; beyond `max_connections`
/// open at once, new ones are closed at accept.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub tls_handshake_timeout: std::time::Duration,
    /// How long a request's headers may take, counted (by hyper) from the
    /// end of the previous response, so it is also the idle timeout of an
    /// HTTP/1.1 keep-alive connection. kube-apiserver has 32 s for headers
    /// and 90 s idle; one timer for both is 100 s here, beyond the 90 s
    /// after which clients' pools (Go's, kube-rs's) drop an idle connection
    /// themselves, so that a client never sends a request on a connection
    /// the server is closing.
    pub header_read_timeout: std::time::Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            tls_handshake_timeout: std::time::Duration::from_secs(10),
            header_read_timeout: std::time::Duration::from_secs(100),
            max_connections: 16_384,
        }
    }
}

impl Config {
    pub fn new(data_dir: PathBuf, store: Arc<dyn Store>) -> Config {
        Config {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 6443,
            data_dir,
            tls_sans: Vec::new(),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            node_port_range: (30000, 32767),
            store,
            watch_history: Default::default(),
            pod_security_default: Default::default(),
            authorization: true,
            limits: ConnectionLimits::default(),
            flow_control: Default::default(),
            request_timeout: std::time::Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("pki: {0}")]
    Tls(#[from] TlsError),
    #[error("store: {0}")]
    Store(#[from] skiff_store::StoreError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bootstrap: {0}")]
    Bootstrap(ApiError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub use crate::alloc::Allocators;

pub struct ApiServer {
    /// The cluster CA (PEM), as `/cacerts` serves it.
    pub ca_pem: String,
    /// Requests are authorized (false: AlwaysAllow, for benchmarks).
    pub authorization: bool,
    /// How this server connects to kubelets (its client certificate).
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub metrics: Metrics,
    /// Overload control: who runs now and who waits.
    pub flow: crate::flowcontrol::FlowControl,
    pub request_timeout: std::time::Duration,
    pub allocators: Mutex<Allocators>,
    pub advertise_address: String,
    /// Static bearer tokens and who they authenticate.
    pub(crate) tokens: Vec<(String, UserInfo)>,
    pub rbac: Arc<crate::rbac::Rbac>,
    pub node_authz: Arc<crate::nodeauthz::NodeAuthorizer>,
    pub token_signer: crate::tokens::TokenSigner,
    /// This server's identity Lease (kube-system/apiserver-<id>).
    pub identity: crate::identity::Identity,
    /// OpenAPI v3 documents per group-version, with the catalog generation
    /// they were built from (custom group-versions change with it).
    openapi: Mutex<HashMap<(String, String), (u64, Bytes)>>,
    /// The v2 document (JSON, protobuf) and the generation it was built from.
    openapi_v2: Mutex<Option<(u64, Bytes, Bytes)>>,
    /// The kubelets' latest Summary samples (metrics.k8s.io).
    pub resource_metrics: crate::resource_metrics::MetricsCache,
    pub pod_security_default: crate::podsecurity::Level,
    /// What the server serves: built-in resources and custom ones.
    pub resources: crate::crd::Resources,
    /// The admission webhooks in force.
    pub webhooks: crate::webhook::Webhooks,
    /// The ValidatingAdmissionPolicies and bindings in force.
    pub policies: crate::admission_policy::Policies,
}

/// Who the node-join token authenticates.
pub const NODE_TOKEN_USER: &str = "system:node-token";
/// The join token's group (kubeadm's bootstrap tokens').
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn version_info() -> Value {
    let v = skiff_api::KUBERNETES_VERSION;
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": v,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-11-24T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

impl ApiServer {
    /// The user a bearer token authenticates, if any.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.authenticate_token(token, &[]).map(|(user, _)| user)
    }

    /// The user a bearer token authenticates for one of `audiences` (the
    /// API server's own when empty), and the audiences it was accepted for,
    /// as the token authenticators answer a TokenReview.
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Option<(UserInfo, Vec<String>)> {
        let api = [crate::tokens::API_AUDIENCE.to_string()];
        let wanted = if audiences.is_empty() {
            &api[..]
        } else {
            audiences
        };
        if let Some(user) = self.static_token(token) {
            return Some((user, wanted.to_vec()));
        }
        // A service account token: valid signature and lifetime, for one of
        // the audiences; its account (and the pod or secret it is bound to)
        // still exists with the same uid.
        let claims = self
            .token_signer
            .verify(token, jiff::Timestamp::now().as_second())?;
        let accepted: Vec<String> = wanted
            .iter()
            .filter(|a| claims.audiences.contains(a))
            .cloned()
            .collect();
        if accepted.is_empty() {
            return None;
        }
        let user = &claims.user;
        let uid_of = |key: String| {
            self.cache.get(&key).map(|o| {
                o.value
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
        };
        let sa_uid = uid_of(format!(
            "/registry/serviceaccounts/{}/{}",
            user.namespace, user.name
        ))?;
        if !user.uid.is_empty() && sa_uid != user.uid {
            return None;
        }
        if let Some(secret) = &claims.legacy_secret {
            // A legacy token is valid while its Secret holds it (and is not
            // being deleted).
            use base64::Engine as _;
            let key = format!("/registry/secrets/{}/{secret}", user.namespace);
            let object = self.cache.get(&key)?;
            let held = object
                .value
                .pointer("/data/token")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())?;
            if object
                .value
                .pointer("/metadata/deletionTimestamp")
                .is_some()
                || !same(&held, token.as_bytes())
            {
                return None;
            }
        }
        let mut info = UserInfo::service_account(&user.namespace, &user.name, &sa_uid);
        if let Some((kind, name, uid)) = &claims.bound {
            let plural = if kind == "Pod" { "pods" } else { "secrets" };
            let current = uid_of(format!("/registry/{plural}/{}/{name}", user.namespace))?;
            if !uid.is_empty() && &current != uid {
                return None;
            }
            if kind == "Pod" {
                info.extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![name.clone()],
                );
                info.extra
                    .insert("authentication.kubernetes.io/pod-uid".into(), vec![current]);
            }
        }
        Some((info, accepted))
    }

    /// A static token (the admin's, the node-join token), compared in
    /// constant time.
    fn static_token(&self, token: &str) -> Option<UserInfo> {
        self.tokens
            .iter()
            .find(|(t, _)| same(t.as_bytes(), token.as_bytes()))
            .map(|(_, u)| u.clone())
    }

    pub fn render_metrics(&self) -> String {
        let mut out = self.metrics.render(&[
            (
                "apiserver_registered_watchers",
                "Number of currently registered watchers.",
                self.cache.watcher_count() as f64,
            ),
            (
                "etcd_current_revision",
                "The store's revision as seen by the watch cache.",
                self.cache.revision() as f64,
            ),
        ]);
        self.flow.render_metrics(&mut out);
        out
    }

    /// The v2 document as (JSON, gnostic protobuf), built again only when
    /// the custom resources changed.
    fn openapi_v2(&self) -> (Bytes, Bytes) {
        let generation = self.resources.generation();
        let mut cached = self
            .openapi_v2
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((g, json, proto)) = cached.as_ref()
            && *g == generation
        {
            return (json.clone(), proto.clone());
        }
        let served = self.resources.all_custom();
        // A schema the v2 protobuf cannot carry (too deep, say) leaves its
        // kind out of v2 (it stays in v3) rather than breaking the document.
        let custom: Vec<skiff_api::openapi::Custom<'_>> = served
            .iter()
            .filter(|s| match s.schema.as_ref().map(skiff_api::openapi_v2_proto::encode_schema) {
                Some(Err(e)) => {
                    tracing::warn!(definition = %s.definition, error = %e, "custom resource schema left out of OpenAPI v2");
                    false
                }
                _ => true,
            })
            .map(|s| skiff_api::openapi::Custom {
                info: s.info,
                schema: s.schema.as_ref(),
            })
            .collect();
        let doc = skiff_api::openapi::v2_document_with(&custom);
        let json = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        let proto = match skiff_api::openapi_v2_proto::encode_document(&doc) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the OpenAPI v2 document as protobuf");
                Bytes::new()
            }
        };
        *cached = Some((generation, json.clone(), proto.clone()));
        (json, proto)
    }

    pub fn openapi_v2_json(&self) -> Bytes {
        self.openapi_v2().0
    }

    pub fn openapi_v2_proto(&self) -> Result<Bytes, ApiError> {
        let b = self.openapi_v2().1;
        if b.is_empty() {
            return Err(ApiError::internal(
                "the OpenAPI v2 document could not be encoded",
            ));
        }
        Ok(b)
    }

    pub fn openapi_v3(&self, group: &str, version: &str) -> Option<Bytes> {
        let key = (group.to_string(), version.to_string());
        let served: Vec<_> = self
            .resources
            .all_custom()
            .into_iter()
            .filter(|s| s.info.group == group && s.info.version == version)
            .collect();
        // Built-in group-versions never change; custom ones with the catalog.
        let generation = if served.is_empty() {
            0
        } else {
            self.resources.generation()
        };
        if let Some((g, b)) = self
            .openapi
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            && *g == generation
        {
            return Some(b.clone());
        }
        let custom: Vec<skiff_api::openapi::Custom<'_>> = served
            .iter()
            .map(|s| skiff_api::openapi::Custom {
                info: s.info,
                schema: s.schema.as_ref(),
            })
            .collect();
        let doc = Bytes::from(
            serde_json::to_vec(&skiff_api::openapi::v3_document_with(
                group, version, &custom,
            )?)
            .ok()?,
        );
        self.openapi
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (generation, doc.clone()));
        Some(doc)
    }

    /// The `/openapi/v3` index, custom group-versions included (their
    /// hash is their document's, so clients see a change).
    pub fn openapi_v3_index(&self) -> Value {
        let mut custom: Vec<(String, String, String)> = Vec::new();
        for s in self.resources.all_custom() {
            let (g, v) = (s.info.group.to_string(), s.info.version.to_string());
            if custom.iter().any(|(cg, cv, _)| *cg == g && *cv == v) {
                continue;
            }
            if let Some(doc) = self.openapi_v3(&g, &v) {
                let digest = ring::digest::digest(&ring::digest::SHA256, &doc);
                let hash: String = digest
                    .as_ref()
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02X}"))
                    .collect();
                custom.push((g, v, hash));
            }
        }
        skiff_api::openapi::v3_index_with(&custom)
    }
}

/// A running API server.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin kubeconfig (also written to `<data-dir>/kubeconfig.yaml`).
    pub kubeconfig: String,
    pub kubeconfig_path: PathBuf,
    pub admin_token: String,
    pub ca_pem: String,
    pub server: Arc<ApiServer>,
    /// The URL components reach this server at.
    pub url: String,
    pki: Arc<Pki>,
    data_dir: PathBuf,
}

impl Running {
    /// The kubeconfig of a component of this server,
    /// `<data-dir>/cred/NAME.kubeconfig` (k3s's layout): its credential a
    /// client certificate for `user` in `group` from the cluster CA.
    pub fn component_kubeconfig(
        &self,
        name: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<PathBuf, TlsError> {
        let dir = self.data_dir.join("cred");
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{name}.kubeconfig"));
        let kubeconfig = self.pki.cert_kubeconfig(&self.url, name, user, group)?;
        crate::tls::write_private(&path, kubeconfig.as_bytes())?;
        Ok(path)
    }

    /// A client certificate and key (PEM) for `user` in `group`, signed by
    /// the cluster CA (`skiff kubeconfig create`).
    pub fn issue_client(
        &self,
        user: &str,
        group: Option<&str>,
    ) -> Result<(String, String), TlsError> {
        self.pki.issue_client(user, group)
    }
}

/// Start serving; returns once the port is bound and the cluster bootstrapped.
/// The server runs until `shutdown` resolves.
pub async fn start(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Running, tokio::task::JoinHandle<()>), StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    let mut sans = config.tls_sans.clone();
    if !config.bind_address.is_unspecified() {
        sans.push(config.bind_address.to_string());
    }
    let pki = Pki::load_or_create(&config.data_dir, &sans)?;
    let tls = pki.server_config()?;
    let addr = SocketAddr::new(config.bind_address, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let cache = WatchCache::start(config.store.clone(), config.watch_history).await?;
    let allocators = Allocators::new(config.service_cidr, config.node_port_range);
    let advertise_ip = if config.bind_address.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        config.bind_address
    };
    let mut tokens = vec![(
        pki.admin_token.clone(),
        UserInfo::new("admin", &[crate::authz::MASTERS]),
    )];
    // The join tokens, in their K10 form or as the bare secret: enough to
    // ask for certificates (system:node-bootstrapper and the nodeclient
    // approval), nothing else; agents then act as their certificates' users.
    for token in std::iter::once(&pki.node_token).chain(pki.agent_token.iter()) {
        let bootstrap = UserInfo::new(NODE_TOKEN_USER, &[BOOTSTRAPPERS]);
        tokens.push((token.clone(), bootstrap.clone()));
        tokens.push((crate::tls::join_token_secret(token).to_string(), bootstrap));
    }
    let token_signer = crate::tokens::TokenSigner::load_or_create(&config.data_dir)?;
    let (kubelet_cert, kubelet_key) = pki.client_cert(
        "kube-apiserver-kubelet-client",
        "system:kube-apiserver-kubelet-client",
        None,
    )?;
    // Kubelets' serving certificates come from the CSR signer, which signs
    // with the cluster CA.
    let kubelet_tls = crate::proxy::kubelet_client_tls(&kubelet_cert, &kubelet_key, &pki.ca_pem)?;
    let server = Arc::new(ApiServer {
        ca_pem: pki.ca_pem.clone(),
        kubelet_tls,
        authorization: config.authorization,
        store: config.store.clone(),
        cache,
        metrics: Metrics::default(),
        flow: crate::flowcontrol::FlowControl::new(config.flow_control),
        request_timeout: config.request_timeout,
        allocators: Mutex::new(allocators),
        advertise_address: SocketAddr::new(advertise_ip, local.port()).to_string(),
        identity: crate::identity::Identity::new(
            &crate::identity::hostname(),
            &SocketAddr::new(advertise_ip, local.port()).to_string(),
        ),
        tokens,
        rbac: Default::default(),
        node_authz: Default::default(),
        token_signer,
        openapi: Mutex::new(HashMap::new()),
        openapi_v2: Mutex::new(None),
        resource_metrics: Default::default(),
        pod_security_default: config.pod_security_default,
        resources: Default::default(),
        webhooks: Default::default(),
        policies: Default::default(),
    });
    crate::rbac::follow(&server.rbac, &server.cache);
    crate::nodeauthz::follow(&server.node_authz, &server.cache);
    crate::crd::start(&server);
    crate::webhook::start(&server);
    crate::admission_policy::start(&server);
    crate::alloc::claim_existing(&server).await?;
    crate::alloc::spawn_repair(&server);
    crate::bootstrap::bootstrap(&server, local.port())
        .await
        .map_err(StartError::Bootstrap)?;
    crate::policy::reconcile(&server)
        .await
        .map_err(StartError::Bootstrap)?;
    tokio::spawn(crate::identity::run(
        Arc::downgrade(&server),
        server.identity.clone(),
    ));
    let url = format!("https://{}", SocketAddr::new(advertise_ip, local.port()));
    // The admin's credential is a client certificate in system:masters, as
    // k3s's admin kubeconfig; the admin token keeps working for bearer use.
    let kubeconfig =
        pki.cert_kubeconfig(&url, "admin", "system:admin", Some(crate::authz::MASTERS))?;
    let kubeconfig_path = config.data_dir.join("kubeconfig.yaml");
    crate::tls::write_private(&kubeconfig_path, kubeconfig.as_bytes())?;
    let running = Running {
        addr: local,
        kubeconfig,
        kubeconfig_path,
        admin_token: pki.admin_token.clone(),
        ca_pem: pki.ca_pem.clone(),
        server: server.clone(),
        url,
        pki: Arc::new(pki),
        data_dir: config.data_dir.clone(),
    };
    let handle = tokio::spawn(crate::server::serve(
        server,
        listener,
        tls,
        config.limits,
        shutdown,
    ));
    tracing::info!(addr = %local, "API server listening");
    Ok((running, handle))
}

/// Run the API server until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (_running, handle) = start(config, shutdown).await?;
    let _ = handle.await;
    Ok(())
}
