//! The namespace controller (↔ pkg/controller/namespace): a namespace with a
//! deletionTimestamp goes Terminating, every namespaced object in it (of
//! every resource discovery lists) is deleted, the Kubernetes deletion
//! conditions report progress, and once nothing is left the `kubernetes`
//! finalizer is removed through the finalize subresource and the namespace
//! deleted.
//!
//! The controller also sweeps the content of a namespace that disappears
//! without going through Terminating (an API server that deletes namespaces
//! at once), so objects never outlive their namespace.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{Discovery, Scope, verbs};
use tokio::time::Instant;

use crate::ctrlutil::{self, Cache, Change, Error, Result, WorkQueue, is_not_found};

/// The finalizer this controller owns in spec.finalizers.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

const WORKERS: usize = 2;
const DISCOVERY_TTL: Duration = Duration::from_secs(30);
/// How soon to look again while content remains.
const CONTENT_POLL: Duration = Duration::from_secs(2);
const SWEEP_POLL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Item {
    /// A namespace being deleted.
    Finalize(String),
    /// A namespace that is gone: delete what is left in it.
    Sweep(String),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Finalize(n) => write!(f, "{n}"),
            Item::Sweep(n) => write!(f, "{n} (sweep)"),
        }
    }
}

struct Res {
    ar: ApiResource,
    delete_collection: bool,
}

/// When discovery ran, what it found, and the groups it failed for.
type Discovered = (Instant, Arc<Vec<Res>>, Vec<String>);

struct Controller {
    ctx: crate::Context,
    namespaces: Cache<Namespace>,
    queue: Arc<WorkQueue<Item>>,
    discovered: Mutex<Option<Discovered>>,
}

/// What one pass over the content found.
#[derive(Default)]
struct Content {
    /// resource plural → remaining objects.
    remaining: BTreeMap<String, usize>,
    /// finalizer → objects still holding it.
    finalizers: BTreeMap<String, usize>,
    /// resources whose deletion failed.
    failed: Vec<String>,
    /// groups discovery failed for.
    discovery_failed: Vec<String>,
}

/// Run the namespace controller until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let c = Arc::new(Controller {
        ctx: ctx.clone(),
        namespaces: ctx.informers.get::<Namespace>().cache(),
        queue: Arc::new(WorkQueue::default()),
        discovered: Mutex::new(None),
    });
    let ns_informer = {
        let c = c.clone();
        ctx.informers.get::<Namespace>().run(move |ch| match ch {
            Change::Apply { new, .. } => {
                if new.metadata.deletion_timestamp.is_some() {
                    c.queue.add(Item::Finalize(new.name_any()));
                }
            }
            Change::Delete(old) => c.queue.add(Item::Sweep(old.name_any())),
        })
    };
    let workers = {
        let c = c.clone();
        async move {
            c.namespaces.wait_synced().await;
            let cc = c.clone();
            ctrlutil::run_workers("namespace", c.queue.clone(), WORKERS, move |item| {
                let c = cc.clone();
                async move {
                    match item {
                        Item::Finalize(name) => c.sync(&name).await,
                        Item::Sweep(name) => c.sweep(&name).await,
                    }
                }
            })
            .await
        }
    };
    tracing::info!(controller = "namespace", "starting");
    tokio::join!(ns_informer, workers);
}

impl Controller {
    fn api(&self) -> Api<Namespace> {
        Api::all(self.ctx.client.clone())
    }

