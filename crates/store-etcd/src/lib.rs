//! The etcd v3 [`Store`] backend of skiff: the datastore of a highly
//! available control plane (several `skiff server`s on one etcd cluster).
//!
//! Mapping onto etcd:
//! - **Keys.** The API server's keys all start with `/registry/`; they live
//!   in etcd under the configured prefix instead (default `/registry/`, so
//!   that the default layout is Kubernetes's own: `/registry/pods/ns/name`).
//!   Keys outside `/registry/` (only tests write them) live under
//!   `<prefix without its last '/'>#`, which no `/registry/` key maps into,
//!   so the mapping is one to one and keeps prefixes and key order.
//! - **Revisions** are etcd's: `mod_revision` and `create_revision` of the
//!   etcd key, the store revision is the response header's.
//! - **Writes** are single transactions: create is
//!   `if create_revision(k) == 0 then put`, a conditional update or delete is
//!   `if mod_revision(k) == expected then put/delete else get` (the `get`
//!   tells a conflict from a missing key without a second round trip).
//! - **Watch** is an etcd watch with `prev_kv` and `progress_notify`; an
//!   empty response that is not the creation acknowledgement is a progress
//!   notification.
//! - **Compaction.** The trait promises that a watch from the compacted
//!   revision `r` itself replays the event at `r` with its previous value.
//!   etcd can only give the previous value of an event at `r` while `r - 1`
//!   is not compacted, so `compact(r)` compacts etcd at `r - 1`, a watch
//!   from `r` is opened at `r - 1` (so that etcd refuses exactly the watches
//!   the trait must refuse) and the compacted revision reported is etcd's
//!   plus one.
//! - **Errors.** Lost connections, missing leaders (the client sends
//!   `require_leader`, so a member without quorum fails fast) and timeouts
//!   are [`StoreError::Unavailable`]; etcd's compaction and future-revision
//!   errors map to [`StoreError::Compacted`] and [`StoreError::FutureRevision`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, KvClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use skiff_store::{Event, KeyValue, RangeResult, Store, StoreError, WatchBatch, WatchStream};

pub mod testing;

/// The key prefix the API server writes under.
pub const REGISTRY: &str = "/registry/";

/// How long one request may take before the store reports itself unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the etcd cluster is and how to reach it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// The etcd key prefix the API server's `/registry/` maps to.
    pub prefix: String,
    /// CA certificate (PEM) that signed the members' serving certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) ...
    pub cert_file: Option<PathBuf>,
    /// ... and its key (PEM).
    pub key_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// Endpoints with the default prefix and no TLS files.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: REGISTRY.to_string(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("etcd prefix {0:?} must start with '/'")]
    BadPrefix(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--datastore-certfile and --datastore-keyfile go together")]
    HalfIdentity,
    #[error("connecting to etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} does not answer: {reason}")]
    NotAnswering { endpoints: String, reason: String },
}

/// The two etcd key spaces of one store (see the crate documentation).
#[derive(Clone, Debug)]
struct KeyMap {
    /// Where `/registry/` lives; ends with '/'.
    registry: String,
    /// Where other keys live: `registry` without its last '/', plus '#'.
    aside: String,
}

impl KeyMap {
    fn new(prefix: &str) -> Result<KeyMap, EtcdError> {
        if !prefix.starts_with('/') {
            return Err(EtcdError::BadPrefix(prefix.to_string()));
        }
        let registry = if prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let aside = format!("{}#", &registry[..registry.len() - 1]);
        Ok(KeyMap { registry, aside })
    }

    /// The etcd key of a store key.
    fn to_etcd(&self, key: &str) -> Vec<u8> {
        match key.strip_prefix(REGISTRY) {
            Some(rest) => format!("{}{rest}", self.registry).into_bytes(),
            None => format!("{}{key}", self.aside).into_bytes(),
        }
    }

    /// The etcd key range `[start, end)` of a store prefix.
    fn prefix_range(&self, prefix: &str) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        if !prefix.starts_with(REGISTRY) && REGISTRY.starts_with(prefix) {
            return Err(StoreError::Backend(format!(
                "prefix {prefix:?} spans {REGISTRY} and other keys, which live apart in etcd"
            )));
        }
        let start = self.to_etcd(prefix);
        let end = prefix_end(&start);
        Ok((start, end))
    }

    /// The store key of an etcd key, if it is one of this store's.
    fn to_store(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = std::str::from_utf8(key)
            .map_err(|_| StoreError::Backend("etcd key is not UTF-8".into()))?;
        if let Some(rest) = key.strip_prefix(&self.registry) {
            Ok(format!("{REGISTRY}{rest}"))
        } else if let Some(rest) = key.strip_prefix(&self.aside) {
            Ok(rest.to_string())
        } else {
            Err(StoreError::Backend(format!(
                "etcd key {key:?} is outside this store's prefix"
            )))
        }
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.to_store(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }
}

