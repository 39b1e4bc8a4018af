//! Pod volumes (↔ the kubelet's volume manager and the emptyDir,
//! hostPath, configMap, secret, downwardAPI and projected plugins, with
//! pkg/volume/util's AtomicWriter): set up under
//! `<pods root>/<pod uid>/volumes/<plugin>/<name>` before a container
//! starts, bind-mounted into containers (subPath, readOnly,
//! mountPropagation), refreshed while the pod runs, and removed with the
//! pod.
//!
//! API-backed contents are written as Kubernetes does: the files live in a
//! timestamped `..<time>` directory, `..data` links to it and every
//! top-level name links into `..data/`, so that an update is one rename of
//! the `..data` link and readers never see a half-written set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use tokio::time::Instant;

use crate::env::{Lookup, Token, TokenRequest, expand};
use crate::mount::Mounter;
use crate::runtime::{Mount, MountPropagation};
use crate::sync::Settings;

pub const PLUGIN_EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const PLUGIN_CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const PLUGIN_SECRET: &str = "kubernetes.io~secret";
pub const PLUGIN_DOWNWARD_API: &str = "kubernetes.io~downward-api";
pub const PLUGIN_PROJECTED: &str = "kubernetes.io~projected";

/// The default file mode of configMap, secret, downwardAPI and projected files (0644).
pub const DEFAULT_MODE: i32 = 0o644;
/// The name of the link to the current contents.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";
/// The default lifetime of a projected token (the API's default).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// Why a volume could not be set up; shown as the kubelet shows it (a FailedMount event).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

/// One file of an API-backed volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// The directory of pod `uid` under the pods root.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// Where volume `name` of `plugin` lives.
pub fn volume_dir(root: &Path, uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(root, uid).join("volumes").join(plugin).join(name)
}

/// The plugin directory of an API-backed or emptyDir volume; None for hostPath and unsupported kinds.
fn plugin_of(v: &Volume) -> Option<&'static str> {
    if v.empty_dir.is_some() {
        Some(PLUGIN_EMPTY_DIR)
    } else if v.config_map.is_some() {
        Some(PLUGIN_CONFIG_MAP)
    } else if v.secret.is_some() {
        Some(PLUGIN_SECRET)
    } else if v.downward_api.is_some() {
        Some(PLUGIN_DOWNWARD_API)
    } else if v.projected.is_some() {
        Some(PLUGIN_PROJECTED)
    } else {
        None
    }
}