    /// Namespaced resources that can be listed and deleted (cached briefly).
    /// `fresh`: discover now, whatever the cache holds.
    async fn resources(&self, fresh: bool) -> (Arc<Vec<Res>>, Vec<String>) {
        if !fresh
            && let Ok(guard) = self.discovered.lock()
            && let Some((at, res, failed)) = guard.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return (res.clone(), failed.clone());
        }
        let (list, failed) = match Discovery::new(self.ctx.client.clone()).run().await {
            Ok(d) => {
                let mut list = Vec::new();
                for group in d.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if caps.scope != Scope::Namespaced
                            || !caps.supports_operation(verbs::LIST)
                            || !caps.supports_operation(verbs::DELETE)
                        {
                            continue;
                        }
                        list.push(Res {
                            delete_collection: caps.supports_operation(verbs::DELETE_COLLECTION),
                            ar,
                        });
                    }
                }
                (list, Vec::new())
            }
            Err(e) => {
                tracing::warn!(controller = "namespace", error = %e, "discovery failed");
                (Vec::new(), vec![e.to_string()])
            }
        };
        let list = Arc::new(list);
        if failed.is_empty()
            && let Ok(mut guard) = self.discovered.lock()
        {
            *guard = Some((Instant::now(), list.clone(), failed.clone()));
        }
        (list, failed)
    }

    /// Delete everything in `namespace` and report what remains.
    async fn delete_content(&self, namespace: &str, fresh: bool) -> Content {
        let (resources, discovery_failed) = self.resources(fresh).await;
        let mut content = Content {
            discovery_failed,
            ..Content::default()
        };
        let results =
            futures::future::join_all(resources.iter().map(|r| self.delete_resource(namespace, r)))
                .await;
        for (res, result) in resources.iter().zip(results) {
            let key = if res.ar.group.is_empty() {
                res.ar.plural.clone()
            } else {
                format!("{}.{}", res.ar.plural, res.ar.group)
            };
            match result {
                Ok((remaining, finalizers)) => {
                    if remaining > 0 {
                        *content.remaining.entry(key).or_default() += remaining;
                    }
                    for f in finalizers {
                        *content.finalizers.entry(f).or_default() += 1;
                    }
                }
                Err(e) => {
                    tracing::debug!(controller = "namespace", namespace, resource = %key, error = %e, "deleting content failed");
                    content.failed.push(key);
                }
            }
        }
        content
    }

    /// Delete one resource's objects; returns how many remain and their finalizers.
    async fn delete_resource(&self, namespace: &str, res: &Res) -> Result<(usize, Vec<String>)> {
        let meta: Api<PartialObjectMeta<DynamicObject>> =
            Api::namespaced_with(self.ctx.client.clone(), namespace, &res.ar);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), namespace, &res.ar);
        let items = meta.list_metadata(&ListParams::default()).await?.items;
        if items.is_empty() {
            return Ok((0, Vec::new()));
        }
        let live = items
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .count();
        if live > 0 {
            if res.delete_collection {
                api.delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await?;
            } else {
                for i in items
                    .iter()
                    .filter(|i| i.metadata.deletion_timestamp.is_none())
                {
                    match api.delete(&i.name_any(), &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let left = meta.list_metadata(&ListParams::default()).await?.items;
        let finalizers = left
            .iter()
            .flat_map(|i| i.metadata.finalizers.clone().unwrap_or_default())
            .collect();
        Ok((left.len(), finalizers))
    }

    async fn sync(&self, name: &str) -> Result<Option<Duration>> {
        let Some(cached) = self.namespaces.get(&ctrlutil::ObjKey::new("", name)) else {
            return Ok(None);
        };
        if cached.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        // The freshest copy: a stale one would write back stale spec/status.
        let mut ns = match self.api().get(name).await {
            Ok(ns) => ns,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if ns.metadata.deletion_timestamp.is_none() || ns.metadata.uid != cached.metadata.uid {
            return Ok(None);
        }
        if !has_finalizer(&ns) {
            // Already finalized: only the namespace itself is left.
            self.delete_namespace(&ns).await?;
            return Ok(None);
        }
        if ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating") {
            ns = self.write_status(&ns, None).await?;
        }
        let mut content = self.delete_content(name, false).await;
        if content.remaining.is_empty() && content.failed.is_empty() {
            // Nothing left by the cached discovery: make sure with a fresh
            // one (a custom resource defined since is in no cache yet), as
            // Kubernetes' deleter discovers on every pass.
            content = self.delete_content(name, true).await;
        }
        let ns = self.write_status(&ns, Some(&content)).await?;
        if !content.failed.is_empty() || !content.discovery_failed.is_empty() {
            return Err(Error::Other(format!(
                "namespace {name}: deleting content failed for {}",
                content
                    .failed
                    .iter()
                    .chain(&content.discovery_failed)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !content.remaining.is_empty() {
            tracing::debug!(controller = "namespace", namespace = name, remaining = ?content.remaining, "content remains");
            return Ok(Some(CONTENT_POLL));
        }
        // Everything is gone: finalize.
        let mut finalized = ns.clone();
        let spec = finalized.spec.get_or_insert_with(Default::default);
        spec.finalizers = Some(
            spec.finalizers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != KUBERNETES_FINALIZER)
                .collect(),
        );
        let after = match self
            .api()
            .replace_subresource("finalize", name, &PostParams::default(), &finalized)
            .await
        {
            Ok(after) => after,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            controller = "namespace",
            namespace = name,
            "namespace finalized"
        );
        if !has_finalizer(&after)
            && after
                .spec
                .as_ref()
                .and_then(|s| s.finalizers.as_ref())
                .is_none_or(Vec::is_empty)
        {
            self.delete_namespace(&after).await?;
        }
        Ok(None)
    }

    /// Delete the finalized namespace (the API server removes it once no finalizer is left).
    async fn delete_namespace(&self, ns: &Namespace) -> Result<()> {
        match self.api().get(&ns.name_any()).await {
            Ok(current) if current.metadata.uid == ns.metadata.uid => {}
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: ns.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api().delete(&ns.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || ctrlutil::is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Set phase Terminating and, given what the content pass found, the deletion conditions.
    async fn write_status(&self, ns: &Namespace, content: Option<&Content>) -> Result<Namespace> {
        let mut status = ns.status.clone().unwrap_or_default();
        status.phase = Some("Terminating".into());
        if let Some(c) = content {
            set_conditions(&mut status, c);
        }
        if ns.status.as_ref() == Some(&status) {
            return Ok(ns.clone());
        }
        let mut obj = ns.clone();
        obj.status = Some(status);
        match self
            .api()
            .replace_status(&ns.name_any(), &PostParams::default(), &obj)
            .await
        {
            Ok(updated) => Ok(updated),
            // An API server that deletes on any update of an object being
            // deleted may have removed it: the sweep finishes the job.
            Err(e) if is_not_found(&e) => Ok(obj),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete what is left in a namespace that no longer exists.
    async fn sweep(&self, name: &str) -> Result<Option<Duration>> {
        match self.api().get(name).await {
            Ok(ns) => {
                if ns.metadata.deletion_timestamp.is_some() {
                    self.queue.add(Item::Finalize(name.to_string()));
                }
                // Recreated: its content is its own.
                return Ok(None);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let content = self.delete_content(name, false).await;
        if content.remaining.is_empty()
            && content.failed.is_empty()
            && content.discovery_failed.is_empty()
        {
            return Ok(None);
        }
        tracing::debug!(controller = "namespace", namespace = name, remaining = ?content.remaining, "content of a deleted namespace remains");
        Ok(Some(SWEEP_POLL))
    }
}

fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == KUBERNETES_FINALIZER))
}

/// The NamespaceDeletion* conditions of Kubernetes (pkg/controller/namespace/deletion/status_condition_utils.go).
fn set_conditions(status: &mut NamespaceStatus, c: &Content) {
    let discovery = if c.discovery_failed.is_empty() {
        (
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".to_string(),
        )
    } else {
        (
            "True",
            "DiscoveryFailed",
            format!(
                "Discovery failed for some groups, {} failing: {}",
                c.discovery_failed.len(),
                c.discovery_failed.join(", ")
            ),
        )
    };
    let parsing = (
        "False",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed".to_string(),
    );
    let deletion = if c.failed.is_empty() {
        (
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".to_string(),
        )
    } else {
        (
            "True",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                c.failed.len(),
                c.failed.join(", ")
            ),
        )
    };
    let remaining = if c.remaining.is_empty() {
        (
            "False",
            "ContentRemoved",
            "All content successfully removed".to_string(),
        )
    } else {
        let parts: Vec<String> = c
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        (
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers = if c.finalizers.is_empty() {
        (
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".to_string(),
        )
    } else {
        let parts: Vec<String> = c
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        (
            "True",
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    for (type_, (st, reason, message)) in [
        ("NamespaceDeletionDiscoveryFailure", discovery),
        ("NamespaceDeletionGroupVersionParsingFailure", parsing),
        ("NamespaceDeletionContentFailure", deletion),
        ("NamespaceContentRemaining", remaining),
        ("NamespaceFinalizersRemaining", finalizers),
    ] {
        set_condition(status, type_, st, reason, &message);
    }
}

fn set_condition(status: &mut NamespaceStatus, type_: &str, st: &str, reason: &str, message: &str) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != st {
                c.last_transition_time = Some(skiff_runtime::now_time());
            }
            c.status = st.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
        }
        None => conditions.push(NamespaceCondition {
            type_: type_.into(),
            status: st.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(skiff_runtime::now_time()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_report_remaining_content() {
        let mut status = NamespaceStatus::default();
        let mut c = Content::default();
        c.remaining.insert("pods".into(), 2);
        c.finalizers.insert("example.com/keep".into(), 1);
        set_conditions(&mut status, &c);
        let conds = status.conditions.clone().unwrap_or_default();
        assert_eq!(conds.len(), 5);
        let remaining = conds
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining");
        assert_eq!(remaining.map(|c| c.status.as_str()), Some("True"));
        assert_eq!(
            remaining.and_then(|c| c.message.as_deref()),
            Some("Some resources are remaining: pods has 2 resource instances")
        );
        set_conditions(&mut status, &Content::default());
        let conds = status.conditions.unwrap_or_default();
        assert!(conds.iter().all(|c| c.status == "False"));
    }
}
