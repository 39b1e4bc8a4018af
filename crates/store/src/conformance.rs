//! The conformance suite every [`Store`] backend must pass.
//!
//! Every check is a public async function taking an `Arc<dyn Store>` (an
//! `Arc` rather than a reference so that the concurrency checks can spawn
//! tokio tasks that share the store). A check panics (through `assert!`) on
//! the first violation. [`run_all`] runs every check in sequence.
//!
//! Usage from a backend's tests (needs a multi-threaded tokio runtime for the
//! concurrency checks to mean something):
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn conformance() {
//!     let store: Arc<dyn Store> = Arc::new(MyBackend::new());
//!     skiff_store::conformance::run_all(store).await;
//! }
//! ```
//!
//! Rules the checks follow so that they can share one store (even one that
//! already holds data, or one that other checks write to at the same time):
//! - each check writes only under its own fresh prefix (see [`unique_prefix`]);
//! - revisions are only compared relative to revisions the check observed;
//! - `compaction` compacts only up to a revision it wrote itself, so checks
//!   that run after it (and create newer revisions) are not affected. Backends
//!   with automatic background compaction should disable it for the suite.
//!
//! Every wait on a watch is bounded by [`WAIT`]; no check asserts on
//! wall-clock duration.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;

use crate::{Event, KeyValue, Store, StoreError, WatchStream};

/// How long a check waits for an expected watch event before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// Runs every check of the suite, one after the other, on `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    create_get(store.clone()).await;
    update_cas(store.clone()).await;
    missing_keys(store.clone()).await;
    unconditional_writes(store.clone()).await;
    revisions_increase(store.clone()).await;
    create_revision_kept(store.clone()).await;
    range_order_and_paging(store.clone()).await;
    sibling_prefix_isolation(store.clone()).await;
    watch_from_now(store.clone()).await;
    watch_replay_then_live(store.clone()).await;
    watch_prev_values(store.clone()).await;
    compaction(store.clone()).await;
    concurrent_writers(store.clone()).await;
    concurrent_cas_counter(store.clone()).await;
    slow_watcher_never_skips(store).await;
}

/// A prefix no other check (or earlier run on a persistent store) has used:
/// `/skiff-conformance/<pid>-<nanos>-<n>/<name>/`.
pub fn unique_prefix(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "/skiff-conformance/{}-{nanos}-{n}/{name}/",
        std::process::id()
    )
}

/// A watch stream with a buffer, so checks can consume one event at a time
/// whatever the backend's batching.
pub struct Watcher {
    stream: WatchStream,
    buffered: VecDeque<Event>,
    last_revision: i64,
}

impl Watcher {
    /// Starts a watch; panics if the backend refuses it.
    pub async fn start(store: &dyn Store, prefix: &str, from_revision: i64) -> Watcher {
        match store.watch(prefix, from_revision).await {
            Ok(stream) => Watcher::new(stream),
            Err(e) => panic!("watch({prefix:?}, {from_revision}) failed: {e}"),
        }
    }

    pub fn new(stream: WatchStream) -> Watcher {
        Watcher {
            stream,
            buffered: VecDeque::new(),
            last_revision: 0,
        }
    }

    /// The next event or the error that ended the stream; `None` when the
    /// stream ended. Checks batch invariants on the way. Panics after [`WAIT`].
    pub async fn next_result(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(Ok(event));
            }
            let item = match tokio::time::timeout(WAIT, self.stream.next()).await {
                Ok(item) => item,
                Err(_) => panic!("no watch event within {WAIT:?}"),
            };
            let batch = match item {
                None => return None,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(batch)) => batch,
            };
            for event in &batch.events {
                assert!(
                    event.revision() > self.last_revision,
                    "watch delivered revision {} after {} (out of order or duplicate)",
                    event.revision(),
                    self.last_revision
                );
                self.last_revision = event.revision();
            }
            assert!(
                batch.revision >= self.last_revision,
                "watch batch revision {} is below its last event's revision {}",
                batch.revision,
                self.last_revision
            );
            self.buffered.extend(batch.events);
        }
    }

    /// The next event; panics on an error, the end of the stream or after [`WAIT`].
    pub async fn next(&mut self) -> Event {
        match self.next_result().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => panic!("watch failed: {e}"),
            None => panic!("watch stream ended"),
        }
    }
}