/// The end of etcd's range of keys starting with `start` (etcd's
/// `GetPrefixRangeEnd`).
fn prefix_end(start: &[u8]) -> Vec<u8> {
    let mut end = start.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

fn is_future(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision is a future revision")
}

/// Maps a client error onto the store's: what a retry may cure is Unavailable.
fn store_error(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match &e {
        E::GRpcStatus(status) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                StoreError::Unavailable(status.message().to_string())
            }
            // tonic's status for a connection that broke under a request
            // (the member died mid-call): as retryable as a refused one.
            tonic::Code::Unknown if status.message() == "transport error" => {
                StoreError::Unavailable(status.message().to_string())
            }
            _ => StoreError::Backend(status.message().to_string()),
        },
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) | E::WatchError(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Whether the request failed before reaching any member (no connection
/// to the member the balancer picked), so that retrying it, even a write,
/// cannot apply it twice.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error")
        || text.contains("Connection refused")
        || text.contains("error trying to connect")
}

/// Runs `call`, retrying requests that never reached a member (another
/// member may be up), all within [`REQUEST_TIMEOUT`].
async fn timed<T, F, Fut>(
    what: &str,
    mut call: F,
) -> Result<Result<T, etcd_client::Error>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let attempts = async {
        let mut attempt = 0u64;
        loop {
            let result = call().await;
            match &result {
                Err(e) if attempt < 8 && never_sent(e) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "etcd {what}: retrying on another member");
                    tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                }
                _ => return result,
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, attempts)
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("etcd {what} timed out after {REQUEST_TIMEOUT:?}"))
        })
}

