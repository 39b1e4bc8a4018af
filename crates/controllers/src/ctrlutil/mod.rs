//! What the workload controllers (replicaset, deployment, gc, namespace)
//! share: informers with a local cache, a work queue, expectations, label
//! selectors, controller references and pod readiness (↔ client-go's
//! informers/workqueue and k8s.io/kubernetes/pkg/controller).

pub mod expectations;
pub mod informer;
pub mod queue;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

pub use expectations::Expectations;
pub use informer::{Cache, Change, ObjKey};
pub use queue::WorkQueue;

/// Errors of a reconcile: logged, and the item is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many reconciles (and other work items of this process) have panicked.
pub use skiff_runtime::panics::count as reconcile_panics;

/// Run one reconcile, a panic in it caught (↔ utilruntime.HandleCrash; see
/// [`skiff_runtime::panics`]).
pub use skiff_runtime::panics::catch as catch_panic;

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 404)
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 409 && s.reason == "AlreadyExists")
}

pub fn is_conflict(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 409 && s.reason != "AlreadyExists")
}

/// The create failed because the namespace is being deleted.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 403 && s.message.contains("being terminated"))
}

impl Error {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(e) if is_conflict(e))
    }
}

/// Run `workers` workers taking items from `queue` until the future is
/// dropped. `Ok(Some(d))` requeues the item after `d`; errors requeue it with
/// exponential backoff (conflicts from a stale cache are logged quietly).
pub async fn run_workers<T, F, Fut>(
    name: &str,
    queue: Arc<WorkQueue<T>>,
    workers: usize,
    reconcile: F,
) where
    T: Clone + Eq + std::hash::Hash + std::fmt::Display + Sync,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<Option<Duration>>>,
{
    let worker = |_| {
        let queue = queue.clone();
        let reconcile = &reconcile;
        async move {
            loop {
                let item = queue.next().await;
                let outcome = catch_panic(name, &item, reconcile(item.clone()))
                    .await
                    .unwrap_or_else(|panic| Err(Error::Other(format!("panic: {panic}"))));
                match outcome {
                    Ok(requeue) => {
                        queue.forget(&item);
                        if let Some(after) = requeue {
                            queue.add_after(item.clone(), after);
                        }
                    }
                    Err(e) => {
                        if e.is_conflict() {
                            tracing::debug!(controller = name, key = %item, error = %e, "conflict; retrying");
                        } else {
                            tracing::warn!(controller = name, key = %item, error = %e, "sync failed; retrying");
                        }
                        queue.add_rate_limited(item.clone());
                    }
                }
                queue.done(&item);
            }
        }
    };
    futures::future::join_all((0..workers.max(1)).map(worker)).await;
}

// ---- label selectors ----

/// Whether a metav1.LabelSelector selects `labels` (an empty selector selects everything).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    for expr in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Whether a plain map selector (ReplicationController, Service) selects `labels`.
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

// ---- owner references ----

/// The managing controller of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn is_being_deleted(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

// ---- pods ----

/// Not terminal and not being deleted (↔ controller.IsPodActive).
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

pub fn pod_ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When a ready pod becomes available given `min_ready_seconds`, or None if not ready.
pub fn pod_available_at(pod: &Pod, min_ready_seconds: i32) -> Option<jiff::Timestamp> {
    let cond = pod_ready_condition(pod).filter(|c| c.status == "True")?;
    if min_ready_seconds <= 0 {
        return Some(jiff::Timestamp::MIN);
    }
    match &cond.last_transition_time {
        Some(t) => Some(t.0 + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds))),
        // Ready without a transition time: count it available (as podutil does for zero times).
        None => Some(jiff::Timestamp::MIN),
    }
}

/// Ready for at least `min_ready_seconds` (↔ podutil.IsPodAvailable).
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    pod_available_at(pod, min_ready_seconds).is_some_and(|at| at <= now)
}

/// How long until the next of `pods` becomes available, if any is ready but not yet available.
pub fn next_availability<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<Duration> {
    pods.into_iter()
        .filter_map(|p| pod_available_at(p, min_ready_seconds))
        .filter(|at| *at > now)
        .min()
        .map(|at| {
            Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    /// Security review D4: one object whose reconcile panics must not stop
    /// the others; it is retried with backoff.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_key_is_retried_and_the_others_served() {
        let queue = Arc::new(WorkQueue::<String>::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
        ));
        for k in ["bad", "good"] {
            queue.add(k.to_string());
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let before = reconcile_panics();
        let log = seen.clone();
        let workers = run_workers("test", queue.clone(), 1, move |k: String| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(k.clone());
                if k == "bad" {
                    panic!("poison object {k}");
                }
                Ok(None)
            }
        });
        tokio::select! {
            () = workers => unreachable!("workers run until dropped"),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let seen = seen.lock().unwrap().clone();
        assert!(seen.contains(&"good".to_string()), "{seen:?}");
        let bad = seen.iter().filter(|k| *k == "bad").count();
        assert!(bad >= 2, "the panicking key is retried: {seen:?}");
        assert!(reconcile_panics() >= before + 2);
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "a")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")]))
        ));
        assert!(!selector_matches(&sel, None));
        assert!(selector_matches(&LabelSelector::default(), None));
        assert!(selector_is_empty(&LabelSelector::default()));
        assert!(map_selector_matches(
            &labels(&[("a", "1")]),
            Some(&labels(&[("a", "1"), ("b", "2")]))
        ));
        assert!(!map_selector_matches(
            &labels(&[("a", "1")]),
            Some(&labels(&[("a", "2")]))
        ));
    }
}