async fn create(store: &dyn Store, key: &str, value: &[u8]) -> KeyValue {
    match store.create(key, value.to_vec()).await {
        Ok(kv) => kv,
        Err(e) => panic!("create({key}) failed: {e}"),
    }
}

async fn update(store: &dyn Store, key: &str, value: &[u8], expected: i64) -> KeyValue {
    match store.update(key, value.to_vec(), expected).await {
        Ok(kv) => kv,
        Err(e) => panic!("update({key}, expected {expected}) failed: {e}"),
    }
}

async fn delete(store: &dyn Store, key: &str, expected: i64) -> (KeyValue, i64) {
    match store.delete(key, expected).await {
        Ok(r) => r,
        Err(e) => panic!("delete({key}, expected {expected}) failed: {e}"),
    }
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    match store.get(key).await {
        Ok(kv) => kv,
        Err(e) => panic!("get({key}) failed: {e}"),
    }
}

async fn current_revision(store: &dyn Store) -> i64 {
    match store.current_revision().await {
        Ok(r) => r,
        Err(e) => panic!("current_revision failed: {e}"),
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// create returns the new key with create_revision == mod_revision; get sees
/// it; a second create fails with AlreadyExists; get of a missing key is None.
pub async fn create_get(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("create_get");
    let key = format!("{p}a");
    let before = current_revision(store).await;
    let kv = create(store, &key, b"v1").await;
    assert_eq!(kv.key, key);
    assert_eq!(kv.value, b"v1");
    assert!(
        kv.mod_revision > before,
        "create revision {} not above {before}",
        kv.mod_revision
    );
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert_eq!(get(store, &key).await, Some(kv.clone()));
    match store.create(&key, b"v2".to_vec()).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, key),
        other => panic!("second create: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        get(store, &key).await,
        Some(kv),
        "failed create changed the key"
    );
    assert_eq!(get(store, &format!("{p}missing")).await, None);
    // Empty values are values.
    let empty = create(store, &format!("{p}empty"), b"").await;
    assert_eq!(
        get(store, &empty.key).await.map(|kv| kv.value),
        Some(Vec::new())
    );
}

/// update with the right expected revision succeeds; with a stale one fails
/// with Conflict carrying the actual revision, and changes nothing.
pub async fn update_cas(store: Arc<dyn Store>) {
    let store = &*store;
    let key = format!("{}k", unique_prefix("update_cas"));
    let v1 = create(store, &key, b"v1").await;
    let v2 = update(store, &key, b"v2", v1.mod_revision).await;
    assert_eq!(v2.value, b"v2");
    assert!(v2.mod_revision > v1.mod_revision);
    assert_eq!(v2.create_revision, v1.create_revision);
    match store.update(&key, b"v3".to_vec(), v1.mod_revision).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(actual, v2.mod_revision);
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        get(store, &key).await,
        Some(v2.clone()),
        "failed CAS changed the key"
    );
    match store.delete(&key, v1.mod_revision).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(actual, v2.mod_revision);
        }
        other => panic!("stale delete: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        get(store, &key).await,
        Some(v2.clone()),
        "failed CAS delete changed the key"
    );
    let (last, rev) = delete(store, &key, v2.mod_revision).await;
    assert_eq!(last, v2);
    assert!(rev > v2.mod_revision);
    assert_eq!(get(store, &key).await, None);
}

