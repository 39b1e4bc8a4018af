//! Controller expectations (↔ client-go's `ControllerExpectations` and
//! `UIDTrackingControllerExpectations`): after asking for N creations or
//! deletions, a controller does not act again on the same object until its
//! informer has observed them (or they expire), so a burst of watch events
//! does not make it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::ObjKey;

/// Expectations older than this are considered satisfied (a lost watch event
/// must not wedge a controller forever).
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    deleting: HashSet<ObjKey>,
    at: Instant,
}

#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<ObjKey, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> MutexGuard<'_, HashMap<ObjKey, Expectation>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller may act on `controller` (no pending expectations).
    pub fn satisfied(&self, controller: &ObjKey) -> bool {
        match self.lock().get(controller) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.at.elapsed() > EXPECTATIONS_TTL,
        }
    }

    pub fn expect_creations(&self, controller: &ObjKey, count: usize) {
        self.lock().insert(
            controller.clone(),
            Expectation {
                add: count as i64,
                del: 0,
                deleting: HashSet::new(),
                at: Instant::now(),
            },
        );
    }

    pub fn expect_deletions(&self, controller: &ObjKey, pods: impl IntoIterator<Item = ObjKey>) {
        let deleting: HashSet<ObjKey> = pods.into_iter().collect();
        self.lock().insert(
            controller.clone(),
            Expectation {
                add: 0,
                del: deleting.len() as i64,
                deleting,
                at: Instant::now(),
            },
        );
    }

    pub fn creation_observed(&self, controller: &ObjKey) {
        if let Some(e) = self.lock().get_mut(controller) {
            e.add -= 1;
        }
    }

    /// A deletion was observed (counted once per expected pod).
    pub fn deletion_observed(&self, controller: &ObjKey, pod: &ObjKey) {
        if let Some(e) = self.lock().get_mut(controller)
            && e.deleting.remove(pod)
        {
            e.del -= 1;
        }
    }

    pub fn forget(&self, controller: &ObjKey) {
        self.lock().remove(controller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_and_deletions_are_counted_once() {
        let e = Expectations::default();
        let rs = ObjKey::new("ns", "rs");
        assert!(e.satisfied(&rs));
        e.expect_creations(&rs, 2);
        assert!(!e.satisfied(&rs));
        e.creation_observed(&rs);
        assert!(!e.satisfied(&rs));
        e.creation_observed(&rs);
        assert!(e.satisfied(&rs));
        let p = ObjKey::new("ns", "p");
        e.expect_deletions(&rs, [p.clone()]);
        assert!(!e.satisfied(&rs));
        e.deletion_observed(&rs, &ObjKey::new("ns", "other"));
        assert!(!e.satisfied(&rs));
        e.deletion_observed(&rs, &p);
        e.deletion_observed(&rs, &p);
        assert!(e.satisfied(&rs));
    }
}
