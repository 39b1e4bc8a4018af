//! The pods' side (↔ the kubelet's pod workers and status manager): pods
//! bound to a hollow node become Running and Ready; Job pods then
//! Succeeded; pods being deleted are removed with gracePeriodSeconds=0.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::nodes::{CONCURRENCY, Sim, node_ip};
use crate::{Error, status_code};

/// How long a Job pod runs before it succeeds.
pub const JOB_RUN_TIME: Duration = Duration::from_secs(2);
/// A pod annotation overriding [`JOB_RUN_TIME`], in seconds.
pub const RUN_SECONDS_ANNOTATION: &str = "sim.skiff.dev/run-seconds";

/// The fake pod range of node `i`: 10.(128 + i/256 % 128).(i % 256).0/24.
pub fn pod_ip(node: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        128 + ((node / 256) % 128) as u8,
        (node % 256) as u8,
        host,
    )
}

/// Pods of Jobs, or that do not restart: they run to completion.
pub fn is_job_pod(pod: &Pod) -> bool {
    let owned_by_job = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job");
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    owned_by_job || matches!(restart, Some("Never" | "OnFailure"))
}

fn run_time(pod: &Pod) -> Duration {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUN_SECONDS_ANNOTATION))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(JOB_RUN_TIME)
}

fn hex_id(parts: &[&str]) -> String {
    let mut out = String::new();
    for salt in 0..4u8 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        parts.hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn image_of(c: &Container) -> String {
    c.image.clone().unwrap_or_default()
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn container_status(
    pod_uid: &str,
    c: &Container,
    state: Value,
    ready: bool,
    started: bool,
) -> Value {
    let image = image_of(c);
    json!({
        "name": c.name,
        "image": image,
        "imageID": format!("sim://sha256:{}", hex_id(&[&image])),
        "containerID": format!("sim://{}", hex_id(&[pod_uid, &c.name])),
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    })
}

fn condition(kind: &str, status: &str, reason: Option<&str>, at: &Time) -> Value {
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": at});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// The status of a pod whose containers all started and are ready.
pub fn running_status(pod: &Pod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: &Time) -> Value {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let running = json!({"running": {"startedAt": now}});
    let completed = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now, "containerID": null}});
    let containers: Vec<Value> = spec
        .map(|s| {
            s.containers
                .iter()
                .map(|c| container_status(&uid, c, running.clone(), true, true))
                .collect()
        })
        .unwrap_or_default();
    let inits: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    if is_sidecar(c) {
                        container_status(&uid, c, running.clone(), true, true)
                    } else {
                        let mut st = container_status(&uid, c, completed.clone(), false, false);
                        st["state"]["terminated"]["containerID"] = st["containerID"].clone();
                        st
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut status = json!({
        "phase": "Running",
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": pod_ip.to_string(),
        "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers", "True", None, now),
            condition("Initialized", "True", None, now),
            condition("Ready", "True", None, now),
            condition("ContainersReady", "True", None, now),
            condition("PodScheduled", "True", None, now),
        ],
        "containerStatuses": containers,
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    status
}

/// The status of a pod whose containers all exited 0.
pub fn succeeded_status(pod: &Pod, now: &Time) -> Value {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| now.clone());
    let terminated = |c: &Container| {
        let mut st = container_status(&uid, c, json!({}), false, false);
        st["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now, "containerID": st["containerID"]}});
        st
    };
    let spec = pod.spec.as_ref();
    let containers: Vec<Value> = spec
        .map(|s| s.containers.iter().map(terminated).collect())
        .unwrap_or_default();
    let mut status = json!({
        "phase": "Succeeded",
        "conditions": [
            condition("PodReadyToStartContainers", "False", None, now),
            condition("Initialized", "True", Some("PodCompleted"), now),
            condition("Ready", "False", Some("PodCompleted"), now),
            condition("ContainersReady", "False", Some("PodCompleted"), now),
            condition("PodScheduled", "True", None, now),
        ],
        "containerStatuses": containers,
    });
    if let Some(inits) = spec
        .and_then(|s| s.init_containers.as_ref())
        .filter(|i| !i.is_empty())
    {
        status["initContainerStatuses"] = json!(inits.iter().map(terminated).collect::<Vec<_>>());
    }
    status
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Running,
    Completing,
    Done,
    Deleting,
}

struct Tracked {
    node: usize,
    host: Option<u8>,
    stage: Stage,
}

/// Per-pod bookkeeping: what was written, and the pod IPs in use per node.
#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Tracked>,
    used: HashMap<usize, BTreeSet<u8>>,
}

