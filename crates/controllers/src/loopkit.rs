//! Plumbing shared by the serviceaccount, endpoints, endpointslice(mirroring),
//! nodelifecycle, podgc and nodeipam controllers: a deduplicating work queue
//! with delayed and rate-limited adds (↔ client-go's workqueue), informers
//! (a watcher feeding a store, reporting every change with the object's
//! previous state to a handler; the kinds several controllers watch come
//! from the shared informers, `crate::shared`), and the errors of a reconcile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{self, Debug, Display};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ctrlutil::informer::{Hub, watch_into};
use std::time::Duration;

use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a reconcile failed; every failure is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The API answered with this HTTP status.
    pub fn is_status(&self, code: u16) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == code)
    }
}

/// Whether a kube error is an API answer with this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// What a reconcile asks for: nothing more, or another look after a delay.
pub type Outcome = Result<Option<Duration>, Error>;

/// A reconcile with its panic caught ([`crate::ctrlutil::catch_panic`]):
/// a panic is an error, retried with backoff like any other.
pub fn guarded<'a, K: Display + ?Sized>(
    controller: &'a str,
    key: &'a K,
    reconcile: impl std::future::Future<Output = Outcome> + 'a,
) -> impl std::future::Future<Output = Outcome> + 'a {
    let caught = crate::ctrlutil::catch_panic(controller, key, reconcile);
    async move {
        caught
            .await
            .unwrap_or_else(|panic| Err(Error::Invalid(format!("panic: {panic}"))))
    }
}

/// The key of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Key {
        Key {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: kube::Resource>(obj: &K) -> Key {
        let meta = obj.meta();
        Key {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    pub fn object_ref<K>(&self) -> ObjectRef<K>
    where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The object a watch event carries, if any.
pub fn event_object<K>(event: &watcher::Event<K>) -> Option<&K> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
            Some(o)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// The first retry delay after a failure; it doubles up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The retry delay after `failures` consecutive failures (1 = first).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BASE_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF)
}

struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    delayed: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
}

/// A deduplicating work queue: a key added many times before a worker takes
/// it is processed once; delayed adds keep the earliest deadline.
/// Meant for one worker (reconciles of one key never overlap).
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

impl<K: Eq + Hash + Clone + Debug> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue::new()
    }
}

impl<K: Eq + Hash + Clone + Debug> WorkQueue<K> {
    pub fn new() -> WorkQueue<K> {
        WorkQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                delayed: HashMap::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queue a key now.
    pub fn add(&self, key: K) {
        {
            let mut s = self.lock();
            s.delayed.remove(&key);
            if s.queued.insert(key.clone()) {
                s.ready.push_back(key);
            }
        }
        self.notify.notify_one();
    }

    /// Queue a key once `delay` has passed (an earlier pending add wins).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.queued.contains(&key) {
                return;
            }
            let entry = s.delayed.entry(key).or_insert(at);
            if at < *entry {
                *entry = at;
            }
        }
        self.notify.notify_one();
    }

    /// Queue a key after a delay growing with its consecutive failures.
    pub fn add_rate_limited(&self, key: K) {
        let delay = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            backoff(*n)
        };
        self.add_after(key, delay);
    }

    /// Reset a key's failure count.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// How many keys wait (now or later).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.delayed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next key to process, waiting for one to be added or to come due.
    pub async fn next(&self) -> K {
        loop {
            let wake_at = {
                let mut s = self.lock();
                let now = Instant::now();
                let due: Vec<K> = s
                    .delayed
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    s.delayed.remove(&k);
                    if s.queued.insert(k.clone()) {
                        s.ready.push_back(k);
                    }
                }
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    return k;
                }
                s.delayed.values().min().copied()
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = self.notify.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Record how a reconcile of `key` went: success forgets its failures
    /// (and requeues it if asked), failure requeues it with backoff.
    pub fn finish(&self, controller: &str, key: K, outcome: Outcome) {
        match outcome {
            Ok(None) => self.forget(&key),
            Ok(Some(after)) => {
                self.forget(&key);
                self.add_after(key, after);
            }
            Err(e) => {
                if e.is_status(409) {
                    tracing::debug!(controller, ?key, error = %e, "conflict; requeueing");
                } else {
                    tracing::warn!(controller, ?key, error = %e, "reconcile failed; requeueing with backoff");
                }
                self.add_rate_limited(key);
            }
        }
    }
}

/// The local cache of an informer (one `Arc` per object, shared by every
/// controller reading it).
pub type Store<K> = crate::ctrlutil::informer::Cache<K>;

/// An informer: a store of `api`'s objects (optionally filtered)
/// and the future that keeps it current. `on_event` sees every event after
/// the store applied it, with the object's previous state (for
/// `Apply`/`Delete`/`InitApply`; `None` if it was not known). The future
/// runs until dropped; watch failures are logged and retried with backoff.
/// For the kinds most controllers watch, use [`crate::shared::SharedInformer::informer`].
pub fn informer<K, F>(
    api: Api<K>,
    config: watcher::Config,
    on_event: F,
) -> (Store<K>, impl Future<Output = ()> + Send)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(&watcher::Event<K>, Option<Arc<K>>) + Send + 'static,
{
    let hub = Hub::new(Store::default());
    let store = hub.cache();
    let registration = hub.register_raw(on_event);
    let fut = async move {
        let _registration = registration;
        watch_into(api, config, hub).await;
    };
    (store, fut)
}

/// Wait until the store has listed once.
pub async fn wait_ready<K>(store: &Store<K>) -> bool {
    store.wait_synced().await;
    true
}

/// Ticks every `period` (the first tick after one period), for periodic resyncs.
pub fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// `metadata.deletionTimestamp` is set.
pub fn is_terminating<K: kube::Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cases = [
            (1, 100),
            (2, 200),
            (3, 400),
            (11, 60_000),
            (40, 60_000),
            (0, 100),
        ];
        for (failures, ms) in cases {
            assert_eq!(
                backoff(failures),
                Duration::from_millis(ms),
                "failures {failures}"
            );
        }
    }

    #[tokio::test]
    async fn queue_dedups_delays_and_rate_limits() {
        let q: WorkQueue<&str> = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());

        q.add_after("late", Duration::from_millis(80));
        q.add_after("early", Duration::from_millis(10));
        q.add_after("late", Duration::from_secs(20)); // the earlier deadline stays
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "early");
        assert_eq!(q.next().await, "late");

        // An immediate add overrides a pending delayed one.
        q.add_after("x", Duration::from_secs(100));
        q.add("x");
        assert_eq!(q.next().await, "x");
        assert!(q.is_empty());

        // Failures come back (after a backoff); success forgets them.
        q.finish("test", "f", Err(Error::Invalid("boom".into())));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "f");
        q.finish("test", "f", Ok(Some(Duration::from_millis(10))));
        assert_eq!(q.next().await, "f");
        assert!(q.lock().failures.is_empty());
        q.finish("test", "f", Ok(None));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn queue_wakes_a_waiting_worker() {
        let q = Arc::new(WorkQueue::<u32>::new());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.add(7);
        assert_eq!(waiter.await.ok(), Some(7));
    }
}