/// A [`Store`] on an etcd v3 cluster. Cheap to share: the client multiplexes
/// every request and watch over one HTTP/2 connection per member.
pub struct EtcdStore {
    client: Client,
    keys: Arc<KeyMap>,
    endpoints: String,
    /// The largest etcd revision known to be compacted (ranges at it fail).
    known_compacted: AtomicI64,
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let keys = Arc::new(KeyMap::new(&config.prefix)?);
        let endpoints = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| EtcdError::Io {
                path: path.clone(),
                source,
            })
        };
        let uses_tls = config.ca_file.is_some()
            || config.cert_file.is_some()
            || config.endpoints.iter().any(|e| e.starts_with("https://"));
        if uses_tls {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => return Err(EtcdError::HalfIdentity),
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|source| EtcdError::Connect {
                endpoints: endpoints.clone(),
                source,
            })?;
        let store = EtcdStore {
            client,
            keys,
            endpoints: endpoints.clone(),
            known_compacted: AtomicI64::new(0),
        };
        let revision = store
            .current_revision()
            .await
            .map_err(|e| EtcdError::NotAnswering {
                endpoints: endpoints.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(%endpoints, prefix = %store.keys.registry, revision, "etcd store connected");
        Ok(store)
    }

    /// The endpoints this store talks to, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    /// Every key under `prefix` at one revision, read in pages of `page`
    /// keys all at that revision (a consistent snapshot however large).
    pub async fn snapshot(&self, prefix: &str, page: usize) -> skiff_store::Result<RangeResult> {
        let first = self.range(prefix, None, page).await?;
        let revision = first.revision;
        let mut kvs = first.kvs;
        let mut more = first.more;
        let (_, end) = self.keys.prefix_range(prefix)?;
        while more {
            let Some(last) = kvs.last() else { break };
            let mut start = self.keys.to_etcd(&last.key);
            start.push(0);
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page as i64)
                .with_revision(revision);
            let resp = match timed("range", || {
                let (mut kv, start, options) = (self.kv(), start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?
            {
                Ok(r) => r,
                Err(e) if is_compacted(&e) => {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        compacted: self.compacted_revision().await.unwrap_or(revision),
                    });
                }
                Err(e) => return Err(store_error(e)),
            };
            more = resp.more();
            for kv in resp.kvs() {
                kvs.push(self.keys.kv(kv)?);
            }
        }
        Ok(RangeResult {
            kvs,
            revision,
            more: false,
        })
    }

    /// Compacts history every `interval`, up to the revision seen one
    /// interval earlier, until the store is dropped. Several API servers on
    /// one etcd compact once per interval between them: as Kubernetes's
    /// compactor, each round is claimed with a transaction on the version of
    /// a shared key, and only the server whose claim succeeds compacts.
    pub fn spawn_compactor(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut claimed_version = 0i64;
            let mut last_revision = 0i64;
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(store) = store.upgrade() else { return };
                match store.compact_round(claimed_version, last_revision).await {
                    Ok((version, revision)) => {
                        claimed_version = version;
                        last_revision = revision;
                    }
                    Err(e) => tracing::warn!(error = %e, "etcd compaction round failed"),
                }
            }
        })
    }

    /// One compaction round: the claim key's version and the revision to
    /// compact at next round.
    async fn compact_round(&self, version: i64, revision: i64) -> skiff_store::Result<(i64, i64)> {
        let key = self.keys.to_etcd("compact_rev_key");
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, version)])
            .and_then([TxnOp::put(key.clone(), revision.to_string(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = timed("txn", || {
            let (mut kv, txn) = (self.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?
        .map_err(store_error)?;
        let current = header_revision(resp.header())?;
        if !resp.succeeded() {
            // Another server compacted this round; follow its count.
            let theirs = resp
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok((theirs, current));
        }
        if revision > 0 {
            match self.compact(revision).await {
                Ok(()) | Err(StoreError::Compacted { .. }) => {
                    tracing::info!(revision, "etcd history compacted");
                }
                Err(e) => return Err(e),
            }
        }
        Ok((version + 1, current))
    }

    /// Whether a range read at etcd revision `revision` succeeds (it fails
    /// once `revision` is compacted away).
    async fn readable_at(&self, revision: i64) -> skiff_store::Result<bool> {
        let options = GetOptions::new().with_count_only().with_revision(revision);
        match timed("range", || {
            let (mut kv, key, options) = (self.kv(), self.keys.registry.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await?
        {
            Ok(_) => Ok(true),
            Err(e) if is_compacted(&e) => Ok(false),
            Err(e) if is_future(&e) => Err(StoreError::FutureRevision(revision)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Writes `then` if `compare` holds, otherwise reads the key: the
    /// response and whether the compare held.
    async fn txn(
        &self,
        key: &[u8],
        compare: Compare,
        then: TxnOp,
    ) -> skiff_store::Result<etcd_client::TxnResponse> {
        let txn = Txn::new()
            .when([compare])
            .and_then([then])
            .or_else([TxnOp::get(key.to_vec(), None)]);
        timed("txn", || {
            let (mut kv, txn) = (self.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?
        .map_err(store_error)
    }

    /// What a failed conditional write found: the key's current mod_revision.
    fn found(&self, key: &str, resp: &etcd_client::TxnResponse) -> skiff_store::Result<i64> {
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return Ok(kv.mod_revision());
            }
        }
        Err(StoreError::NotFound(key.to_string()))
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> skiff_store::Result<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

fn conditional(key: &[u8], expected: i64) -> Compare {
    if expected == 0 {
        Compare::create_revision(key.to_vec(), CompareOp::Greater, 0)
    } else {
        Compare::mod_revision(key.to_vec(), CompareOp::Equal, expected)
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> skiff_store::Result<Option<KeyValue>> {
        let resp = timed("get", || {
            let (mut kv, key) = (self.kv(), self.keys.to_etcd(key));
            async move { kv.get(key, None).await }
        })
        .await?
        .map_err(store_error)?;
        resp.kvs().first().map(|kv| self.keys.kv(kv)).transpose()
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> skiff_store::Result<RangeResult> {
        let (mut start, end) = self.keys.prefix_range(prefix)?;
        if let Some(after) = start_after {
            let mut after = self.keys.to_etcd(after);
            after.push(0);
            if after > start {
                start = after;
            }
        }
        if start >= end && end != [0] {
            // Past the end of the prefix: nothing, at the current revision.
            let revision = self.current_revision().await?;
            return Ok(RangeResult {
                kvs: Vec::new(),
                revision,
                more: false,
            });
        }
        let mut options = GetOptions::new().with_range(end);
        if limit > 0 {
            options = options.with_limit(limit as i64);
        }
        let resp = timed("range", || {
            let (mut kv, start, options) = (self.kv(), start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?
        .map_err(store_error)?;
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.keys.kv(kv))
            .collect::<skiff_store::Result<Vec<_>>>()?;
        Ok(RangeResult {
            revision: header_revision(resp.header())?,
            more: resp.more(),
            kvs,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> skiff_store::Result<KeyValue> {
        let k = self.keys.to_etcd(key);
        let compare = Compare::create_revision(k.clone(), CompareOp::Equal, 0);
        let resp = self
            .txn(&k, compare, TxnOp::put(k.clone(), value.clone(), None))
            .await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: i64,
    ) -> skiff_store::Result<KeyValue> {
        let k = self.keys.to_etcd(key);
        let put = TxnOp::put(
            k.clone(),
            value.clone(),
            Some(PutOptions::new().with_prev_key()),
        );
        let resp = self
            .txn(&k, conditional(&k, expected_revision), put)
            .await?;
        if !resp.succeeded() {
            let actual = self.found(key, &resp)?;
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected: expected_revision,
                actual,
            });
        }
        let revision = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd put without its previous value".into()))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: i64,
    ) -> skiff_store::Result<(KeyValue, i64)> {
        let k = self.keys.to_etcd(key);
        let delete = TxnOp::delete(k.clone(), Some(DeleteOptions::new().with_prev_key()));
        let resp = self
            .txn(&k, conditional(&k, expected_revision), delete)
            .await?;
        if !resp.succeeded() {
            let actual = self.found(key, &resp)?;
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected: expected_revision,
                actual,
            });
        }
        let revision = header_revision(resp.header())?;
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
                _ => None,
            })
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        Ok((self.keys.kv(&prev)?, revision))
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> skiff_store::Result<WatchStream> {
        let (start, end) = self.keys.prefix_range(prefix)?;
        let mut options = WatchOptions::new()
            .with_range(end)
            .with_prev_key()
            .with_progress_notify();
        // One revision early, so that etcd refuses a watch from exactly its
        // compacted revision (see the crate documentation); the event at
        // `from - 1` is dropped below.
        if from_revision > 0 {
            options = options.with_start_revision((from_revision - 1).max(1));
        }
        let stream = timed("watch", || {
            let (mut watch, start, options) =
                (self.client.watch_client(), start.clone(), options.clone());
            async move { watch.watch(start, Some(options)).await }
        })
        .await?
        .map_err(store_error)?;
        let state = WatchState {
            stream,
            keys: self.keys.clone(),
            from: from_revision,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut state| async move {
                if state.done {
                    return None;
                }
                let item = state.next().await;
                if item.is_err() {
                    state.done = true;
                }
                Some((item, state))
            },
        )))
    }

    async fn current_revision(&self) -> skiff_store::Result<i64> {
        let options = GetOptions::new().with_count_only();
        let resp = timed("range", || {
            let (mut kv, key, options) = (self.kv(), self.keys.registry.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await?
        .map_err(store_error)?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: i64) -> skiff_store::Result<()> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(StoreError::FutureRevision(revision));
        }
        if revision <= 2 {
            // etcd would compact at revision 1 or 0: nothing to forget.
            return Ok(());
        }
        match timed("compact", || {
            let mut kv = self.kv();
            async move { kv.compact(revision - 1, None).await }
        })
        .await?
        {
            Ok(_) => {
                self.known_compacted
                    .fetch_max(revision - 2, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if is_compacted(&e) => Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted_revision().await?,
            }),
            Err(e) if is_future(&e) => Err(StoreError::FutureRevision(revision)),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn compacted_revision(&self) -> skiff_store::Result<i64> {
        // etcd does not tell its compacted revision; the oldest revision a
        // range can still read at is it. Binary search above the largest
        // revision known to fail (revisions only get compacted further).
        let mut lo = self.known_compacted.load(Ordering::Relaxed) + 1;
        let mut hi = self.current_revision().await?;
        if lo > hi {
            lo = hi;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.readable_at(mid).await? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.known_compacted.fetch_max(lo - 1, Ordering::Relaxed);
        // `lo` is etcd's compacted revision; 1 means nothing was compacted.
        Ok(if lo <= 1 { 0 } else { lo + 1 })
    }
}

struct WatchState {
    stream: etcd_client::WatchStream,
    keys: Arc<KeyMap>,
    from: i64,
    done: bool,
}

impl WatchState {
    /// The next batch (skipping the creation acknowledgement and the events
    /// before `from`), or the error that ends the watch.
    async fn next(&mut self) -> skiff_store::Result<WatchBatch> {
        loop {
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(StoreError::Unavailable("etcd closed the watch".into())),
                Err(e) => return Err(store_error(e)),
            };
            if resp.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    requested: self.from,
                    compacted: resp.compact_revision() + 1,
                });
            }
            if resp.canceled() {
                let reason = resp.cancel_reason();
                return Err(if reason.contains("no leader") {
                    StoreError::Unavailable(format!("etcd canceled the watch: {reason}"))
                } else {
                    StoreError::Backend(format!("etcd canceled the watch: {reason}"))
                });
            }
            let header = header_revision(resp.header())?;
            if resp.events().is_empty() {
                // (etcd sends progress notifications only to watchers that
                // have caught up, so the header's revision is safe there.)
                if resp.created() {
                    continue;
                }
                // A progress notification.
                return Ok(WatchBatch {
                    events: Vec::new(),
                    revision: header,
                });
            }
            let mut events = Vec::with_capacity(resp.events().len());
            for event in resp.events() {
                let Some(kv) = event.kv() else {
                    return Err(StoreError::Backend("etcd watch event without key".into()));
                };
                if kv.mod_revision() < self.from {
                    continue;
                }
                let prev = event.prev_kv().map(|kv| self.keys.kv(kv)).transpose()?;
                events.push(match event.event_type() {
                    EventType::Put => {
                        let kv = self.keys.kv(kv)?;
                        let prev = if kv.create_revision == kv.mod_revision {
                            None
                        } else {
                            prev
                        };
                        Event::Put { kv, prev }
                    }
                    EventType::Delete => {
                        let Some(prev) = prev else {
                            return Err(StoreError::Backend(format!(
                                "etcd delete event at revision {} without its previous value",
                                kv.mod_revision()
                            )));
                        };
                        Event::Delete {
                            prev,
                            revision: kv.mod_revision(),
                        }
                    }
                });
            }
            if events.is_empty() {
                continue;
            }
            // Not the header's revision: a watcher catching up gets its
            // history in slices, each with the header of the current
            // revision, so only the last event says how far it got.
            let last = events.last().map(Event::revision).unwrap_or(header);
            return Ok(WatchBatch {
                events,
                revision: last,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn broken_connections_are_retryable() {
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unknown("transport error"));
        assert!(matches!(store_error(e), StoreError::Unavailable(_)));
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unknown("something else"));
        assert!(matches!(store_error(e), StoreError::Backend(_)));
    }

    #[test]
    fn registry_keys_map_under_the_prefix() {
        let m = KeyMap::new("/registry/").unwrap();
        assert_eq!(m.to_etcd("/registry/pods/ns/a"), b"/registry/pods/ns/a");
        assert_eq!(
            m.to_store(b"/registry/pods/ns/a").unwrap(),
            "/registry/pods/ns/a"
        );
        let m = KeyMap::new("/cluster2").unwrap();
        assert_eq!(m.to_etcd("/registry/pods/ns/a"), b"/cluster2/pods/ns/a");
        assert_eq!(
            m.to_store(b"/cluster2/pods/ns/a").unwrap(),
            "/registry/pods/ns/a"
        );
    }

    #[test]
    fn other_keys_live_apart_and_map_back() {
        let m = KeyMap::new("/registry/").unwrap();
        let k = m.to_etcd("/skiff-conformance/x");
        assert_eq!(k, b"/registry#/skiff-conformance/x");
        assert!(!k.starts_with(b"/registry/"));
        assert_eq!(m.to_store(&k).unwrap(), "/skiff-conformance/x");
        // "/registryx" is not under "/registry/": it goes aside too.
        assert_eq!(m.to_store(&m.to_etcd("/registryx")).unwrap(), "/registryx");
        assert!(m.to_store(b"/other/a").is_err());
        assert!(KeyMap::new("registry").is_err());
    }

    #[test]
    fn prefixes_that_span_both_spaces_are_refused() {
        let m = KeyMap::new("/registry/").unwrap();
        assert!(m.prefix_range("/").is_err());
        assert!(m.prefix_range("/reg").is_err());
        let (start, end) = m.prefix_range("/registry/pods/").unwrap();
        assert_eq!(start, b"/registry/pods/");
        assert_eq!(end, b"/registry/pods0");
    }

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