/// update and delete of a missing key fail with NotFound, conditional or not.
pub async fn missing_keys(store: Arc<dyn Store>) {
    let store = &*store;
    let key = format!("{}nope", unique_prefix("missing_keys"));
    for expected in [0, 1, 1_000_000] {
        match store.update(&key, b"x".to_vec(), expected).await {
            Err(StoreError::NotFound(k)) => assert_eq!(k, key),
            other => panic!("update of missing key (expected {expected}): got {other:?}"),
        }
        match store.delete(&key, expected).await {
            Err(StoreError::NotFound(k)) => assert_eq!(k, key),
            other => panic!("delete of missing key (expected {expected}): got {other:?}"),
        }
    }
    assert_eq!(
        get(store, &key).await,
        None,
        "a failed update created the key"
    );
    // A deleted key is missing again.
    let kv = create(store, &key, b"x").await;
    delete(store, &key, 0).await;
    match store.update(&key, b"y".to_vec(), kv.mod_revision).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("update of deleted key: got {other:?}"),
    }
}

/// expected_revision 0 means unconditional for update and delete; a deleted
/// key can be created again with a new create_revision.
pub async fn unconditional_writes(store: Arc<dyn Store>) {
    let store = &*store;
    let key = format!("{}k", unique_prefix("unconditional"));
    let v1 = create(store, &key, b"v1").await;
    let v2 = update(store, &key, b"v2", 0).await;
    assert!(v2.mod_revision > v1.mod_revision);
    assert_eq!(v2.create_revision, v1.create_revision);
    let v3 = update(store, &key, b"v3", 0).await;
    assert!(v3.mod_revision > v2.mod_revision);
    let (last, rev) = delete(store, &key, 0).await;
    assert_eq!(last, v3);
    assert!(rev > v3.mod_revision);
    assert_eq!(get(store, &key).await, None);
    let again = create(store, &key, b"again").await;
    assert!(again.create_revision > rev);
    assert_eq!(again.create_revision, again.mod_revision);
}

/// Every write, on any key, gets a revision above every earlier one; the
/// current revision is at least the last write's.
pub async fn revisions_increase(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("revisions");
    let mut last = current_revision(store).await;
    let mut seen = Vec::new();
    for i in 0..20 {
        let key = format!("{p}k{}", i % 5);
        let rev = if i < 5 {
            create(store, &key, b"c").await.mod_revision
        } else if i % 7 == 0 {
            let (_, rev) = delete(store, &key, 0).await;
            create(store, &key, b"re").await;
            rev
        } else {
            update(store, &key, format!("u{i}").as_bytes(), 0)
                .await
                .mod_revision
        };
        assert!(rev > last, "revision {rev} not above previous {last}");
        seen.push(rev);
        last = current_revision(store).await;
        assert!(
            last >= rev,
            "current_revision {last} below acknowledged write {rev}"
        );
    }
    // A failed write does not move the key.
    let key = format!("{p}k1");
    let kv = get(store, &key).await;
    let _ = store.create(&key, b"dup".to_vec()).await;
    assert_eq!(get(store, &key).await, kv);
}

/// create_revision stays the creating write's across updates; mod_revision follows.
pub async fn create_revision_kept(store: Arc<dyn Store>) {
    let store = &*store;
    let key = format!("{}k", unique_prefix("create_revision"));
    let created = create(store, &key, b"0").await;
    let mut prev = created.clone();
    for i in 1..10 {
        let expected = if i % 2 == 0 { 0 } else { prev.mod_revision };
        let kv = update(store, &key, format!("{i}").as_bytes(), expected).await;
        assert_eq!(kv.create_revision, created.create_revision);
        assert!(kv.mod_revision > prev.mod_revision);
        let got = get(store, &key).await;
        assert_eq!(got.as_ref(), Some(&kv));
        prev = kv;
    }
}

