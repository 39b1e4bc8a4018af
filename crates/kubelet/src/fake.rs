//! An in-memory [`Runtime`] for the pod workers' unit tests: containers
//! "run" until told to exit, or exit at once with a configured code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::runtime::*;

/// What the fake reports of every running container's memory and writable layer.
pub const FAKE_WORKING_SET: u64 = 3 * 1024 * 1024;
pub const FAKE_WRITABLE_LAYER: u64 = 4096;

#[derive(Clone, Debug)]
pub struct FakeSandbox {
    pub config: SandboxConfig,
    pub state: SandboxState,
    pub created_at: i64,
    pub ip: String,
}

#[derive(Clone, Debug)]
pub struct FakeContainer {
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
}

#[derive(Default)]
pub struct State {
    next: u64,
    pub sandboxes: BTreeMap<String, FakeSandbox>,
    pub containers: BTreeMap<String, FakeContainer>,
    pub images: BTreeSet<String>,
    /// The user of an image (ImageStatus' uid and username); root if absent.
    pub image_users: HashMap<String, (Option<i64>, String)>,
    /// Container name → exit code it exits with as soon as it starts.
    pub exit_on_start: HashMap<String, i32>,
    /// Container names whose start fails.
    pub fail_start: BTreeSet<String>,
    /// Exec results by (container name, first word of the command); a
    /// missing entry answers exit code 0.
    pub exec_results: HashMap<(String, String), ExecResult>,
    /// (container id, command) of every ExecSync.
    pub execs: Vec<(String, Vec<String>)>,
    /// (image, credentials) of every PullImage.
    pub pull_auths: Vec<(String, Option<RegistryAuth>)>,
    /// Container names whose ReopenContainerLog fails.
    pub fail_reopen: BTreeSet<String>,
    /// (container id, timeout) of every StopContainer.
    pub stops: Vec<(String, i64)>,
    pub calls: Vec<String>,
}

