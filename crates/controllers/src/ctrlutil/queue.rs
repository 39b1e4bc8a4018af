//! A work queue with the semantics of client-go's `workqueue`: an item is
//! never processed by two workers at once, adding an item already waiting
//! is a no-op, an item added while it is being processed is processed again
//! afterwards, delayed adds, and per-item exponential backoff on failure.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub struct WorkQueue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

struct Inner<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    /// Delayed items by ready time (with a sequence number for uniqueness).
    waiting: BTreeMap<(Instant, u64), T>,
    waiting_at: HashMap<T, (Instant, u64)>,
    seq: u64,
    failures: HashMap<T, u32>,
}

impl<T: Clone + Eq + Hash> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue::new(Duration::from_millis(10), Duration::from_secs(120))
    }
}

impl<T: Clone + Eq + Hash> WorkQueue<T> {
    pub fn new(base_delay: Duration, max_delay: Duration) -> Self {
        WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                waiting: BTreeMap::new(),
                waiting_at: HashMap::new(),
                seq: 0,
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
            base_delay,
            max_delay,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `item` now.
    pub fn add(&self, item: T) {
        let mut g = self.lock();
        g.add(item);
        drop(g);
        self.notify.notify_waiters();
    }

    /// Queue `item` once `delay` has passed (the earliest of several delays wins).
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            self.add(item);
            return;
        }
        let at = Instant::now() + delay;
        let mut g = self.lock();
        if let Some(&(current, seq)) = g.waiting_at.get(&item) {
            if current <= at {
                return;
            }
            g.waiting.remove(&(current, seq));
        }
        g.seq += 1;
        let seq = g.seq;
        g.waiting.insert((at, seq), item.clone());
        g.waiting_at.insert(item, (at, seq));
        drop(g);
        self.notify.notify_waiters();
    }

    /// Queue `item` after its exponential backoff (one more failure).
    pub fn add_rate_limited(&self, item: T) {
        let delay = {
            let mut g = self.lock();
            let n = g.failures.entry(item.clone()).or_insert(0);
            let exp = (*n).min(30);
            *n = n.saturating_add(1);
            self.base_delay
                .saturating_mul(1u32 << exp.min(31))
                .min(self.max_delay)
        };
        self.add_after(item, delay);
    }

    /// Reset the backoff of `item`.
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// How many times `item` has failed since it was last forgotten.
    pub fn failures(&self, item: &T) -> u32 {
        self.lock().failures.get(item).copied().unwrap_or(0)
    }

    /// Mark `item` as processed: if it was added meanwhile, it is queued again.
    pub fn done(&self, item: &T) {
        let mut g = self.lock();
        g.processing.remove(item);
        if g.dirty.contains(item) {
            g.queue.push_back(item.clone());
        }
        drop(g);
        self.notify.notify_waiters();
    }

    /// Wait for the next item; the caller must call `done` with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut g = self.lock();
                g.promote_due(Instant::now());
                if let Some(item) = g.queue.pop_front() {
                    g.dirty.remove(&item);
                    g.processing.insert(item.clone());
                    return item;
                }
                g.waiting.keys().next().map(|(at, _)| *at)
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Items queued or waiting (for tests and metrics).
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.queue.len() + g.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone + Eq + Hash> Inner<T> {
    fn add(&mut self, item: T) {
        if self.dirty.contains(&item) {
            return;
        }
        self.dirty.insert(item.clone());
        if !self.processing.contains(&item) {
            self.queue.push_back(item);
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((&(at, seq), _)) = self.waiting.iter().next() {
            if at > now {
                break;
            }
            if let Some(item) = self.waiting.remove(&(at, seq)) {
                self.waiting_at.remove(&item);
                self.add(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_requeues_items_added_while_processing() {
        let q: WorkQueue<u32> = WorkQueue::default();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, 1);
        q.add(1); // while processing: not handed out again yet
        let b = q.next().await;
        assert_eq!(b, 2);
        q.done(&2);
        q.done(&1);
        assert_eq!(q.next().await, 1);
    }

    #[tokio::test]
    async fn delayed_items_come_out_in_time_order() {
        let q: WorkQueue<u32> = WorkQueue::default();
        q.add_after(1, Duration::from_millis(500));
        q.add_after(2, Duration::from_millis(20));
        q.add_after(1, Duration::from_millis(60));
        assert_eq!(q.next().await, 2);
        assert_eq!(q.next().await, 1);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn backoff_counts_failures() {
        let q: WorkQueue<u32> = WorkQueue::new(Duration::from_millis(1), Duration::from_millis(8));
        for _ in 0..6 {
            q.add_rate_limited(7);
            let _ = q.next().await;
            q.done(&7);
        }
        assert_eq!(q.failures(&7), 6);
        q.forget(&7);
        assert_eq!(q.failures(&7), 0);
    }
}
