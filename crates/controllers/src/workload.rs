//! What the DaemonSet, StatefulSet, Job and CronJob controllers share
//! (↔ pkg/controller's ControllerRefManager, PodControl and
//! slowStartBatch): claiming dependents by selector and controller
//! reference, creating and deleting pods with events, writing a status
//! through the status subresource, and pod health predicates.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use skiff_runtime::events::EventType;

use crate::ctrlutil::{self, Result, controller_of, controller_ref, is_not_found};

/// A namespaced, typed API object.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> Object for T where
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// At most this many pods are created or deleted in one sync (↔ BurstReplicas).
pub const BURST: usize = 500;

fn api<K: Object>(client: &kube::Client, ns: &str) -> Api<K> {
    Api::namespaced(client.clone(), ns)
}

/// Whether a non-empty `selector` selects `labels` (an empty selector selects nothing here).
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    !ctrlutil::selector_is_empty(selector) && ctrlutil::selector_matches(selector, labels)
}

/// The key of the owner `r` points at when it is of kind `O`.
pub fn owner_key<O: Object>(namespace: &str, r: &OwnerReference) -> Option<ctrlutil::ObjKey> {
    (r.kind == O::kind(&()) && r.api_version == O::api_version(&()))
        .then(|| ctrlutil::ObjKey::new(namespace, &r.name))
}

