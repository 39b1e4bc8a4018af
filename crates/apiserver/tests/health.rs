//! Health endpoints that tell the truth (review L3, robustness issue item
//! 6): `/readyz` fails, naming the check, while the store does not answer,
//! and recovers with it; `/livez` does not depend on the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use skiff_store::{KeyValue, RangeResult, Result, Store, StoreError, WatchStream};
use skiff_testsupport::TestServer;

/// A store that can be cut off, as an etcd without quorum.
struct Switchable {
    inner: Arc<dyn Store>,
    down: Arc<AtomicBool>,
}

impl Switchable {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("etcdserver: no leader".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for Switchable {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult> {
        self.check()?;
        self.inner.range(prefix, start_after, limit).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.check()?;
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<KeyValue> {
        self.check()?;
        self.inner.update(key, value, expected_revision).await
    }
    async fn delete(&self, key: &str, expected_revision: i64) -> Result<(KeyValue, i64)> {
        self.check()?;
        self.inner.delete(key, expected_revision).await
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        self.inner.watch(prefix, from_revision).await
    }
    async fn current_revision(&self) -> Result<i64> {
        self.check()?;
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: i64) -> Result<()> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn compacted_revision(&self) -> Result<i64> {
        self.check()?;
        self.inner.compacted_revision().await
    }
}

/// (status code, body) of GET `path`, without kube's retries.
async fn get(s: &TestServer, path: &str) -> (u16, String) {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readyz_fails_while_the_store_does_not_answer() {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let s = TestServer::start_with(move |c| {
        c.store = Arc::new(Switchable {
            inner: c.store.clone(),
            down: flag,
        });
    })
    .await;
    assert_eq!(get(&s, "/readyz").await, (200, "ok".into()));
    assert_eq!(
        get(&s, "/readyz?verbose").await,
        (
            200,
            "[+]ping ok\n[+]etcd ok\n[+]informer-sync ok\nreadyz check passed\n".into()
        )
    );
    down.store(true, Ordering::SeqCst);
    let (code, body) = get(&s, "/readyz").await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("[-]etcd failed: reason withheld\n"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    let (code, body) = get(&s, "/readyz/etcd").await;
    assert_eq!(code, 500);
    assert!(body.contains("no leader"), "{body}");
    // Liveness does not depend on the store; an excluded check is not run.
    assert_eq!(get(&s, "/livez").await, (200, "ok".into()));
    let (code, body) = get(&s, "/readyz?exclude=etcd,informer-sync&verbose").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]etcd excluded: ok"), "{body}");
    assert_eq!(get(&s, "/readyz/nonsense").await.0, 404);
    // Back with the store.
    down.store(false, Ordering::SeqCst);
    assert_eq!(get(&s, "/readyz").await, (200, "ok".into()));
}
