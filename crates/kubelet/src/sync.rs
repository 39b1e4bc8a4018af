//! One pod's worker logic (↔ kubelet's SyncPod, computePodActions and
//! generateAPIPodStatus): from the pod spec and what the runtime has,
//! start what is missing (sandbox, init containers in order, then
//! containers), restart per restartPolicy with exponential backoff, and
//! compute the pod's status. Stateless towards the runtime: a new worker
//! adopts whatever sandboxes and containers carry the pod's uid.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container as SpecContainer, Pod};
use serde_json::{Value, json};

use crate::env::{EnvContext, Lookup, container_env, expand};
use crate::runtime::*;

/// Tunables of the pod workers.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_name: String,
    pub host_ip: String,
    /// Pod log directories go under here (`<ns>_<name>_<uid>`).
    pub log_root: PathBuf,
    /// The scheme of containerIDs ("containerd").
    pub runtime_name: String,
    pub crash_backoff_initial: Duration,
    pub crash_backoff_max: Duration,
    pub image_backoff_initial: Duration,
    pub image_backoff_max: Duration,
    /// How often a pod is looked at when nothing happens (the relist wakes
    /// workers whose containers change).
    pub resync: Duration,
    /// cgroupfs parent of pods (`<parent>/pod<uid>`); empty for the runtime's default.
    pub cgroup_root: String,
    /// The node's memory in bytes (Burstable pods' oom_score_adj).
    pub memory_capacity: u64,
    /// The cluster DNS service's addresses and the cluster domain (pods' resolv.conf).
    pub cluster_dns: Vec<std::net::IpAddr>,
    pub cluster_domain: String,
    /// The host's resolv.conf (dnsPolicy Default, host networking).
    pub resolv_conf: PathBuf,
    /// The host's hosts file (host-network pods' /etc/hosts).
    pub etc_hosts: PathBuf,
    /// Mounts the tmpfs of memory-backed volumes.
    pub mounter: Arc<dyn crate::mount::Mounter>,
    /// How often configMap, secret, downwardAPI and projected volumes are refreshed.
    pub volume_refresh: Duration,
    /// Where Localhost seccomp profiles are (the kubelet's `<root-dir>/seccomp`).
    pub seccomp_root: PathBuf,
}

