//! The garbage collector (↔ pkg/controller/garbagecollector): a graph of
//! owners and dependents built from metadata-only watches of every
//! listable, watchable, deletable resource (found by discovery), and two
//! work queues:
//!
//! * attempt-to-delete: a dependent whose owners may all be gone is deleted
//!   (dangling owner references are removed when some owner remains); an
//!   owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted, waits for those with blockOwnerDeletion, then
//!   loses the finalizer;
//! * attempt-to-orphan: an owner with the `orphan` finalizer has its
//!   references removed from its dependents, then loses the finalizer.
//!
//! Owners absent from the graph are looked up live (the graph's watches are
//! not ordered with each other), as the "virtual nodes" of Kubernetes.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::ctrlutil::{self, Cache, Change, Error, Result, WorkQueue, informer, is_not_found};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

const WORKERS: usize = 4;
/// How often new resources are looked for (kube-controller-manager's
/// garbage collector: 30 s), so custom resources are followed soon after
/// their definitions are made.
const REDISCOVER: Duration = Duration::from_secs(30);
const RESYNC: Duration = Duration::from_secs(60);
/// Workers start once the first lists are in, or after this long regardless.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Resources the collector never watches (as Kubernetes ignores events).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// A resource kind the collector knows.
#[derive(Debug)]
struct Res {
    ar: ApiResource,
    namespaced: bool,
}

#[derive(Clone, Debug)]
struct Node {
    uid: String,
    res: Arc<Res>,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Node {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
    fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND_FINALIZER)
    }
    fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.res.ar.kind, self.name)
        } else {
            format!("{} {}/{}", self.res.ar.kind, self.namespace, self.name)
        }
    }
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid → dependent uids (the owner need not be in `nodes`).
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn unlink(&mut self, dependent: &str, owners: &[OwnerReference]) {
        for r in owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(dependent);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
    }

    fn link(&mut self, dependent: &str, owners: &[OwnerReference]) {
        for r in owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(dependent.to_string());
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .cloned()
            .collect()
    }
}

struct Gc {
    ctx: crate::Context,
    graph: Mutex<Graph>,
    resources: RwLock<HashMap<(String, String), Arc<Res>>>,
    attempt_to_delete: Arc<WorkQueue<String>>,
    attempt_to_orphan: Arc<WorkQueue<String>>,
}

type Monitor = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Run the garbage collector until the future is dropped.
pub async fn run(ctx: crate::Context) {
    let gc = Arc::new(Gc {
        ctx,
        graph: Mutex::default(),
        resources: RwLock::default(),
        attempt_to_delete: Arc::new(WorkQueue::default()),
        attempt_to_orphan: Arc::new(WorkQueue::default()),
    });
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let monitors = {
        let gc = gc.clone();
        async move {
            let mut running: FuturesUnordered<Monitor> = FuturesUnordered::new();
            let mut watched: HashSet<(String, String)> = HashSet::new();
            let mut first = true;
            loop {
                let found = gc.discover().await;
                let mut caches = Vec::new();
                for res in found {
                    let key = (res.ar.api_version.clone(), res.ar.plural.clone());
                    if watched.insert(key) {
                        let (monitor, cache) = gc.clone().monitor(res);
                        caches.push(cache);
                        running.push(monitor);
                    }
                }
                if first && !watched.is_empty() {
                    first = false;
                    tracing::info!(
                        controller = "garbagecollector",
                        resources = watched.len(),
                        "monitoring resources"
                    );
                    let tx = synced_tx.clone();
                    running.push(Box::pin(async move {
                        let all = futures::future::join_all(caches.iter().map(|c| c.wait_synced()));
                        if tokio::time::timeout(SYNC_TIMEOUT, all).await.is_err() {
                            tracing::warn!(
                                controller = "garbagecollector",
                                "not every resource synced; starting anyway"
                            );
                        }
                        let _ = tx.send(true);
                        std::future::pending::<()>().await
                    }));
                }
                let wait = if watched.is_empty() {
                    Duration::from_secs(2)
                } else {
                    REDISCOVER
                };
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        _ = running.next(), if !running.is_empty() => {}
                    }
                }
            }
        }
    };
    let workers = {
        let gc = gc.clone();
        async move {
            let mut rx = synced_rx;
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            let g1 = gc.clone();
            let deleters = ctrlutil::run_workers(
                "garbagecollector",
                gc.attempt_to_delete.clone(),
                WORKERS,
                move |uid| {
                    let gc = g1.clone();
                    async move { gc.attempt_to_delete_item(&uid).await }
                },
            );
            let g2 = gc.clone();
            let orphaners = ctrlutil::run_workers(
                "garbagecollector-orphan",
                gc.attempt_to_orphan.clone(),
                WORKERS,
                move |uid| {
                    let gc = g2.clone();
                    async move { gc.attempt_to_orphan_item(&uid).await }
                },
            );
            let resync = async {
                loop {
                    tokio::time::sleep(RESYNC).await;
                    gc.resync();
                }
            };
            tokio::join!(deleters, orphaners, resync);
        }
    };
    tokio::join!(monitors, workers);
}

