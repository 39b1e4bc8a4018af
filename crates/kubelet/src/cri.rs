//! [`Runtime`] over CRI v1 (gRPC on a Unix socket), as the kubelet's
//! remote runtime service does.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::runtime::*;

/// How long a runtime call may take (the kubelet's --runtime-request-timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Pulls may take longer.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct CriRuntime {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriRuntime {
    /// A client of the CRI socket at `socket`. Connects lazily (and
    /// reconnects), so the socket may appear later.
    pub fn new(socket: &Path) -> Result<CriRuntime, RuntimeError> {
        let endpoint = Endpoint::try_from("http://[::1]:50051")
            .map_err(|e| RuntimeError::Connect {
                endpoint: socket.display().to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5));
        let path = socket.to_path_buf();
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }));
        Ok(CriRuntime {
            socket: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            images: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

async fn call<T, F>(name: &'static str, timeout: Duration, f: F) -> Result<T, RuntimeError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(timeout, f).await {
        Err(_) => Err(RuntimeError::Timeout { call: name }),
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
            Err(RuntimeError::NotFound(s.message().to_string()))
        }
        Ok(Err(s)) => Err(RuntimeError::Call {
            call: name,
            message: format!("{}: {}", code_name(s.code()), s.message()),
        }),
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Unknown => "unknown",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Unimplemented => "unimplemented",
        tonic::Code::Internal => "internal",
        _ => "error",
    }
}

fn to_map(l: &Labels) -> HashMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn from_map(m: HashMap<String, String>) -> Labels {
    m.into_iter().collect()
}

fn sandbox_state(s: i32) -> SandboxState {
    if s == cri::PodSandboxState::SandboxReady as i32 {
        SandboxState::Ready
    } else {
        SandboxState::NotReady
    }
}

fn container_state(s: i32) -> ContainerState {
    match cri::ContainerState::try_from(s) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

fn namespace_options(c: &SandboxConfig) -> cri::NamespaceOption {
    let mode = |node: bool, pod: cri::NamespaceMode| {
        if node {
            cri::NamespaceMode::Node as i32
        } else {
            pod as i32
        }
    };
    cri::NamespaceOption {
        network: mode(c.host_network, cri::NamespaceMode::Pod),
        pid: mode(
            c.host_pid,
            if c.share_pid {
                cri::NamespaceMode::Pod
            } else {
                cri::NamespaceMode::Container
            },
        ),
        ipc: mode(c.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

pub(crate) fn sandbox_config(c: &SandboxConfig) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: c.name.clone(),
            uid: c.uid.clone(),
            namespace: c.namespace.clone(),
            attempt: c.attempt,
        }),
        hostname: c.hostname.clone(),
        log_directory: c.log_directory.display().to_string(),
        dns_config: c.dns.as_ref().map(|d| cri::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        port_mappings: c
            .port_mappings
            .iter()
            .map(|p| cri::PortMapping {
                protocol: match p.protocol {
                    Protocol::Tcp => cri::Protocol::Tcp as i32,
                    Protocol::Udp => cri::Protocol::Udp as i32,
                    Protocol::Sctp => cri::Protocol::Sctp as i32,
                },
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        labels: to_map(&c.labels),
        annotations: to_map(&c.annotations),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: c.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(c)),
                privileged: c.host_network || c.host_pid || c.host_ipc,
                run_as_user: c.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: c.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: c.supplemental_groups.clone(),
                seccomp: Some(security_profile(&c.seccomp)),
                ..Default::default()
            }),
            sysctls: to_map(&c.sysctls),
            ..Default::default()
        }),
        windows: None,
    }
}

fn container_config(c: &ContainerConfig, sandbox: &SandboxConfig) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        envs: c
            .env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        labels: to_map(&c.labels),
        annotations: to_map(&c.annotations),
        log_path: c.log_path.clone(),
        mounts: c
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: match m.propagation {
                    MountPropagation::Private => cri::MountPropagation::PropagationPrivate as i32,
                    MountPropagation::HostToContainer => {
                        cri::MountPropagation::PropagationHostToContainer as i32
                    }
                    MountPropagation::Bidirectional => {
                        cri::MountPropagation::PropagationBidirectional as i32
                    }
                },
                ..Default::default()
            })
            .collect(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: c.resources.cpu_period,
                cpu_quota: c.resources.cpu_quota,
                cpu_shares: c.resources.cpu_shares,
                memory_limit_in_bytes: c.resources.memory_limit_in_bytes,
                oom_score_adj: c.resources.oom_score_adj,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: c.capabilities_add.clone(),
                    drop_capabilities: c.capabilities_drop.clone(),
                    ..Default::default()
                }),
                privileged: c.privileged,
                namespace_options: Some(match &c.target_container_id {
                    Some(id) => cri::NamespaceOption {
                        pid: cri::NamespaceMode::Target as i32,
                        target_id: id.clone(),
                        ..namespace_options(sandbox)
                    },
                    None => namespace_options(sandbox),
                }),
                run_as_user: c.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: c.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: c.supplemental_groups.clone(),
                no_new_privs: c.no_new_privs,
                readonly_rootfs: c.read_only_root,
                seccomp: Some(security_profile(&c.seccomp)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Always explicit, as the kubelet sends it: an absent profile would
/// decode as RuntimeDefault, proto3's zero value.
fn security_profile(p: &SecurityProfile) -> cri::SecurityProfile {
    let (t, localhost_ref) = match p {
        SecurityProfile::Unconfined => (cri::security_profile::ProfileType::Unconfined, ""),
        SecurityProfile::RuntimeDefault => (cri::security_profile::ProfileType::RuntimeDefault, ""),
        SecurityProfile::Localhost(path) => {
            (cri::security_profile::ProfileType::Localhost, path.as_str())
        }
    };
    cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: localhost_ref.into(),
    }
}