impl Settings {
    pub fn new(node_name: &str, host_ip: &str, log_root: PathBuf) -> Settings {
        let seccomp_root = log_root
            .parent()
            .map(|p| p.join("seccomp"))
            .unwrap_or_else(|| PathBuf::from("seccomp"));
        Settings {
            node_name: node_name.into(),
            host_ip: host_ip.into(),
            log_root,
            runtime_name: "containerd".into(),
            crash_backoff_initial: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            image_backoff_initial: Duration::from_secs(10),
            image_backoff_max: Duration::from_secs(300),
            resync: Duration::from_secs(10),
            cgroup_root: "/skiff".into(),
            memory_capacity: 0,
            cluster_dns: vec![std::net::IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            etc_hosts: PathBuf::from("/etc/hosts"),
            mounter: Arc::new(crate::mount::SystemMounter),
            volume_refresh: Duration::from_secs(30),
            seccomp_root,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// An event about the pod (or one of its containers) for the recorder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub kind: EventKind,
    pub reason: String,
    pub message: String,
    /// "spec.containers{name}".
    pub field_path: Option<String>,
}

/// What one sync computed.
#[derive(Clone, Debug)]
pub struct SyncResult {
    /// The pod's status (the JSON written to pods/status).
    pub status: Value,
    /// When to look again at the latest.
    pub requeue: Duration,
}

/// Exponential backoff per key (↔ client-go's flowcontrol.Backoff).
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, (Duration, SystemTime)>,
}

impl Backoff {
    /// Until when `key` is backing off from an event at `since`.
    pub fn until(&self, key: &str, since: SystemTime, now: SystemTime) -> Option<SystemTime> {
        let (delay, _) = self.entries.get(key)?;
        let until = since + *delay;
        (now < until).then_some(until)
    }

    /// Record one more failure: the delay doubles up to `max` (and starts
    /// over after 2×max without failures).
    pub fn next(
        &mut self,
        key: &str,
        now: SystemTime,
        initial: Duration,
        max: Duration,
    ) -> Duration {
        let delay = match self.entries.get(key) {
            Some((d, last)) if now.duration_since(*last).unwrap_or_default() <= max * 2 => {
                (*d * 2).min(max)
            }
            _ => initial,
        };
        self.entries.insert(key.into(), (delay, now));
        delay
    }

    pub fn last(&self, key: &str) -> Option<SystemTime> {
        self.entries.get(key).map(|(_, t)| *t)
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

fn nanos_to_time(ns: i64) -> SystemTime {
    if ns <= 0 {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// RFC 3339 with second precision, as metav1.Time serializes.
pub fn rfc3339(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn rfc3339_ns(ns: i64) -> Option<String> {
    (ns > 0).then(|| rfc3339(nanos_to_time(ns)))
}

/// The pull policy Kubernetes defaults to: Always for :latest or no tag.
pub fn pull_policy(c: &SpecContainer) -> String {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = c.image.as_deref().unwrap_or_default();
    if image.contains('@') {
        return "IfNotPresent".into();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always".into(),
        Some(_) => "IfNotPresent".into(),
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The labels that mark a pod's sandboxes and containers.
pub fn pod_labels(pod: &Pod, node: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(
        LABEL_POD_UID.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    l.insert(
        LABEL_POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        LABEL_POD_NAMESPACE.into(),
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
    );
    l.insert(LABEL_NODE.into(), node.into());
    l
}

/// The runtime handler of the pod's RuntimeClass (↔ the RuntimeClass
/// manager's LookupRuntimeHandler): empty without a class, an error naming
/// the class when it does not exist.
fn runtime_handler(pod: &Pod, lookup: &dyn Lookup) -> Result<String, String> {
    let Some(name) = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        .filter(|n| !n.is_empty())
    else {
        return Ok(String::new());
    };
    match lookup.runtime_class_handler(name) {
        Ok(Some(handler)) => Ok(handler),
        Ok(None) => Err(format!("runtimeclass.node.k8s.io \"{name}\" not found")),
        Err(e) => Err(format!("failed to lookup RuntimeClass {name}: {e}")),
    }
}

fn uid_selector(uid: &str) -> Labels {
    [(LABEL_POD_UID.to_string(), uid.to_string())].into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Init,
    App,
    Ephemeral,
}

impl Kind {
    fn field(self, name: &str) -> String {
        match self {
            Kind::Init => format!("spec.initContainers{{{name}}}"),
            Kind::App => format!("spec.containers{{{name}}}"),
            Kind::Ephemeral => format!("spec.ephemeralContainers{{{name}}}"),
        }
    }
}

/// Why a container waits, when the runtime's state does not say it.
#[derive(Clone, Debug)]
struct Waiting {
    reason: String,
    message: String,
}

/// The status reason and message of a pod killed at its activeDeadlineSeconds.
pub const DEADLINE_REASON: &str = "DeadlineExceeded";
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why the worker kills a pod before its time and reports it Failed (↔ an
/// abnormal termination of the pod workers, TerminatePodOptions): its
/// activeDeadlineSeconds passed, or the eviction manager evicts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kill {
    /// The status reason and message (and those of the event recorded as
    /// the kill starts).
    pub reason: String,
    pub message: String,
    pub event: EventKind,
    /// Seconds each container gets to stop; None: the pod's own grace period.
    pub grace: Option<i64>,
    /// A condition added to the status: (type, reason), with `message`
    /// (DisruptionTarget/TerminationByKubelet for an eviction).
    pub condition: Option<(String, String)>,
}

impl Kill {
    /// activeDeadlineSeconds passed (↔ activeDeadlineHandler).
    pub fn deadline() -> Kill {
        Kill {
            reason: DEADLINE_REASON.into(),
            message: DEADLINE_MESSAGE.into(),
            event: EventKind::Normal,
            grace: None,
            condition: None,
        }
    }
}

pub(crate) fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// One pod's worker.
pub struct PodWorker {
    runtime: Arc<dyn Runtime>,
    settings: Arc<Settings>,
    crash: Backoff,
    pulls: Backoff,
    /// Container details by id (exited containers do not change).
    details: HashMap<String, ContainerStatus>,
    events: Vec<PodEvent>,
    start_time: Option<String>,
    /// When the pod started on this node (activeDeadlineSeconds counts from it).
    started_at: Option<SystemTime>,
    /// Exited container id → its status message with the termination
    /// message read once (from the file or the log tail).
    messages: HashMap<String, String>,
    /// The status once the pod reached Succeeded or Failed.
    final_status: Option<Value>,
    /// Set once the pod is to be killed and Failed.
    kill: Option<Kill>,
    /// Per container: the crash-loop event was reported for this backoff.
    backoff_reported: HashMap<String, SystemTime>,
    /// Sandbox id → its IPs (they do not change).
    sandbox_ips: HashMap<String, Vec<String>>,
    /// The pod's volumes.
    volumes: crate::volumes::PodVolumes,
    /// The pod's probe workers and their results.
    probes: crate::probes::ProbeManager,
}

enum Step {
    /// Nothing to do for this container now.
    Fine,
    /// The container is running or was just started; later ones (inits) wait.
    Busy,
    /// Could not start now (the reason is in `waiting`).
    Blocked,
}

impl PodWorker {
    pub fn new(runtime: Arc<dyn Runtime>, settings: Arc<Settings>) -> PodWorker {
        let runtime_for_probes = runtime.clone();
        PodWorker {
            runtime,
            settings,
            crash: Backoff::default(),
            pulls: Backoff::default(),
            details: HashMap::new(),
            events: Vec::new(),
            start_time: None,
            started_at: None,
            messages: HashMap::new(),
            final_status: None,
            kill: None,
            backoff_reported: HashMap::new(),
            sandbox_ips: HashMap::new(),
            volumes: crate::volumes::PodVolumes::default(),
            probes: crate::probes::ProbeManager::new(
                runtime_for_probes,
                Arc::new(crate::probes::NetProber),
            ),
        }
    }

    /// Do not run the pod: it was not admitted (↔ rejectPod: a Warning event,
    /// and the status Failed with `reason` and `message`).
    pub fn reject(&mut self, reason: &str, message: &str) {
        self.event(EventKind::Warning, reason, message.into(), None);
        self.final_status = Some(json!({"phase": "Failed", "reason": reason, "message": message}));
    }

    /// Kill the pod at the next sync and report it Failed as `kill` says
    /// (the first kill asked for wins; a pod already finished stays so).
    pub fn kill(&mut self, kill: Kill) {
        if self.kill.is_none() && self.final_status.is_none() {
            self.kill = Some(kill);
        }
    }

    /// Use `prober` for httpGet, tcpSocket and gRPC probes and hooks (tests);
    /// before the first sync, and before [`PodWorker::probe_signals`].
    pub fn set_prober(&mut self, prober: Arc<dyn crate::probes::Prober>) {
        self.probes = crate::probes::ProbeManager::new(self.runtime.clone(), prober);
    }

    /// Woken when a probe result changes (the pod needs a sync), and when
    /// probe events wait in [`PodWorker::take_events`].
    pub fn probe_signals(&self) -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
        (self.probes.results_changed(), self.probes.events_added())
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<PodEvent> {
        let mut events = std::mem::take(&mut self.events);
        events.extend(self.probes.take_events());
        events
    }

    fn event(
        &mut self,
        kind: EventKind,
        reason: &str,
        message: String,
        field_path: Option<String>,
    ) {
        self.events.push(PodEvent {
            kind,
            reason: reason.into(),
            message,
            field_path,
        });
    }

    fn log_dir(&self, pod: &Pod) -> PathBuf {
        self.settings.log_root.join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default()
        ))
    }

    /// The sandbox config of `pod` at `attempt`.
    pub fn sandbox_config(&self, pod: &Pod, attempt: u32) -> SandboxConfig {
        let spec = pod.spec.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut port_mappings = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                let Some(host_port) = p.host_port.filter(|h| *h > 0) else {
                    continue;
                };
                port_mappings.push(PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => Protocol::Udp,
                        Some("SCTP") => Protocol::Sctp,
                        _ => Protocol::Tcp,
                    },
                    container_port: p.container_port,
                    host_port,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
        let hostname = if spec.host_network.unwrap_or(false) {
            String::new()
        } else {
            crate::hosts::hostname_and_domain(pod, &self.settings.cluster_domain).0
        };
        let psc = spec.security_context.clone().unwrap_or_default();
        SandboxConfig {
            name,
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            uid: uid.clone(),
            attempt,
            hostname,
            log_directory: self.log_dir(pod),
            labels: pod_labels(pod, &self.settings.node_name),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            host_network: spec.host_network.unwrap_or(false),
            host_pid: spec.host_pid.unwrap_or(false),
            host_ipc: spec.host_ipc.unwrap_or(false),
            share_pid: spec.share_process_namespace.unwrap_or(false),
            port_mappings,
            cgroup_parent: if self.settings.cgroup_root.is_empty() {
                String::new()
            } else {
                format!("{}/pod{}", self.settings.cgroup_root, uid)
            },
            dns: Some(crate::dns::pod_dns_from(
                pod,
                &self.settings.cluster_dns,
                &self.settings.cluster_domain,
                &self.settings.resolv_conf,
            )),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (sysctl_with_dots(&s.name), s.value.clone()))
                .collect(),
            run_as_user: psc.run_as_user,
            run_as_group: psc.run_as_group,
            supplemental_groups: supplemental_groups(&psc),
            // Resolved from the RuntimeClass when the sandbox is created.
            runtime_handler: String::new(),
            // A Localhost profile without a name (refused by validation) is left unconfined.
            seccomp: crate::security::seccomp_profile(pod, None, &self.settings.seccomp_root)
                .unwrap_or_default(),
        }
    }

    async fn sandbox_ips(&mut self, id: &str) -> Vec<String> {
        if let Some(ips) = self.sandbox_ips.get(id) {
            return ips.clone();
        }
        match self.runtime.sandbox_status(id).await {
            Ok(st) => {
                let ips: Vec<String> = st.ip.into_iter().chain(st.additional_ips).collect();
                self.sandbox_ips.retain(|k, _| k == id);
                self.sandbox_ips.insert(id.to_string(), ips.clone());
                ips
            }
            Err(e) => {
                tracing::debug!(error = %e, "sandbox status failed");
                Vec::new()
            }
        }
    }

    async fn detail(&mut self, c: &Container) -> Option<ContainerStatus> {
        if let Some(d) = self.details.get(&c.id)
            && (d.state == ContainerState::Exited || d.state == c.state)
        {
            return Some(d.clone());
        }
        match self.runtime.container_status(&c.id).await {
            Ok(d) => {
                self.details.insert(c.id.clone(), d.clone());
                Some(d)
            }
            Err(e) => {
                tracing::debug!(error = %e, container = %c.id, "container status failed");
                None
            }
        }
    }

    /// Make the runtime match the pod and compute its status.
    pub async fn sync(
        &mut self,
        pod: &Pod,
        lookup: &dyn Lookup,
    ) -> Result<SyncResult, RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        if let Some(status) = &self.final_status {
            return Ok(SyncResult {
                status: status.clone(),
                requeue: Duration::from_secs(60),
            });
        }
        let status_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if is_terminal(status_phase) {
            // Finished before this worker existed (an agent restart): keep it so.
            self.stop_sandboxes(&uid).await;
            let status =
                serde_json::to_value(pod.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
            self.final_status = Some(status.clone());
            return Ok(SyncResult {
                status,
                requeue: Duration::from_secs(60),
            });
        }
        self.probes.add_pod(pod);
        if self.start_time.is_none() {
            let known = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            self.start_time = known
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .or_else(|| Some(rfc3339(SystemTime::now())));
            self.started_at = Some(known.map(SystemTime::from).unwrap_or_else(SystemTime::now));
        }
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut waiting: HashMap<String, Waiting> = HashMap::new();
        let mut requeue = self.settings.resync;
        let now = SystemTime::now();
        // ↔ activeDeadlineHandler: past the deadline the pod is killed and Failed.
        if self.kill.is_none() && self.past_deadline(&spec, now, &mut requeue) {
            self.kill = Some(Kill::deadline());
        }
        let killing = self.kill.clone();
        let deadline_exceeded = killing.is_some();

        let mut sandboxes = self.runtime.list_sandboxes(&uid_selector(&uid)).await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
        let mut containers = self.runtime.list_containers(&uid_selector(&uid)).await?;

        // The sandbox.
        let mut acted = false;
        let mut pod_ip: Option<String> = None;
        let mut pod_ips: Vec<String> = Vec::new();
        let host_network = spec.host_network.unwrap_or(false);
        let mut sandbox: Option<(String, SandboxConfig)> = None;
        match sandboxes.first().filter(|s| s.state == SandboxState::Ready) {
            Some(sb) => {
                let cfg = self.sandbox_config(pod, sb.attempt);
                pod_ips = self.sandbox_ips(&sb.id).await;
                pod_ip = pod_ips.first().cloned();
                sandbox = Some((sb.id.clone(), cfg));
            }
            None => {
                let all_created = spec
                    .containers
                    .iter()
                    .all(|c| containers.iter().any(|x| x.name == c.name));
                let done = restart_policy == "Never" && all_created;
                if !done && !deadline_exceeded {
                    acted = true;
                    let attempt = sandboxes.first().map(|s| s.attempt + 1).unwrap_or(0);
                    // Whatever ran in a dead sandbox is stopped; the new one starts over.
                    for c in containers
                        .iter()
                        .filter(|c| c.state == ContainerState::Running)
                    {
                        if let Err(e) = self.runtime.stop_container(&c.id, 0).await {
                            tracing::debug!(error = %e, "stopping a container of a dead sandbox failed");
                        }
                    }
                    for (i, sb) in sandboxes.iter().enumerate() {
                        let _ = self.runtime.stop_sandbox(&sb.id).await;
                        if i > 0 {
                            let _ = self.runtime.remove_sandbox(&sb.id).await;
                        }
                    }
                    if attempt > 0 {
                        self.event(
                            EventKind::Normal,
                            "SandboxChanged",
                            "Pod sandbox changed, it will be killed and re-created.".into(),
                            None,
                        );
                    }
                    let mut cfg = self.sandbox_config(pod, attempt);
                    if let Err(e) = std::fs::create_dir_all(&cfg.log_directory) {
                        tracing::warn!(error = %e, dir = %cfg.log_directory.display(), "creating the pod log directory failed");
                    }
                    let created = match runtime_handler(pod, lookup) {
                        Ok(handler) => {
                            cfg.runtime_handler = handler;
                            self.runtime
                                .run_sandbox(&cfg)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e),
                    };
                    match created {
                        Ok(id) => {
                            pod_ips = self.sandbox_ips(&id).await;
                            pod_ip = pod_ips.first().cloned();
                            sandbox = Some((id, cfg));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, pod = %pod_key(pod), "creating the pod sandbox failed");
                            self.event(
                                EventKind::Warning,
                                "FailedCreatePodSandBox",
                                format!("Failed to create pod sandbox: {e}"),
                                None,
                            );
                            requeue = Duration::from_secs(5);
                        }
                    }
                }
            }
        }
        if host_network {
            pod_ip = Some(self.settings.host_ip.clone());
            pod_ips = vec![self.settings.host_ip.clone()];
        }

        if sandbox.is_some() && !deadline_exceeded {
            self.volumes
                .refresh(pod, &self.settings, lookup, self.settings.volume_refresh)
                .await;
        }
        if let Some(kill) = &killing {
            acted = true;
            self.kill_now(
                pod,
                kill,
                &containers,
                pod_ip.as_deref().unwrap_or_default(),
            )
            .await;
        }

        // Containers: inits in order, then the others.
        let mut init_failed = false;
        if let Some((sandbox_id, cfg)) = sandbox.as_ref().filter(|_| !deadline_exceeded) {
            let mut init_done = true;
            let ip = pod_ip.clone().unwrap_or_default();
            for c in spec.init_containers.iter().flatten() {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                let latest = latest_of(&containers, &c.name);
                let step = match latest {
                    Some(l) if l.state == ContainerState::Running => {
                        if sidecar {
                            Step::Fine
                        } else {
                            Step::Busy
                        }
                    }
                    Some(l) => {
                        let d = self.detail(&l).await;
                        let exit = d.as_ref().map(|d| d.exit_code).unwrap_or(-1);
                        let finished = d
                            .as_ref()
                            .map(|d| nanos_to_time(d.finished_at))
                            .unwrap_or(now);
                        if l.state == ContainerState::Exited && exit == 0 && !sidecar {
                            Step::Fine
                        } else if restart_policy == "Never"
                            && !sidecar
                            && l.state == ContainerState::Exited
                        {
                            init_failed = true;
                            Step::Blocked
                        } else {
                            acted = true;
                            self.restart(
                                pod,
                                c,
                                Kind::Init,
                                &l,
                                finished,
                                sandbox_id,
                                cfg,
                                &ip,
                                lookup,
                                &mut waiting,
                                &mut requeue,
                            )
                            .await
                        }
                    }
                    None => {
                        acted = true;
                        self.start(
                            pod,
                            c,
                            Kind::Init,
                            0,
                            sandbox_id,
                            cfg,
                            &ip,
                            lookup,
                            &mut waiting,
                            &mut requeue,
                        )
                        .await
                    }
                };
                match step {
                    Step::Fine => {}
                    Step::Busy | Step::Blocked => {
                        init_done = false;
                        break;
                    }
                }
            }
            if init_done {
                for c in &spec.containers {
                    match latest_of(&containers, &c.name) {
                        Some(l) if l.state == ContainerState::Running => {
                            if let Some(probe) = self.probes.failed(&l.id) {
                                acted = true;
                                self.kill_unhealthy(
                                    pod,
                                    c,
                                    &l,
                                    probe,
                                    &restart_policy,
                                    sandbox_id,
                                    cfg,
                                    &ip,
                                    lookup,
                                    &mut waiting,
                                    &mut requeue,
                                )
                                .await;
                            }
                        }
                        Some(l) => {
                            let d = self.detail(&l).await;
                            let exit = d.as_ref().map(|d| d.exit_code).unwrap_or(-1);
                            let finished = d
                                .as_ref()
                                .map(|d| nanos_to_time(d.finished_at))
                                .unwrap_or(now);
                            let restart = match restart_policy.as_str() {
                                "Never" => false,
                                "OnFailure" => l.state != ContainerState::Exited || exit != 0,
                                _ => true,
                            };
                            if restart {
                                acted = true;
                                self.restart(
                                    pod,
                                    c,
                                    Kind::App,
                                    &l,
                                    finished,
                                    sandbox_id,
                                    cfg,
                                    &ip,
                                    lookup,
                                    &mut waiting,
                                    &mut requeue,
                                )
                                .await;
                            }
                        }
                        None => {
                            acted = true;
                            self.start(
                                pod,
                                c,
                                Kind::App,
                                0,
                                sandbox_id,
                                cfg,
                                &ip,
                                lookup,
                                &mut waiting,
                                &mut requeue,
                            )
                            .await;
                        }
                    }
                }
            }
            // ↔ computePodActions' EphemeralContainersToStart: started once
            // (initialized or not), never restarted.
            for c in ephemeral_containers(&spec) {
                if latest_of(&containers, &c.name).is_none() {
                    acted = true;
                    self.start(
                        pod,
                        &c,
                        Kind::Ephemeral,
                        0,
                        sandbox_id,
                        cfg,
                        &ip,
                        lookup,
                        &mut waiting,
                        &mut requeue,
                    )
                    .await;
                }
            }
        }

        if acted {
            containers = self.runtime.list_containers(&uid_selector(&uid)).await?;
        }
        self.details
            .retain(|id, _| containers.iter().any(|c| &c.id == id));
        self.messages
            .retain(|id, _| containers.iter().any(|c| &c.id == id));

        // The status.
        let init_statuses = self
            .statuses(
                pod,
                spec.init_containers.as_deref().unwrap_or_default(),
                Kind::Init,
                &containers,
                &waiting,
            )
            .await;
        let app_statuses = self
            .statuses(pod, &spec.containers, Kind::App, &containers, &waiting)
            .await;
        let ephemeral_statuses = self
            .statuses(
                pod,
                &ephemeral_containers(&spec),
                Kind::Ephemeral,
                &containers,
                &waiting,
            )
            .await;
        let inits_complete = spec
            .init_containers
            .iter()
            .flatten()
            .zip(&init_statuses)
            .all(|(c, s)| {
                if c.restart_policy.as_deref() == Some("Always") {
                    s["started"] == true
                } else {
                    s.pointer("/state/terminated/exitCode")
                        .and_then(Value::as_i64)
                        == Some(0)
                }
            });
        let mut phase = phase(&restart_policy, inits_complete, init_failed, &app_statuses);
        if deadline_exceeded {
            phase = "Failed".into();
        }
        self.probes.observe(
            pod,
            &app_statuses,
            pod_ip.as_deref(),
            is_terminal(Some(&phase)),
        );
        let sandbox_ready = sandbox.is_some() && !deadline_exceeded;
        let mut status = self.pod_status(
            pod,
            &phase,
            pod_ip.as_deref(),
            &pod_ips,
            sandbox_ready,
            &spec,
            &init_statuses,
            &app_statuses,
        );
        if let Some(kill) = &killing {
            status["reason"] = json!(kill.reason);
            status["message"] = json!(kill.message);
            if let (Some((kind, reason)), Some(conditions)) =
                (&kill.condition, status["conditions"].as_array_mut())
            {
                let since = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| &c.type_ == kind && c.status == "True"))
                    .and_then(|c| c.last_transition_time.as_ref())
                    .and_then(|t| serde_json::to_value(t).ok())
                    .unwrap_or_else(|| json!(rfc3339(now)));
                conditions.push(json!({
                    "type": kind,
                    "status": "True",
                    "lastProbeTime": null,
                    "lastTransitionTime": since,
                    "reason": reason,
                    "message": kill.message,
                }));
            }
        }
        if !ephemeral_statuses.is_empty() {
            status["ephemeralContainerStatuses"] = json!(ephemeral_statuses);
        }
        if is_terminal(Some(&phase)) {
            // Done: free the sandbox (and its IP); keep the containers for their logs.
            self.stop_sandboxes(&uid).await;
            self.final_status = Some(status.clone());
            requeue = Duration::from_secs(60);
        }
        Ok(SyncResult { status, requeue })
    }

    /// Whether the pod has been active longer than its activeDeadlineSeconds
    /// (↔ activeDeadlineHandler.ShouldEvict); if not yet, look again when it will be.
    fn past_deadline(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        now: SystemTime,
        requeue: &mut Duration,
    ) -> bool {
        let (Some(seconds), Some(start)) = (spec.active_deadline_seconds, self.started_at) else {
            return false;
        };
        // A deadline past what the clock can hold never comes.
        let Some(deadline) =
            start.checked_add(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
        else {
            return false;
        };
        match deadline.duration_since(now) {
            Ok(left) if !left.is_zero() => {
                *requeue = (*requeue).min(left + Duration::from_millis(10));
                false
            }
            _ => true,
        }
    }

    /// Stop what runs of a pod past its deadline (preStop hooks first, the
    /// pod's grace period), as the kubelet's killPod.
    async fn kill_now(&mut self, pod: &Pod, kill: &Kill, containers: &[Container], pod_ip: &str) {
        self.event(kill.event, &kill.reason, kill.message.clone(), None);
        self.probes.stop();
        let prober = self.probes.prober();
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = kill.grace.unwrap_or_else(|| grace_period(pod, None));
        for l in containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            let hooked = spec.containers.iter().find(|s| s.name == l.name);
            let kind = if hooked.is_some() {
                Kind::App
            } else {
                Kind::Init
            };
            let field = Some(kind.field(&l.name));
            self.event(
                EventKind::Normal,
                "Killing",
                format!("Stopping container {}", l.name),
                field.clone(),
            );
            let (stopped, events) = crate::hooks::stop_with_pre_stop(
                self.runtime.as_ref(),
                prober.as_ref(),
                pod,
                hooked,
                field,
                &l.id,
                pod_ip,
                grace,
            )
            .await;
            self.events.extend(events);
            if let Err(e) = stopped {
                tracing::warn!(error = %e, pod = %pod_key(pod), container = %l.name, "stopping a container of a pod being killed failed");
            }
            self.details.remove(&l.id);
        }
    }

    /// Kill running container `l` of `c` whose liveness or startup probe
    /// failed, and restart it unless the restart policy is Never (↔
    /// computePodActions' kill of an unhealthy container, then its start).
    #[allow(clippy::too_many_arguments)]
    async fn kill_unhealthy(
        &mut self,
        pod: &Pod,
        c: &SpecContainer,
        l: &Container,
        probe: crate::probes::ProbeKind,
        restart_policy: &str,
        sandbox_id: &str,
        cfg: &SandboxConfig,
        pod_ip: &str,
        lookup: &dyn Lookup,
        waiting: &mut HashMap<String, Waiting>,
        requeue: &mut Duration,
    ) {
        let (what, spec_probe) = match probe {
            crate::probes::ProbeKind::Startup => ("startup", c.startup_probe.as_ref()),
            _ => ("liveness", c.liveness_probe.as_ref()),
        };
        let restart = restart_policy != "Never";
        let mut message = format!("Container {} failed {what} probe", c.name);
        if restart {
            message.push_str(", will be restarted");
        }
        let field = Some(Kind::App.field(&c.name));
        self.event(EventKind::Normal, "Killing", message, field.clone());
        // ↔ setTerminationGracePeriod: the deletion's, else the probe's, else the pod's.
        let grace = match spec_probe.and_then(|p| p.termination_grace_period_seconds) {
            Some(g) if pod.metadata.deletion_grace_period_seconds.is_none() => g.max(0),
            _ => grace_period(pod, None),
        };
        let prober = self.probes.prober();
        let (stopped, events) = crate::hooks::stop_with_pre_stop(
            self.runtime.as_ref(),
            prober.as_ref(),
            pod,
            Some(c),
            field,
            &l.id,
            pod_ip,
            grace,
        )
        .await;
        self.events.extend(events);
        if let Err(e) = stopped {
            tracing::warn!(error = %e, pod = %pod_key(pod), container = %c.name, "killing an unhealthy container failed");
            *requeue = (*requeue).min(Duration::from_secs(2));
            return;
        }
        self.details.remove(&l.id);
        if restart {
            self.restart(
                pod,
                c,
                Kind::App,
                l,
                SystemTime::now(),
                sandbox_id,
                cfg,
                pod_ip,
                lookup,
                waiting,
                requeue,
            )
            .await;
        }
    }

    async fn stop_sandboxes(&mut self, uid: &str) {
        let Ok(sandboxes) = self.runtime.list_sandboxes(&uid_selector(uid)).await else {
            return;
        };
        for sb in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
            if let Err(e) = self.runtime.stop_sandbox(&sb.id).await {
                tracing::warn!(error = %e, sandbox = %sb.id, "stopping a finished pod's sandbox failed");
            }
        }
    }

    /// Restart `c` (whose latest instance `latest` ended at `finished`), unless backing off.
    #[allow(clippy::too_many_arguments)]
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &SpecContainer,
        kind: Kind,
        latest: &Container,
        finished: SystemTime,
        sandbox_id: &str,
        cfg: &SandboxConfig,
        pod_ip: &str,
        lookup: &dyn Lookup,
        waiting: &mut HashMap<String, Waiting>,
        requeue: &mut Duration,
    ) -> Step {
        let now = SystemTime::now();
        if let Some(until) = self.crash.until(&c.name, finished, now) {
            let delay = until.duration_since(finished).unwrap_or_default();
            waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {} restarting failed container={} pod={}",
                        human(delay),
                        c.name,
                        pod_key(pod)
                    ),
                },
            );
            *requeue = (*requeue)
                .min(until.duration_since(now).unwrap_or_default() + Duration::from_millis(10));
            if self.backoff_reported.get(&c.name) != Some(&until) {
                self.backoff_reported.insert(c.name.clone(), until);
                self.event(
                    EventKind::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_key(pod)
                    ),
                    Some(kind.field(&c.name)),
                );
            }
            return Step::Blocked;
        }
        self.crash.next(
            &c.name,
            now,
            self.settings.crash_backoff_initial,
            self.settings.crash_backoff_max,
        );
        self.start(
            pod,
            c,
            kind,
            latest.attempt + 1,
            sandbox_id,
            cfg,
            pod_ip,
            lookup,
            waiting,
            requeue,
        )
        .await
    }

    /// Pull if needed, create and start instance `attempt` of `c`.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &mut self,
        pod: &Pod,
        c: &SpecContainer,
        kind: Kind,
        attempt: u32,
        sandbox_id: &str,
        cfg: &SandboxConfig,
        pod_ip: &str,
        lookup: &dyn Lookup,
        waiting: &mut HashMap<String, Waiting>,
        requeue: &mut Duration,
    ) -> Step {
        let field = Some(kind.field(&c.name));
        let image = c.image.clone().unwrap_or_default();
        if let Err(w) = self
            .ensure_image(pod, c, &image, field.clone(), lookup, requeue)
            .await
        {
            waiting.insert(c.name.clone(), w);
            return Step::Blocked;
        }
        let ctx = EnvContext {
            host_ip: &self.settings.host_ip,
            pod_ip,
            memory_capacity: self.settings.memory_capacity,
        };
        let env = match container_env(pod, c, ctx, lookup).await {
            Ok(env) => {
                for (reason, message) in env.warnings {
                    self.event(EventKind::Warning, &reason, message, None);
                }
                env.vars
            }
            Err(message) => {
                self.event(
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                    field,
                );
                waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message,
                    },
                );
                *requeue = (*requeue).min(Duration::from_secs(5));
                return Step::Blocked;
            }
        };
        let vars: HashMap<String, String> = env.iter().cloned().collect();
        let mut mounts = match self.volume_mounts(pod, c, kind, &vars, lookup).await {
            Ok(m) => m,
            Err(w) => {
                waiting.insert(c.name.clone(), w);
                *requeue = (*requeue).min(Duration::from_secs(5));
                return Step::Blocked;
            }
        };
        // ↔ makeMounts: the pod's /etc/hosts once it has an IP, and the termination log.
        if !pod_ip.is_empty() {
            match crate::hosts::ensure(
                &self.settings.log_root,
                pod,
                &[pod_ip.to_string()],
                &self.settings.cluster_domain,
                &self.settings.etc_hosts,
            ) {
                Ok(file) => mounts.extend(crate::hosts::mount_for(c, &file)),
                Err(e) => {
                    tracing::warn!(error = %e, pod = %pod_key(pod), "writing the pod's hosts file failed")
                }
            }
        }
        mounts.extend(self.termination_log_mount(pod, c, attempt));
        // ↔ generateContainerConfig: the image's user against runAsNonRoot,
        // and the seccomp profile.
        let seccomp = match self.check_security(pod, c, &image).await {
            Ok(p) => p,
            Err(message) => {
                self.event(
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                    field,
                );
                waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message,
                    },
                );
                *requeue = (*requeue).min(Duration::from_secs(5));
                return Step::Blocked;
            }
        };
        let sc = c.security_context.clone().unwrap_or_default();
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let caps = sc.capabilities.clone().unwrap_or_default();
        let mut labels = cfg.labels.clone();
        labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "io.kubernetes.container.restartCount".to_string(),
            attempt.to_string(),
        );
        annotations.insert(
            "io.kubernetes.pod.terminationGracePeriod".to_string(),
            grace_period(pod, None).to_string(),
        );
        let log_path = format!("{}/{}.log", c.name, attempt);
        if let Err(e) = std::fs::create_dir_all(cfg.log_directory.join(&c.name)) {
            tracing::debug!(error = %e, "creating the container log directory failed");
        }
        let config = ContainerConfig {
            name: c.name.clone(),
            attempt,
            image: image.clone(),
            command: c
                .command
                .iter()
                .flatten()
                .map(|s| expand(s, &vars))
                .collect(),
            args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            env,
            labels,
            annotations,
            log_path,
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            privileged: sc.privileged.unwrap_or(false),
            run_as_user: sc.run_as_user.or(psc.run_as_user),
            run_as_group: sc.run_as_group.or(psc.run_as_group),
            supplemental_groups: supplemental_groups(&psc),
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            target_container_id: if kind == Kind::Ephemeral {
                self.target_of(pod, &c.name).await
            } else {
                None
            },
            read_only_root: sc.read_only_root_filesystem.unwrap_or(false),
            capabilities_add: caps.add.unwrap_or_default(),
            capabilities_drop: caps.drop.unwrap_or_default(),
            seccomp,
            resources: resources(pod, c, self.settings.memory_capacity),
            mounts,
        };
        let id = match self
            .runtime
            .create_container(sandbox_id, &config, cfg)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.event(EventKind::Warning, "Failed", format!("Error: {e}"), field);
                waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message: e.to_string(),
                    },
                );
                *requeue = (*requeue).min(Duration::from_secs(5));
                return Step::Blocked;
            }
        };
        self.event(
            EventKind::Normal,
            "Created",
            format!("Created container: {}", c.name),
            field.clone(),
        );
        if let Err(e) = self.runtime.start_container(&id).await {
            self.event(EventKind::Warning, "Failed", format!("Error: {e}"), field);
            waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: e.to_string(),
                },
            );
            return Step::Blocked;
        }
        self.event(
            EventKind::Normal,
            "Started",
            format!("Started container {}", c.name),
            field.clone(),
        );
        let prober = self.probes.prober();
        if let Err(message) =
            crate::hooks::post_start(self.runtime.as_ref(), prober.as_ref(), pod, c, &id, pod_ip)
                .await
        {
            // ↔ startContainer: the hook failed, the container is killed (and restarted per its policy).
            self.event(
                EventKind::Warning,
                "FailedPostStartHook",
                message.clone(),
                field.clone(),
            );
            self.event(
                EventKind::Normal,
                "Killing",
                "FailedPostStartHook".into(),
                field.clone(),
            );
            let (stopped, events) = crate::hooks::stop_with_pre_stop(
                self.runtime.as_ref(),
                prober.as_ref(),
                pod,
                Some(c),
                field,
                &id,
                pod_ip,
                grace_period(pod, None),
            )
            .await;
            self.events.extend(events);
            if let Err(e) = stopped {
                tracing::warn!(error = %e, pod = %pod_key(pod), container = %c.name, "killing a container whose postStart hook failed failed");
            }
            waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "PostStartHookError".into(),
                    message,
                },
            );
            *requeue = (*requeue).min(Duration::from_secs(1));
            return Step::Blocked;
        }
        // Keep this instance and the one before it (for lastState and logs --previous).
        if attempt >= 2
            && let Ok(old) = self
                .runtime
                .list_containers(&uid_selector(
                    pod.metadata.uid.as_deref().unwrap_or_default(),
                ))
                .await
        {
            for o in old.iter().filter(|o| {
                o.name == c.name && o.attempt + 1 < attempt && o.state != ContainerState::Running
            }) {
                if let Err(e) = self.runtime.remove_container(&o.id).await {
                    tracing::debug!(error = %e, "removing an old container failed");
                }
            }
        }
        Step::Busy
    }

    /// The runtime id of the running container whose PID namespace ephemeral
    /// container `name` joins (its targetContainerName).
    async fn target_of(&self, pod: &Pod, name: &str) -> Option<String> {
        let target = pod
            .spec
            .as_ref()?
            .ephemeral_containers
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .target_container_name
            .clone()
            .filter(|t| !t.is_empty())?;
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let containers = self
            .runtime
            .list_containers(&uid_selector(uid))
            .await
            .ok()?;
        containers
            .iter()
            .filter(|c| c.name == target && c.state == ContainerState::Running)
            .max_by_key(|c| c.attempt)
            .map(|c| c.id.clone())
    }

    /// The file behind instance `attempt` of container `name`'s termination
    /// log (↔ the kubelet's `<pod dir>/containers/<name>/<id>`; the attempt
    /// stands for the id, so an exited instance's file is found again).
    fn termination_log_path(&self, pod: &Pod, name: &str, attempt: u32) -> PathBuf {
        crate::volumes::pod_dir(
            &self.settings.log_root,
            pod.metadata.uid.as_deref().unwrap_or_default(),
        )
        .join("containers")
        .join(name)
        .join(attempt.to_string())
    }

    /// A new, empty, world-writable termination log for instance `attempt`
    /// of `c`, mounted at its terminationMessagePath (any user the container
    /// runs as can write it).
    fn termination_log_mount(&self, pod: &Pod, c: &SpecContainer, attempt: u32) -> Option<Mount> {
        use std::os::unix::fs::PermissionsExt;
        let path = c
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())?;
        let file = self.termination_log_path(pod, &c.name, attempt);
        let made = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&file))
            .and_then(|_| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)));
        if let Err(e) = made {
            tracing::warn!(error = %e, file = %file.display(), "creating the termination log failed");
            return None;
        }
        Some(Mount {
            container_path: path.to_string(),
            host_path: file.display().to_string(),
            readonly: false,
            ..Default::default()
        })
    }

    /// The status message of exited instance `d` of `c` with its
    /// termination message (↔ getTerminationMessage and
    /// readLastStringFromContainerLogs): the file's last 4096 bytes, or
    /// with FallbackToLogsOnError and a failure, an empty file gives the
    /// last 80 lines (2048 bytes at most) of the log.
    fn termination_message(&self, pod: &Pod, c: &SpecContainer, d: &ContainerStatus) -> String {
        let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
            && d.exit_code != 0
            && d.reason != "ContainerCannotRun";
        let (mut message, check_logs) = match c
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            None => (String::new(), fallback),
            Some(_) => {
                let file = self.termination_log_path(pod, &c.name, d.attempt);
                match read_tail(&file, MAX_TERMINATION_MESSAGE) {
                    Ok(data) => {
                        let empty = data.is_empty();
                        (
                            String::from_utf8_lossy(&data).into_owned(),
                            fallback && empty,
                        )
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), fallback),
                    Err(e) => (
                        format!("Error on reading termination log {}: {e}", file.display()),
                        false,
                    ),
                }
            }
        };
        if check_logs {
            let log = crate::logs::log_file(&self.log_dir(pod), &c.name, d.attempt);
            message = match last_log_lines(&log) {
                Ok(text) => text,
                Err(e) => format!("Error on reading termination message from logs: {e}"),
            };
        }
        match (d.message.is_empty(), message.is_empty()) {
            (_, true) => d.message.clone(),
            (true, false) => message,
            (false, false) => format!("{}: {message}", d.message),
        }
    }

    /// `d`, with the termination message of an exited instance (read once).
    fn with_message(
        &mut self,
        pod: &Pod,
        c: &SpecContainer,
        mut d: ContainerStatus,
    ) -> ContainerStatus {
        if d.state != ContainerState::Exited {
            return d;
        }
        let message = match self.messages.get(&d.id) {
            Some(m) => m.clone(),
            None => {
                let m = self.termination_message(pod, c, &d);
                self.messages.insert(d.id.clone(), m.clone());
                m
            }
        };
        d.message = message;
        d
    }

    /// Set up the pod's volumes and the mounts of `c`; why not (FailedMount events).
    async fn volume_mounts(
        &mut self,
        pod: &Pod,
        c: &SpecContainer,
        kind: Kind,
        vars: &HashMap<String, String>,
        lookup: &dyn Lookup,
    ) -> Result<Vec<Mount>, Waiting> {
        let reason = if kind == Kind::Init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        if let Err(errors) = self.volumes.setup(pod, &self.settings, lookup).await {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            for e in errors {
                self.event(EventKind::Warning, "FailedMount", e.to_string(), None);
            }
            return Err(Waiting {
                reason: reason.into(),
                message,
            });
        }
        self.volumes
            .mounts(pod, c, vars, &self.settings)
            .map_err(|message| {
                self.event(
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                    Some(kind.field(&c.name)),
                );
                Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message,
                }
            })
    }

    /// The pod's imagePullSecrets' credentials for `image`; missing
    /// secrets are skipped, as the kubelet does.
    async fn pull_auth(pod: &Pod, image: &str, lookup: &dyn Lookup) -> Option<RegistryAuth> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut secrets = Vec::new();
        for r in pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
        {
            match lookup.secret_files(ns, &r.name).await {
                Ok(Some(data)) => secrets.push(data),
                Ok(None) => {
                    tracing::warn!(secret = %r.name, "imagePullSecret not found; pulling without it")
                }
                Err(e) => {
                    tracing::warn!(secret = %r.name, error = %e, "reading an imagePullSecret failed")
                }
            }
        }
        crate::pullsecrets::auth_for(image, &secrets)
    }

    /// The checks of the kubelet's generateContainerConfig that may refuse
    /// a container: runAsNonRoot against the image's user (↔ getImageUser,
    /// verifyRunAsNonRoot), and its seccomp profile.
    async fn check_security(
        &self,
        pod: &Pod,
        c: &SpecContainer,
        image: &str,
    ) -> Result<SecurityProfile, String> {
        if crate::security::effective(pod, c).run_as_non_root == Some(true) {
            let user = match self.runtime.image_status(image).await {
                Ok(Some(i)) => crate::security::ImageUser {
                    uid: i.uid,
                    username: i.username,
                },
                Ok(None) => crate::security::ImageUser::default(),
                Err(e) => return Err(e.to_string()),
            };
            crate::security::verify_run_as_non_root(pod, c, &user)?;
        }
        crate::security::seccomp_profile(pod, Some(c), &self.settings.seccomp_root)
    }

    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &SpecContainer,
        image: &str,
        field: Option<String>,
        lookup: &dyn Lookup,
        requeue: &mut Duration,
    ) -> Result<(), Waiting> {
        if image.is_empty() {
            return Err(Waiting {
                reason: "InvalidImageName".into(),
                message: "the container has no image".into(),
            });
        }
        let policy = pull_policy(c);
        let present = match self.runtime.image_status(image).await {
            Ok(p) => p.is_some(),
            Err(e) => {
                return Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message: e.to_string(),
                });
            }
        };
        if policy == "Never" {
            if present {
                return Ok(());
            }
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.event(
                EventKind::Warning,
                "ErrImageNeverPull",
                message.clone(),
                field,
            );
            return Err(Waiting {
                reason: "ErrImageNeverPull".into(),
                message,
            });
        }
        if present && policy != "Always" {
            self.event(
                EventKind::Normal,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
                field,
            );
            return Ok(());
        }
        let now = SystemTime::now();
        if let Some(last) = self.pulls.last(image)
            && let Some(until) = self.pulls.until(image, last, now)
        {
            if present {
                // Pulls fail (no registry) but the image is here: use it.
                return Ok(());
            }
            *requeue = (*requeue)
                .min(until.duration_since(now).unwrap_or_default() + Duration::from_millis(10));
            let message = format!("Back-off pulling image \"{image}\"");
            self.event(EventKind::Normal, "BackOff", message.clone(), field);
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message,
            });
        }
        self.event(
            EventKind::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
            field.clone(),
        );
        let started = std::time::Instant::now();
        let auth = Self::pull_auth(pod, image, lookup).await;
        match self.runtime.pull_image(image, auth.as_ref()).await {
            Ok(_) => {
                self.pulls.forget(image);
                self.event(
                    EventKind::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:?}",
                        started.elapsed()
                    ),
                    field,
                );
                Ok(())
            }
            Err(e) => {
                let delay = self.pulls.next(
                    image,
                    SystemTime::now(),
                    self.settings.image_backoff_initial,
                    self.settings.image_backoff_max,
                );
                if present {
                    tracing::warn!(image, error = %e, "pull failed; using the image present on the node");
                    return Ok(());
                }
                *requeue = (*requeue).min(delay);
                let message = format!("Failed to pull image \"{image}\": {e}");
                self.event(EventKind::Warning, "Failed", message.clone(), field.clone());
                self.event(
                    EventKind::Warning,
                    "Failed",
                    "Error: ErrImagePull".into(),
                    field,
                );
                Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message,
                })
            }
        }
    }

    /// The containerStatuses of `specs`.
    async fn statuses(
        &mut self,
        pod: &Pod,
        specs: &[SpecContainer],
        kind: Kind,
        containers: &[Container],
        waiting: &HashMap<String, Waiting>,
    ) -> Vec<Value> {
        // ↔ convertToAPIContainerStatuses' defaultWaitingState.
        let default_reason = if pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|i| !i.is_empty())
        {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let mut out = Vec::new();
        for c in specs {
            let mut instances: Vec<&Container> =
                containers.iter().filter(|x| x.name == c.name).collect();
            instances.sort_by_key(|x| std::cmp::Reverse((x.attempt, x.created_at)));
            let latest = match instances.first() {
                Some(l) => self.detail(l).await.map(|d| self.with_message(pod, c, d)),
                None => None,
            };
            let previous = match instances.get(1) {
                Some(p) => self.detail(p).await.map(|d| self.with_message(pod, c, d)),
                None => None,
            };
            let container_id =
                |d: &ContainerStatus| format!("{}://{}", self.settings.runtime_name, d.id);
            let terminated = |d: &ContainerStatus| {
                let reason = if !d.reason.is_empty() {
                    d.reason.clone()
                } else if d.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                };
                let mut t = json!({"exitCode": d.exit_code, "reason": reason, "containerID": container_id(d)});
                if let Some(s) = rfc3339_ns(d.started_at) {
                    t["startedAt"] = json!(s);
                }
                if let Some(f) = rfc3339_ns(d.finished_at) {
                    t["finishedAt"] = json!(f);
                }
                if !d.message.is_empty() {
                    t["message"] = json!(d.message);
                }
                json!({"terminated": t})
            };
            let (state, last_state) = match (waiting.get(&c.name), &latest) {
                (Some(w), Some(l)) if l.state == ContainerState::Exited => (
                    json!({"waiting": {"reason": w.reason, "message": w.message}}),
                    terminated(l),
                ),
                (Some(w), _) => (
                    json!({"waiting": {"reason": w.reason, "message": w.message}}),
                    previous
                        .as_ref()
                        .map(terminated)
                        .unwrap_or_else(|| json!({})),
                ),
                (None, Some(l)) => {
                    let last = previous
                        .as_ref()
                        .map(terminated)
                        .unwrap_or_else(|| json!({}));
                    match l.state {
                        ContainerState::Running => {
                            let mut r = json!({});
                            if let Some(s) = rfc3339_ns(l.started_at) {
                                r["startedAt"] = json!(s);
                            }
                            (json!({"running": r}), last)
                        }
                        ContainerState::Exited => (terminated(l), last),
                        _ => (json!({"waiting": {"reason": "ContainerCreating"}}), last),
                    }
                }
                (None, None) => (json!({"waiting": {"reason": default_reason}}), json!({})),
            };
            let running = state.get("running").is_some();
            // ↔ the prober manager's UpdatePodStatus: started once the
            // startup probe succeeded, ready once the readiness probe did.
            let started = match (kind, &latest) {
                (Kind::App, Some(l)) => running && self.probes.started(&c.name, &l.id),
                _ => running,
            };
            let ready = match kind {
                Kind::App => {
                    started
                        && latest
                            .as_ref()
                            .is_some_and(|l| self.probes.ready(&c.name, &l.id))
                }
                Kind::Ephemeral => false,
                Kind::Init => {
                    if c.restart_policy.as_deref() == Some("Always") {
                        running
                    } else {
                        state
                            .pointer("/terminated/exitCode")
                            .and_then(Value::as_i64)
                            == Some(0)
                    }
                }
            };
            let image = latest
                .as_ref()
                .map(|l| l.image.clone())
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| c.image.clone().unwrap_or_default());
            let mut s = json!({
                "name": c.name,
                "state": state,
                "lastState": last_state,
                "ready": ready,
                "restartCount": latest.as_ref().map(|l| l.attempt).unwrap_or(0),
                "image": image,
                "imageID": latest.as_ref().map(|l| l.image_ref.clone()).unwrap_or_default(),
                "started": started,
            });
            if let Some(l) = &latest {
                s["containerID"] = json!(container_id(l));
            }
            out.push(s);
        }
        out
    }

    /// The pod's status; its conditions as pkg/kubelet/status/generate.go
    /// makes them.
    #[allow(clippy::too_many_arguments)]
    fn pod_status(
        &self,
        pod: &Pod,
        phase: &str,
        pod_ip: Option<&str>,
        pod_ips: &[String],
        sandbox_ready: bool,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        init_statuses: &[Value],
        app_statuses: &[Value],
    ) -> Value {
        let old: Vec<Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        let now = rfc3339(SystemTime::now());
        let condition = |kind: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
            let status = if ok { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| c["type"] == kind && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
                .unwrap_or_else(|| now.clone());
            let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            if let Some(m) = message {
                c["message"] = json!(m);
            }
            c
        };
        let not_ready: Vec<String> = app_statuses
            .iter()
            .filter(|s| s["ready"] != true)
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect();
        // ↔ isInitContainerInitialized: sidecars once started, others once succeeded.
        let not_init: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .zip(init_statuses)
            .filter(|(c, s)| {
                if c.restart_policy.as_deref() == Some("Always") {
                    s["started"] != true
                } else {
                    s["ready"] != true
                }
            })
            .map(|(c, _)| c.name.clone())
            .collect();
        // ↔ HasAnyRegularContainerStarted.
        let app_started = app_statuses
            .iter()
            .any(|s| s["state"].get("running").is_some() || s["state"].get("terminated").is_some());
        let initialized = if phase == "Succeeded" {
            condition("Initialized", true, Some("PodCompleted"), None)
        } else if app_started || not_init.is_empty() {
            condition("Initialized", true, None, None)
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    not_init.join(" ")
                )),
            )
        };
        let (ready, ready_reason, ready_message) = match phase {
            "Succeeded" => (false, Some("PodCompleted"), None),
            "Failed" => (false, Some("PodFailed"), None),
            _ if !not_ready.is_empty() => (
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    not_ready.join(" ")
                )),
            ),
            _ => (true, None, None),
        };
        let scheduled = old
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        let conditions = json!([
            condition("PodReadyToStartContainers", sandbox_ready, None, None),
            initialized,
            condition("Ready", ready, ready_reason, ready_message.clone()),
            condition("ContainersReady", ready, ready_reason, ready_message),
            scheduled,
        ]);
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.settings.host_ip,
            "hostIPs": [{"ip": self.settings.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": app_statuses,
            "message": null,
            "reason": null,
        });
        if let Some(ip) = pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!(
                pod_ips
                    .iter()
                    .map(|ip| json!({"ip": ip}))
                    .collect::<Vec<_>>()
            );
        }
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        status
    }

    /// Stop the pod's containers (SIGTERM, SIGKILL after `grace` seconds),
    /// then its sandboxes, and remove them all.
    pub async fn terminate(&mut self, pod: &Pod, grace: i64) -> Result<(), RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let containers = self.runtime.list_containers(&uid_selector(&uid)).await?;
        let running: Vec<&Container> = containers
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Created | ContainerState::Unknown
                )
            })
            .collect();
        for c in &running {
            self.event(
                EventKind::Normal,
                "Killing",
                format!("Stopping container {}", c.name),
                Some(Kind::App.field(&c.name)),
            );
        }
        // No probing while the pod goes; each running container's preStop
        // hook runs inside the grace period, before its SIGTERM.
        self.probes.stop();
        let prober = self.probes.prober();
        let spec = pod.spec.clone().unwrap_or_default();
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let runtime = self.runtime.clone();
        let stops = running.iter().map(|c| {
            let runtime = runtime.clone();
            let prober = prober.clone();
            let id = c.id.clone();
            let hooked = if c.state == ContainerState::Running {
                spec.containers.iter().find(|s| s.name == c.name)
            } else {
                None
            };
            let field = Some(Kind::App.field(&c.name));
            let pod_ip = pod_ip.as_str();
            async move {
                crate::hooks::stop_with_pre_stop(
                    runtime.as_ref(),
                    prober.as_ref(),
                    pod,
                    hooked,
                    field,
                    &id,
                    pod_ip,
                    grace,
                )
                .await
            }
        });
        let mut first_error = None;
        for (r, events) in futures::future::join_all(stops).await {
            self.events.extend(events);
            if let Err(e) = r
                && !e.is_not_found()
            {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        remove_pod(self.runtime.as_ref(), &uid).await?;
        if let Err(e) = crate::volumes::teardown(
            &self.settings.log_root,
            &uid,
            self.settings.mounter.as_ref(),
        ) {
            tracing::warn!(error = %e, pod = %pod_key(pod), "removing the pod's volumes failed");
        }
        if !self.settings.cgroup_root.is_empty() {
            remove_pod_cgroups_soon(&self.settings.cgroup_root, &uid).await;
        }
        Ok(())
    }
}