/// range returns the prefix's keys in key order, pages with limit and
/// start_after, and says `more` exactly when limit cut the result short.
pub async fn range_order_and_paging(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("range");
    let names = ["m", "b", "z", "a", "ab", "b0", "c", "aa", "y", "zz"];
    let mut last_rev = 0;
    for n in names {
        last_rev = create(store, &format!("{p}{n}"), n.as_bytes())
            .await
            .mod_revision;
    }
    let mut sorted: Vec<String> = names.iter().map(|n| format!("{p}{n}")).collect();
    sorted.sort();

    let all = match store.range(&p, None, 0).await {
        Ok(r) => r,
        Err(e) => panic!("range failed: {e}"),
    };
    assert_eq!(
        keys(&all.kvs),
        sorted.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(!all.more, "more with no limit");
    assert!(
        all.revision >= last_rev,
        "range revision {} below last write {last_rev}",
        all.revision
    );
    for kv in &all.kvs {
        let name = kv.key.strip_prefix(&p).unwrap_or_default();
        assert_eq!(kv.value, name.as_bytes());
    }

    let exact = store
        .range(&p, None, names.len())
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(exact.kvs.len(), names.len());
    assert!(!exact.more, "more set although limit == number of keys");

    for limit in [1, 3, 4] {
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .range(&p, after.as_deref(), limit)
                .await
                .unwrap_or_else(|e| panic!("range page failed: {e}"));
            assert!(
                page.kvs.len() <= limit,
                "page of {} above limit {limit}",
                page.kvs.len()
            );
            got.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            assert_eq!(page.kvs.len(), limit, "more set on a short page");
            after = page.kvs.last().map(|kv| kv.key.clone());
        }
        assert_eq!(got, sorted, "paging with limit {limit}");
    }

    // start_after need not be an existing key.
    let page = store
        .range(&p, Some(&format!("{p}b")), 2)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(keys(&page.kvs), vec![format!("{p}b0"), format!("{p}c")]);
    assert!(page.more);
    let page = store
        .range(&p, Some(&format!("{p}bz")), 0)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(keys(&page.kvs)[0], format!("{p}c"));
    let empty = store
        .range(&format!("{p}nothing/"), None, 0)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert!(empty.kvs.is_empty() && !empty.more);

    // Deleted keys disappear from range.
    delete(store, &format!("{p}m"), 0).await;
    let after_delete = store
        .range(&p, None, 0)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(after_delete.kvs.len(), names.len() - 1);
    assert!(!keys(&after_delete.kvs).contains(&format!("{p}m").as_str()));
}

/// "/registry/pods/" sees neither "/registry/podsx/..." nor "/registry/pods",
/// in range and in watch.
pub async fn sibling_prefix_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let root = unique_prefix("sibling");
    let pods = format!("{root}registry/pods/");
    let mut watch = Watcher::start(store, &pods, 0).await;
    create(store, &format!("{root}registry/pods"), b"bare").await;
    create(store, &format!("{root}registry/podsx/a"), b"x").await;
    create(store, &format!("{root}registry/pods0"), b"x").await;
    create(store, &format!("{root}registry/pod/a"), b"x").await;
    let a = create(store, &format!("{pods}default/a"), b"a").await;
    create(store, &format!("{root}registry/podsx/b"), b"x").await;
    let b = create(store, &format!("{pods}kube-system/b"), b"b").await;
    let r = store
        .range(&pods, None, 0)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(keys(&r.kvs), vec![a.key.as_str(), b.key.as_str()]);
    // Paging across the end of the prefix does not leak either.
    let r = store
        .range(&pods, Some(&a.key), 1)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(keys(&r.kvs), vec![b.key.as_str()]);
    assert!(!r.more, "more set although the prefix has no further key");
    assert_eq!(watch.next().await.key(), a.key);
    assert_eq!(watch.next().await.key(), b.key);
    let podsx = store
        .range(&format!("{root}registry/podsx/"), None, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(podsx.kvs.len(), 2);
}

