//! Shared informers (↔ client-go's `SharedInformerFactory`): one watch and
//! one cache per kind for the whole controller manager. Every controller
//! registers its handler on the kind's [`Hub`] and reads the same cache, so
//! an object is held once however many controllers look at it.
//!
//! A kind's watch is started on first use (a spawned task) and stopped when
//! the last clone of the [`SharedInformers`] is dropped; `run_all` gives each
//! leadership term a fresh set.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::ctrlutil::informer::{Cache, Change, Hub, watch_into};
use crate::loopkit::Store;

struct Entry {
    hub: Arc<dyn Any + Send + Sync>,
    task: tokio::task::AbortHandle,
}

struct Inner {
    client: kube::Client,
    hubs: Mutex<HashMap<TypeId, Entry>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let hubs = self.hubs.get_mut().unwrap_or_else(|e| e.into_inner());
        for entry in hubs.values() {
            entry.task.abort();
        }
    }
}

/// The shared informers of one controller manager.
#[derive(Clone)]
pub struct SharedInformers {
    inner: Arc<Inner>,
}

impl SharedInformers {
    pub fn new(client: kube::Client) -> SharedInformers {
        SharedInformers {
            inner: Arc::new(Inner {
                client,
                hubs: Mutex::default(),
            }),
        }
    }

    /// The shared informer of every `K` in the cluster, its watch started
    /// on first use (needs a Tokio runtime).
    pub fn get<K>(&self) -> SharedInformer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut hubs = self.inner.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hub) = hubs
            .get(&TypeId::of::<K>())
            .and_then(|e| e.hub.clone().downcast::<Hub<K>>().ok())
        {
            return SharedInformer { hub };
        }
        let hub = Hub::new(Cache::default());
        let api = Api::<K>::all(self.inner.client.clone());
        let task =
            tokio::spawn(watch_into(api, watcher::Config::default(), hub.clone())).abort_handle();
        hubs.insert(
            TypeId::of::<K>(),
            Entry {
                hub: hub.clone(),
                task,
            },
        );
        SharedInformer { hub }
    }

    /// How many kinds are watched (one watch each).
    pub fn watches(&self) -> usize {
        self.inner
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// One kind's shared cache and watch.
pub struct SharedInformer<K> {
    hub: Arc<Hub<K>>,
}

impl<K: Resource + Clone + Send + Sync + 'static> SharedInformer<K> {
    /// The shared cache.
    pub fn cache(&self) -> Cache<K> {
        self.hub.cache()
    }

    /// As [`crate::loopkit::informer`], on the shared watch: the store, and
    /// a future keeping `on_event` registered until dropped.
    pub fn informer<F>(&self, on_event: F) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
    where
        F: FnMut(&watcher::Event<K>, Option<Arc<K>>) + Send + 'static,
    {
        let registration = self.hub.register_raw(on_event);
        let fut = async move {
            let _registration = registration;
            std::future::pending::<()>().await;
        };
        (self.hub.cache(), fut)
    }

    /// As [`crate::ctrlutil::informer::run`], on the shared watch: a future
    /// keeping `handler` registered until dropped.
    pub fn run<F>(&self, handler: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: FnMut(Change<K>) + Send + 'static,
    {
        let registration = self.hub.register_changes(handler);
        async move {
            let _registration = registration;
            std::future::pending::<()>().await;
        }
    }
}