impl Pods {
    fn allocate(&mut self, node: usize) -> u8 {
        let used = self.used.entry(node).or_default();
        let host = (2..=254u8).find(|h| !used.contains(h)).unwrap_or(254);
        used.insert(host);
        host
    }

    fn forget(&mut self, uid: &str) {
        if let Some(t) = self.by_uid.remove(uid)
            && let Some(h) = t.host
            && let Some(set) = self.used.get_mut(&t.node)
        {
            set.remove(&h);
        }
    }
}

/// What to do for a pod event.
enum Action {
    None,
    Run { node: usize, host: u8, job: bool },
    Complete,
    Delete,
}

/// Watch the pods bound to any node and act on those bound to ours.
pub async fn run(sim: Arc<Sim>) {
    let api: Api<Pod> = Api::all(sim.client.clone());
    let mut stream = watcher::watcher(api, watcher::Config::default().fields("spec.nodeName!="))
        .default_backoff()
        .boxed();
    let mut pods = Pods::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Init) => seen.clear(),
                    Ok(Event::InitApply(p)) => {
                        seen.insert(p.metadata.uid.clone().unwrap_or_default());
                        handle(&sim, &mut pods, &mut tasks, &permits, p);
                    }
                    Ok(Event::InitDone) => {
                        let gone: Vec<String> = pods.by_uid.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                        for uid in gone {
                            pods.forget(&uid);
                        }
                    }
                    Ok(Event::Apply(p)) => handle(&sim, &mut pods, &mut tasks, &permits, p),
                    Ok(Event::Delete(p)) => pods.forget(p.metadata.uid.as_deref().unwrap_or_default()),
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

fn decide(sim: &Sim, pods: &mut Pods, pod: &Pod) -> Action {
    let Some(node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| sim.config.node_index(n))
    else {
        return Action::None;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let job = is_job_pod(pod);
    let tracked = pods.by_uid.get_mut(&uid);
    if pod.metadata.deletion_timestamp.is_some() {
        return match tracked {
            Some(t) if t.stage == Stage::Deleting => Action::None,
            Some(t) => {
                t.stage = Stage::Deleting;
                Action::Delete
            }
            None => {
                pods.by_uid.insert(
                    uid,
                    Tracked {
                        node,
                        host: None,
                        stage: Stage::Deleting,
                    },
                );
                Action::Delete
            }
        };
    }
    match (phase, tracked) {
        ("Succeeded" | "Failed", Some(t)) => {
            t.stage = Stage::Done;
            Action::None
        }
        ("Succeeded" | "Failed", None) => {
            pods.by_uid.insert(
                uid,
                Tracked {
                    node,
                    host: None,
                    stage: Stage::Done,
                },
            );
            Action::None
        }
        // Running from before a restart: take it over (and finish it if it is a Job's).
        ("Running", None) => {
            let host = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| pod_ip(node, 0).octets()[..3] == ip.octets()[..3])
                .map(|ip| ip.octets()[3]);
            if let Some(h) = host {
                pods.used.entry(node).or_default().insert(h);
            }
            pods.by_uid.insert(
                uid,
                Tracked {
                    node,
                    host,
                    stage: if job {
                        Stage::Completing
                    } else {
                        Stage::Running
                    },
                },
            );
            if job { Action::Complete } else { Action::None }
        }
        (_, Some(_)) => Action::None,
        (_, None) => {
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            let host = if host_network { 0 } else { pods.allocate(node) };
            pods.by_uid.insert(
                uid,
                Tracked {
                    node,
                    host: (!host_network).then_some(host),
                    stage: if job {
                        Stage::Completing
                    } else {
                        Stage::Running
                    },
                },
            );
            Action::Run { node, host, job }
        }
    }
}

