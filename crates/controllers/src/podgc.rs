//! The pod garbage collector (↔ pkg/controller/podgc), a periodic pass
//! (every 20 s) that force-deletes (gracePeriodSeconds 0):
//!
//! - terminated pods (Succeeded/Failed) beyond terminated_pod_gc_threshold,
//!   oldest first (0 disables this);
//! - orphaned pods, bound to a node that does not exist, once the node has
//!   been missing for a quarantine (40 s) and the API confirms it is gone —
//!   this includes pods left terminating on a deleted node; they are first
//!   marked Failed with a DisruptionTarget condition, as Kubernetes does;
//! - terminating pods that were never scheduled;
//! - terminating pods on a NotReady node tainted
//!   node.kubernetes.io/out-of-service.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::loopkit::Store;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use tokio::time::Instant;

use crate::loopkit::{self, Key, is_status};

pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// The pass's timing.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the pass runs (↔ gcCheckPeriod).
    pub period: Duration,
    /// How long a node must be missing before its pods count as orphaned.
    pub quarantine: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

// ---------------------------------------------------------------------------
// Decisions (pure).

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub fn is_terminated(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The terminated pods to delete so that at most `threshold` remain,
/// oldest (by creation, then namespace/name) first. A threshold of 0 keeps all.
pub fn terminated_to_delete(pods: &[&Pod], threshold: usize) -> Vec<Key> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<&Pod> = pods.iter().copied().filter(|p| is_terminated(p)).collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by(|a, b| {
        let ka = (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            Key::of(*a),
        );
        let kb = (
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            Key::of(*b),
        );
        ka.cmp(&kb)
    });
    let excess = terminated.len() - threshold;
    terminated.into_iter().take(excess).map(Key::of).collect()
}

/// The nodes pods are bound to that do not exist.
pub fn missing_nodes(pods: &[&Pod], nodes: &HashSet<String>) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| node_name(p))
        .filter(|n| !nodes.contains(*n))
        .map(str::to_string)
        .collect()
}

/// Track when each missing node was first seen missing (forgetting the ones
/// that are back) and return those missing for longer than `quarantine`.
pub fn quarantine_due(
    since: &mut HashMap<String, Instant>,
    missing: &BTreeSet<String>,
    now: Instant,
    quarantine: Duration,
) -> Vec<String> {
    since.retain(|n, _| missing.contains(n));
    for n in missing {
        since.entry(n.clone()).or_insert(now);
    }
    let mut due: Vec<String> = since
        .iter()
        .filter(|(_, t)| now.saturating_duration_since(**t) >= quarantine)
        .map(|(n, _)| n.clone())
        .collect();
    due.sort();
    due
}

/// Terminating pods that were never bound to a node.
pub fn unscheduled_terminating(pods: &[&Pod]) -> Vec<Key> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_none())
        .map(|p| Key::of(*p))
        .collect()
}

/// A node that is not Ready and carries the out-of-service taint.
pub fn is_out_of_service(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
    !ready && tainted
}

/// Terminating pods on out-of-service nodes.
pub fn out_of_service_terminating(pods: &[&Pod], nodes: &[&Node]) -> Vec<Key> {
    let oos: HashSet<&str> = nodes
        .iter()
        .filter(|n| is_out_of_service(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && node_name(p).is_some_and(|n| oos.contains(n))
        })
        .map(|p| Key::of(*p))
        .collect()
}

// ---------------------------------------------------------------------------
// The controller.

pub async fn run(ctx: crate::Context) {
    run_with(ctx, Settings::default()).await
}