/// A watch from revision 0 delivers only events after the watch started.
pub async fn watch_from_now(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("watch_now");
    let old = create(store, &format!("{p}old"), b"old").await;
    update(store, &old.key, b"old2", 0).await;
    let mut watch = Watcher::start(store, &p, 0).await;
    let new = create(store, &format!("{p}new"), b"new").await;
    let upd = update(store, &old.key, b"old3", 0).await;
    match watch.next().await {
        Event::Put { kv, prev } => {
            assert_eq!(kv, new);
            assert_eq!(prev, None);
        }
        other => panic!("expected the new Put, got {other:?}"),
    }
    match watch.next().await {
        Event::Put { kv, .. } => assert_eq!(kv, upd),
        other => panic!("expected the update, got {other:?}"),
    }
}

/// A watch from an old revision replays history in order without gaps from
/// exactly that revision, then continues with live events.
pub async fn watch_replay_then_live(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("watch_replay");
    let other = unique_prefix("watch_replay_other");
    let mut expected: Vec<(i64, String)> = Vec::new();
    for i in 0..30 {
        let key = format!("{p}k{}", i % 7);
        // Interleave writes outside the prefix: they must not show up.
        create(store, &format!("{other}x{i}"), b"noise").await;
        let rev = match get(store, &key).await {
            None => {
                create(store, &key, format!("{i}").as_bytes())
                    .await
                    .mod_revision
            }
            Some(kv) if i % 5 == 0 => delete(store, &key, kv.mod_revision).await.1,
            Some(kv) => {
                update(store, &key, format!("{i}").as_bytes(), kv.mod_revision)
                    .await
                    .mod_revision
            }
        };
        expected.push((rev, key));
    }
    let from_index = 10;
    let from = expected[from_index].0;
    let mut watch = Watcher::start(store, &p, from).await;
    for (rev, key) in &expected[from_index..] {
        let event = watch.next().await;
        assert_eq!(event.revision(), *rev, "replay gap or reorder");
        assert_eq!(event.key(), key);
    }
    // Live, after the replay.
    let live = create(store, &format!("{p}live"), b"live").await;
    let event = watch.next().await;
    assert_eq!(event.revision(), live.mod_revision);
    // Watching from the first revision replays everything, too.
    let mut all = Watcher::start(store, &p, expected[0].0).await;
    for (rev, _) in &expected {
        assert_eq!(all.next().await.revision(), *rev);
    }
    assert_eq!(all.next().await.revision(), live.mod_revision);
    // A watch from a revision between two of the prefix's events starts at the next one.
    let between = expected[3].0 + 1;
    let mut w = Watcher::start(store, &p, between).await;
    assert_eq!(w.next().await.revision(), expected[4].0);
}

/// Put events carry the previous value on update (none on create); Delete
/// events carry the last value and the delete's revision. Live and replayed.
pub async fn watch_prev_values(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("watch_prev");
    let key = format!("{p}k");
    let mut live = Watcher::start(store, &p, 0).await;
    let v1 = create(store, &key, b"v1").await;
    let v2 = update(store, &key, b"v2", v1.mod_revision).await;
    let (last, del_rev) = delete(store, &key, v2.mod_revision).await;
    assert_eq!(last, v2);
    let v3 = create(store, &key, b"v3").await;
    let check = |events: [Event; 4]| {
        let [e1, e2, e3, e4] = events;
        assert_eq!(
            e1,
            Event::Put {
                kv: v1.clone(),
                prev: None
            }
        );
        assert_eq!(
            e2,
            Event::Put {
                kv: v2.clone(),
                prev: Some(v1.clone())
            }
        );
        assert_eq!(
            e3,
            Event::Delete {
                prev: v2.clone(),
                revision: del_rev
            }
        );
        assert_eq!(e3.revision(), del_rev);
        assert_eq!(
            e4,
            Event::Put {
                kv: v3.clone(),
                prev: None
            }
        );
    };
    check([
        live.next().await,
        live.next().await,
        live.next().await,
        live.next().await,
    ]);
    let mut replay = Watcher::start(store, &p, v1.mod_revision).await;
    check([
        replay.next().await,
        replay.next().await,
        replay.next().await,
        replay.next().await,
    ]);
}

