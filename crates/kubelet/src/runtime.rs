//! The container runtime as the pod workers see it (↔ the kubelet's
//! kubecontainer.Runtime over CRI): pod sandboxes, containers and images.
//! [`crate::cri::CriRuntime`] implements it over CRI v1; tests use a fake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub type Labels = BTreeMap<String, String>;

/// Labels skiff puts on every sandbox and container (the kubelet's own
/// names, so that crictl shows them), and the one that says which node's
/// agent owns it.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const LABEL_NODE: &str = "skiff.dev/node";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("runtime call {call} failed: {message}")]
    Call { call: &'static str, message: String },
    #[error("runtime call {call} timed out")]
    Timeout { call: &'static str },
    #[error("connecting to the runtime at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("importing image {path}: {message}")]
    Import { path: String, message: String },
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// "containerd".
    pub name: String,
    /// "1.6.20~ds1".
    pub version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// What a pod sandbox is made from.
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    /// Where the containers' logs go (`<dir>/<container>/<attempt>.log`).
    pub log_directory: PathBuf,
    pub labels: Labels,
    pub annotations: Labels,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// shareProcessNamespace.
    pub share_pid: bool,
    pub port_mappings: Vec<PortMapping>,
    pub cgroup_parent: String,
    /// The pod's resolv.conf (None: the runtime copies the host's).
    pub dns: Option<DnsConfig>,
    /// Namespaced kernel parameters of the pod (securityContext.sysctls).
    pub sysctls: Labels,
    /// The pod's securityContext: user, group and supplemental groups of the sandbox.
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    /// The runtime handler of the pod's RuntimeClass (CRI RunPodSandbox's
    /// runtime_handler); empty for the runtime's default.
    pub runtime_handler: String,
    /// The pod's seccomp profile (the sandbox's).
    pub seccomp: SecurityProfile,
}

/// A seccomp profile (↔ CRI's SecurityProfile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SecurityProfile {
    /// No filter (the kubelet's default without --seccomp-default).
    #[default]
    Unconfined,
    /// The runtime's default profile (containerd's).
    RuntimeDefault,
    /// A profile file on the node, by absolute path.
    Localhost(String),
}

/// A pod's resolv.conf (↔ CRI's DNSConfig).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: SandboxState,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub labels: Labels,
}

#[derive(Clone, Debug)]
pub struct SandboxStatus {
    pub id: String,
    pub state: SandboxState,
    /// The pod's IP (none with host networking).
    pub ip: Option<String>,
    pub additional_ips: Vec<String>,
}

/// cgroup limits of a container (↔ CRI's LinuxContainerResources).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CFS period and quota in microseconds (0: unlimited).
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    /// Bytes (0: unlimited).
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
}

/// What a container is made from.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, String)>,
    pub labels: Labels,
    pub annotations: Labels,
    /// Relative to the sandbox's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub privileged: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    /// The pod's supplementalGroups, and its fsGroup.
    pub supplemental_groups: Vec<i64>,
    /// allowPrivilegeEscalation: false (↔ CRI no_new_privs).
    pub no_new_privs: bool,
    /// An ephemeral container's target: it joins that container's PID namespace.
    pub target_container_id: Option<String>,
    pub read_only_root: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub seccomp: SecurityProfile,
    pub resources: Resources,
    /// Bind mounts (volumes, /etc/hosts, termination log).
    pub mounts: Vec<Mount>,
}

/// A bind mount into a container (↔ CRI's Mount).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// Accept a missing or unusual host path as is (no SELinux relabel etc.).
    pub propagation: MountPropagation,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MountPropagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

/// A container's resource usage (↔ CRI's ContainerStats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub id: String,
    pub labels: Labels,
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    pub usage_core_nano_seconds: u64,
    pub usage_nano_cores: u64,
    pub working_set_bytes: u64,
    pub usage_bytes: u64,
    pub rss_bytes: u64,
    /// Bytes of the container's writable layer, when the runtime reports it.
    pub writable_layer_bytes: Option<u64>,
}

/// Registry credentials for a pull (↔ CRI's AuthConfig).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in Docker's config.
    pub auth: String,
    pub server_address: String,
}

/// The result of a synchronous exec (probes, hooks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// An exec or attach through the runtime's streaming server (↔ CRI's
/// ExecRequest / AttachRequest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    pub container_id: String,
    /// Empty for attach.
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// A container as listed.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub image: String,
    pub image_ref: String,
    pub labels: Labels,
}

/// A container in detail.
#[derive(Clone, Debug)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    /// Nanoseconds since the epoch; 0 when not (yet) so.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// "Completed", "Error", "OOMKilled", ... (exited containers).
    pub reason: String,
    pub message: String,
    /// The image as the runtime names it.
    pub image: String,
    /// The image's digest reference.
    pub image_ref: String,
    pub labels: Labels,
    /// The container's CRI log file, absolute (the sandbox's log directory
    /// joined with the container's `log_path`); empty if it has none.
    pub log_path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    /// The image's user: a numeric uid, or else a user name (neither: root).
    pub uid: Option<i64>,
    pub username: String,
}

/// Pod sandbox and container lifecycle, and images (↔ CRI's
/// RuntimeService and ImageService).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError>;

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String, RuntimeError>;
    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    async fn sandbox_status(&self, id: &str) -> Result<SandboxStatus, RuntimeError>;
    /// Sandboxes carrying all of `labels`.
    async fn list_sandboxes(&self, labels: &Labels) -> Result<Vec<Sandbox>, RuntimeError>;

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &SandboxConfig,
    ) -> Result<String, RuntimeError>;
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stop with SIGTERM (or the image's stop signal), SIGKILL after `timeout_seconds`.
    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), RuntimeError>;
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;
    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;
    /// Containers carrying all of `labels`.
    async fn list_containers(&self, labels: &Labels) -> Result<Vec<Container>, RuntimeError>;
    /// Make a running container's runtime close its log file and open a
    /// new one at the same path (↔ CRI ReopenContainerLog), after the old
    /// one was renamed by log rotation.
    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError>;

    /// The image if present.
    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError>;
    /// Pull from a registry, with credentials if given; the image reference pulled.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError>;
    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError>;
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError>;
    /// Import a docker-archive or OCI archive tarball.
    async fn import_image(&self, path: &Path) -> Result<(), RuntimeError>;

    /// Run `command` in a container and wait for it, at most `timeout`
    /// (↔ CRI ExecSync; exec probes and hooks).
    async fn exec_sync(
        &self,
        container_id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecResult, RuntimeError>;
    /// The URL of the runtime's streaming server for an exec (↔ CRI Exec).
    async fn exec(&self, request: &StreamRequest) -> Result<String, RuntimeError>;
    /// The URL of the runtime's streaming server for an attach (↔ CRI Attach).
    async fn attach(&self, request: &StreamRequest) -> Result<String, RuntimeError>;
    /// Resource usage of the containers carrying all of `labels`.
    async fn container_stats(&self, labels: &Labels) -> Result<Vec<ContainerStats>, RuntimeError>;
    /// The URL of the runtime's streaming server for a port forward into
    /// a sandbox (↔ CRI PortForward).
    async fn port_forward(&self, sandbox_id: &str, ports: &[i32]) -> Result<String, RuntimeError>;
}
