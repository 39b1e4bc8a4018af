//! The watch cache: every object of the cluster decoded in memory, fed by
//! one store watch, with a ring of recent events. LIST, GET and WATCH are
//! served from here, so reads never touch the store (kube-apiserver's
//! cacher, k8s.io/apiserver/pkg/storage/cacher).
//!
//! **Invariant:** the cache applies store events in revision order, and a
//! reader that asked for revision `r` (see [`WatchCache::sync_to`]) sees every
//! write with revision `<= r`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use skiff_store::{Event, KeyValue, Store, StoreError, WatchStream};
use tokio::sync::{mpsc, watch};

use crate::status::ApiError;

/// One object as served: decoded, with its resourceVersion set, and encoded
/// once so that lists and watches copy bytes instead of re-serializing.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub value: Value,
    pub bytes: Bytes,
    pub revision: i64,
    /// The protobuf message encoding (without the `k8s\0` envelope, as a
    /// list's items repeat it), made on first use by a protobuf client;
    /// None when the kind has no protobuf form.
    pub protobuf: OnceLock<Option<Bytes>>,
}

impl CachedObject {
    /// The object's protobuf message encoding, encoded once per object version.
    pub fn protobuf(&self) -> Option<&Bytes> {
        self.protobuf
            .get_or_init(|| match skiff_api::protobuf::encode_object(&self.value) {
                Ok(raw) => Some(Bytes::from(raw)),
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "object has no protobuf encoding");
                    None
                }
            })
            .as_ref()
    }
}

pub type ObjRef = Arc<CachedObject>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct CacheEvent {
    pub revision: i64,
    pub kind: EventType,
    /// The object after the event (for a delete: its last state, with the
    /// delete's revision as resourceVersion).
    pub object: ObjRef,
    pub prev: Option<ObjRef>,
}

struct Watcher {
    id: u64,
    prefix: String,
    tx: mpsc::Sender<Arc<CacheEvent>>,
}

struct State {
    revision: i64,
    /// Events after this revision are in `events`.
    history_start: i64,
    objects: BTreeMap<String, ObjRef>,
    /// How many objects each key prefix ending in '/' holds (every
    /// ancestor of every key), kept as objects come and go, so that a
    /// request's cost is known before it runs (API Priority and Fairness
    /// sizes a LIST by it) without walking the objects.
    counts: HashMap<String, usize>,
    events: VecDeque<Arc<CacheEvent>>,
    /// The encoded size of the objects of `events`.
    events_bytes: usize,
    watchers: Vec<Watcher>,
    next_watcher: u64,
}

/// How much history the cache keeps for watches that resume: at most
/// `events` events and `bytes` bytes of their objects (security review
/// I5: one large object updated over and over must not pin 10⁵ copies).
#[derive(Clone, Copy, Debug)]
pub struct History {
    pub events: usize,
    pub bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            events: 100_000,
            bytes: 256 * 1024 * 1024,
        }
    }
}

pub struct WatchCache {
    state: RwLock<State>,
    revision_tx: watch::Sender<i64>,
    store: Arc<dyn Store>,
    history: History,
}

/// A watch on the cache: the objects or events it starts from, then the
/// later events (see [`WatchCache::watch`]).
#[derive(Debug)]
pub struct Subscription {
    pub initial: Vec<Arc<CacheEvent>>,
    /// The cache revision `initial` reflects.
    pub revision: i64,
    pub events: Events,
}

/// The events of a [`Subscription`] after its initial set.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Arc<CacheEvent>>,
    after: i64,
}

impl Events {
    /// The next event, None once the cache dropped the watcher (a slow
    /// consumer, a re-list): its client watches again. Events the initial
    /// set already reflects are skipped.
    pub async fn recv(&mut self) -> Option<Arc<CacheEvent>> {
        loop {
            let ev = self.rx.recv().await?;
            if ev.revision > self.after {
                return Some(ev);
            }
        }
    }
}

/// Every prefix ending in '/' of `key`, the key itself excluded.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').map(move |(i, _)| &key[..=i])
}