/// After compact(r): compacted_revision is r, a watch from before r fails
/// with Compacted, a watch from r replays (with prev values), current state
/// is intact, compacting in the future fails.
pub async fn compaction(store: Arc<dyn Store>) {
    let store = &*store;
    let p = unique_prefix("compaction");
    let a = create(store, &format!("{p}a"), b"a1").await;
    let b = create(store, &format!("{p}b"), b"b1").await;
    let c = create(store, &format!("{p}c"), b"c1").await;
    let a2 = update(store, &a.key, b"a2", 0).await;
    let (c_last, c_del) = delete(store, &c.key, 0).await;
    assert_eq!(c_last, c);
    let mid = create(store, &format!("{p}mid"), b"m").await;
    let r = mid.mod_revision;
    let a3 = update(store, &a.key, b"a3", a2.mod_revision).await;
    let (b_last, b_del) = delete(store, &b.key, b.mod_revision).await;
    assert_eq!(b_last, b);

    let before = store
        .compacted_revision()
        .await
        .unwrap_or_else(|e| panic!("compacted_revision: {e}"));
    assert!(
        before < r,
        "compacted revision {before} already past this check's writes"
    );
    if let Err(e) = store.compact(r).await {
        panic!("compact({r}) failed: {e}");
    }
    let after = store
        .compacted_revision()
        .await
        .unwrap_or_else(|e| panic!("compacted_revision: {e}"));
    assert_eq!(after, r);

    for from in [a.mod_revision, c_del, r - 1] {
        let err = match store.watch(&p, from).await {
            Err(e) => e,
            Ok(stream) => match Watcher::new(stream).next_result().await {
                Some(Err(e)) => e,
                other => {
                    panic!("watch from compacted revision {from}: expected an error, got {other:?}")
                }
            },
        };
        match err {
            StoreError::Compacted {
                requested,
                compacted,
            } => {
                assert_eq!(requested, from);
                assert_eq!(compacted, r);
            }
            other => {
                panic!("watch from compacted revision {from}: expected Compacted, got {other:?}")
            }
        }
    }

    // From r: everything from r on, with prev values that predate r.
    let mut w = Watcher::start(store, &p, r).await;
    assert_eq!(
        w.next().await,
        Event::Put {
            kv: mid.clone(),
            prev: None
        }
    );
    assert_eq!(
        w.next().await,
        Event::Put {
            kv: a3.clone(),
            prev: Some(a2.clone())
        }
    );
    assert_eq!(
        w.next().await,
        Event::Delete {
            prev: b.clone(),
            revision: b_del
        }
    );
    let live = update(store, &mid.key, b"m2", 0).await;
    assert_eq!(
        w.next().await,
        Event::Put {
            kv: live.clone(),
            prev: Some(mid.clone())
        }
    );

    // The current state does not depend on history.
    assert_eq!(get(store, &a.key).await, Some(a3));
    assert_eq!(get(store, &b.key).await, None);
    assert_eq!(get(store, &c.key).await, None);
    let range = store
        .range(&p, None, 0)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(range.kvs.len(), 2);

    // Compacting the future is refused; compacting again at or below is harmless.
    let current = current_revision(store).await;
    match store.compact(current + 1_000_000).await {
        Err(StoreError::FutureRevision(_)) => {}
        other => panic!("compact in the future: expected FutureRevision, got {other:?}"),
    }
    match store.compact(r - 1).await {
        Ok(()) | Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("compact below the compacted revision: unexpected {e}"),
    }
    let after2 = store
        .compacted_revision()
        .await
        .unwrap_or_else(|e| panic!("compacted_revision: {e}"));
    assert_eq!(after2, r, "compacted revision went backwards");
}

