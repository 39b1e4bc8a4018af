//! The scheduling queue (↔ pkg/scheduler/backend/queue): an active queue
//! ordered by priority then age, a backoff queue with per-pod exponential
//! backoff, and the unschedulable pods, which cluster events move back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cache::PodInfo;
use crate::plugins::{interpodaffinity, nodeports, noderesources, podtopologyspread};

/// Something that happened in the cluster that may make pending pods schedulable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node appeared, or its labels, taints, allocatable or unschedulable changed.
    NodeChanged,
    /// A bound pod was deleted or finished, freeing what it held.
    AssignedPodDeleted,
    /// A pod was bound, or a bound pod's labels changed.
    AssignedPodAddedOrRelabelled,
    /// A namespace's labels changed.
    NamespaceChanged,
    /// Periodic flush or anything else: everything may move.
    Any,
}

impl ClusterEvent {
    /// Whether a pod rejected by these plugins may become schedulable.
    fn may_help(self, plugins: &BTreeSet<&'static str>) -> bool {
        if plugins.is_empty() {
            return true;
        }
        let relevant: &[&str] = match self {
            ClusterEvent::NodeChanged | ClusterEvent::Any => return true,
            ClusterEvent::AssignedPodDeleted => &[
                noderesources::NAME,
                nodeports::NAME,
                interpodaffinity::NAME,
                podtopologyspread::NAME,
                PREEMPTION,
            ],
            ClusterEvent::AssignedPodAddedOrRelabelled => {
                &[interpodaffinity::NAME, podtopologyspread::NAME]
            }
            ClusterEvent::NamespaceChanged => &[interpodaffinity::NAME],
        };
        plugins.iter().any(|p| relevant.contains(p))
    }
}

/// The name under which a pod waiting for its victims to go is parked.
pub const PREEMPTION: &str = "DefaultPreemption";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    /// Popped; its scheduling cycle is running.
    InFlight,
}

type ActiveKey = (Reverse<i32>, i128, u64, String);

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    place: Place,
    attempts: u32,
    backoff_until: Option<Instant>,
    unschedulable_since: Instant,
    plugins: BTreeSet<&'static str>,
    /// The cycle in which it was last popped.
    cycle: u64,
    active_key: Option<ActiveKey>,
}

/// A popped pod.
#[derive(Clone, Debug)]
pub struct Popped {
    pub pod: Arc<PodInfo>,
    pub attempts: u32,
    pub cycle: u64,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Entry>,
    active: BTreeSet<ActiveKey>,
    seq: u64,
    cycle: u64,
    /// The cycle of the last move request: pods failing in an earlier
    /// cycle go to backoff instead of unschedulable.
    move_cycle: u64,
    /// Pods nominated to a node: node → pod keys.
    nominated: HashMap<String, BTreeSet<String>>,
    nominated_of: HashMap<String, String>,
}

/// Queue timings.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often.
    pub max_in_unschedulable: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_in_unschedulable: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    timings: Timings,
}

impl Inner {
    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(old) = e.active_key.take() {
            self.active.remove(&old);
        }
        let k = (Reverse(e.pod.priority), e.pod.created, seq, key.to_string());
        e.place = Place::Active;
        e.active_key = Some(k.clone());
        self.active.insert(k);
    }

    fn take_active(&mut self, key: &str) {
        if let Some(e) = self.pods.get_mut(key)
            && let Some(k) = e.active_key.take()
        {
            self.active.remove(&k);
        }
    }

    fn set_nominated(&mut self, key: &str, node: Option<String>) {
        if let Some(old) = self.nominated_of.remove(key)
            && let Some(set) = self.nominated.get_mut(&old)
        {
            set.remove(key);
            if set.is_empty() {
                self.nominated.remove(&old);
            }
        }
        if let Some(n) = node {
            self.nominated
                .entry(n.clone())
                .or_default()
                .insert(key.to_string());
            self.nominated_of.insert(key.to_string(), n);
        }
    }

    /// Move to backoff when still backing off, else to active.
    fn requeue(&mut self, key: &str, now: Instant) -> bool {
        let Some(e) = self.pods.get_mut(key) else {
            return false;
        };
        if e.backoff_until.is_some_and(|t| t > now) {
            e.place = Place::Backoff;
            false
        } else {
            self.push_active(key);
            true
        }
    }
}

impl Queue {
    pub fn new(timings: Timings) -> Queue {
        Queue {
            inner: Mutex::default(),
            notify: Notify::new(),
            timings,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (no partial updates matter here).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backoff after `attempts` failed attempts: 1s, 2s, 4s, ... capped at 10s.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        self.timings
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.timings.max_backoff)
    }