/// Remove the stopped containers and the sandboxes of pod `uid`.
pub async fn remove_pod(runtime: &dyn Runtime, uid: &str) -> Result<(), RuntimeError> {
    let containers = runtime.list_containers(&uid_selector(uid)).await?;
    for c in &containers {
        if c.state == ContainerState::Running {
            runtime
                .stop_container(&c.id, 0)
                .await
                .or_else(ignore_not_found)?;
        }
        runtime
            .remove_container(&c.id)
            .await
            .or_else(ignore_not_found)?;
    }
    for sb in runtime.list_sandboxes(&uid_selector(uid)).await? {
        runtime
            .stop_sandbox(&sb.id)
            .await
            .or_else(ignore_not_found)?;
        runtime
            .remove_sandbox(&sb.id)
            .await
            .or_else(ignore_not_found)?;
    }
    Ok(())
}

fn ignore_not_found(e: RuntimeError) -> Result<(), RuntimeError> {
    if e.is_not_found() { Ok(()) } else { Err(e) }
}

/// [`remove_pod_cgroups`], retried for a few seconds: the runtime may
/// remove the containers' cgroups a moment after it removed them.
pub async fn remove_pod_cgroups_soon(root: &str, uid: &str) {
    for _ in 0..30 {
        if remove_pod_cgroups(root, uid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Best effort: the pod's (now empty) cgroupfs directories; true when none is left.
pub fn remove_pod_cgroups(root: &str, uid: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return true;
    };
    let mut all = true;
    for e in entries.flatten() {
        let dir = e
            .path()
            .join(root.trim_start_matches('/'))
            .join(format!("pod{uid}"));
        if dir.is_dir() && std::fs::remove_dir(&dir).is_err() {
            all = false;
        }
    }
    all
}

/// The pod's ephemeral containers as containers (the same fields, less
/// targetContainerName).
fn ephemeral_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<SpecContainer> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| {
            let mut v = serde_json::to_value(e).ok()?;
            if let Some(m) = v.as_object_mut() {
                m.remove("targetContainerName");
            }
            serde_json::from_value(v).ok()
        })
        .collect()
}

