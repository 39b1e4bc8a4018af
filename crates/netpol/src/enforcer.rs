//! The enforcer: keeps the model fed by the watchers, computes the desired
//! ruleset and applies the difference to what it programmed last, one nft
//! transaction per batch of changes. The first sync (and the one after a
//! failed transaction) recreates the table from scratch.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{Labels, PodInfo, PolicyInfo, namespace_labels};
use crate::rules::{self, Desired, Inputs};
use crate::{Config, Error, Netfilter};

/// A change seen by the watchers.
#[derive(Debug, Clone)]
pub enum Update {
    PolicyApplied(Box<NetworkPolicy>),
    PolicyDeleted(Box<NetworkPolicy>),
    PoliciesListed(Vec<NetworkPolicy>),
    PodApplied(Box<Pod>),
    PodDeleted(Box<Pod>),
    PodsListed(Vec<Pod>),
    NamespaceApplied(Box<Namespace>),
    NamespaceDeleted(Box<Namespace>),
    NamespacesListed(Vec<Namespace>),
}

type Key = (String, String);

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    pub full: bool,
    /// Size of the nft script; 0 when nothing had to change.
    pub script_bytes: usize,
}

pub struct Enforcer<N> {
    config: Config,
    nft: N,
    pods: HashMap<Key, PodInfo>,
    namespaces: HashMap<String, Labels>,
    policies: HashMap<Key, PolicyInfo>,
    /// What the kernel holds; None: unknown (recreate the table).
    programmed: Option<Desired>,
    dirty: bool,
    listed: [bool; 3],
}

impl<N: Netfilter> Enforcer<N> {
    pub fn new(config: Config, nft: N) -> Self {
        Enforcer {
            config,
            nft,
            pods: HashMap::new(),
            namespaces: HashMap::new(),
            policies: HashMap::new(),
            programmed: None,
            dirty: true,
            listed: [false; 3],
        }
    }

    pub fn netfilter(&self) -> &N {
        &self.nft
    }

