//! A shared-informer equivalent: a watcher feeding a local cache ([`Hub`]),
//! with event handlers that see the previous state of every changed object
//! (what client-go's `ResourceEventHandler` gets and kube's reflector does
//! not give). One hub serves any number of handlers; `crate::shared` keeps
//! one per kind for the whole controller manager.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// namespace/name of an object (namespace empty for cluster-scoped objects).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: &str, name: &str) -> ObjKey {
        ObjKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource>(obj: &K) -> ObjKey {
        let meta = obj.meta();
        ObjKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The local cache of an informer.
pub struct Cache<K> {
    map: Arc<RwLock<HashMap<ObjKey, Arc<K>>>>,
    synced: Arc<AtomicBool>,
    synced_notify: Arc<Notify>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            map: self.map.clone(),
            synced: self.synced.clone(),
            synced_notify: self.synced_notify.clone(),
        }
    }
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            map: Arc::default(),
            synced: Arc::default(),
            synced_notify: Arc::default(),
        }
    }
}

impl<K> Cache<K> {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<ObjKey, Arc<K>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<ObjKey, Arc<K>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &impl CacheKey<K>) -> Option<Arc<K>> {
        key.with_key(|key| self.read().get(key).cloned())
    }

    /// Every object (as a reflector `Store::state`).
    pub fn state(&self) -> Vec<Arc<K>> {
        self.list()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    pub fn keys(&self) -> Vec<ObjKey> {
        self.read().keys().cloned().collect()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .iter()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn filter(&self, mut pred: impl FnMut(&K) -> bool) -> Vec<Arc<K>> {
        self.read().values().filter(|v| pred(v)).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Wait until the first list has been loaded.
    pub async fn wait_synced(&self) {
        loop {
            let notified = self.synced_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }
}

/// What changed.
pub enum Change<K> {
    /// Added (`old` is None) or updated.
    Apply {
        old: Option<Arc<K>>,
        new: Arc<K>,
    },
    Delete(Arc<K>),
}

/// A key a [`Cache`] can be searched by: an [`ObjKey`] or a reflector `ObjectRef`.
pub trait CacheKey<K> {
    fn with_key<R>(&self, f: impl FnOnce(&ObjKey) -> R) -> R;
}

impl<K> CacheKey<K> for ObjKey {
    fn with_key<R>(&self, f: impl FnOnce(&ObjKey) -> R) -> R {
        f(self)
    }
}

impl<K: kube::runtime::reflector::Lookup> CacheKey<K> for kube::runtime::reflector::ObjectRef<K> {
    fn with_key<R>(&self, f: impl FnOnce(&ObjKey) -> R) -> R {
        f(&ObjKey {
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        })
    }
}

/// A raw watch-event handler: the event after the cache applied it, and the
/// object's previous state (for `Apply`/`Delete`/`InitApply`; `None` if unknown).
type RawHandler<K> = Box<dyn FnMut(&watcher::Event<K>, Option<Arc<K>>) + Send>;
/// A change handler (see [`Change`]).
type ChangeHandler<K> = Box<dyn FnMut(Change<K>) + Send>;

enum Handler<K> {
    Raw(RawHandler<K>),
    Change(ChangeHandler<K>),
}

struct HubState<K> {
    /// The objects of a list in progress (between `Init` and `InitDone`).
    listing: Option<HashMap<ObjKey, Arc<K>>>,
    handlers: Vec<(u64, Handler<K>)>,
    next_id: u64,
}

/// One watch's cache and the handlers it feeds (a client-go shared
/// informer): every event is applied to the cache, then handed to every
/// registered handler in registration order, synchronously, so no handler
/// can lag behind or lose an event. A handler registered late is first
/// replayed the current state, as if it had opened its own watch.
pub struct Hub<K> {
    cache: Cache<K>,
    state: Mutex<HubState<K>>,
}

/// Keeps a handler registered on a [`Hub`]; dropping it unregisters it.
pub struct Registration<K> {
    hub: Weak<Hub<K>>,
    id: u64,
}

impl<K> Drop for Registration<K> {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            // Dropped after the lock is released (a handler may own anything).
            let removed = {
                let mut st = hub.lock();
                let at = st.handlers.iter().position(|(id, _)| *id == self.id);
                at.map(|at| st.handlers.remove(at))
            };
            drop(removed);
        }
    }
}

impl<K> Hub<K> {
    fn lock(&self) -> MutexGuard<'_, HubState<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Resource + Clone + Send + Sync + 'static> Hub<K> {
    /// A hub filling `cache`.
    pub fn new(cache: Cache<K>) -> Arc<Hub<K>> {
        Arc::new(Hub {
            cache,
            state: Mutex::new(HubState {
                listing: None,
                handlers: Vec::new(),
                next_id: 0,
            }),
        })
    }

    /// The cache this hub keeps current.
    pub fn cache(&self) -> Cache<K> {
        self.cache.clone()
    }

    fn register(self: &Arc<Self>, mut handler: Handler<K>) -> Registration<K> {
        let mut st = self.lock();
        // Replay what a watch of its own would have shown it so far.
        match &mut handler {
            Handler::Raw(h) => {
                if let Some(listing) = &st.listing {
                    h(&watcher::Event::Init, None);
                    for obj in listing.values() {
                        h(&watcher::Event::InitApply(K::clone(obj)), None);
                    }
                } else if self.cache.is_synced() {
                    h(&watcher::Event::Init, None);
                    for obj in self.cache.list() {
                        h(&watcher::Event::InitApply(K::clone(&obj)), None);
                    }
                    h(&watcher::Event::InitDone, None);
                }
            }
            Handler::Change(h) => {
                if self.cache.is_synced() {
                    for new in self.cache.list() {
                        h(Change::Apply { old: None, new });
                    }
                }
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        st.handlers.push((id, handler));
        Registration {
            hub: Arc::downgrade(self),
            id,
        }
    }

    /// Register a raw watch-event handler (see [`crate::loopkit::informer`]).
    pub fn register_raw(
        self: &Arc<Self>,
        handler: impl FnMut(&watcher::Event<K>, Option<Arc<K>>) + Send + 'static,
    ) -> Registration<K> {
        self.register(Handler::Raw(Box::new(handler)))
    }

    /// Register a change handler (see [`run`]).
    pub fn register_changes(
        self: &Arc<Self>,
        handler: impl FnMut(Change<K>) + Send + 'static,
    ) -> Registration<K> {
        self.register(Handler::Change(Box::new(handler)))
    }

    /// Apply one watch event to the cache, then hand it to every handler.
    pub fn apply(&self, event: watcher::Event<K>, kind: &str) {
        let mut st = self.lock();
        let st = &mut *st;
        let has_raw = st
            .handlers
            .iter()
            .any(|(_, h)| matches!(h, Handler::Raw(_)));
        let has_change = st
            .handlers
            .iter()
            .any(|(_, h)| matches!(h, Handler::Change(_)));
        match event {
            watcher::Event::Init => {
                st.listing = Some(HashMap::new());
                raw(&mut st.handlers, &watcher::Event::Init, None);
            }
            watcher::Event::InitApply(obj) => {
                let key = ObjKey::of(&obj);
                let old = if has_raw { self.cache.get(&key) } else { None };
                // The listed object is not visible before InitDone: hand it out first.
                let event = watcher::Event::InitApply(obj);
                raw(&mut st.handlers, &event, old);
                if let watcher::Event::InitApply(obj) = event {
                    st.listing
                        .get_or_insert_with(HashMap::new)
                        .insert(key, Arc::new(obj));
                }
            }
            watcher::Event::InitDone => {
                let fresh = st.listing.take().unwrap_or_default();
                let fresh_list: Vec<(ObjKey, Arc<K>)> = if has_change {
                    fresh.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                } else {
                    Vec::new()
                };
                let count = fresh.len();
                let previous = std::mem::replace(&mut *self.cache.write(), fresh);
                if !self.cache.synced.swap(true, Ordering::AcqRel) {
                    tracing::debug!(kind, count, "informer synced");
                }
                self.cache.synced_notify.notify_waiters();
                raw(&mut st.handlers, &watcher::Event::InitDone, None);
                if has_change {
                    for (key, new) in &fresh_list {
                        let old = previous.get(key).cloned();
                        let unchanged = old.as_ref().is_some_and(|o| {
                            o.meta().resource_version == new.meta().resource_version
                        });
                        if !unchanged {
                            changes(&mut st.handlers, || Change::Apply {
                                old: old.clone(),
                                new: new.clone(),
                            });
                        }
                    }
                    let fresh_keys: std::collections::HashSet<&ObjKey> =
                        fresh_list.iter().map(|(k, _)| k).collect();
                    for (key, old) in &previous {
                        if !fresh_keys.contains(key) {
                            changes(&mut st.handlers, || Change::Delete(old.clone()));
                        }
                    }
                }
            }
            watcher::Event::Apply(obj) => {
                let key = ObjKey::of(&obj);
                let event = if has_raw {
                    Some(watcher::Event::Apply(obj.clone()))
                } else {
                    None
                };
                let new = Arc::new(obj);
                let old = self.cache.write().insert(key, new.clone());
                if let Some(event) = &event {
                    raw(&mut st.handlers, event, old.clone());
                }
                changes(&mut st.handlers, || Change::Apply {
                    old: old.clone(),
                    new: new.clone(),
                });
            }
            watcher::Event::Delete(obj) => {
                let old = self.cache.write().remove(&ObjKey::of(&obj));
                let event = watcher::Event::Delete(obj);
                raw(&mut st.handlers, &event, old);
                if let watcher::Event::Delete(obj) = event {
                    let gone = Arc::new(obj);
                    changes(&mut st.handlers, || Change::Delete(gone.clone()));
                }
            }
        }
    }
}

fn raw<K>(handlers: &mut [(u64, Handler<K>)], event: &watcher::Event<K>, old: Option<Arc<K>>) {
    for (_, h) in handlers.iter_mut() {
        if let Handler::Raw(h) = h {
            h(event, old.clone());
        }
    }
}

fn changes<K>(handlers: &mut [(u64, Handler<K>)], change: impl Fn() -> Change<K>) {
    for (_, h) in handlers.iter_mut() {
        if let Handler::Change(h) = h {
            h(change());
        }
    }
}

/// Feed `hub` from a watch of `api` until dropped (errors are retried with backoff).
pub async fn watch_into<K>(api: Api<K>, config: watcher::Config, hub: Arc<Hub<K>>)
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object")
        .to_string();
    tracing::debug!(kind, "opening watch");
    let stream = watcher(api, config).default_backoff();
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => hub.apply(event, &kind),
            Err(e) => tracing::debug!(kind, error = %e, "watch failed; retrying"),
        }
    }
}

/// Run a watch of `api` into `cache`, calling `handler` after every change
/// has been applied to the cache. Never returns (errors are retried with
/// backoff); drop the future to stop.
pub async fn run<K, F>(api: Api<K>, config: watcher::Config, cache: Cache<K>, handler: F)
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
    F: FnMut(Change<K>) + Send + 'static,
{
    let hub = Hub::new(cache);
    let _registration = hub.register_changes(handler);
    watch_into(api, config, hub).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn list(hub: &Hub<ConfigMap>, objs: &[ConfigMap]) {
        hub.apply(watcher::Event::Init, "ConfigMap");
        for o in objs {
            hub.apply(watcher::Event::InitApply(o.clone()), "ConfigMap");
        }
        hub.apply(watcher::Event::InitDone, "ConfigMap");
    }

    type Log = Arc<Mutex<Vec<String>>>;

    fn describe_change(c: &Change<ConfigMap>) -> String {
        let name = |o: &ConfigMap| {
            format!(
                "{}@{}",
                o.metadata.name.clone().unwrap_or_default(),
                o.metadata.resource_version.clone().unwrap_or_default()
            )
        };
        match c {
            Change::Apply { old, new } => format!(
                "apply {} old={}",
                name(new),
                old.as_deref().map(name).unwrap_or_else(|| "-".into())
            ),
            Change::Delete(o) => format!("delete {}", name(o)),
        }
    }

    fn change_log(hub: &Arc<Hub<ConfigMap>>) -> (Log, Registration<ConfigMap>) {
        let log = Log::default();
        let l = log.clone();
        let reg = hub.register_changes(move |c| l.lock().unwrap().push(describe_change(&c)));
        (log, reg)
    }

    fn raw_log(hub: &Arc<Hub<ConfigMap>>) -> (Log, Registration<ConfigMap>) {
        let log = Log::default();
        let l = log.clone();
        let reg = hub.register_raw(move |ev, old| {
            let s = match ev {
                watcher::Event::Init => "init".to_string(),
                watcher::Event::InitDone => "done".to_string(),
                watcher::Event::InitApply(o) => {
                    format!("list {}", o.metadata.name.clone().unwrap_or_default())
                }
                watcher::Event::Apply(o) => {
                    format!("apply {}", o.metadata.name.clone().unwrap_or_default())
                }
                watcher::Event::Delete(o) => {
                    format!("delete {}", o.metadata.name.clone().unwrap_or_default())
                }
            };
            let old = old
                .and_then(|o| o.metadata.resource_version.clone())
                .unwrap_or_else(|| "-".into());
            l.lock().unwrap().push(format!("{s} old={old}"));
        });
        (log, reg)
    }

    fn sorted(log: &Log) -> Vec<String> {
        let mut v = log.lock().unwrap().clone();
        v.sort();
        v
    }

    #[test]
    fn change_handlers_see_relist_diffs_and_updates() {
        let hub = Hub::new(Cache::default());
        let (log, _reg) = change_log(&hub);
        list(&hub, &[cm("a", "1"), cm("b", "1")]);
        assert!(hub.cache().is_synced());
        assert_eq!(sorted(&log), ["apply a@1 old=-", "apply b@1 old=-"]);
        log.lock().unwrap().clear();

        hub.apply(watcher::Event::Apply(cm("a", "2")), "ConfigMap");
        hub.apply(watcher::Event::Delete(cm("b", "3")), "ConfigMap");
        assert_eq!(*log.lock().unwrap(), ["apply a@2 old=a@1", "delete b@3"]);
        assert!(hub.cache().get(&ObjKey::new("ns", "b")).is_none());
        log.lock().unwrap().clear();

        // A relist: unchanged objects are quiet, vanished ones are deleted.
        hub.apply(watcher::Event::Apply(cm("c", "4")), "ConfigMap");
        log.lock().unwrap().clear();
        list(&hub, &[cm("a", "2"), cm("d", "5")]);
        assert_eq!(sorted(&log), ["apply d@5 old=-", "delete c@4"]);
        assert_eq!(hub.cache().len(), 2);
    }

    #[test]
    fn late_handlers_are_replayed_the_current_state() {
        let hub = Hub::new(Cache::default());
        // Registered before anything was listed: nothing to replay.
        let (early, _r0) = raw_log(&hub);
        assert!(early.lock().unwrap().is_empty());
        list(&hub, &[cm("a", "1"), cm("b", "1")]);

        let (changes, _r1) = change_log(&hub);
        assert_eq!(sorted(&changes), ["apply a@1 old=-", "apply b@1 old=-"]);
        let (raw, _r2) = raw_log(&hub);
        let got = raw.lock().unwrap().clone();
        assert_eq!(got.first().map(String::as_str), Some("init old=-"));
        assert_eq!(got.last().map(String::as_str), Some("done old=-"));
        assert_eq!(
            sorted(&raw),
            ["done old=-", "init old=-", "list a old=-", "list b old=-"]
        );

        // Joining in the middle of a relist: the part listed so far, then the rest.
        hub.apply(watcher::Event::Init, "ConfigMap");
        hub.apply(watcher::Event::InitApply(cm("x", "7")), "ConfigMap");
        let (mid, _r3) = raw_log(&hub);
        hub.apply(watcher::Event::InitApply(cm("a", "8")), "ConfigMap");
        hub.apply(watcher::Event::InitDone, "ConfigMap");
        assert_eq!(
            *mid.lock().unwrap(),
            ["init old=-", "list x old=-", "list a old=1", "done old=-"]
        );
        // Registered earlier, the first raw handler saw the whole relist.
        assert!(early.lock().unwrap().ends_with(&[
            "init old=-".into(),
            "list x old=-".into(),
            "list a old=1".into(),
            "done old=-".into()
        ]));
    }

    #[test]
    fn dropped_registrations_stop_receiving() {
        let hub = Hub::new(Cache::default());
        let (log, reg) = change_log(&hub);
        let (other, _keep) = change_log(&hub);
        hub.apply(watcher::Event::Apply(cm("a", "1")), "ConfigMap");
        drop(reg);
        hub.apply(watcher::Event::Apply(cm("a", "2")), "ConfigMap");
        assert_eq!(*log.lock().unwrap(), ["apply a@1 old=-"]);
        assert_eq!(
            *other.lock().unwrap(),
            ["apply a@1 old=-", "apply a@2 old=a@1"]
        );
    }
}