/// The most of a termination message file that is read (↔ MaxContainerTerminationMessageLength).
pub const MAX_TERMINATION_MESSAGE: u64 = 4096;
/// The log lines and bytes a termination message falls back to.
pub const TERMINATION_LOG_LINES: u64 = 80;
pub const TERMINATION_LOG_BYTES: usize = 2048;

/// The last `max` bytes of `file` (↔ tail.ReadAtMost).
fn read_tail(file: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// The last [`TERMINATION_LOG_LINES`] lines of a CRI log file as the
/// container wrote them, at most the last [`TERMINATION_LOG_BYTES`].
fn last_log_lines(file: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file)?;
    let start = crate::logs::tail_offset(&mut f, TERMINATION_LOG_LINES)?;
    f.seek(SeekFrom::Start(start))?;
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)?;
    let mut formatter = crate::logs::Formatter::new(crate::logs::LogOptions::default());
    let mut out = Vec::new();
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        formatter.push(line, &mut out);
    }
    let from = out.len().saturating_sub(TERMINATION_LOG_BYTES);
    Ok(String::from_utf8_lossy(&out[from..]).into_owned())
}

fn latest_of(containers: &[Container], name: &str) -> Option<Container> {
    containers
        .iter()
        .filter(|c| c.name == name)
        .max_by_key(|c| (c.attempt, c.created_at))
        .cloned()
}