/// Adopt matching orphans and release owned objects that stopped matching
/// (↔ ControllerRefManager.ClaimObjects); returns the objects `owner` owns.
pub async fn claim<O: Object, D: Object>(
    client: &kube::Client,
    owner: &O,
    selector: &LabelSelector,
    candidates: Vec<Arc<D>>,
) -> Result<Vec<Arc<D>>> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let ns = owner.namespace().unwrap_or_default();
    let mut claimed = Vec::new();
    let mut can_adopt: Option<bool> = None;
    for obj in candidates {
        let matches = selects(selector, obj.meta().labels.as_ref());
        match controller_of(obj.meta()) {
            Some(r) if r.uid != uid => {}
            Some(_) => {
                if matches {
                    claimed.push(obj);
                } else if !deleting {
                    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": obj.meta().uid}});
                    match api::<D>(client, &ns)
                        .patch(
                            &obj.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(&patch),
                        )
                        .await
                    {
                        Ok(_) => {
                            tracing::debug!(kind = %D::kind(&()), name = %obj.name_any(), owner = %owner.name_any(), "released")
                        }
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            None => {
                if deleting || !matches || obj.meta().deletion_timestamp.is_some() {
                    continue;
                }
                let allowed = match can_adopt {
                    Some(a) => a,
                    None => {
                        // A fresh read: adopt only for the same, live owner (↔ RecheckDeletionTimestamp).
                        let a = match api::<O>(client, &ns).get(&owner.name_any()).await {
                            Ok(fresh) => {
                                fresh.meta().uid == owner.meta().uid
                                    && fresh.meta().deletion_timestamp.is_none()
                            }
                            Err(e) if is_not_found(&e) => false,
                            Err(e) => return Err(e.into()),
                        };
                        can_adopt = Some(a);
                        a
                    }
                };
                if !allowed {
                    continue;
                }
                let patch = json!({"metadata": {"ownerReferences": [controller_ref(owner)], "uid": obj.meta().uid}});
                match api::<D>(client, &ns)
                    .patch(
                        &obj.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                {
                    Ok(adopted) => {
                        tracing::debug!(kind = %D::kind(&()), name = %obj.name_any(), owner = %owner.name_any(), "adopted");
                        claimed.push(Arc::new(adopted));
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(claimed)
}

/// A pod from `template` controlled by `owner` (↔ GetPodFromTemplate); the
/// caller sets the name or generateName.
pub fn pod_from_template<O: Object>(owner: &O, template: &PodTemplateSpec) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            namespace: owner.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Create a pod for `owner`, recording SuccessfulCreate/FailedCreate.
/// `Ok(None)` when the namespace is being deleted.
pub async fn create_pod<O: Object>(
    ctx: &crate::Context,
    owner: &O,
    pod: &Pod,
) -> Result<Option<Pod>> {
    let ns = owner.namespace().unwrap_or_default();
    let reference = skiff_runtime::events::reference(owner);
    match api::<Pod>(&ctx.client, &ns)
        .create(&PostParams::default(), pod)
        .await
    {
        Ok(created) => {
            let msg = format!("Created pod: {}", created.name_any());
            ctx.recorder
                .record(&reference, EventType::Normal, "SuccessfulCreate", &msg)
                .await;
            Ok(Some(created))
        }
        Err(e) if ctrlutil::is_namespace_terminating(&e) => Ok(None),
        Err(e) => {
            let msg = format!("Error creating: {e}");
            ctx.recorder
                .record(&reference, EventType::Warning, "FailedCreate", &msg)
                .await;
            Err(e.into())
        }
    }
}

/// Delete a pod of `owner`, recording SuccessfulDelete/FailedDelete.
/// `Ok(false)` when it was already gone.
pub async fn delete_pod<O: Object>(ctx: &crate::Context, owner: &O, pod: &Pod) -> Result<bool> {
    let ns = pod.namespace().unwrap_or_default();
    let reference = skiff_runtime::events::reference(owner);
    let dp = DeleteParams {
        preconditions: pod
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..Default::default()
    };
    match api::<Pod>(&ctx.client, &ns)
        .delete(&pod.name_any(), &dp)
        .await
    {
        Ok(_) => {
            let msg = format!("Deleted pod: {}", pod.name_any());
            ctx.recorder
                .record(&reference, EventType::Normal, "SuccessfulDelete", &msg)
                .await;
            Ok(true)
        }
        Err(e) if is_not_found(&e) => Ok(false),
        // The uid precondition failed: the pod we meant is gone.
        Err(e) if ctrlutil::is_conflict(&e) => Ok(false),
        Err(e) => {
            let msg = format!("Error deleting: {e}");
            ctx.recorder
                .record(&reference, EventType::Warning, "FailedDelete", &msg)
                .await;
            Err(e.into())
        }
    }
}

/// Write `obj` with `set` applied to it through the status subresource; on
/// a conflict, once more on a fresh read of the same object. `Ok(None)`
/// when the object is gone.
pub async fn write_status<K: Object>(
    client: &kube::Client,
    obj: &K,
    set: impl Fn(&mut K),
) -> Result<Option<K>> {
    let ns = obj.namespace().unwrap_or_default();
    let api = api::<K>(client, &ns);
    let mut o = obj.clone();
    set(&mut o);
    match api
        .replace_status(&obj.name_any(), &PostParams::default(), &o)
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(e) if ctrlutil::is_conflict(&e) => {
            let mut fresh = match api.get(&obj.name_any()).await {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if fresh.meta().uid != obj.meta().uid {
                return Ok(None);
            }
            set(&mut fresh);
            Ok(Some(
                api.replace_status(&obj.name_any(), &PostParams::default(), &fresh)
                    .await?,
            ))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Run `count` calls of `f` in batches of 1, 2, 4, ... stopping after the
/// first batch with a failure (↔ slowStartBatch). Returns how many calls
/// were made and succeeded, and the first error.
pub async fn slow_start<F, Fut>(count: usize, f: F) -> (usize, Option<ctrlutil::Error>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let mut done = 0;
    let mut successes = 0;
    let mut batch = count.min(1);
    while batch > 0 {
        let results = futures::future::join_all((done..done + batch).map(&f)).await;
        done += batch;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(true) => successes += 1,
                Ok(false) => {}
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        batch = (count - done).min(batch * 2);
    }
    (successes, None)
}

/// Expectations of creations and deletions set together (↔
/// ControllerExpectations.SetExpectations with both counts): the owner is
/// not acted on again until the informer observed them or they expired.
#[derive(Default)]
pub struct Expectations {
    inner: std::sync::Mutex<std::collections::HashMap<ctrlutil::ObjKey, Expecting>>,
}

struct Expecting {
    add: i64,
    deleting: std::collections::HashSet<ctrlutil::ObjKey>,
    at: tokio::time::Instant,
}

impl Expectations {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ctrlutil::ObjKey, Expecting>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn satisfied(&self, owner: &ctrlutil::ObjKey) -> bool {
        self.lock().get(owner).is_none_or(|e| {
            (e.add <= 0 && e.deleting.is_empty())
                || e.at.elapsed() > ctrlutil::expectations::EXPECTATIONS_TTL
        })
    }

    pub fn expect(
        &self,
        owner: &ctrlutil::ObjKey,
        creations: usize,
        deletions: impl IntoIterator<Item = ctrlutil::ObjKey>,
    ) {
        let e = Expecting {
            add: i64::try_from(creations).unwrap_or(i64::MAX),
            deleting: deletions.into_iter().collect(),
            at: tokio::time::Instant::now(),
        };
        self.lock().insert(owner.clone(), e);
    }

    pub fn creation_observed(&self, owner: &ctrlutil::ObjKey) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.add -= 1;
        }
    }

    pub fn deletion_observed(&self, owner: &ctrlutil::ObjKey, pod: &ctrlutil::ObjKey) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deleting.remove(pod);
        }
    }

    pub fn forget(&self, owner: &ctrlutil::ObjKey) {
        self.lock().remove(owner);
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Running, Ready and not being deleted (↔ isRunningAndReady).
pub fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && ctrlutil::pod_is_ready(pod)
        && pod.metadata.deletion_timestamp.is_none()
}

pub fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Oldest first, by creation time then name.
pub fn by_creation<K: Resource>(a: &K, b: &K) -> std::cmp::Ordering {
    let t = |k: &K| k.meta().creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.meta().name.cmp(&b.meta().name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_start_doubles_and_stops_at_a_failing_batch() {
        let calls = std::sync::Mutex::new(Vec::new());
        let (ok, err) = slow_start(10, |i| {
            calls.lock().unwrap().push(i);
            async move {
                if i >= 4 {
                    Err(ctrlutil::Error::Other("boom".into()))
                } else {
                    Ok(true)
                }
            }
        })
        .await;
        assert_eq!(calls.lock().unwrap().len(), 7);
        assert_eq!(ok, 4);
        assert!(err.is_some());
        let (ok, err) = slow_start(5, |_| async { Ok(true) }).await;
        assert_eq!((ok, err.is_none()), (5, true));
        let (ok, _) = slow_start(0, |_| async { Ok(true) }).await;
        assert_eq!(ok, 0);
    }

    #[test]
    fn expectations_count_creations_and_deletions_together() {
        let e = Expectations::default();
        let k = ctrlutil::ObjKey::new("ns", "ds");
        let p = ctrlutil::ObjKey::new("ns", "p");
        assert!(e.satisfied(&k));
        e.expect(&k, 1, [p.clone()]);
        e.creation_observed(&k);
        assert!(!e.satisfied(&k));
        e.deletion_observed(&k, &p);
        assert!(e.satisfied(&k));
        e.expect(&k, 2, []);
        e.forget(&k);
        assert!(e.satisfied(&k));
    }
}