/// 64 tasks x 50 creates at once: all succeed with distinct revisions, and a
/// watcher sees every one exactly once, in revision order.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 50;
    let p = unique_prefix("concurrent");
    let mut watch = Watcher::start(&*store, &p, 0).await;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let p = p.clone();
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let key = format!("{p}t{t:02}/{i:03}");
                let kv = match store.create(&key, vec![t as u8; 16]).await {
                    Ok(kv) => kv,
                    Err(e) => panic!("concurrent create({key}) failed: {e}"),
                };
                if let Some(&prev) = revs.last() {
                    assert!(
                        kv.mod_revision > prev,
                        "one client's revisions went backwards"
                    );
                }
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut all = HashSet::new();
    for h in handles {
        let revs = match h.await {
            Ok(revs) => revs,
            Err(e) => panic!("writer task failed: {e}"),
        };
        for r in revs {
            assert!(all.insert(r), "revision {r} given to two writes");
        }
    }
    assert_eq!(all.len(), TASKS * PER_TASK);
    let mut seen = HashSet::new();
    let mut last = 0;
    for _ in 0..TASKS * PER_TASK {
        let event = watch.next().await;
        let rev = event.revision();
        assert!(rev > last, "watch out of order: {rev} after {last}");
        last = rev;
        assert!(
            matches!(event, Event::Put { prev: None, .. }),
            "expected a create, got {event:?}"
        );
        assert!(all.contains(&rev), "watch delivered unknown revision {rev}");
        assert!(seen.insert(rev), "watch delivered {rev} twice");
    }
    let r = store
        .range(&p, None, 0)
        .await
        .unwrap_or_else(|e| panic!("range: {e}"));
    assert_eq!(r.kvs.len(), TASKS * PER_TASK);
}

/// 16 tasks incrementing one counter with read/CAS/retry: no increment is lost.
pub async fn concurrent_cas_counter(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 20;
    let key = format!("{}counter", unique_prefix("cas_counter"));
    create(&*store, &key, b"0").await;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..PER_TASK {
                loop {
                    let kv = match store.get(&key).await {
                        Ok(Some(kv)) => kv,
                        other => panic!("get counter: {other:?}"),
                    };
                    let n: u64 = String::from_utf8_lossy(&kv.value)
                        .parse()
                        .unwrap_or(u64::MAX);
                    match store
                        .update(&key, (n + 1).to_string().into_bytes(), kv.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict {
                            actual, expected, ..
                        }) => {
                            assert_ne!(actual, expected);
                            conflicts += 1;
                        }
                        Err(e) => panic!("counter update failed: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            panic!("counter task failed: {e}");
        }
    }
    let kv = get(&*store, &key).await;
    let value = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    assert_eq!(
        value,
        Some((TASKS * PER_TASK).to_string()),
        "lost CAS increments"
    );
}

/// A watcher that does not read while many events are written must later get
/// every one of them in order, or an error ending the stream: never a gap.
pub async fn slow_watcher_never_skips(store: Arc<dyn Store>) {
    const EVENTS: usize = 5_000;
    let p = unique_prefix("slow_watcher");
    let mut watch = Watcher::start(&*store, &p, 0).await;
    let mut revs = Vec::with_capacity(EVENTS);
    for chunk in 0..EVENTS / 100 {
        let writes = (0..100).map(|i| {
            let store = store.clone();
            let key = format!("{p}{chunk:03}-{i:03}");
            async move { store.create(&key, vec![0; 64]).await }
        });
        for r in futures::future::join_all(writes).await {
            match r {
                Ok(kv) => revs.push(kv.mod_revision),
                Err(e) => panic!("create failed: {e}"),
            }
        }
    }
    revs.sort_unstable();
    for (i, rev) in revs.iter().enumerate() {
        match watch.next_result().await {
            Some(Ok(event)) => assert_eq!(event.revision(), *rev, "slow watcher skipped an event"),
            Some(Err(_)) => {
                // Ending the stream with an error is allowed; it must then end.
                assert!(
                    watch.next_result().await.is_none(),
                    "slow watcher continued after an error (at event {i})"
                );
                return;
            }
            None => panic!("slow watcher's stream ended without an error at event {i}"),
        }
    }
}