fn count_in(counts: &mut HashMap<String, usize>, key: &str, added: bool) {
    for prefix in ancestors(key) {
        if added {
            *counts.entry(prefix.to_string()).or_default() += 1;
        } else if let Some(n) = counts.get_mut(prefix) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(prefix);
            }
        }
    }
}

/// Decode a stored value into a served object.
pub fn decode(key: &str, value: &[u8], revision: i64) -> Option<CachedObject> {
    let mut v: Value = match serde_json::from_slice(value) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(key, error = %e, "undecodable object in store, skipped");
            return None;
        }
    };
    set_resource_version(&mut v, revision);
    // Splice the resourceVersion into the stored encoding rather than
    // encoding the whole object again.
    let bytes = match splice_resource_version(value, revision) {
        Some(b) => Bytes::from(b),
        None => Bytes::from(serde_json::to_vec(&v).ok()?),
    };
    Some(CachedObject {
        key: key.to_string(),
        value: v,
        bytes,
        revision,
        protobuf: OnceLock::new(),
    })
}

/// Insert `"resourceVersion":"<rev>"` first in the top-level `metadata`
/// object of compact JSON. None when there is no such object (or a
/// resourceVersion is already there).
pub fn splice_resource_version(json: &[u8], revision: i64) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"metadata\":{";
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < json.len() {
        let c = json[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else {
            match c {
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.saturating_sub(1),
                b'"' => {
                    if depth == 1 && json[i..].starts_with(KEY) {
                        let at = i + KEY.len();
                        let rest = &json[at..];
                        if rest.starts_with(b"\"resourceVersion\"") {
                            return None;
                        }
                        let field = format!("\"resourceVersion\":\"{revision}\"");
                        let mut out = Vec::with_capacity(json.len() + field.len() + 1);
                        out.extend_from_slice(&json[..at]);
                        out.extend_from_slice(field.as_bytes());
                        if rest.first() != Some(&b'}') {
                            out.push(b',');
                        }
                        out.extend_from_slice(rest);
                        return Some(out);
                    }
                    in_string = true;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

pub fn set_resource_version(v: &mut Value, revision: i64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

const WATCHER_BUFFER: usize = 10_000;

impl WatchCache {
    /// Load everything under /registry/ and follow the store from there.
    pub async fn start(
        store: Arc<dyn Store>,
        history: History,
    ) -> Result<Arc<WatchCache>, StoreError> {
        let (objects, revision, stream) = Self::load(&*store).await?;
        let (revision_tx, _) = watch::channel(revision);
        let cache = Arc::new(WatchCache {
            state: RwLock::new(State {
                revision,
                history_start: revision,
                counts: counts_of(&objects),
                objects,
                events: VecDeque::new(),
                events_bytes: 0,
                watchers: Vec::new(),
                next_watcher: 0,
            }),
            revision_tx,
            store,
            history,
        });
        let feeder = cache.clone();
        tokio::spawn(async move { feeder.feed(stream).await });
        Ok(cache)
    }

    async fn load(
        store: &dyn Store,
    ) -> Result<(BTreeMap<String, ObjRef>, i64, WatchStream), StoreError> {
        let range = store.range("/registry/", None, 0).await?;
        let mut objects = BTreeMap::new();
        for kv in range.kvs {
            if let Some(o) = decode(&kv.key, &kv.value, kv.mod_revision) {
                objects.insert(kv.key.clone(), Arc::new(o));
            }
        }
        let stream = store.watch("/registry/", range.revision + 1).await?;
        Ok((objects, range.revision, stream))
    }

    async fn feed(self: Arc<Self>, mut stream: WatchStream) {
        loop {
            match stream.next().await {
                Some(Ok(batch)) => self.apply(batch.events, batch.revision),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "store watch failed; reloading the watch cache");
                    stream = self.reload().await;
                }
                None => {
                    tracing::warn!("store watch ended; reloading the watch cache");
                    stream = self.reload().await;
                }
            }
        }
    }

    /// Re-list after a broken watch. Watchers are dropped (their clients
    /// re-watch) and history restarts at the new revision.
    async fn reload(&self) -> WatchStream {
        loop {
            match Self::load(&*self.store).await {
                Ok((objects, revision, stream)) => {
                    let counts = counts_of(&objects);
                    let mut st = self.write_state();
                    st.objects = objects;
                    st.counts = counts;
                    st.events.clear();
                    st.events_bytes = 0;
                    st.watchers.clear();
                    st.revision = revision;
                    st.history_start = revision;
                    drop(st);
                    self.revision_tx.send_replace(revision);
                    return stream;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache reload failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, events: Vec<Event>, batch_revision: i64) {
        // Decode outside the lock.
        let mut decoded: Vec<(i64, EventType, Option<CachedObject>, String)> =
            Vec::with_capacity(events.len());
        for ev in &events {
            match ev {
                Event::Put { kv, prev } => {
                    let kind = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    decoded.push((
                        kv.mod_revision,
                        kind,
                        decode(&kv.key, &kv.value, kv.mod_revision),
                        kv.key.clone(),
                    ));
                }
                Event::Delete { prev, revision } => {
                    decoded.push((
                        *revision,
                        EventType::Deleted,
                        decode_deleted(prev, *revision),
                        prev.key.clone(),
                    ));
                }
            }
        }
        let mut st = self.write_state();
        for (revision, kind, obj, key) in decoded {
            if revision <= st.revision {
                continue;
            }
            st.revision = revision;
            let Some(obj) = obj else {
                if kind == EventType::Deleted && st.objects.remove(&key).is_some() {
                    count_in(&mut st.counts, &key, false);
                }
                continue;
            };
            let obj = Arc::new(obj);
            let (prev, kind) = if kind == EventType::Deleted {
                let prev = st.objects.remove(&key);
                if prev.is_some() {
                    count_in(&mut st.counts, &key, false);
                }
                (prev, kind)
            } else {
                let prev = st.objects.insert(key.clone(), obj.clone());
                if prev.is_none() {
                    count_in(&mut st.counts, &key, true);
                }
                // A put over a key the cache did not have is an add.
                let kind = if prev.is_none() {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                (prev, kind)
            };
            let event = Arc::new(CacheEvent {
                revision,
                kind,
                object: obj,
                prev,
            });
            st.events_bytes = st.events_bytes.saturating_add(event.object.bytes.len());
            st.events.push_back(event.clone());
            while st.events.len() > self.history.events
                || (st.events_bytes > self.history.bytes && st.events.len() > 1)
            {
                if let Some(old) = st.events.pop_front() {
                    st.history_start = old.revision;
                    st.events_bytes = st.events_bytes.saturating_sub(old.object.bytes.len());
                }
            }
            st.watchers.retain(|w| {
                if !key.starts_with(&w.prefix) {
                    return !w.tx.is_closed();
                }
                match w.tx.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(watcher = w.id, prefix = %w.prefix, "terminating watcher: slow consumer");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        if batch_revision > st.revision {
            st.revision = batch_revision;
        }
        let revision = st.revision;
        drop(st);
        self.revision_tx.send_replace(revision);
    }

    /// The cache's revision.
    pub fn revision(&self) -> i64 {
        *self.revision_tx.borrow()
    }

    /// Wait until the cache has applied revision `revision`.
    pub async fn wait_for(&self, revision: i64) -> Result<i64, ApiError> {
        let mut rx = self.revision_tx.subscribe();
        let wait = rx.wait_for(|r| *r >= revision);
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(r)) => Ok(*r),
            Ok(Err(_)) => Err(ApiError::unavailable("watch cache stopped")),
            Err(_) => Err(ApiError::new(
                504,
                "Timeout",
                format!(
                    "Too large resource version: {revision}, current: {}",
                    self.revision()
                ),
            )),
        }
    }

    /// Make the cache at least as new as the store is now (a consistent read).
    pub async fn sync(&self) -> Result<i64, ApiError> {
        let revision = self
            .store
            .current_revision()
            .await
            .map_err(|e| ApiError::from_store(e, "", "", ""))?;
        self.wait_for(revision).await
    }

    pub fn get(&self, key: &str) -> Option<ObjRef> {
        self.read_state().objects.get(key).cloned()
    }

    /// Objects under `prefix` after `start_after`, those that `keep` accepts,
    /// at most `limit` (0: all). Returns them, the cache revision, and
    /// whether more matching objects follow.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keep: impl Fn(&CachedObject) -> bool,
    ) -> (Vec<ObjRef>, i64, bool) {
        let st = self.read_state();
        let start = match start_after {
            Some(k) if k.starts_with(prefix) => Bound::Excluded(k.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut out = Vec::new();
        let mut more = false;
        for (k, o) in st.objects.range((start, Bound::Unbounded)) {
            if !k.starts_with(prefix) {
                break;
            }
            if keep(o) {
                if limit > 0 && out.len() == limit {
                    more = true;
                    break;
                }
                out.push(o.clone());
            }
        }
        (out, st.revision, more)
    }

    /// How many objects are under `prefix` (ending in '/'), in constant time.
    pub fn count(&self, prefix: &str) -> usize {
        self.read_state().counts.get(prefix).copied().unwrap_or(0)
    }

    /// Start a watch on `prefix`. With `from` = None, the current objects
    /// come first as ADDED events; with `from` = Some(r), every event after
    /// revision r is replayed (410 Gone when history no longer reaches r).
    ///
    /// The watcher is registered under a short write lock and the initial
    /// set is read under the read lock (security review I5: not built
    /// while every reader and the feed wait); events applied in between
    /// reach both, and [`Events::recv`] skips those the initial set holds.
    pub fn watch(&self, prefix: &str, from: Option<i64>) -> Result<Subscription, ApiError> {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let gone =
            |r: i64, start: i64| ApiError::gone(format!("too old resource version: {r} ({start})"));
        {
            let mut st = self.write_state();
            if let Some(r) = from
                && r < st.history_start
            {
                return Err(gone(r, st.history_start));
            }
            let id = st.next_watcher;
            st.next_watcher += 1;
            st.watchers.push(Watcher {
                id,
                prefix: prefix.to_string(),
                tx,
            });
        }
        let st = self.read_state();
        let initial: Vec<Arc<CacheEvent>> = match from {
            None => st
                .objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, o)| {
                    Arc::new(CacheEvent {
                        revision: o.revision,
                        kind: EventType::Added,
                        object: o.clone(),
                        prev: None,
                    })
                })
                .collect(),
            Some(r) => {
                // History may have moved on since the watcher was registered.
                if r < st.history_start {
                    return Err(gone(r, st.history_start));
                }
                // Events are in revision order: find the first after r.
                let first = st.events.partition_point(|e| e.revision <= r);
                st.events
                    .range(first..)
                    .filter(|e| e.object.key.starts_with(prefix))
                    .cloned()
                    .collect()
            }
        };
        let revision = st.revision;
        Ok(Subscription {
            initial,
            revision,
            events: Events {
                rx,
                after: revision,
            },
        })
    }

    pub fn watcher_count(&self) -> usize {
        self.read_state().watchers.len()
    }
}

fn counts_of(objects: &BTreeMap<String, ObjRef>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for key in objects.keys() {
        count_in(&mut counts, key, true);
    }
    counts
}

fn decode_deleted(prev: &KeyValue, revision: i64) -> Option<CachedObject> {
    decode(&prev.key, &prev.value, revision)
}

/// What [`follow`] hands its handler: an object put (added or modified),
/// or the key of one deleted.
pub enum Followed<'a> {
    Put(&'a CachedObject),
    Delete(&'a str),
}

type Keys = std::collections::HashSet<String>;

/// Start a watch on `prefix` and hand over its current objects; keys
/// handed over before that are no longer there are handed over as deletes.
fn relist(
    cache: &WatchCache,
    prefix: &str,
    known: &mut Keys,
    handler: &mut impl FnMut(Followed<'_>),
) -> Option<Events> {
    let Subscription {
        initial, events, ..
    } = cache.watch(prefix, None).ok()?;
    let mut now = Keys::with_capacity(initial.len());
    for ev in &initial {
        handler(Followed::Put(&ev.object));
        now.insert(ev.object.key.clone());
    }
    for gone in known.difference(&now) {
        handler(Followed::Delete(gone));
    }
    *known = now;
    Some(events)
}

/// Feed `handler` every object under `prefix` and every later change, for
/// in-memory indexes of the API server itself (the RBAC and Node
/// authorizers). Returns once the objects there now have been handled; a
/// task follows the changes from then on, until the cache is dropped. A
/// watch the cache ends (a slow consumer, a re-list) is started again, and
/// keys that vanished meanwhile are handed over as deletes.
pub fn follow(
    cache: &Arc<WatchCache>,
    prefix: &str,
    mut handler: impl FnMut(Followed<'_>) + Send + 'static,
) {
    let mut known = Keys::new();
    let Some(mut rx) = relist(cache, prefix, &mut known, &mut handler) else {
        return;
    };
    let weak = Arc::downgrade(cache);
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        loop {
            while let Some(ev) = rx.recv().await {
                if ev.kind == EventType::Deleted {
                    known.remove(&ev.object.key);
                    handler(Followed::Delete(&ev.object.key));
                } else {
                    known.insert(ev.object.key.clone());
                    handler(Followed::Put(&ev.object));
                }
            }
            let Some(cache) = weak.upgrade() else { return };
            tracing::info!(%prefix, "index watch ended; following again from a fresh list");
            match relist(&cache, &prefix, &mut known, &mut handler) {
                Some(next) => rx = next,
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache() -> (tempfile::TempDir, Arc<dyn Store>, Arc<WatchCache>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(skiff_store_sqlite::SqliteStore::open(&dir.path().join("db")).unwrap());
        let history = History {
            events: 3,
            ..History::default()
        };
        let cache = WatchCache::start(store.clone(), history).await.unwrap();
        (dir, store, cache)
    }

    fn obj(name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"metadata": {"name": name}})).unwrap()
    }

    #[test]
    fn splicing_matches_reencoding() {
        for v in [
            serde_json::json!({"apiVersion": "v1", "data": {"metadata": {"x": "\"metadata\":{"}}, "kind": "ConfigMap", "metadata": {"name": "a"}}),
            serde_json::json!({"kind": "X", "metadata": {}}),
            serde_json::json!({"a": "\\\"metadata\":{", "metadata": {"labels": {"k": "v"}, "name": "n"}}),
        ] {
            let raw = serde_json::to_vec(&v).unwrap();
            let spliced: serde_json::Value =
                serde_json::from_slice(&splice_resource_version(&raw, 42).unwrap()).unwrap();
            let mut want = v.clone();
            set_resource_version(&mut want, 42);
            assert_eq!(spliced, want);
        }
        assert!(splice_resource_version(br#"{"kind":"X"}"#, 1).is_none());
    }

    #[tokio::test]
    async fn lists_what_was_written_and_replays_history() {
        let (_d, store, cache) = cache().await;
        let a = store
            .create("/registry/pods/default/a", obj("a"))
            .await
            .unwrap();
        store
            .create("/registry/pods/default/b", obj("b"))
            .await
            .unwrap();
        store.create("/registry/podsx/c", obj("c")).await.unwrap();
        cache.sync().await.unwrap();
        let (items, rev, more) = cache.list("/registry/pods/", None, 0, |_| true);
        assert_eq!(items.len(), 2);
        assert!(!more);
        assert!(rev >= a.mod_revision);
        assert_eq!(
            items[0].value["metadata"]["resourceVersion"],
            a.mod_revision.to_string()
        );
        let (page, _, more) = cache.list("/registry/pods/", None, 1, |_| true);
        assert_eq!(page.len(), 1);
        assert!(more);
        let (rest, _, _) = cache.list("/registry/pods/", Some(&page[0].key), 1, |_| true);
        assert_eq!(rest[0].key, "/registry/pods/default/b");

        let replay = cache
            .watch("/registry/pods/", Some(a.mod_revision))
            .unwrap()
            .initial;
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].object.key, "/registry/pods/default/b");
    }

    #[tokio::test]
    async fn live_events_and_gone() {
        let (_d, store, cache) = cache().await;
        let Subscription {
            initial,
            events: mut rx,
            ..
        } = cache.watch("/registry/pods/", None).unwrap();
        assert!(initial.is_empty());
        let a = store
            .create("/registry/pods/default/a", obj("a"))
            .await
            .unwrap();
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.kind, EventType::Added);
        store
            .update("/registry/pods/default/a", obj("a"), a.mod_revision)
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().kind, EventType::Modified);
        let (_, del_rev) = store.delete("/registry/pods/default/a", 0).await.unwrap();
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.kind, EventType::Deleted);
        assert_eq!(
            ev.object.value["metadata"]["resourceVersion"],
            del_rev.to_string()
        );
        // History holds 3 events: a watch from before the first is gone.
        store
            .create("/registry/pods/default/z", obj("z"))
            .await
            .unwrap();
        cache.sync().await.unwrap();
        let err = cache
            .watch("/registry/pods/", Some(a.mod_revision - 1))
            .unwrap_err();
        assert_eq!(err.code, 410);
    }

    #[tokio::test]
    async fn counts_follow_creates_and_deletes() {
        let (_d, store, cache) = cache().await;
        store.create("/registry/pods/a/x", obj("x")).await.unwrap();
        let y = store.create("/registry/pods/b/y", obj("y")).await.unwrap();
        store.create("/registry/nodes/n", obj("n")).await.unwrap();
        cache.sync().await.unwrap();
        assert_eq!(cache.count("/registry/pods/"), 2);
        assert_eq!(cache.count("/registry/pods/b/"), 1);
        assert_eq!(cache.count("/registry/"), 3);
        store
            .update("/registry/pods/b/y", obj("y"), y.mod_revision)
            .await
            .unwrap();
        store.delete("/registry/pods/a/x", 0).await.unwrap();
        cache.sync().await.unwrap();
        assert_eq!(cache.count("/registry/pods/"), 1);
        assert_eq!(cache.count("/registry/pods/a/"), 0);
        assert_eq!(cache.count("/registry/pods/b/"), 1);
        assert_eq!(cache.count("/registry/po"), 0, "only whole segments");
    }

    /// Security review I5: history is bounded in bytes as well as in events.
    #[tokio::test]
    async fn history_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(skiff_store_sqlite::SqliteStore::open(&dir.path().join("db")).unwrap());
        let history = History {
            events: 1000,
            bytes: 10_000,
        };
        let cache = WatchCache::start(store.clone(), history).await.unwrap();
        let big = |i: usize| {
            serde_json::to_vec(
                &serde_json::json!({"metadata": {"name": "big"}, "data": "x".repeat(3000 + i)}),
            )
            .unwrap()
        };
        let first = store
            .create("/registry/configmaps/d/big", big(0))
            .await
            .unwrap();
        let mut rev = first.mod_revision;
        for i in 1..10 {
            rev = store
                .update("/registry/configmaps/d/big", big(i), rev)
                .await
                .unwrap()
                .mod_revision;
        }
        cache.sync().await.unwrap();
        // Ten versions of ~3 KB do not fit in 10 KB: the oldest are gone.
        let err = cache
            .watch("/registry/configmaps/", Some(first.mod_revision))
            .unwrap_err();
        assert_eq!(err.code, 410);
        let kept = cache
            .watch("/registry/configmaps/", Some(rev - 2))
            .unwrap()
            .initial;
        assert_eq!(kept.len(), 2);
    }

    /// Events applied between a watch's registration and its initial set
    /// are not handed over twice.
    #[tokio::test]
    async fn events_the_initial_set_holds_are_skipped() {
        let (_d, store, cache) = cache().await;
        let mut sub = cache.watch("/registry/pods/", None).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let old = CachedObject {
            key: "/registry/pods/d/a".into(),
            value: serde_json::json!({}),
            bytes: Bytes::new(),
            revision: sub.revision,
            protobuf: OnceLock::new(),
        };
        // As if the feed had sent an event the initial set already holds.
        tx.send(Arc::new(CacheEvent {
            revision: sub.revision,
            kind: EventType::Added,
            object: Arc::new(old),
            prev: None,
        }))
        .await
        .unwrap();
        drop(tx);
        sub.events = Events {
            rx,
            after: sub.revision,
        };
        assert!(sub.events.recv().await.is_none());
        drop(store);
    }
}