/// "10s", "1m20s", "5m0s" as Go prints durations.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// A CPU quantity in millicores ("500m", "1", "0.25").
pub fn parse_millicores(q: &str) -> Option<i64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok().map(|m| m.ceil() as i64),
        None => q.parse::<f64>().ok().map(|c| (c * 1000.0).ceil() as i64),
    }
}

/// The pod's QoS class (↔ qos.GetPodQOS): Guaranteed when every container
/// has equal cpu and memory requests and limits, BestEffort when none has
/// any, else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<&SpecContainer> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        if !requests.is_empty() || !limits.is_empty() {
            any = true;
        }
        for k in ["cpu", "memory"] {
            let limit = limits.get(k).map(|q| q.0.clone());
            let request = requests
                .get(k)
                .map(|q| q.0.clone())
                .or_else(|| limit.clone());
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The cgroup limits of `c` as the kubelet sets them: cpu shares from the
/// request (2 when none), CFS quota from the cpu limit, the memory limit,
/// and oom_score_adj by QoS class.
pub fn resources(pod: &Pod, c: &SpecContainer, memory_capacity: u64) -> Resources {
    const PERIOD: i64 = 100_000;
    let r = c.resources.clone().unwrap_or_default();
    let requests = r.requests.unwrap_or_default();
    let limits = r.limits.unwrap_or_default();
    let cpu_limit = limits.get("cpu").and_then(|q| parse_millicores(&q.0));
    let cpu_request = requests
        .get("cpu")
        .and_then(|q| parse_millicores(&q.0))
        .or(cpu_limit);
    let memory_limit = limits
        .get("memory")
        .and_then(|q| crate::env::parse_bytes(&q.0))
        .unwrap_or(0);
    let memory_request = requests
        .get("memory")
        .and_then(|q| crate::env::parse_bytes(&q.0))
        .unwrap_or(memory_limit);
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ if memory_capacity == 0 => 999,
        _ => {
            (1000 - (1000 * memory_request as i128 / memory_capacity as i128) as i64).clamp(2, 999)
        }
    };
    Resources {
        cpu_period: if cpu_limit.is_some() { PERIOD } else { 0 },
        cpu_quota: cpu_limit
            .map(|m| (m * PERIOD / 1000).max(1000))
            .unwrap_or(0),
        cpu_shares: cpu_request.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2),
        memory_limit_in_bytes: memory_limit as i64,
        oom_score_adj,
    }
}