#[derive(Default)]
pub struct FakeRuntime {
    pub state: Mutex<State>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl FakeRuntime {
    pub fn with_images(images: &[&str]) -> FakeRuntime {
        let f = FakeRuntime::default();
        f.lock().images = images.iter().map(|s| s.to_string()).collect();
        f
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running instance of container `name` exits with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let mut s = self.lock();
        for c in s
            .containers
            .values_mut()
            .filter(|c| c.config.name == name && c.state == ContainerState::Running)
        {
            c.state = ContainerState::Exited;
            c.exit_code = code;
            c.finished_at = now_ns();
        }
    }

    pub fn count_calls(&self, prefix: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    fn call(&self, s: &mut State, what: String) {
        let _ = self;
        s.calls.push(what);
    }
}

impl State {
    /// A container's log file: its sandbox's log directory joined with
    /// its log path (none without a log directory).
    fn log_path(&self, c: &FakeContainer) -> Option<std::path::PathBuf> {
        let sandbox = self.sandboxes.get(&c.sandbox_id)?;
        if sandbox.config.log_directory.as_os_str().is_empty() || c.config.log_path.is_empty() {
            return None;
        }
        Some(sandbox.config.log_directory.join(&c.config.log_path))
    }
}

fn matches(labels: &Labels, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        Ok(RuntimeVersion {
            name: "fake".into(),
            version: "1.0".into(),
        })
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String, RuntimeError> {
        let mut s = self.lock();
        s.next += 1;
        let id = format!("sb{}", s.next);
        let ip = format!("10.42.0.{}", s.sandboxes.len() + 2);
        self.call(
            &mut s,
            format!("RunPodSandbox {} {}", config.name, config.attempt),
        );
        s.sandboxes.insert(
            id.clone(),
            FakeSandbox {
                config: config.clone(),
                state: SandboxState::Ready,
                created_at: now_ns(),
                ip,
            },
        );
        Ok(id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("StopPodSandbox {id}"));
        let ids: Vec<String> = s
            .containers
            .iter()
            .filter(|(_, c)| c.sandbox_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for cid in ids {
            if let Some(c) = s.containers.get_mut(&cid)
                && c.state == ContainerState::Running
            {
                c.state = ContainerState::Exited;
                c.exit_code = 137;
                c.finished_at = now_ns();
            }
        }
        match s.sandboxes.get_mut(id) {
            Some(sb) => {
                sb.state = SandboxState::NotReady;
                Ok(())
            }
            None => Err(RuntimeError::NotFound(id.into())),
        }
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("RemovePodSandbox {id}"));
        s.containers.retain(|_, c| c.sandbox_id != id);
        s.sandboxes
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn sandbox_status(&self, id: &str) -> Result<SandboxStatus, RuntimeError> {
        let s = self.lock();
        let sb = s
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        Ok(SandboxStatus {
            id: id.into(),
            state: sb.state,
            ip: (!sb.config.host_network).then(|| sb.ip.clone()),
            additional_ips: vec![],
        })
    }

    async fn list_sandboxes(&self, labels: &Labels) -> Result<Vec<Sandbox>, RuntimeError> {
        let s = self.lock();
        Ok(s.sandboxes
            .iter()
            .filter(|(_, sb)| matches(&sb.config.labels, labels))
            .map(|(id, sb)| Sandbox {
                id: id.clone(),
                name: sb.config.name.clone(),
                namespace: sb.config.namespace.clone(),
                uid: sb.config.uid.clone(),
                attempt: sb.config.attempt,
                state: sb.state,
                created_at: sb.created_at,
                labels: sb.config.labels.clone(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        _: &SandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut s = self.lock();
        if !s.sandboxes.contains_key(sandbox_id) {
            return Err(RuntimeError::NotFound(sandbox_id.into()));
        }
        if !s.images.contains(&config.image) {
            return Err(RuntimeError::Call {
                call: "CreateContainer",
                message: format!("image {} not found", config.image),
            });
        }
        s.next += 1;
        let id = format!("c{}", s.next);
        self.call(
            &mut s,
            format!("CreateContainer {} {}", config.name, config.attempt),
        );
        s.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox_id: sandbox_id.into(),
                config: config.clone(),
                state: ContainerState::Created,
                created_at: now_ns(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("StartContainer {id}"));
        let name = s
            .containers
            .get(id)
            .map(|c| c.config.name.clone())
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        let exit = s.exit_on_start.get(&name).copied();
        let fail = s.fail_start.contains(&name);
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if fail {
            c.state = ContainerState::Exited;
            c.exit_code = 128;
            c.finished_at = now_ns();
            return Err(RuntimeError::Call {
                call: "StartContainer",
                message: "exec: \"nope\": executable file not found in $PATH".into(),
            });
        }
        c.started_at = now_ns();
        match exit {
            Some(code) => {
                c.state = ContainerState::Exited;
                c.exit_code = code;
                c.finished_at = now_ns();
            }
            None => c.state = ContainerState::Running,
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("StopContainer {id} {timeout_seconds}"));
        s.stops.push((id.into(), timeout_seconds));
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if c.state != ContainerState::Exited {
            c.state = ContainerState::Exited;
            c.exit_code = 137;
            c.finished_at = now_ns();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("RemoveContainer {id}"));
        s.containers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let s = self.lock();
        let c = s
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        Ok(ContainerStatus {
            id: id.into(),
            name: c.config.name.clone(),
            attempt: c.config.attempt,
            state: c.state,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            reason: match (c.state, c.exit_code) {
                (ContainerState::Exited, 0) => "Completed".into(),
                (ContainerState::Exited, _) => "Error".into(),
                _ => String::new(),
            },
            message: String::new(),
            image: format!("docker.io/library/{}", c.config.image),
            image_ref: format!("sha256:{}", c.config.image.len()),
            labels: c.config.labels.clone(),
            log_path: s
                .log_path(c)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })
    }

    /// As containerd: the log file is created anew at the container's
    /// log path (the old one having been renamed).
    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("ReopenContainerLog {id}"));
        let c = s
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if c.state != ContainerState::Running || s.fail_reopen.contains(&c.config.name) {
            return Err(RuntimeError::Call {
                call: "ReopenContainerLog",
                message: format!("container {id} is not running"),
            });
        }
        if let Some(path) = s.log_path(c) {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| RuntimeError::Call {
                    call: "ReopenContainerLog",
                    message: format!("{}: {e}", path.display()),
                })?;
        }
        Ok(())
    }

    async fn list_containers(&self, labels: &Labels) -> Result<Vec<Container>, RuntimeError> {
        let s = self.lock();
        Ok(s.containers
            .iter()
            .filter(|(_, c)| matches(&c.config.labels, labels))
            .map(|(id, c)| Container {
                id: id.clone(),
                sandbox_id: c.sandbox_id.clone(),
                name: c.config.name.clone(),
                attempt: c.config.attempt,
                state: c.state,
                created_at: c.created_at,
                image: c.config.image.clone(),
                image_ref: format!("sha256:{}", c.config.image.len()),
                labels: c.config.labels.clone(),
            })
            .collect())
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        let s = self.lock();
        let (uid, username) = s.image_users.get(image).cloned().unwrap_or_default();
        Ok(s.images.contains(image).then(|| Image {
            id: format!("sha256:{}", image.len()),
            repo_tags: vec![image.into()],
            repo_digests: vec![],
            size: 1,
            uid,
            username,
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        self.lock()
            .pull_auths
            .push((image.to_string(), auth.cloned()));
        let mut s = self.lock();
        self.call(&mut s, format!("PullImage {image}"));
        Err(RuntimeError::Call {
            call: "PullImage",
            message: format!("failed to resolve reference \"{image}\": no registry"),
        })
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        let s = self.lock();
        Ok(s.images
            .iter()
            .map(|i| Image {
                id: format!("sha256:{}", i.len()),
                repo_tags: vec![i.clone()],
                repo_digests: vec![],
                size: 1,
                ..Default::default()
            })
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.lock().images.remove(image);
        Ok(())
    }

    async fn import_image(&self, path: &Path) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        self.call(&mut s, format!("Import {}", path.display()));
        Ok(())
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        command: &[String],
        _timeout: std::time::Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let mut s = self.lock();
        self.call(
            &mut s,
            format!("ExecSync {container_id} {}", command.join(" ")),
        );
        s.execs.push((container_id.into(), command.to_vec()));
        let c = s
            .containers
            .get(container_id)
            .ok_or_else(|| RuntimeError::NotFound(container_id.into()))?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::Call {
                call: "ExecSync",
                message: format!("container {container_id} is not running"),
            });
        }
        let key = (
            c.config.name.clone(),
            command.first().cloned().unwrap_or_default(),
        );
        Ok(s.exec_results.get(&key).cloned().unwrap_or_default())
    }

    async fn exec(&self, request: &StreamRequest) -> Result<String, RuntimeError> {
        Ok(format!(
            "http://fake-streaming/exec/{}",
            request.container_id
        ))
    }

    async fn attach(&self, request: &StreamRequest) -> Result<String, RuntimeError> {
        Ok(format!(
            "http://fake-streaming/attach/{}",
            request.container_id
        ))
    }

    async fn container_stats(&self, labels: &Labels) -> Result<Vec<ContainerStats>, RuntimeError> {
        let s = self.lock();
        Ok(s.containers
            .iter()
            .filter(|(_, c)| {
                c.state == ContainerState::Running && matches(&c.config.labels, labels)
            })
            .map(|(id, c)| ContainerStats {
                id: id.clone(),
                labels: c.config.labels.clone(),
                timestamp: now_ns(),
                working_set_bytes: FAKE_WORKING_SET,
                writable_layer_bytes: Some(FAKE_WRITABLE_LAYER),
                ..Default::default()
            })
            .collect())
    }

    async fn port_forward(&self, sandbox_id: &str, _ports: &[i32]) -> Result<String, RuntimeError> {
        Ok(format!("http://fake-streaming/portforward/{sandbox_id}"))
    }
}