pub async fn run_with(ctx: crate::Context, settings: Settings) {
    // Only the shared caches are read: no handler.
    let pods = ctx.informers.get::<Pod>().cache();
    let nodes = ctx.informers.get::<Node>().cache();
    let worker = async {
        if !(loopkit::wait_ready(&pods).await && loopkit::wait_ready(&nodes).await) {
            return;
        }
        let mut gc = Gc {
            ctx: ctx.clone(),
            pods: pods.clone(),
            nodes: nodes.clone(),
            settings: settings.clone(),
            missing_since: HashMap::new(),
        };
        // Missing nodes are re-checked as soon as their quarantine ends.
        let mut tick = tokio::time::interval(
            settings
                .period
                .min(settings.quarantine)
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full = None::<Instant>;
        loop {
            tick.tick().await;
            let full = last_full.is_none_or(|t| t.elapsed() >= settings.period);
            if full {
                last_full = Some(Instant::now());
            }
            // A panic in one pass is logged and the next pass runs.
            let _ = crate::ctrlutil::catch_panic("podgc", &"pass", gc.pass(full)).await;
        }
    };
    worker.await;
}

struct Gc {
    ctx: crate::Context,
    pods: Store<Pod>,
    nodes: Store<Node>,
    settings: Settings,
    missing_since: HashMap<String, Instant>,
}

impl Gc {
    /// One pass; the terminated/terminating sweeps only when `full`.
    async fn pass(&mut self, full: bool) {
        let all_pods: Vec<Arc<Pod>> = self.pods.state();
        let pods: Vec<&Pod> = all_pods.iter().map(|p| p.as_ref()).collect();
        let all_nodes: Vec<Arc<Node>> = self.nodes.state();
        let nodes: Vec<&Node> = all_nodes.iter().map(|n| n.as_ref()).collect();
        if full {
            let threshold = self.ctx.config.terminated_pod_gc_threshold;
            for key in terminated_to_delete(&pods, threshold) {
                tracing::info!(pod = %key, threshold, "deleting terminated pod beyond the threshold");
                self.force_delete(&key, None).await;
            }
            for key in unscheduled_terminating(&pods) {
                tracing::info!(pod = %key, "deleting unscheduled terminating pod");
                self.force_delete(&key, None).await;
            }
            for key in out_of_service_terminating(&pods, &nodes) {
                tracing::info!(pod = %key, "deleting terminating pod on an out-of-service node");
                self.force_delete(&key, None).await;
            }
        }
        let names: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let missing = missing_nodes(&pods, &names);
        let due = quarantine_due(
            &mut self.missing_since,
            &missing,
            Instant::now(),
            self.settings.quarantine,
        );
        for node in due {
            // The informer may be behind: ask the API before deleting anything.
            match Api::<Node>::all(self.ctx.client.clone())
                .get_opt(&node)
                .await
            {
                Ok(None) => {}
                Ok(Some(_)) => {
                    self.missing_since.remove(&node);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, "could not check whether the node exists");
                    continue;
                }
            }
            for pod in pods.iter().filter(|p| node_name(p) == Some(node.as_str())) {
                let key = Key::of(*pod);
                tracing::info!(pod = %key, node, "deleting orphaned pod of a deleted node");
                self.force_delete(&key, Some(pod)).await;
            }
            self.missing_since.remove(&node);
        }
    }

    /// Force-delete a pod; an orphaned one (`mark`) is first marked Failed
    /// with a DisruptionTarget condition. Failures are logged: the next
    /// pass tries again.
    async fn force_delete(&self, key: &Key, mark: Option<&Pod>) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        if let Some(pod) = mark {
            let now = Time(jiff::Timestamp::now());
            let mut status = serde_json::json!({"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": now}]});
            if !is_terminated(pod) {
                status["phase"] = serde_json::json!("Failed");
            }
            if let Err(e) = api
                .patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&serde_json::json!({"status": status})),
                )
                .await
                && !is_status(&e, 404)
            {
                tracing::debug!(pod = %key, error = %e, "could not mark the orphaned pod failed");
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match api.delete(&key.name, &dp).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "pod GC could not delete the pod; retrying next pass")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, Taint,
    };
    use kube::api::ObjectMeta;

    fn pod(name: &str, created: i64, phase: &str, node: Option<&str>, terminating: bool) -> Pod {
        let t = |s: i64| {
            Time(
                jiff::Timestamp::from_second(1_700_000_000 + s)
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            )
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                creation_timestamp: Some(t(created)),
                deletion_timestamp: terminating.then(|| t(1000)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn names(keys: &[Key]) -> Vec<&str> {
        keys.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn terminated_beyond_threshold_oldest_first() {
        let pods = [
            pod("new-done", 30, "Succeeded", None, false),
            pod("old-failed", 10, "Failed", None, false),
            pod("running", 0, "Running", None, false),
            pod("mid-done", 20, "Succeeded", None, false),
            pod("b-tie", 5, "Succeeded", None, false),
            pod("a-tie", 5, "Succeeded", None, false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let cases: [(usize, Vec<&str>); 5] = [
            (0, vec![]),
            (5, vec![]),
            (4, vec!["a-tie"]),
            (2, vec!["a-tie", "b-tie", "old-failed"]),
            (1, vec!["a-tie", "b-tie", "old-failed", "mid-done"]),
        ];
        for (threshold, want) in cases {
            assert_eq!(
                names(&terminated_to_delete(&refs, threshold)),
                want,
                "threshold {threshold}"
            );
        }
    }

    #[test]
    fn orphans_wait_out_the_quarantine() {
        let pods = [
            pod("a", 0, "Running", Some("gone"), false),
            pod("b", 0, "Running", Some("here"), true),
            pod("c", 0, "Pending", None, false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let nodes: HashSet<String> = ["here".to_string()].into();
        let missing = missing_nodes(&refs, &nodes);
        assert_eq!(
            missing.iter().map(String::as_str).collect::<Vec<_>>(),
            ["gone"]
        );

        let q = Duration::from_secs(40);
        let t0 = Instant::now();
        let mut since = HashMap::new();
        assert!(quarantine_due(&mut since, &missing, t0, q).is_empty());
        assert!(quarantine_due(&mut since, &missing, t0 + Duration::from_secs(39), q).is_empty());
        assert_eq!(
            quarantine_due(&mut since, &missing, t0 + Duration::from_secs(40), q),
            ["gone"]
        );
        // The node came back: forgotten, and a new absence starts over.
        assert!(
            quarantine_due(
                &mut since,
                &BTreeSet::new(),
                t0 + Duration::from_secs(41),
                q
            )
            .is_empty()
        );
        assert!(since.is_empty());
        assert!(quarantine_due(&mut since, &missing, t0 + Duration::from_secs(42), q).is_empty());
    }

    #[test]
    fn terminating_sweeps() {
        let pods = [
            pod("unscheduled", 0, "Pending", None, true),
            pod("on-oos", 0, "Running", Some("oos"), true),
            pod("on-oos-alive", 0, "Running", Some("oos"), false),
            pod("on-tainted-ready", 0, "Running", Some("ready-oos"), true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(names(&unscheduled_terminating(&refs)), ["unscheduled"]);
        let node = |name: &str, ready: &str| Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(vec![Taint {
                    key: OUT_OF_SERVICE_TAINT.into(),
                    effect: "NoExecute".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let nodes = [node("oos", "False"), node("ready-oos", "True")];
        let node_refs: Vec<&Node> = nodes.iter().collect();
        assert_eq!(
            names(&out_of_service_terminating(&refs, &node_refs)),
            ["on-oos"]
        );
    }
}