/// A sysctl name with '.' separators (↔ ConvertSysctlVariableToDotsSeparator):
/// when the first separator is '/', dots and slashes swap
/// (`net/ipv4/conf/eno2.100/rp_filter` is `net.ipv4.conf.eno2/100.rp_filter`).
pub fn sysctl_with_dots(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// A container's supplemental groups (↔ determineEffectiveSecurityContext):
/// the pod's fsGroup, then its supplementalGroups.
pub fn supplemental_groups(psc: &k8s_openapi::api::core::v1::PodSecurityContext) -> Vec<i64> {
    psc.fs_group
        .into_iter()
        .chain(psc.supplemental_groups.iter().flatten().copied())
        .collect()
}

/// The grace period of a deletion: the one the deletion set, else the spec's, else 30 s.
pub fn grace_period(pod: &Pod, deletion: Option<i64>) -> i64 {
    deletion
        .or(pod.metadata.deletion_grace_period_seconds)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

/// The pod's phase from its containers' statuses (↔ kubelet's getPhase).
pub fn phase(
    restart_policy: &str,
    inits_complete: bool,
    init_failed: bool,
    statuses: &[Value],
) -> String {
    if !inits_complete {
        return if init_failed {
            "Failed".into()
        } else {
            "Pending".into()
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = &s["state"];
        if st.get("running").is_some() {
            running += 1;
        } else if let Some(t) = st.get("terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s.pointer("/lastState/terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending".into()
    } else if running > 0 {
        "Running".into()
    } else if stopped > 0 {
        match restart_policy {
            "Never" if succeeded == stopped => "Succeeded".into(),
            "Never" => "Failed".into(),
            "OnFailure" if succeeded == stopped => "Succeeded".into(),
            _ => "Running".into(),
        }
    } else {
        "Pending".into()
    }
}