    /// All three kinds have been listed once.
    pub fn ready(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    pub fn has_pending(&self) -> bool {
        self.dirty || self.programmed.is_none()
    }

    /// Record a change in the model; a change that makes no difference to
    /// enforcement (a pod's status beyond its IPs and phase) leaves it clean.
    pub fn update(&mut self, update: Update) {
        let changed = match update {
            Update::PolicyApplied(np) => {
                let info = PolicyInfo::from_policy(&np);
                self.policies.insert(key(&np.metadata), info.clone()) != Some(info)
            }
            Update::PolicyDeleted(np) => self.policies.remove(&key(&np.metadata)).is_some(),
            Update::PoliciesListed(list) => {
                self.listed[0] = true;
                let new: HashMap<Key, PolicyInfo> = list
                    .iter()
                    .map(|np| (key(&np.metadata), PolicyInfo::from_policy(np)))
                    .collect();
                std::mem::replace(&mut self.policies, new) != self.policies
            }
            Update::PodApplied(pod) => {
                let info = PodInfo::from_pod(&pod);
                self.pods.insert(key(&pod.metadata), info.clone()) != Some(info)
            }
            Update::PodDeleted(pod) => self.pods.remove(&key(&pod.metadata)).is_some(),
            Update::PodsListed(list) => {
                self.listed[1] = true;
                let new: HashMap<Key, PodInfo> = list
                    .iter()
                    .map(|p| (key(&p.metadata), PodInfo::from_pod(p)))
                    .collect();
                std::mem::replace(&mut self.pods, new) != self.pods
            }
            Update::NamespaceApplied(ns) => {
                let labels = namespace_labels(&ns);
                self.namespaces
                    .insert(ns.metadata.name.clone().unwrap_or_default(), labels.clone())
                    != Some(labels)
            }
            Update::NamespaceDeleted(ns) => self
                .namespaces
                .remove(ns.metadata.name.as_deref().unwrap_or_default())
                .is_some(),
            Update::NamespacesListed(list) => {
                self.listed[2] = true;
                let new: HashMap<String, Labels> = list
                    .iter()
                    .map(|ns| {
                        (
                            ns.metadata.name.clone().unwrap_or_default(),
                            namespace_labels(ns),
                        )
                    })
                    .collect();
                std::mem::replace(&mut self.namespaces, new) != self.namespaces
            }
        };
        self.dirty |= changed;
    }

    /// The ruleset the model asks for now.
    pub fn desired(&self) -> Desired {
        let pods: Vec<&PodInfo> = self.pods.values().collect();
        let policies: Vec<&PolicyInfo> = self.policies.values().collect();
        rules::desired(&Inputs {
            node: &self.config.node_name,
            pods: &pods,
            policies: &policies,
            namespaces: &self.namespaces,
        })
    }

    /// Bring the kernel in step with the model: one transaction.
    pub async fn sync(&mut self) -> Result<SyncStats, Error> {
        let desired = self.desired();
        let (script, full) = match &self.programmed {
            Some(old) => (rules::diff_script(&self.config.table, old, &desired), false),
            None => (rules::full_script(&self.config.table, &desired), true),
        };
        self.dirty = false;
        if !script.is_empty()
            && let Err(e) = self.nft.apply(&script).await
        {
            self.programmed = None;
            return Err(e.into());
        }
        self.programmed = Some(desired);
        Ok(SyncStats {
            full,
            script_bytes: script.len(),
        })
    }
}

/// Apply updates as they come, batching those within `config.min_sync_period`
/// of the last sync; retry a failed sync (as a full one) after a second.
pub async fn run_loop<N: Netfilter>(
    enforcer: &mut Enforcer<N>,
    updates: &mut mpsc::UnboundedReceiver<Update>,
    shutdown: impl Future<Output = ()>,
) {
    let min = enforcer.config.min_sync_period;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_sync: Option<Instant> = None;
    let mut next_sync: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            update = updates.recv() => {
                let Some(update) = update else { return };
                enforcer.update(update);
                if enforcer.ready() && enforcer.has_pending() && next_sync.is_none() {
                    let now = Instant::now();
                    next_sync = Some(last_sync.map(|l| (l + min).max(now)).unwrap_or(now));
                }
            }
            _ = tokio::time::sleep_until(next_sync.unwrap_or_else(Instant::now)), if next_sync.is_some() => {
                next_sync = None;
                last_sync = Some(Instant::now());
                match enforcer.sync().await {
                    Ok(stats) => {
                        tracing::debug!(full = stats.full, bytes = stats.script_bytes, "network policy rules synced");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "syncing network policy rules failed; retrying with a full resync");
                        next_sync = Some(Instant::now() + min.max(Duration::from_secs(1)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rules::tests::{pod_obj, policy_obj};
    use serde_json::json;
    use skiff_proxy::Recorder;

    fn config() -> Config {
        Config {
            node_name: "n1".into(),
            table: "t".into(),
            ..Default::default()
        }
    }

    fn namespace(name: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    fn allow_clients() -> NetworkPolicy {
        policy_obj(
            "default",
            "allow",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}]}),
        )
    }

    fn listed(e: &mut Enforcer<Recorder>) {
        e.update(Update::NamespacesListed(vec![namespace("default")]));
        e.update(Update::PodsListed(vec![
            pod_obj("default", "web", "n1", "10.42.0.2", json!({"app": "web"})),
            pod_obj("default", "a", "n2", "10.42.1.3", json!({"role": "client"})),
        ]));
        e.update(Update::PoliciesListed(vec![allow_clients()]));
    }

    #[tokio::test]
    async fn pod_churn_changes_set_elements_only() {
        let rec = Recorder::default();
        let mut e = Enforcer::new(config(), rec.clone());
        listed(&mut e);
        assert!(e.ready());
        let stats = e.sync().await.unwrap();
        assert!(stats.full);
        let full = rec.take().remove(0);
        assert!(
            full.starts_with("add table inet t\ndelete table inet t\nadd table inet t\n"),
            "{full}"
        );
        assert!(
            full.contains("add element inet t ingress { 10.42.0.2 : jump in-10-42-0-2 }\n"),
            "{full}"
        );
        let peers = e.desired().sets.keys().next().unwrap().clone();
        assert!(
            full.contains(&format!("add element inet t {peers} {{ 10.42.1.3 }}\n")),
            "{full}"
        );

        // A second client: one element added; it going: one deleted.
        let b = pod_obj("default", "b", "n1", "10.42.0.4", json!({"role": "client"}));
        e.update(Update::PodApplied(Box::new(b.clone())));
        assert!(!e.sync().await.unwrap().full);
        assert_eq!(
            rec.take(),
            vec![format!("add element inet t {peers} {{ 10.42.0.4 }}\n")]
        );
        // A status change that does not matter: nothing to do.
        let mut b2 = b.clone();
        b2.status.as_mut().unwrap().start_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        e.update(Update::PodApplied(Box::new(b2)));
        assert!(!e.has_pending());
        e.update(Update::PodDeleted(Box::new(b)));
        e.sync().await.unwrap();
        assert_eq!(
            rec.take(),
            vec![format!("delete element inet t {peers} {{ 10.42.0.4 }}\n")]
        );

        // The policy goes: map element, chain and set removed, nothing else.
        e.update(Update::PolicyDeleted(Box::new(allow_clients())));
        e.sync().await.unwrap();
        assert_eq!(
            rec.take(),
            vec![format!(
                "delete element inet t ingress {{ 10.42.0.2 }}\ndelete chain inet t in-10-42-0-2\ndelete set inet t {peers}\n"
            )]
        );
    }

    #[tokio::test]
    async fn a_failed_transaction_makes_the_next_sync_full() {
        let rec = Recorder::default();
        let mut e = Enforcer::new(config(), rec.clone());
        listed(&mut e);
        e.sync().await.unwrap();
        rec.take();
        *rec.fail.lock().unwrap() = true;
        e.update(Update::PodApplied(Box::new(pod_obj(
            "default",
            "b",
            "n1",
            "10.42.0.4",
            json!({"role": "client"}),
        ))));
        assert!(e.sync().await.is_err());
        assert!(e.has_pending());
        *rec.fail.lock().unwrap() = false;
        assert!(e.sync().await.unwrap().full);
        let scripts = rec.take();
        assert!(
            scripts[0].starts_with("add table inet t\ndelete table inet t\n")
                && scripts[0].contains("10.42.0.4"),
            "{scripts:?}"
        );
    }

    #[tokio::test]
    async fn namespace_labels_move_pods_in_and_out_of_peer_sets() {
        let rec = Recorder::default();
        let mut e = Enforcer::new(config(), rec.clone());
        e.update(Update::NamespacesListed(vec![
            namespace("default"),
            namespace("team"),
        ]));
        e.update(Update::PodsListed(vec![
            pod_obj("default", "web", "n1", "10.42.0.2", json!({"app": "web"})),
            pod_obj("team", "c", "n2", "10.42.1.3", json!({})),
        ]));
        e.update(Update::PoliciesListed(vec![policy_obj(
            "default",
            "p",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"trusted": "yes"}}}]}]}),
        )]));
        e.sync().await.unwrap();
        rec.take();
        let peers = e.desired().sets.keys().next().unwrap().clone();
        let labelled: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "team", "labels": {"trusted": "yes"}}}),
        )
        .unwrap();
        e.update(Update::NamespaceApplied(Box::new(labelled)));
        e.sync().await.unwrap();
        assert_eq!(
            rec.take(),
            vec![format!("add element inet t {peers} {{ 10.42.1.3 }}\n")]
        );
        e.update(Update::NamespaceApplied(Box::new(namespace("team"))));
        e.sync().await.unwrap();
        assert_eq!(
            rec.take(),
            vec![format!("delete element inet t {peers} {{ 10.42.1.3 }}\n")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_waits_for_all_lists_then_batches_changes() {
        let rec = Recorder::default();
        let start = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let r = rec.clone();
        let task = tokio::spawn(async move {
            let mut e = Enforcer::new(config(), r);
            run_loop(&mut e, &mut rx, async {
                let _ = stop_rx.await;
            })
            .await;
        });
        tx.send(Update::NamespacesListed(vec![namespace("default")]))
            .unwrap();
        tx.send(Update::PoliciesListed(vec![allow_clients()]))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            rec.scripts.lock().unwrap().is_empty(),
            "no sync before pods are listed"
        );
        tx.send(Update::PodsListed(vec![pod_obj(
            "default",
            "web",
            "n1",
            "10.42.0.2",
            json!({"app": "web"}),
        )]))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            rec.scripts.lock().unwrap().len(),
            1,
            "the first sync is immediate"
        );
        // Three clients within 200 ms: one transaction, 200 ms after the first sync.
        for (i, ip) in ["10.42.0.3", "10.42.0.4", "10.42.0.5"]
            .into_iter()
            .enumerate()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(Update::PodApplied(Box::new(pod_obj(
                "default",
                &format!("c{i}"),
                "n2",
                ip,
                json!({"role": "client"}),
            ))))
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        {
            let scripts = rec.scripts.lock().unwrap();
            assert_eq!(scripts.len(), 2);
            assert_eq!(scripts[1].0 - start, Duration::from_millis(2200));
            assert!(
                scripts[1].1.contains("{ 10.42.0.3, 10.42.0.4, 10.42.0.5 }"),
                "{}",
                scripts[1].1
            );
        }
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