fn image(i: cri::Image) -> Image {
    Image {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
        uid: i.uid.map(|u| u.value),
        username: i.username,
    }
}

#[async_trait::async_trait]
impl Runtime for CriRuntime {
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        let mut c = self.runtime.clone();
        let v = call(
            "Version",
            Duration::from_secs(10),
            c.version(cri::VersionRequest {
                version: "v1".into(),
            }),
        )
        .await?;
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
        })
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String, RuntimeError> {
        let mut c = self.runtime.clone();
        let req = cri::RunPodSandboxRequest {
            config: Some(sandbox_config(config)),
            runtime_handler: config.runtime_handler.clone(),
        };
        Ok(
            call("RunPodSandbox", REQUEST_TIMEOUT, c.run_pod_sandbox(req))
                .await?
                .pod_sandbox_id,
        )
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.runtime.clone();
        call(
            "StopPodSandbox",
            REQUEST_TIMEOUT,
            c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.runtime.clone();
        call(
            "RemovePodSandbox",
            REQUEST_TIMEOUT,
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    async fn sandbox_status(&self, id: &str) -> Result<SandboxStatus, RuntimeError> {
        let mut c = self.runtime.clone();
        let r = call(
            "PodSandboxStatus",
            REQUEST_TIMEOUT,
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            }),
        )
        .await?;
        let s = r
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {id}")))?;
        let net = s.network.unwrap_or_default();
        Ok(SandboxStatus {
            id: s.id,
            state: sandbox_state(s.state),
            ip: Some(net.ip).filter(|ip| !ip.is_empty()),
            additional_ips: net.additional_ips.into_iter().map(|p| p.ip).collect(),
        })
    }

    async fn list_sandboxes(&self, labels: &Labels) -> Result<Vec<Sandbox>, RuntimeError> {
        let mut c = self.runtime.clone();
        let filter = cri::PodSandboxFilter {
            label_selector: to_map(labels),
            ..Default::default()
        };
        let r = call(
            "ListPodSandbox",
            REQUEST_TIMEOUT,
            c.list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            }),
        )
        .await?;
        Ok(r.items
            .into_iter()
            .map(|s| {
                let m = s.metadata.unwrap_or_default();
                Sandbox {
                    id: s.id,
                    name: m.name,
                    namespace: m.namespace,
                    uid: m.uid,
                    attempt: m.attempt,
                    state: sandbox_state(s.state),
                    created_at: s.created_at,
                    labels: from_map(s.labels),
                }
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &SandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut c = self.runtime.clone();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(container_config(config, sandbox)),
            sandbox_config: Some(sandbox_config(sandbox)),
        };
        Ok(
            call("CreateContainer", REQUEST_TIMEOUT, c.create_container(req))
                .await?
                .container_id,
        )
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.runtime.clone();
        call(
            "StartContainer",
            REQUEST_TIMEOUT,
            c.start_container(cri::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), RuntimeError> {
        let mut c = self.runtime.clone();
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(timeout_seconds.max(0) as u64);
        call(
            "StopContainer",
            timeout,
            c.stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_seconds.max(0),
            }),
        )
        .await?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.runtime.clone();
        call(
            "RemoveContainer",
            REQUEST_TIMEOUT,
            c.remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let mut c = self.runtime.clone();
        let r = call(
            "ContainerStatus",
            REQUEST_TIMEOUT,
            c.container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }),
        )
        .await?;
        let s = r
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let m = s.metadata.unwrap_or_default();
        Ok(ContainerStatus {
            id: s.id,
            name: m.name,
            attempt: m.attempt,
            state: container_state(s.state),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason: s.reason,
            message: s.message,
            image: s.image.map(|i| i.image).unwrap_or_default(),
            image_ref: s.image_ref,
            labels: from_map(s.labels),
            log_path: s.log_path,
        })
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.runtime.clone();
        call(
            "ReopenContainerLog",
            REQUEST_TIMEOUT,
            c.reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    async fn list_containers(&self, labels: &Labels) -> Result<Vec<Container>, RuntimeError> {
        let mut c = self.runtime.clone();
        let filter = cri::ContainerFilter {
            label_selector: to_map(labels),
            ..Default::default()
        };
        let r = call(
            "ListContainers",
            REQUEST_TIMEOUT,
            c.list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            }),
        )
        .await?;
        Ok(r.containers
            .into_iter()
            .map(|s| {
                let m = s.metadata.unwrap_or_default();
                Container {
                    id: s.id,
                    sandbox_id: s.pod_sandbox_id,
                    name: m.name,
                    attempt: m.attempt,
                    state: container_state(s.state),
                    created_at: s.created_at,
                    image: s.image.map(|i| i.image).unwrap_or_default(),
                    image_ref: s.image_ref,
                    labels: from_map(s.labels),
                }
            })
            .collect())
    }

    async fn image_status(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        let mut c = self.images.clone();
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        match call("ImageStatus", REQUEST_TIMEOUT, c.image_status(req)).await {
            Ok(r) => Ok(r.image.map(image)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(
        &self,
        name: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let mut c = self.images.clone();
        let auth = auth.map(|a| cri::AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            auth: a.auth.clone(),
            server_address: a.server_address.clone(),
            ..Default::default()
        });
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        };
        Ok(call("PullImage", PULL_TIMEOUT, c.pull_image(req))
            .await?
            .image_ref)
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        let mut c = self.images.clone();
        let r = call(
            "ListImages",
            REQUEST_TIMEOUT,
            c.list_images(cri::ListImagesRequest { filter: None }),
        )
        .await?;
        Ok(r.images.into_iter().map(image).collect())
    }

    async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        let mut c = self.images.clone();
        let req = cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
        };
        call("RemoveImage", REQUEST_TIMEOUT, c.remove_image(req)).await?;
        Ok(())
    }

    async fn import_image(&self, path: &Path) -> Result<(), RuntimeError> {
        crate::containerd::import_image(&self.socket, path).await
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let mut c = self.runtime.clone();
        let secs = timeout.as_secs().max(1) as i64;
        let req = cri::ExecSyncRequest {
            container_id: container_id.into(),
            cmd: command.to_vec(),
            timeout: secs,
        };
        // The runtime enforces `timeout`; allow it a little longer to answer.
        let r = call(
            "ExecSync",
            timeout + Duration::from_secs(5),
            c.exec_sync(req),
        )
        .await?;
        Ok(ExecResult {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    async fn exec(&self, request: &StreamRequest) -> Result<String, RuntimeError> {
        let mut c = self.runtime.clone();
        let req = cri::ExecRequest {
            container_id: request.container_id.clone(),
            cmd: request.command.clone(),
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        Ok(call("Exec", REQUEST_TIMEOUT, c.exec(req)).await?.url)
    }

    async fn attach(&self, request: &StreamRequest) -> Result<String, RuntimeError> {
        let mut c = self.runtime.clone();
        let req = cri::AttachRequest {
            container_id: request.container_id.clone(),
            stdin: request.stdin,
            tty: request.tty,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        Ok(call("Attach", REQUEST_TIMEOUT, c.attach(req)).await?.url)
    }

    async fn container_stats(&self, labels: &Labels) -> Result<Vec<ContainerStats>, RuntimeError> {
        let mut c = self.runtime.clone();
        let req = cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                label_selector: to_map(labels),
                ..Default::default()
            }),
        };
        let r = call(
            "ListContainerStats",
            REQUEST_TIMEOUT,
            c.list_container_stats(req),
        )
        .await?;
        let v = |x: Option<cri::UInt64Value>| x.map(|x| x.value).unwrap_or(0);
        Ok(r.stats
            .into_iter()
            .map(|s| {
                let (id, labels) = s
                    .attributes
                    .map(|a| (a.id, from_map(a.labels)))
                    .unwrap_or_default();
                let cpu = s.cpu.unwrap_or_default();
                let mem = s.memory.unwrap_or_default();
                ContainerStats {
                    id,
                    labels,
                    timestamp: cpu.timestamp.max(mem.timestamp),
                    usage_core_nano_seconds: v(cpu.usage_core_nano_seconds),
                    usage_nano_cores: v(cpu.usage_nano_cores),
                    working_set_bytes: v(mem.working_set_bytes),
                    usage_bytes: v(mem.usage_bytes),
                    rss_bytes: v(mem.rss_bytes),
                    writable_layer_bytes: s
                        .writable_layer
                        .and_then(|w| w.used_bytes)
                        .map(|u| u.value),
                }
            })
            .collect())
    }

    async fn port_forward(&self, sandbox_id: &str, ports: &[i32]) -> Result<String, RuntimeError> {
        let mut c = self.runtime.clone();
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox_id.into(),
            port: ports.to_vec(),
        };
        Ok(call("PortForward", REQUEST_TIMEOUT, c.port_forward(req))
            .await?
            .url)
    }
}