fn handle(
    sim: &Arc<Sim>,
    pods: &mut Pods,
    tasks: &mut JoinSet<()>,
    permits: &Arc<Semaphore>,
    pod: Pod,
) {
    let action = decide(sim, pods, &pod);
    if matches!(action, Action::None) {
        return;
    }
    let sim = sim.clone();
    let permits = permits.clone();
    tasks.spawn(async move {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let result = match action {
            Action::None => Ok(()),
            Action::Delete => {
                let _permit = permits.acquire().await;
                delete(&sim, &pod).await
            }
            Action::Run { node, host, job } => {
                let started = {
                    let _permit = permits.acquire().await;
                    let ip = if host == 0 {
                        node_ip(node)
                    } else {
                        pod_ip(node, host)
                    };
                    let status =
                        running_status(&pod, node_ip(node), ip, &skiff_runtime::now_time());
                    patch_status(&sim, &pod, status).await
                };
                match started {
                    Ok(started) if job => complete_later(&sim, &started, &permits).await,
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Action::Complete => complete_later(&sim, &pod, &permits).await,
        };
        match result {
            Ok(()) => tracing::debug!(pod = %key, "pod updated"),
            Err(e) => tracing::warn!(error = %e, "hollow node could not update a pod"),
        }
    });
}

async fn complete_later(sim: &Sim, pod: &Pod, permits: &Semaphore) -> Result<(), Error> {
    tokio::time::sleep(run_time(pod)).await;
    let _permit = permits.acquire().await;
    patch_status(sim, pod, succeeded_status(pod, &skiff_runtime::now_time()))
        .await
        .map(|_| ())
}

/// Attempts of one write before giving up (404 ends them at once).
const ATTEMPTS: u32 = 5;

async fn patch_status(sim: &Sim, pod: &Pod, status: Value) -> Result<Pod, Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(sim.client.clone(), ns);
    let patch = json!({"status": status});
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => return Ok(p),
            Err(source) if attempt >= ATTEMPTS || status_code(&source) == Some(404) => {
                return Err(Error::Pod {
                    pod: format!("{ns}/{name}"),
                    source,
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, pod = %name, attempt, "pod status write failed; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// What a kubelet does once a deleted pod's containers stopped.
async fn delete(sim: &Sim, pod: &Pod) -> Result<(), Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(sim.client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match api.delete(name, &dp).await {
            Ok(_) => return Ok(()),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => return Ok(()),
            Err(source) if attempt >= ATTEMPTS => {
                return Err(Error::Pod {
                    pod: format!("{ns}/{name}"),
                    source,
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, pod = %name, attempt, "pod delete failed; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn job_pods() {
        let cases = [
            (
                json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
                false,
            ),
            (
                json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Always", "containers": []}}),
                false,
            ),
            (
                json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": []}}),
                true,
            ),
            (
                json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "OnFailure", "containers": []}}),
                true,
            ),
            (
                json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]}, "spec": {"containers": []}}),
                true,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(is_job_pod(&pod(p.clone())), want, "{p}");
        }
    }

    #[test]
    fn statuses() {
        let p = pod(json!({"metadata": {"name": "p", "uid": "u1"}, "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}, {"name": "side", "image": "envoy", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "nginx:1.27"}]
        }}));
        let now = skiff_runtime::now_time();
        let s = running_status(&p, node_ip(0), pod_ip(0, 2), &now);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.128.0.2");
        assert_eq!(s["hostIP"], "100.64.0.1");
        let app = &s["containerStatuses"][0];
        assert_eq!(app["ready"], true);
        assert_eq!(app["restartCount"], 0);
        assert!(app["containerID"].as_str().unwrap().starts_with("sim://"));
        assert!(app["state"]["running"]["startedAt"].is_string());
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert!(s["initContainerStatuses"][1]["state"]["running"].is_object());
        for c in s["conditions"].as_array().unwrap() {
            assert_eq!(c["status"], "True", "{c}");
        }
        // The typed round trip accepts it.
        let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(s).unwrap();
        let done = succeeded_status(&p, &now);
        assert_eq!(done["phase"], "Succeeded");
        assert_eq!(
            done["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(
            done["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(done).unwrap();
    }

    #[test]
    fn ip_allocation_per_node() {
        let mut pods = Pods::default();
        assert_eq!(pods.allocate(0), 2);
        assert_eq!(pods.allocate(0), 3);
        assert_eq!(pods.allocate(1), 2);
        pods.by_uid.insert(
            "a".into(),
            Tracked {
                node: 0,
                host: Some(2),
                stage: Stage::Running,
            },
        );
        pods.forget("a");
        assert_eq!(pods.allocate(0), 2);
        assert_eq!(pod_ip(300, 5), Ipv4Addr::new(10, 129, 44, 5));
    }
}
