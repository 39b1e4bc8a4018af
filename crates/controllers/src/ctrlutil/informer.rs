//! A shared-informer equivalent: a watcher feeding a local cache, with an
//! event handler that sees the previous state of every changed object (what
//! client-go's `ResourceEventHandler` gets and kube's reflector does not give).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
        ObjKey { namespace: namespace.to_string(), name: name.to_string() }
    }

    pub fn of<K: Resource>(obj: &K) -> ObjKey {
        let meta = obj.meta();
        ObjKey { namespace: meta.namespace.clone().unwrap_or_default(), name: meta.name.clone().unwrap_or_default() }
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { write!(f, "{}", self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
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
        Cache { map: self.map.clone(), synced: self.synced.clone(), synced_notify: self.synced_notify.clone() }
    }
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache { map: Arc::default(), synced: Arc::default(), synced_notify: Arc::default() }
    }
}

impl<K> Cache<K> {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<ObjKey, Arc<K>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<ObjKey, Arc<K>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    pub fn keys(&self) -> Vec<ObjKey> {
        self.read().keys().cloned().collect()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read().iter().filter(|(k, _)| k.namespace == namespace).map(|(_, v)| v.clone()).collect()
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
    Apply { old: Option<Arc<K>>, new: Arc<K> },
    Delete(Arc<K>),
}

/// Run a watch of `api` into `cache`, calling `handler` after every change
/// has been applied to the cache. Never returns (errors are retried with
/// backoff); drop the future to stop.
pub async fn run<K, F>(api: Api<K>, config: watcher::Config, cache: Cache<K>, mut handler: F)
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
    F: FnMut(Change<K>),
{
    let kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or("object").to_string();
    let stream = watcher(api, config).default_backoff();
    tokio::pin!(stream);
    let mut buffer: Option<HashMap<ObjKey, Arc<K>>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => buffer = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                buffer.get_or_insert_with(HashMap::new).insert(ObjKey::of(&obj), Arc::new(obj));
            }
            Ok(watcher::Event::InitDone) => {
                let fresh = buffer.take().unwrap_or_default();
                let previous = std::mem::replace(&mut *cache.write(), fresh.clone());
                if !cache.synced.swap(true, Ordering::AcqRel) {
                    tracing::debug!(kind, count = fresh.len(), "informer synced");
                }
                cache.synced_notify.notify_waiters();
                for (key, new) in &fresh {
                    let old = previous.get(key).cloned();
                    let unchanged = old.as_ref().is_some_and(|o| o.meta().resource_version == new.meta().resource_version);
                    if !unchanged {
                        handler(Change::Apply { old, new: new.clone() });
                    }
                }
                for (key, old) in previous {
                    if !fresh.contains_key(&key) {
                        handler(Change::Delete(old));
                    }
                }
            }
            Ok(watcher::Event::Apply(obj)) => {
                let key = ObjKey::of(&obj);
                let new = Arc::new(obj);
                let old = cache.write().insert(key, new.clone());
                handler(Change::Apply { old, new });
            }
            Ok(watcher::Event::Delete(obj)) => {
                let key = ObjKey::of(&obj);
                cache.write().remove(&key);
                handler(Change::Delete(Arc::new(obj)));
            }
            Err(e) => tracing::debug!(kind, error = %e, "watch failed; retrying"),
        }
    }
}