    /// A pending pod was added or updated.
    pub fn add_or_update(&self, pod: Arc<PodInfo>) {
        let mut q = self.lock();
        let key = pod.key.clone();
        q.set_nominated(&key, pod.nominated_node.clone());
        let now = Instant::now();
        let woke = match q.pods.get_mut(&key) {
            None => {
                q.pods.insert(
                    key.clone(),
                    Entry {
                        pod,
                        place: Place::Active,
                        attempts: 0,
                        backoff_until: None,
                        unschedulable_since: now,
                        plugins: BTreeSet::new(),
                        cycle: 0,
                        active_key: None,
                    },
                );
                q.push_active(&key);
                true
            }
            Some(e) => {
                let relevant_change = e.pod.pod.spec != pod.pod.spec || e.pod.labels != pod.labels;
                e.pod = pod;
                match e.place {
                    Place::Unschedulable if relevant_change => q.requeue(&key, now),
                    Place::Active => {
                        q.push_active(&key);
                        false
                    }
                    _ => false,
                }
            }
        };
        drop(q);
        if woke {
            self.notify.notify_one();
        }
    }

    pub fn delete(&self, key: &str) {
        let mut q = self.lock();
        q.take_active(key);
        q.pods.remove(key);
        q.set_nominated(key, None);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().pods.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.lock().pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take the next pod without waiting.
    pub fn try_pop(&self) -> Option<Popped> {
        let mut q = self.lock();
        let first = q.active.pop_first()?;
        q.cycle += 1;
        let cycle = q.cycle;
        let e = q.pods.get_mut(&first.3)?;
        e.active_key = None;
        e.place = Place::InFlight;
        e.attempts += 1;
        e.cycle = cycle;
        Some(Popped {
            pod: e.pod.clone(),
            attempts: e.attempts,
            cycle,
        })
    }

    /// Wait for the highest-priority, oldest active pod.
    pub async fn pop(&self) -> Popped {
        loop {
            let notified = self.notify.notified();
            if let Some(p) = self.try_pop() {
                return p;
            }
            // The timeout guards against a lost wake-up; flushes notify too.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    /// The pod was scheduled (assumed on a node): it leaves the queue.
    pub fn done(&self, key: &str) {
        self.delete(key);
    }

    /// No node fits: park the pod until an event rejected by `plugins` changes.
    pub fn unschedulable(&self, key: &str, plugins: BTreeSet<&'static str>) {
        let mut q = self.lock();
        let now = Instant::now();
        let move_cycle = q.move_cycle;
        let backoff = self.backoff_for(q.pods.get(key).map(|e| e.attempts).unwrap_or(1));
        let Some(e) = q.pods.get_mut(key) else { return };
        if e.place != Place::InFlight {
            return;
        }
        e.backoff_until = Some(now + backoff);
        e.plugins = plugins;
        if move_cycle >= e.cycle {
            // Something changed while it was being scheduled: retry after the backoff.
            e.place = Place::Backoff;
        } else {
            e.place = Place::Unschedulable;
            e.unschedulable_since = now;
        }
    }

    /// An error (not a verdict): retry after the backoff.
    pub fn backoff(&self, pod: Arc<PodInfo>, attempts: u32) {
        let mut q = self.lock();
        let key = pod.key.clone();
        let until = Instant::now() + self.backoff_for(attempts);
        let e = q.pods.entry(key.clone()).or_insert_with(|| Entry {
            pod: pod.clone(),
            place: Place::Backoff,
            attempts,
            backoff_until: None,
            unschedulable_since: Instant::now(),
            plugins: BTreeSet::new(),
            cycle: 0,
            active_key: None,
        });
        e.pod = pod;
        e.attempts = e.attempts.max(attempts);
        e.place = Place::Backoff;
        e.backoff_until = Some(until);
        q.take_active(&key);
    }

    /// Move the unschedulable pods this event may help to active (or backoff).
    pub fn move_all(&self, event: ClusterEvent) {
        let mut q = self.lock();
        q.move_cycle = q.cycle;
        let now = Instant::now();
        let keys: Vec<String> = q
            .pods
            .iter()
            .filter(|(_, e)| e.place == Place::Unschedulable && event.may_help(&e.plugins))
            .map(|(k, _)| k.clone())
            .collect();
        let mut woke = false;
        for k in keys {
            woke |= q.requeue(&k, now);
        }
        drop(q);
        if woke {
            self.notify.notify_one();
        }
    }

    /// Backoff expired → active; unschedulable for too long → active.
    pub fn flush(&self) {
        let mut q = self.lock();
        let now = Instant::now();
        let max_wait = self.timings.max_in_unschedulable;
        let keys: Vec<String> = q
            .pods
            .iter()
            .filter(|(_, e)| match e.place {
                Place::Backoff => e.backoff_until.is_none_or(|t| t <= now),
                Place::Unschedulable => now.duration_since(e.unschedulable_since) >= max_wait,
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        let woke = !keys.is_empty();
        for k in keys {
            if let Some(e) = q.pods.get_mut(&k) {
                e.backoff_until = None;
            }
            q.push_active(&k);
        }
        drop(q);
        if woke {
            self.notify.notify_one();
        }
    }

    /// Record the node a pod was nominated to by preemption.
    pub fn nominate(&self, key: &str, node: Option<String>) {
        self.lock().set_nominated(key, node);
    }

    /// Pods nominated to a node, except `except`.
    pub fn nominated_pods(&self, node: &str, except: &str) -> Vec<Arc<PodInfo>> {
        let q = self.lock();
        q.nominated
            .get(node)
            .into_iter()
            .flatten()
            .filter(|k| k.as_str() != except)
            .filter_map(|k| q.pods.get(k).map(|e| e.pod.clone()))
            .collect()
    }

    /// Nodes with nominated pods.
    pub fn nominated_nodes(&self) -> BTreeMap<String, usize> {
        self.lock()
            .nominated
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// Pending pods not in `keep` are dropped (after a relist).
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        let mut q = self.lock();
        let gone: Vec<String> = q
            .pods
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            q.take_active(&k);
            q.pods.remove(&k);
            q.set_nominated(&k, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::pod;
    use serde_json::json;

    fn p(name: &str, priority: i32, created: &str) -> Arc<PodInfo> {
        Arc::new(pod(
            json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {"priority": priority}}),
        ))
    }

    fn quick() -> Queue {
        Queue::new(Timings {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_in_unschedulable: Duration::from_secs(300),
        })
    }

    #[test]
    fn order_is_priority_then_age() {
        let q = quick();
        q.add_or_update(p("old-low", 0, "2024-01-01T00:00:00Z"));
        q.add_or_update(p("new-high", 100, "2024-01-03T00:00:00Z"));
        q.add_or_update(p("old-high", 100, "2024-01-02T00:00:00Z"));
        q.add_or_update(p("new-low", 0, "2024-01-04T00:00:00Z"));
        let order: Vec<String> = std::iter::from_fn(|| q.try_pop())
            .map(|x| x.pod.name.clone())
            .collect();
        assert_eq!(order, ["old-high", "new-high", "old-low", "new-low"]);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let q = Queue::new(Timings::default());
        let got: Vec<u64> = (1..=6).map(|a| q.backoff_for(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_move_on_relevant_events() {
        let q = quick();
        q.add_or_update(p("cpu", 0, "2024-01-01T00:00:00Z"));
        q.add_or_update(p("taint", 0, "2024-01-02T00:00:00Z"));
        let a = q.try_pop().unwrap();
        let b = q.try_pop().unwrap();
        q.unschedulable(&a.pod.key, [noderesources::NAME].into());
        q.unschedulable(&b.pod.key, ["TaintToleration"].into());
        assert!(q.try_pop().is_none());
        // A new pod bound elsewhere helps neither.
        q.move_all(ClusterEvent::AssignedPodAddedOrRelabelled);
        assert!(q.try_pop().is_none());
        // A deleted pod frees resources: only the cpu-starved pod moves.
        q.move_all(ClusterEvent::AssignedPodDeleted);
        assert_eq!(q.try_pop().unwrap().pod.name, "cpu");
        assert!(q.try_pop().is_none());
        // A node change moves everything.
        q.move_all(ClusterEvent::NodeChanged);
        let again = q.try_pop().unwrap();
        assert_eq!(again.pod.name, "taint");
        assert_eq!(again.attempts, 2);
    }

    #[test]
    fn event_during_cycle_sends_to_backoff() {
        let q = Queue::new(Timings {
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            ..Timings::default()
        });
        q.add_or_update(p("a", 0, "2024-01-01T00:00:00Z"));
        let a = q.try_pop().unwrap();
        q.move_all(ClusterEvent::NodeChanged);
        q.unschedulable(&a.pod.key, [noderesources::NAME].into());
        // In backoff (60s), not unschedulable: a status-only update does not move it, flush does not either yet.
        q.flush();
        assert!(q.try_pop().is_none());
        assert!(q.contains(&a.pod.key));
    }

    #[test]
    fn spec_update_requeues_unschedulable() {
        let q = quick();
        q.add_or_update(p("a", 0, "2024-01-01T00:00:00Z"));
        let a = q.try_pop().unwrap();
        q.unschedulable(&a.pod.key, ["TaintToleration"].into());
        // Same spec: stays parked.
        q.add_or_update(p("a", 0, "2024-01-01T00:00:00Z"));
        assert!(q.try_pop().is_none());
        let changed = Arc::new(pod(
            json!({"metadata": {"name": "a", "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"priority": 0, "tolerations": [{"operator": "Exists"}]}}),
        ));
        q.add_or_update(changed);
        assert!(q.try_pop().is_some());
    }

    #[test]
    fn backoff_flush_and_delete() {
        let q = quick();
        q.add_or_update(p("a", 0, "2024-01-01T00:00:00Z"));
        let a = q.try_pop().unwrap();
        q.backoff(a.pod.clone(), a.attempts);
        q.flush();
        let again = q.try_pop().unwrap();
        assert_eq!(again.attempts, 2);
        q.delete(&again.pod.key);
        assert!(q.is_empty());
    }

    #[test]
    fn nominated_pods_by_node() {
        let q = quick();
        let mut x = pod(json!({"metadata": {"name": "x"}}));
        x.nominated_node = Some("n1".into());
        q.add_or_update(Arc::new(x));
        assert_eq!(q.nominated_pods("n1", "default/other").len(), 1);
        assert!(q.nominated_pods("n1", "default/x").is_empty());
        q.delete("default/x");
        assert!(q.nominated_nodes().is_empty());
    }
}