impl Gc {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every resource that can be listed, watched and deleted.
    async fn discover(&self) -> Vec<Arc<Res>> {
        let discovery = match Discovery::new(self.ctx.client.clone()).run().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(controller = "garbagecollector", error = %e, "discovery failed");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if IGNORED.contains(&(ar.group.as_str(), ar.plural.as_str())) {
                    continue;
                }
                if ![verbs::LIST, verbs::WATCH, verbs::DELETE]
                    .iter()
                    .all(|v| caps.supports_operation(v))
                {
                    continue;
                }
                let res = Arc::new(Res {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar,
                });
                self.remember(&res);
                out.push(res);
            }
        }
        out
    }

    fn remember(&self, res: &Arc<Res>) {
        let mut map = self.resources.write().unwrap_or_else(|e| e.into_inner());
        map.insert(
            (res.ar.api_version.clone(), res.ar.kind.clone()),
            res.clone(),
        );
    }

    /// The resource of an owner reference's apiVersion and kind.
    async fn resolve(&self, api_version: &str, kind: &str) -> Result<Arc<Res>> {
        if let Some(r) = self
            .resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(api_version.to_string(), kind.to_string()))
        {
            return Ok(r.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.ctx.client, &gvk).await?;
        let res = Arc::new(Res {
            ar,
            namespaced: caps.scope == Scope::Namespaced,
        });
        self.remember(&res);
        Ok(res)
    }

    /// Watch one resource's metadata into the graph.
    fn monitor(
        self: Arc<Self>,
        res: Arc<Res>,
    ) -> (Monitor, Cache<PartialObjectMeta<DynamicObject>>) {
        let cache = Cache::default();
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.ctx.client.clone(), &res.ar);
        let c = cache.clone();
        let fut = async move {
            let gc = self.clone();
            informer::run(api, watcher::Config::default(), c, move |change| {
                gc.on_change(&res, change)
            })
            .await
        };
        (Box::pin(fut), cache)
    }

    fn on_change(&self, res: &Arc<Res>, change: Change<PartialObjectMeta<DynamicObject>>) {
        match change {
            Change::Apply { new, .. } => self.on_apply(res, &new.metadata),
            Change::Delete(old) => self.on_delete(&old.metadata),
        }
    }

    fn on_apply(&self, res: &Arc<Res>, meta: &ObjectMeta) {
        let Some(uid) = meta.uid.clone() else { return };
        let node = Node {
            uid: uid.clone(),
            res: res.clone(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        };
        let mut to_delete: Vec<String> = Vec::new();
        let mut to_orphan = false;
        {
            let mut g = self.graph();
            let previous = g.nodes.insert(uid.clone(), node.clone());
            let prev_owners = previous
                .as_ref()
                .map(|p| p.owners.clone())
                .unwrap_or_default();
            if previous.is_none() || prev_owners != node.owners {
                g.unlink(&uid, &prev_owners);
                g.link(&uid, &node.owners);
                if !node.owners.is_empty() {
                    to_delete.push(uid.clone());
                }
                // An owner waiting on this dependent may be unblocked.
                for r in &prev_owners {
                    if !node.owners.iter().any(|o| o.uid == r.uid)
                        && g.nodes.get(&r.uid).is_some_and(Node::deleting_dependents)
                    {
                        to_delete.push(r.uid.clone());
                    }
                }
            }
            if node.deleting_dependents() {
                to_delete.push(uid.clone());
                to_delete.extend(g.dependents_of(&uid).into_iter().map(|d| d.uid));
            }
            if node.deleting && node.has_finalizer(ORPHAN_FINALIZER) {
                to_orphan = true;
            }
        }
        for u in to_delete {
            self.attempt_to_delete.add(u);
        }
        if to_orphan {
            self.attempt_to_orphan.add(uid);
        }
    }

    fn on_delete(&self, meta: &ObjectMeta) {
        let Some(uid) = meta.uid.clone() else { return };
        let mut to_delete = Vec::new();
        {
            let mut g = self.graph();
            let Some(node) = g.nodes.remove(&uid) else {
                return;
            };
            g.unlink(&uid, &node.owners);
            // Its dependents lost an owner; owners waiting on it may finish.
            to_delete.extend(g.dependents.get(&uid).into_iter().flatten().cloned());
            for r in &node.owners {
                if g.nodes.get(&r.uid).is_some_and(Node::deleting_dependents) {
                    to_delete.push(r.uid.clone());
                }
            }
        }
        for u in to_delete {
            self.attempt_to_delete.add(u);
        }
    }

    /// Look again at nodes whose owners are not in the graph (owners of kinds
    /// not watched, or deletions missed).
    fn resync(&self) {
        let g = self.graph();
        let items: Vec<String> = g
            .nodes
            .values()
            .filter(|n| {
                n.owners.iter().any(|r| !g.nodes.contains_key(&r.uid)) || n.deleting_dependents()
            })
            .map(|n| n.uid.clone())
            .collect();
        let orphaning: Vec<String> = g
            .nodes
            .values()
            .filter(|n| n.deleting && n.has_finalizer(ORPHAN_FINALIZER))
            .map(|n| n.uid.clone())
            .collect();
        drop(g);
        for u in items {
            self.attempt_to_delete.add(u);
        }
        for u in orphaning {
            self.attempt_to_orphan.add(u);
        }
    }

    fn dynamic_api(&self, res: &Res, namespace: &str) -> Api<DynamicObject> {
        if res.namespaced {
            Api::namespaced_with(self.ctx.client.clone(), namespace, &res.ar)
        } else {
            Api::all_with(self.ctx.client.clone(), &res.ar)
        }
    }

    fn meta_api(&self, res: &Res, namespace: &str) -> Api<PartialObjectMeta<DynamicObject>> {
        if res.namespaced {
            Api::namespaced_with(self.ctx.client.clone(), namespace, &res.ar)
        } else {
            Api::all_with(self.ctx.client.clone(), &res.ar)
        }
    }

    /// The owner's state: Some(deleting_dependents) if it exists, None if gone.
    async fn owner_state(&self, item: &Node, r: &OwnerReference) -> Result<Option<bool>> {
        if let Some(owner) = self.graph().nodes.get(&r.uid) {
            return Ok(Some(owner.deleting_dependents()));
        }
        let res = self.resolve(&r.api_version, &r.kind).await?;
        if res.namespaced && item.namespace.is_empty() {
            // A cluster-scoped dependent cannot have a namespaced owner.
            return Ok(None);
        }
        match self.meta_api(&res, &item.namespace).get(&r.name).await {
            Ok(owner) if owner.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let deleting = owner.metadata.deletion_timestamp.is_some()
                    && owner
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND_FINALIZER);
                Ok(Some(deleting))
            }
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// ↔ attemptToDeleteItem.
    async fn attempt_to_delete_item(&self, uid: &str) -> Result<Option<Duration>> {
        let Some(item) = self.graph().nodes.get(uid).cloned() else {
            return Ok(None);
        };
        if item.deleting && !item.has_finalizer(FOREGROUND_FINALIZER) {
            return Ok(None);
        }
        if item.deleting_dependents() {
            return self.process_deleting_dependents(&item).await;
        }
        if item.owners.is_empty() {
            return Ok(None);
        }
        // Every owner known and alive: nothing to do (no API call).
        let all_solid = {
            let g = self.graph();
            item.owners.iter().all(|r| {
                g.nodes
                    .get(&r.uid)
                    .is_some_and(|o| !o.deleting_dependents())
            })
        };
        if all_solid {
            return Ok(None);
        }
        // Decide on the latest object, not the graph: its owner references
        // may have changed (an orphaning owner removes them before it goes).
        let latest = match self
            .meta_api(&item.res, &item.namespace)
            .get(&item.name)
            .await
        {
            Ok(l) => l,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            return Ok(None);
        }
        let item = Node {
            owners: latest.metadata.owner_references.clone().unwrap_or_default(),
            deleting: latest.metadata.deletion_timestamp.is_some(),
            finalizers: latest.metadata.finalizers.clone().unwrap_or_default(),
            ..item
        };
        if item.deleting || item.owners.is_empty() {
            // Being deleted or no longer owned: its own watch event brings it back if needed.
            return Ok(None);
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &item.owners {
            match self.owner_state(&item, r).await? {
                None => dangling.push(r.uid.clone()),
                Some(true) => waiting.push(r.uid.clone()),
                Some(false) => solid.push(r.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(None);
            }
            // Some owner remains: only drop the references to the others.
            let gone: Vec<String> = dangling.into_iter().chain(waiting).collect();
            tracing::debug!(controller = "garbagecollector", item = %item.describe(), "removing dangling owner references");
            self.remove_owner_refs(&item, &gone).await?;
            return Ok(None);
        }
        let has_dependents = !self.graph().dependents_of(uid).is_empty();
        if !waiting.is_empty() && has_dependents {
            // Foreground all the way down; avoid a cycle of waiting owners.
            if self
                .graph()
                .dependents_of(uid)
                .iter()
                .any(Node::deleting_dependents)
            {
                self.unblock_owner_refs(&item).await?;
            }
            tracing::debug!(controller = "garbagecollector", item = %item.describe(), "deleting in foreground: an owner waits for its dependents");
            return self.delete_item(&item, PropagationPolicy::Foreground).await;
        }
        let policy = if item.has_finalizer(ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if item.has_finalizer(FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(controller = "garbagecollector", item = %item.describe(), "deleting: all owners are gone");
        self.delete_item(&item, policy).await
    }

    async fn delete_item(
        &self,
        item: &Node,
        policy: PropagationPolicy,
    ) -> Result<Option<Duration>> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(item.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .dynamic_api(&item.res, &item.namespace)
            .delete(&item.name, &dp)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            // The precondition failed: the name now holds another object.
            Err(e) if ctrlutil::is_conflict(&e) && !self.graph().nodes.contains_key(&item.uid) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// ↔ processDeletingDependentsItem.
    async fn process_deleting_dependents(&self, item: &Node) -> Result<Option<Duration>> {
        let dependents = self.graph().dependents_of(&item.uid);
        let blocking: Vec<&Node> = dependents
            .iter()
            .filter(|d| {
                d.owners
                    .iter()
                    .any(|r| r.uid == item.uid && r.block_owner_deletion == Some(true))
            })
            .collect();
        if blocking.is_empty() {
            tracing::debug!(controller = "garbagecollector", item = %item.describe(), "dependents gone: removing the foregroundDeletion finalizer");
            self.remove_finalizer(item, FOREGROUND_FINALIZER).await?;
            return Ok(None);
        }
        for d in dependents {
            if !d.deleting || d.deleting_dependents() {
                self.attempt_to_delete.add(d.uid.clone());
            }
        }
        Ok(None)
    }

    /// ↔ attemptToOrphanWorker.
    async fn attempt_to_orphan_item(&self, uid: &str) -> Result<Option<Duration>> {
        let Some(owner) = self.graph().nodes.get(uid).cloned() else {
            return Ok(None);
        };
        if !(owner.deleting && owner.has_finalizer(ORPHAN_FINALIZER)) {
            return Ok(None);
        }
        let dependents = self.graph().dependents_of(uid);
        let results = futures::future::join_all(
            dependents
                .iter()
                .map(|d| self.remove_owner_refs(d, std::slice::from_ref(&owner.uid))),
        )
        .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        tracing::debug!(controller = "garbagecollector", item = %owner.describe(), "dependents orphaned: removing the orphan finalizer");
        self.remove_finalizer(&owner, ORPHAN_FINALIZER).await?;
        Ok(None)
    }

    /// Read-modify-write of an object's metadata, guarded by resourceVersion.
    async fn patch_metadata(
        &self,
        item: &Node,
        change: impl Fn(&ObjectMeta) -> Option<Value>,
    ) -> Result<()> {
        let meta_api = self.meta_api(&item.res, &item.namespace);
        let api = self.dynamic_api(&item.res, &item.namespace);
        for _ in 0..5 {
            let current = match meta_api.get(&item.name).await {
                Ok(c) => c,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if current.metadata.uid.as_deref() != Some(item.uid.as_str()) {
                return Ok(());
            }
            let Some(mut patch) = change(&current.metadata) else {
                return Ok(());
            };
            patch["resourceVersion"] = json!(current.metadata.resource_version);
            let body = json!({ "metadata": patch });
            match api
                .patch(&item.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if ctrlutil::is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Other(format!(
            "{}: too many conflicts updating metadata",
            item.describe()
        )))
    }

    async fn remove_owner_refs(&self, item: &Node, owner_uids: &[String]) -> Result<()> {
        self.patch_metadata(item, |meta| {
            let refs = meta.owner_references.clone().unwrap_or_default();
            if !refs.iter().any(|r| owner_uids.contains(&r.uid)) {
                return None;
            }
            let kept: Vec<&OwnerReference> = refs.iter().filter(|r| !owner_uids.contains(&r.uid)).collect();
            Some(json!({ "ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) } }))
        })
        .await
    }

    async fn unblock_owner_refs(&self, item: &Node) -> Result<()> {
        self.patch_metadata(item, |meta| {
            let mut refs = meta.owner_references.clone().unwrap_or_default();
            if !refs.iter().any(|r| r.block_owner_deletion == Some(true)) {
                return None;
            }
            for r in refs.iter_mut() {
                if r.block_owner_deletion == Some(true) {
                    r.block_owner_deletion = Some(false);
                }
            }
            Some(json!({ "ownerReferences": refs }))
        })
        .await
    }

    async fn remove_finalizer(&self, item: &Node, finalizer: &str) -> Result<()> {
        self.patch_metadata(item, |meta| {
            let finalizers = meta.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return None;
            }
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            Some(json!({ "finalizers": kept }))
        })
        .await
    }
}
