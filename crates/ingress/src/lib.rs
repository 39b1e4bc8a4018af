//! The built-in Ingress controller (↔ ingress-nginx; k3s bundles Traefik
//! for the same job): an HTTP and HTTPS reverse proxy on the node's ports
//! 80 and 443 for the Ingresses of IngressClass `skiff` (the default
//! class, which it creates), routing by host and path to the ready
//! endpoints of Services, straight to pod addresses.
//!
//! - [`routes`]: the routing table and its matching rules;
//! - [`state`]: the watched objects and the table build;
//! - [`tls`]: certificates from Secrets by SNI, with a self-signed fallback;
//! - [`proxy`]: one request to a backend;
//! - [`server`]: the listeners;
//! - [`watch`]: watchers, live reload, Ingress status.
//!
//! Entry points: [`run`] (what the binary calls), or [`Bound::bind`] then
//! [`Bound::serve`] to learn the bound addresses first (tests bind
//! 127.0.0.1:0).
//!
//! **Architecture Invariant:** the controller reaches the cluster only
//! through the API, and reloads never interrupt requests in flight: the
//! routing and certificate tables are immutable and swapped as a whole.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

pub mod proxy;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;
pub mod watch;

pub use state::Classes;

/// The IngressClass this controller serves by default.
pub const DEFAULT_CLASS: &str = "skiff";
/// The IngressClass `spec.controller` value of this controller.
pub const CONTROLLER: &str = "skiff.dev/ingress";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ingress TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Ingress controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP listener, 0.0.0.0:80 by default.
    pub http: SocketAddr,
    /// The HTTPS listener, 0.0.0.0:443 by default.
    pub https: SocketAddr,
    /// The IngressClass served, `skiff` by default.
    pub class_name: String,
    /// The IngressClass controller name, `skiff.dev/ingress`.
    pub controller: String,
    /// The node's address (an IP or a host name) written to the served
    /// Ingresses' `status.loadBalancer.ingress`; None: status untouched.
    pub status_address: Option<String>,
    /// Whether to create IngressClass `class_name` (marked default) when
    /// it does not exist.
    pub create_default_class: bool,
    /// What one client connection may hold (security review D1, for
    /// every listener).
    pub limits: server::Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            http: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80)),
            https: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 443)),
            class_name: DEFAULT_CLASS.into(),
            controller: CONTROLLER.into(),
            status_address: None,
            create_default_class: true,
            limits: server::Limits::default(),
        }
    }
}

impl Config {
    pub fn classes(&self) -> Classes {
        Classes {
            class_name: self.class_name.clone(),
            controller: self.controller.clone(),
        }
    }
}

/// The controller with its listeners bound, not yet serving.
pub struct Bound {
    config: Config,
    http: TcpListener,
    https: TcpListener,
}

impl Bound {
    pub async fn bind(config: Config) -> Result<Bound, Error> {
        let http = TcpListener::bind(config.http)
            .await
            .map_err(|source| Error::Bind {
                addr: config.http,
                source,
            })?;
        let https = TcpListener::bind(config.https)
            .await
            .map_err(|source| Error::Bind {
                addr: config.https,
                source,
            })?;
        Ok(Bound {
            config,
            http,
            https,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.http.local_addr()?)
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.https.local_addr()?)
    }

    /// Watches the cluster through `client` and proxies until `shutdown`.
    pub async fn serve(
        self,
        client: kube::Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Bound {
            config,
            http,
            https,
        } = self;
        let certs = Arc::new(tls::CertResolver::new(tls::self_signed()?));
        let tls_config = tls::server_config(certs.clone())?;
        let routes = Arc::new(routes::Routes::default());
        let classes = config.classes();
        tracing::info!(http = %http.local_addr()?, https = %https.local_addr()?, class = %classes.class_name, "ingress controller starting");
        let class_task = config.create_default_class.then(|| {
            let (client, classes) = (client.clone(), classes.clone());
            tokio::spawn(async move {
                let mut delay = std::time::Duration::from_millis(500);
                while let Err(e) = watch::ensure_class(client.clone(), &classes).await {
                    tracing::warn!(error = %e, "creating the default IngressClass failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                }
            })
        });
        let watcher = tokio::spawn(watch::run(
            client,
            classes,
            config.status_address.clone(),
            routes.clone(),
            certs,
        ));
        server::serve(
            http,
            https,
            Arc::new(proxy::Proxy::new(routes)),
            tls_config,
            config.limits,
            shutdown,
        )
        .await;
        watcher.abort();
        if let Some(t) = class_task {
            t.abort();
        }
        Ok(())
    }
}

/// Runs the Ingress controller: binds `config.http` and `config.https`,
/// watches the cluster through `client`, and proxies until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Bound::bind(config).await?.serve(client, shutdown).await
}