/// configMap, secret, downwardAPI and projected volumes: written from the
/// API, refreshed, and mounted read-only.
fn is_api_backed(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

fn mode_of(m: Option<i32>, default: Option<i32>) -> u32 {
    (m.or(default).unwrap_or(DEFAULT_MODE) as u32) & 0o7777
}

/// The files of a configMap or secret (↔ configmap.MakePayload / secret.MakePayload).
pub fn make_payload(
    items: Option<&[KeyToPath]>,
    data: &BTreeMap<String, Vec<u8>>,
    default_mode: Option<i32>,
    optional: bool,
    what: &str,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(match what {
                        "secret" => format!("references non-existent secret key: {}", item.key),
                        _ => format!("configmap references non-existent config key: {}", item.key),
                    });
                };
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Go's %q for the strings of a label or annotation value.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `key="value"` lines in key order (↔ fieldpath.FormatMap).
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A downward API fieldRef as a volume file (↔ fieldpath.ExtractFieldPathAsString).
pub fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    match path {
        "metadata.labels" => Ok(format_map(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(pod.metadata.annotations.as_ref())),
        p => crate::env::field_ref(pod, p, "", "")
            .ok_or_else(|| format!("unsupported fieldPath: {p}")),
    }
}

/// A resourceFieldRef in units of its divisor, rounded up (↔
/// resource.ExtractContainerResourceValue); unset limits are the node's.
pub fn resource_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&str>,
    memory_capacity: u64,
) -> Result<String, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .ok_or_else(|| format!("container {container} not found"))?;
    let r = c.resources.clone().unwrap_or_default();
    let (map, key) = match resource.split_once('.') {
        Some(("limits", k)) => (r.limits.unwrap_or_default(), k),
        Some(("requests", k)) => (r.requests.unwrap_or_default(), k),
        _ => return Err(format!("unsupported container resource: {resource}")),
    };
    let limits = resource.starts_with("limits.");
    let divisor = divisor.filter(|d| !d.is_empty() && *d != "0");
    match key {
        "cpu" => {
            let millis = match map
                .get("cpu")
                .and_then(|q| crate::sync::parse_millicores(&q.0))
            {
                Some(m) => m,
                None if limits => {
                    std::thread::available_parallelism()
                        .map(|n| n.get() as i64)
                        .unwrap_or(1)
                        * 1000
                }
                None => 0,
            };
            let div = divisor
                .and_then(crate::sync::parse_millicores)
                .filter(|d| *d > 0)
                .unwrap_or(1000);
            Ok(((millis + div - 1) / div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = match map.get(key).and_then(|q| crate::env::parse_bytes(&q.0)) {
                Some(b) => b,
                None if limits && key == "memory" => memory_capacity,
                None => 0,
            };
            let div = divisor
                .and_then(crate::env::parse_bytes)
                .filter(|d| *d > 0)
                .unwrap_or(1);
            Ok(bytes.div_ceil(div).to_string())
        }
        _ => Err(format!("unsupported container resource: {resource}")),
    }
}

/// The files of a downwardAPI volume or projection (↔ downwardapi.CollectData).
pub fn downward_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    memory_capacity: u64,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path)
        } else if let Some(r) = &item.resource_field_ref {
            resource_value(
                pod,
                r.container_name.as_deref().unwrap_or_default(),
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                memory_capacity,
            )
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.into_bytes(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join(", "))
    }
}

/// Check a payload path as the AtomicWriter does: relative, no `..`
/// element, not starting with `..`.
pub fn validate_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("invalid path: must not be empty".into());
    }
    if p.len() > 4096 {
        return Err(format!(
            "invalid path: must be less than or equal to 4096 characters: {p}"
        ));
    }
    if Path::new(p).is_absolute() {
        return Err(format!("invalid path: must be relative path: {p}"));
    }
    if p.starts_with("..") {
        return Err(format!("invalid path: must not start with '..': {p}"));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(format!("invalid path: must not contain '..': {p}"));
    }
    if p.split('/').any(|s| s.len() > 255) {
        return Err(format!(
            "invalid path: each path segment must be less than or equal to 255 characters: {p}"
        ));
    }
    Ok(())
}

fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    parts.join("/")
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The files under `dir` (following no links), relative path → file.
fn read_tree(dir: &Path) -> Option<Payload> {
    fn walk(base: &Path, dir: &Path, out: &mut Payload) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            let path = e.path();
            if ft.is_dir() {
                walk(base, &path, out)?;
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(base)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                out.insert(
                    rel,
                    FileProjection {
                        data: std::fs::read(&path)?,
                        mode,
                    },
                );
            }
        }
        Ok(())
    }
    let mut out = Payload::new();
    walk(dir, dir, &mut out).ok()?;
    Some(out)
}

/// Write `payload` into `dir` atomically (↔ AtomicWriter.Write); true
/// when something changed.
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<bool, String> {
    for k in payload.keys() {
        validate_path(k)?;
    }
    let payload: Payload = payload.iter().map(|(k, v)| (clean(k), v.clone())).collect();
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let data_link = dir.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link).ok();
    let current = old_ts.as_ref().and_then(|t| read_tree(&dir.join(t)));
    let changed = current.as_ref() != Some(&payload);
    if changed {
        // The new timestamped directory.
        let stamp = jiff::Timestamp::now()
            .strftime("..%Y_%m_%d_%H_%M_%S")
            .to_string();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut n = nanos;
        let ts_name = loop {
            let name = format!("{stamp}.{n:09}");
            match std::fs::create_dir(dir.join(&name)) {
                Ok(()) => break name,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n = n.wrapping_add(1),
                Err(e) => return Err(io("creating", &dir.join(&name), e)),
            }
        };
        let ts_dir = dir.join(&ts_name);
        let _ = std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755));
        for (rel, f) in &payload {
            let path = ts_dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
            }
            std::fs::write(&path, &f.data).map_err(|e| io("writing", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
                .map_err(|e| io("setting the mode of", &path, e))?;
        }
        let tmp = dir.join(DATA_DIR_TMP);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&ts_name, &tmp).map_err(|e| io("linking", &tmp, e))?;
        std::fs::rename(&tmp, &data_link).map_err(|e| io("renaming", &tmp, e))?;
    }
    // The user-visible names: one link per top-level element into ..data.
    let wanted: BTreeSet<String> = payload
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)
                .map_err(|e| io("linking", &link, e))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || wanted.contains(&name) {
                continue;
            }
            // Only the links this writer made go.
            if e.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if changed && let Some(old) = old_ts {
        let old = dir.join(old);
        if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    Ok(changed)
}

