//! An in-process API server for integration tests: a real skiff API server
//! on 127.0.0.1:0 over HTTPS with an embedded store in a temporary
//! directory, and a kube client for it. Dropping it shuts the server down.
#![allow(clippy::unwrap_used)]

pub mod webhook;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub running: skiff_apiserver::Running,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose configuration `configure` changes first.
    pub async fn start_with(configure: impl FnOnce(&mut skiff_apiserver::Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store_sqlite::SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let mut config = skiff_apiserver::Config::new(dir.path().to_path_buf(), Arc::new(store));
        config.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        config.port = 0;
        configure(&mut config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (running, _handle) = skiff_apiserver::start(config, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let kubeconfig = running.kubeconfig_path.clone();
        let client = skiff_runtime::client_from_kubeconfig(&kubeconfig)
            .await
            .unwrap();
        TestServer {
            dir,
            kubeconfig,
            client,
            running,
            stop: Some(tx),
        }
    }

    /// Creates namespace `name` as the admin.
    pub async fn namespace(&self, name: &str) {
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .create(&Default::default(), &ns)
            .await
            .unwrap();
    }

    /// A client that authenticates as the admin and impersonates `user`
    /// with `groups` (`kubectl --as user --as-group g`).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        kube::Client::try_from(self.config_as(user, groups).await).unwrap()
    }

    /// The configuration of [`TestServer::client_as`], to adjust first
    /// (`default_retry = false` to see 429s and 503s instead of retrying).
    pub async fn config_as(&self, user: &str, groups: &[&str]) -> kube::Config {
        let mut config = self.config().await;
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        config
    }

    /// A client that presents bearer `token` instead of the admin's credentials.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        let mut config = self.config().await;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        kube::Client::try_from(config).unwrap()
    }

    /// The admin's client configuration, to adjust before building a client.
    pub async fn config(&self) -> kube::Config {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Poll `f` until it returns `Some` (every 100 ms, 60 s at most); panics
/// with `what` when it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