/// A hostPath's type check, creating what the OrCreate types create (↔ hostpath's checkType).
pub fn check_host_path(path: &str, kind: &str) -> Result<(), String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {path} is not a {what}"
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("directory"),
            Err(_) => {
                std::fs::create_dir_all(p).map_err(|e| io("creating", p, e))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                Ok(())
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("file"),
            Err(_) => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p)
                    .map_err(|e| io("creating", p, e))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644));
                Ok(())
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => Err(format!("hostPath type {other} is not supported")),
    }
}

/// Make `dir` a memory-backed directory (a tmpfs) unless it is one
/// already; with `mode`, its root gets that mode instead of tmpfs' 1777.
fn ensure_tmpfs(
    mounter: &dyn Mounter,
    dir: &Path,
    size: Option<u64>,
    mode: Option<u32>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    if !mounter.is_mount_point(dir) {
        mounter.mount_tmpfs(dir, size).map_err(|e| e.to_string())?;
    }
    if let Some(mode) = mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("setting the mode of", dir, e))?;
    }
    Ok(())
}

/// The mode of the kubelet's pods directory and of each pod's directory
/// (the kubelet's 0750): no other user of the node reaches a pod's
/// volumes, secrets and tokens among them.
pub const POD_DIR_MODE: u32 = 0o750;

/// Create the pods directory and pod `uid`'s directory with
/// [`POD_DIR_MODE`], and make existing ones so (whatever the umask, and
/// directories an older skiff left 0755).
pub fn ensure_pod_dir(root: &Path, uid: &str) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = pod_dir(root, uid);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(POD_DIR_MODE)
        .create(&dir)
        .map_err(|e| io("creating", &dir, e))?;
    for d in [root, dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(POD_DIR_MODE))
            .map_err(|e| io("setting the mode of", d, e))?;
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct CachedToken {
    token: Token,
    fetched: Instant,
}

impl CachedToken {
    /// A token is renewed after 80% of its lifetime or 24 h, as the kubelet's token manager does.
    fn fresh(&self, now: Instant) -> bool {
        let ttl = Duration::from_secs(self.token.expiration_seconds.max(0) as u64);
        let age = now.saturating_duration_since(self.fetched);
        age < ttl.mul_f64(0.8) && age < Duration::from_secs(24 * 3600)
    }
}

/// The pod's securityContext.fsGroup, as a gid.
fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// Give everything under `dir` to group `gid` with group access (↔
/// pkg/volume's SetVolumeOwnership): group read (and write unless
/// `readonly`) on files, plus setgid and search on directories;
/// symlinks get the group only. Links are not followed.
pub fn set_ownership(dir: &Path, gid: u32, readonly: bool) -> Result<(), String> {
    fn walk(path: &Path, gid: u32, readonly: bool) -> Result<(), String> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io("reading", path, e))?;
        std::os::unix::fs::lchown(path, None, Some(gid))
            .map_err(|e| io("changing the group of", path, e))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mut mask = if readonly { 0o440 } else { 0o660 };
        if meta.is_dir() {
            mask |= 0o2000 | 0o110;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode | mask != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask))
                .map_err(|e| io("setting the mode of", path, e))?;
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(path).map_err(|e| io("reading", path, e))? {
                let e = e.map_err(|e| io("reading", path, e))?;
                walk(&e.path(), gid, readonly)?;
            }
        }
        Ok(())
    }
    walk(dir, gid, readonly)
}

/// One pod's volumes, as its worker keeps them.
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Volume name → the host path containers mount.
    ready: BTreeMap<String, PathBuf>,
    tokens: HashMap<String, CachedToken>,
    refreshed: Option<Instant>,
}

fn service_account(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.and_then(|s| s.service_account.clone())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

impl PodVolumes {
    /// Volume name → host path of the volumes set up so far.
    pub fn ready(&self) -> &BTreeMap<String, PathBuf> {
        &self.ready
    }

    /// Set up every volume of `pod` not set up yet (↔ WaitForAttachAndMount);
    /// the failures, one per volume.
    pub async fn setup(
        &mut self,
        pod: &Pod,
        settings: &Settings,
        lookup: &dyn Lookup,
    ) -> Result<(), Vec<VolumeError>> {
        let mut errors = Vec::new();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !uid.is_empty()
            && let Err(e) = ensure_pod_dir(&settings.log_root, uid)
        {
            tracing::warn!(error = %e, "making the pod's directory private failed");
        }
        for v in &volumes {
            if self.ready.contains_key(&v.name) {
                continue;
            }
            match self.setup_one(pod, v, settings, lookup).await {
                Ok(path) => {
                    self.ready.insert(v.name.clone(), path);
                }
                Err(message) => errors.push(VolumeError {
                    volume: v.name.clone(),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    async fn setup_one(
        &mut self,
        pod: &Pod,
        v: &Volume,
        settings: &Settings,
        lookup: &dyn Lookup,
    ) -> Result<PathBuf, String> {
        if let Some(hp) = &v.host_path {
            check_host_path(&hp.path, hp.type_.as_deref().unwrap_or_default())?;
            return Ok(PathBuf::from(&hp.path));
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let Some(plugin) = plugin_of(v) else {
            return Err("the volume type is not supported by this node".into());
        };
        let dir = volume_dir(&settings.log_root, uid, plugin, &v.name);
        let mounter = settings.mounter.as_ref();
        if let Some(ed) = &v.empty_dir {
            if ed.medium.as_deref() == Some("Memory") {
                let size = ed
                    .size_limit
                    .as_ref()
                    .and_then(|q| crate::env::parse_bytes(&q.0))
                    .filter(|s| *s > 0);
                ensure_tmpfs(mounter, &dir, size, None)?;
            } else {
                std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| io("setting the mode of", &dir, e))?;
            }
            if let Some(gid) = fs_group(pod) {
                set_ownership(&dir, gid, false)?;
            }
            return Ok(dir);
        }
        // Secrets and projections (which carry tokens) live in memory, as in
        // Kubernetes, on a tmpfs whose root is not world-writable (no one
        // can plant a file there before the payload is written).
        if v.secret.is_some() || v.projected.is_some() {
            ensure_tmpfs(mounter, &dir, None, Some(0o755))?;
        }
        let payload = self.payload(pod, v, settings, lookup).await?;
        write_atomic(&dir, &payload)?;
        if let Some(gid) = fs_group(pod) {
            set_ownership(&dir, gid, true)?;
        }
        Ok(dir)
    }

    /// The files of an API-backed volume now.
    async fn payload(
        &mut self,
        pod: &Pod,
        v: &Volume,
        settings: &Settings,
        lookup: &dyn Lookup,
    ) -> Result<Payload, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(cm) = &v.config_map {
            let optional = cm.optional.unwrap_or(false);
            let data = match lookup.config_map_files(ns, &cm.name).await? {
                Some(d) => d,
                None if optional => BTreeMap::new(),
                None => return Err(format!("configmap \"{}\" not found", cm.name)),
            };
            return make_payload(
                cm.items.as_deref(),
                &data,
                cm.default_mode,
                optional,
                "configmap",
            );
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional.unwrap_or(false);
            let data = match lookup.secret_files(ns, &name).await? {
                Some(d) => d,
                None if optional => BTreeMap::new(),
                None => return Err(format!("secret \"{name}\" not found")),
            };
            return make_payload(
                s.items.as_deref(),
                &data,
                s.default_mode,
                optional,
                "secret",
            );
        }
        if let Some(d) = &v.downward_api {
            return downward_payload(
                pod,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode,
                settings.memory_capacity,
            );
        }
        let Some(p) = &v.projected else {
            return Ok(Payload::new());
        };
        let default_mode = Some(p.default_mode.unwrap_or(DEFAULT_MODE));
        let mut out = Payload::new();
        let mut errors: Vec<String> = Vec::new();
        for (i, source) in p.sources.iter().flatten().enumerate() {
            let part = if let Some(cm) = &source.config_map {
                let optional = cm.optional.unwrap_or(false);
                match lookup.config_map_files(ns, &cm.name).await {
                    Ok(Some(d)) => {
                        make_payload(cm.items.as_deref(), &d, default_mode, optional, "configmap")
                    }
                    Ok(None) if optional => Ok(Payload::new()),
                    Ok(None) => Err(format!("configmap \"{}\" not found", cm.name)),
                    Err(e) => Err(e),
                }
            } else if let Some(s) = &source.secret {
                let optional = s.optional.unwrap_or(false);
                match lookup.secret_files(ns, &s.name).await {
                    Ok(Some(d)) => {
                        make_payload(s.items.as_deref(), &d, default_mode, optional, "secret")
                    }
                    Ok(None) if optional => Ok(Payload::new()),
                    Ok(None) => Err(format!("secret \"{}\" not found", s.name)),
                    Err(e) => Err(e),
                }
            } else if let Some(d) = &source.downward_api {
                downward_payload(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    default_mode,
                    settings.memory_capacity,
                )
            } else if let Some(t) = &source.service_account_token {
                let key = format!("{}/{i}", v.name);
                let now = Instant::now();
                let token = match self.tokens.get(&key).filter(|c| c.fresh(now)) {
                    Some(c) => Ok(c.token.clone()),
                    None => {
                        let request = TokenRequest {
                            service_account: service_account(pod),
                            audiences: t
                                .audience
                                .clone()
                                .filter(|a| !a.is_empty())
                                .into_iter()
                                .collect(),
                            expiration_seconds: t
                                .expiration_seconds
                                .unwrap_or(DEFAULT_TOKEN_SECONDS),
                            pod_name: pod.metadata.name.clone().unwrap_or_default(),
                            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                        };
                        let r = lookup.service_account_token(ns, &request).await;
                        if let Ok(token) = &r {
                            self.tokens.insert(
                                key,
                                CachedToken {
                                    token: token.clone(),
                                    fetched: now,
                                },
                            );
                        }
                        r
                    }
                };
                token.map(|t2| {
                    [(
                        t.path.clone(),
                        FileProjection {
                            data: t2.token.into_bytes(),
                            mode: mode_of(None, default_mode),
                        },
                    )]
                    .into()
                })
            } else {
                Err("the projected volume source is not supported by this node".into())
            };
            match part {
                Ok(files) => out.extend(files),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors.join(", "))
        }
    }

    /// Rewrite the API-backed volumes whose contents changed (configMap and
    /// secret updates, new labels, tokens near expiry), at most every `every`.
    pub async fn refresh(
        &mut self,
        pod: &Pod,
        settings: &Settings,
        lookup: &dyn Lookup,
        every: Duration,
    ) {
        let now = Instant::now();
        if self
            .refreshed
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        self.refreshed = Some(now);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in volumes.iter().filter(|v| is_api_backed(v)) {
            let Some(plugin) = plugin_of(v) else { continue };
            let dir = volume_dir(&settings.log_root, uid, plugin, &v.name);
            // Only volumes set up before (by this worker or, before an agent restart, another).
            if std::fs::symlink_metadata(dir.join(DATA_DIR)).is_err() {
                continue;
            }
            match self.payload(pod, v, settings, lookup).await {
                Ok(payload) => match write_atomic(&dir, &payload) {
                    Ok(true) => {
                        if let Some(gid) = fs_group(pod)
                            && let Err(e) = set_ownership(&dir, gid, true)
                        {
                            tracing::warn!(volume = %v.name, error = %e, "giving a volume to the pod's fsGroup failed");
                        }
                        tracing::info!(volume = %v.name, pod_uid = %uid, "volume contents updated")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(volume = %v.name, error = %e, "updating a volume failed")
                    }
                },
                Err(e) => {
                    tracing::debug!(volume = %v.name, error = %e, "refreshing a volume failed; keeping its contents")
                }
            }
            self.ready.entry(v.name.clone()).or_insert(dir);
        }
    }

    /// The bind mounts of container `c` (↔ makeMounts); `vars` expand subPathExpr.
    pub fn mounts(
        &self,
        pod: &Pod,
        c: &Container,
        vars: &HashMap<String, String>,
        settings: &Settings,
    ) -> Result<Vec<Mount>, String> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for (index, vm) in c.volume_mounts.iter().flatten().enumerate() {
            let volume = volumes.iter().find(|v| v.name == vm.name);
            let Some(root) = self.ready.get(&vm.name) else {
                return Err(format!(
                    "cannot find volume {:?} to mount into container {:?}",
                    vm.name, c.name
                ));
            };
            let sub = match (&vm.sub_path, &vm.sub_path_expr) {
                (Some(s), _) if !s.is_empty() => s.clone(),
                (_, Some(e)) if !e.is_empty() => expand(e, vars),
                _ => String::new(),
            };
            let mut host = root.clone();
            if !sub.is_empty() {
                // ↔ makeMounts: the kubelet's messages; the details (which
                // could tell about the host's files) only go to the log.
                if Path::new(&sub).is_absolute() {
                    return Err(format!(
                        "error SubPath `{sub}` must not be an absolute path"
                    ));
                }
                if Path::new(&sub)
                    .components()
                    .any(|c| c == Component::ParentDir)
                {
                    return Err(format!(
                        "unable to provision SubPath `{sub}`: must not contain '..'"
                    ));
                }
                let path = root.join(&sub);
                if std::fs::symlink_metadata(&path).is_err() {
                    let mode = std::fs::metadata(root)
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o755);
                    if let Err(e) = crate::subpath::safe_make_dir(root, Path::new(&sub), mode) {
                        tracing::warn!(error = %e, container = %c.name, volume = %vm.name, "creating the subPath directory failed");
                        return Err(format!(
                            "failed to create subPath directory for volumeMount {:?} of container {:?}",
                            vm.name, c.name
                        ));
                    }
                }
                let prepare_failed = |e: String| {
                    tracing::warn!(error = %e, container = %c.name, volume = %vm.name, "preparing the subPath failed");
                    format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        vm.name, c.name
                    )
                };
                let target = pod_dir(&settings.log_root, uid)
                    .join("volume-subpaths")
                    .join(&vm.name)
                    .join(&c.name)
                    .join(index.to_string());
                host = crate::subpath::prepare(
                    settings.mounter.as_ref(),
                    root,
                    Path::new(&sub),
                    &target,
                )
                .map_err(prepare_failed)?;
            }
            let api = volume.is_some_and(is_api_backed);
            out.push(Mount {
                container_path: vm.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: vm.read_only.unwrap_or(false) || api,
                propagation: match vm.mount_propagation.as_deref() {
                    Some("HostToContainer") => MountPropagation::HostToContainer,
                    Some("Bidirectional") => MountPropagation::Bidirectional,
                    _ => MountPropagation::Private,
                },
            });
        }
        Ok(out)
    }
}

/// Unmount and remove the volumes of pod `uid` (after its containers are gone).
pub fn teardown(root: &Path, uid: &str, mounter: &dyn Mounter) -> Result<(), String> {
    if uid.is_empty() {
        return Ok(());
    }
    let dir = pod_dir(root, uid);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    let mut mounts = mounter.mounts_under(&dir);
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        mounter.unmount(m).map_err(|e| e.to_string())?;
    }
    if let Some(left) = mounter.mounts_under(&dir).first() {
        return Err(format!("{} is still mounted", left.display()));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| io("removing", &dir, e))
}

/// Tear down the volumes of pods under `root` that nobody claims (pods
/// deleted while the agent was down); the uids removed.
pub fn remove_orphaned(
    root: &Path,
    claimed: &std::collections::HashSet<String>,
    mounter: &dyn Mounter,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let uid = e.file_name().to_string_lossy().into_owned();
        // Pod directories hold `volumes/`, `etc-hosts` or `containers/`
        // (termination logs); the log directories beside them do not.
        let pod_dir = ["volumes", "etc-hosts", "containers"]
            .iter()
            .any(|f| e.path().join(f).exists());
        if claimed.contains(&uid) || !pod_dir {
            continue;
        }
        match teardown(root, &uid, mounter) {
            Ok(()) => removed.push(uid),
            Err(e) => {
                tracing::warn!(pod_uid = %uid, error = %e, "removing the volumes of a pod that no longer exists failed")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_group_ownership_gives_the_group_access() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        let payload: Payload = [
            ("data-1".to_string(), file("x", 0o400)),
            ("sub/data-2".to_string(), file("y", 0o600)),
        ]
        .into();
        write_atomic(&vol, &payload).unwrap();
        // A group the test may give files to: its own.
        let gid = std::fs::metadata(&vol).unwrap().gid();
        set_ownership(&vol, gid, true).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // Read-only volumes: group read; directories get setgid and search.
        assert_eq!(mode(&vol.join("data-1")), 0o440);
        assert_eq!(mode(&vol.join("sub/data-2")), 0o640);
        assert_eq!(mode(&vol.join("..data/sub")) & 0o2050, 0o2050);
        assert_eq!(std::fs::metadata(vol.join("data-1")).unwrap().gid(), gid);
        // Writable volumes (emptyDir): group read and write.
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        std::fs::write(scratch.join("f"), "z").unwrap();
        std::fs::set_permissions(scratch.join("f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        set_ownership(&scratch, gid, false).unwrap();
        assert_eq!(mode(&scratch.join("f")), 0o660);
        assert_eq!(mode(&scratch) & 0o2070, 0o2070);
    }

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn atomic_writes_swap_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("v");
        let mut p: Payload = [
            ("a".to_string(), file("1", 0o644)),
            ("sub/b".to_string(), file("2", 0o600)),
        ]
        .into();
        assert!(write_atomic(&d, &p).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(d.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(d.join(DATA_DIR)).unwrap();
        assert!(first.to_string_lossy().starts_with(".."));
        assert_eq!(
            std::fs::metadata(d.join("sub/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // Unchanged: nothing is written.
        assert!(!write_atomic(&d, &p).unwrap());
        assert_eq!(std::fs::read_link(d.join(DATA_DIR)).unwrap(), first);
        // Changed: a new directory, the old one gone, a removed key's link gone.
        p.remove("sub/b");
        p.insert("a".into(), file("one", 0o644));
        assert!(write_atomic(&d, &p).unwrap());
        let second = std::fs::read_link(d.join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!d.join(&first).exists());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "one");
        assert!(std::fs::symlink_metadata(d.join("sub")).is_err());
        // A mode change alone is a change.
        p.insert("a".into(), file("one", 0o400));
        assert!(write_atomic(&d, &p).unwrap());
    }

    #[test]
    fn payload_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs", "..x", "a/../../b"] {
            let p: Payload = [(bad.to_string(), file("1", 0o644))].into();
            assert!(write_atomic(dir.path(), &p).is_err(), "{bad}");
        }
    }

    #[test]
    fn configmap_payloads() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("k1".to_string(), b"v1".to_vec()),
            ("k2".to_string(), b"v2".to_vec()),
        ]
        .into();
        let all = make_payload(None, &data, Some(0o400), false, "configmap").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["k1"].mode, 0o400);
        let items: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "k1", "path": "dir/one", "mode": 0o600}, {"key": "k2", "path": "two"}])).unwrap();
        let some = make_payload(Some(&items), &data, None, false, "configmap").unwrap();
        assert_eq!(
            some["dir/one"],
            FileProjection {
                data: b"v1".to_vec(),
                mode: 0o600
            }
        );
        assert_eq!(some["two"].mode, 0o644);
        let missing: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "nope", "path": "x"}])).unwrap();
        assert_eq!(
            make_payload(Some(&missing), &data, None, false, "configmap").unwrap_err(),
            "configmap references non-existent config key: nope"
        );
        assert_eq!(
            make_payload(Some(&missing), &data, None, false, "secret").unwrap_err(),
            "references non-existent secret key: nope"
        );
        assert!(
            make_payload(Some(&missing), &data, None, true, "configmap")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("made");
        check_host_path(d.to_str().unwrap(), "DirectoryOrCreate").unwrap();
        assert!(d.is_dir());
        check_host_path(d.to_str().unwrap(), "Directory").unwrap();
        let f = dir.path().join("f");
        check_host_path(f.to_str().unwrap(), "FileOrCreate").unwrap();
        assert!(f.is_file());
        check_host_path(f.to_str().unwrap(), "File").unwrap();
        assert_eq!(
            check_host_path(f.to_str().unwrap(), "Directory").unwrap_err(),
            format!(
                "hostPath type check failed: {} is not a directory",
                f.display()
            )
        );
        assert!(check_host_path(d.to_str().unwrap(), "File").is_err());
        assert!(check_host_path(d.to_str().unwrap(), "FileOrCreate").is_err());
        assert!(
            check_host_path(f.to_str().unwrap(), "Socket")
                .unwrap_err()
                .contains("is not a socket file")
        );
        assert!(check_host_path("/nonexistent/x", "Directory").is_err());
        check_host_path("/nonexistent/x", "").unwrap();
        assert!(check_host_path("/dev/null", "CharDevice").is_ok());
        assert!(check_host_path("/dev/null", "BlockDevice").is_err());
    }

    #[test]
    fn downward_values() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"b": "2", "a": "x\"y"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}, "requests": {"cpu": "100m"}}}]}
        }))
        .unwrap();
        assert_eq!(
            field_value(&pod, "metadata.labels").unwrap(),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert_eq!(field_value(&pod, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_value(&pod, "metadata.labels['b']").unwrap(), "2");
        assert_eq!(
            resource_value(&pod, "c", "limits.memory", Some("1Mi"), 0).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(&pod, "c", "limits.cpu", None, 0).unwrap(),
            "1"
        );
        assert_eq!(
            resource_value(&pod, "c", "limits.cpu", Some("1m"), 0).unwrap(),
            "250"
        );
        assert_eq!(
            resource_value(&pod, "c", "requests.cpu", Some("1m"), 0).unwrap(),
            "100"
        );
        assert_eq!(
            resource_value(&pod, "c", "requests.memory", None, 0).unwrap(),
            "0"
        );
        assert_eq!(
            resource_value(&pod, "c", "limits.memory", None, 0).unwrap(),
            "67108864"
        );
        assert!(resource_value(&pod, "nope", "limits.memory", None, 0).is_err());
    }

    #[test]
    fn orphaned_volumes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mounter = crate::mount::FakeMounter::default();
        let gone = volume_dir(dir.path(), "gone", PLUGIN_EMPTY_DIR, "m");
        let kept = volume_dir(dir.path(), "kept", PLUGIN_EMPTY_DIR, "m");
        std::fs::create_dir_all(&gone).unwrap();
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::create_dir_all(dir.path().join("default_web_gone")).unwrap();
        mounter.mount_tmpfs(&gone, None).unwrap();
        let claimed = ["kept".to_string()].into();
        assert_eq!(
            remove_orphaned(dir.path(), &claimed, &mounter),
            vec!["gone".to_string()]
        );
        assert!(!mounter.is_mounted(&gone));
        assert!(!dir.path().join("gone").exists());
        assert!(kept.exists());
        assert!(
            dir.path().join("default_web_gone").exists(),
            "log directories stay"
        );
    }
}
