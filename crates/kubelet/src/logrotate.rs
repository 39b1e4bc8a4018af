//! Container log rotation (↔ the kubelet's
//! pkg/kubelet/logs/container_log_manager.go): every 10 s, each running
//! container of this node whose CRI log file has reached
//! `containerLogMaxSize` has it renamed to `<log>.<YYYYmmdd-HHMMSS>` (UTC)
//! and its runtime asked to reopen the log (CRI ReopenContainerLog), and
//! the oldest rotated files beyond `containerLogMaxFiles` (the live file
//! counted) are deleted.
//!
//! Unlike upstream, rotated files are not gzipped: no compressor is in the
//! dependency tree, so the rotated files keep their full size (at most
//! `max_size × max_files` per container in all).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::{ContainerState, LABEL_NODE, Labels, Runtime, RuntimeError};

/// The kubelet's default containerLogMaxSize (10Mi).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// The kubelet's default containerLogMaxFiles.
pub const DEFAULT_MAX_FILES: u32 = 5;
/// How often the logs are checked (the kubelet's logMonitorPeriod).
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// The suffix of a rotated file (Go's "20060102-150405"), in UTC.
const TIMESTAMP_FORMAT: &str = "%Y%m%d-%H%M%S";

/// How big a container's log may grow and how many files it may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Bytes at which the live file is rotated.
    pub max_size: u64,
    /// Files kept per container, the live one included (at least 2).
    pub max_files: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl Policy {
    /// Refuse what the kubelet's config validation refuses.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_files < 2 {
            return Err(Error::TooFewFiles(self.max_files));
        }
        if self.max_size == 0 {
            return Err(Error::ZeroSize);
        }
        Ok(())
    }

    /// Rotated files kept before a rotation adds one: the live file and
    /// the newly rotated one make up the rest.
    fn kept_before_rotation(&self) -> usize {
        usize::try_from(self.max_files.saturating_sub(2)).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("containerLogMaxFiles must be at least 2, not {0}")]
    TooFewFiles(u32),
    #[error("containerLogMaxSize must be positive")]
    ZeroSize,
    #[error("containerLogMaxSize {0:?} is not a quantity of bytes (such as 10Mi)")]
    BadSize(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reopening the log of container {id}: {source}")]
    Reopen {
        id: String,
        #[source]
        source: RuntimeError,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A containerLogMaxSize as given on the command line ("10Mi", "500Ki",
/// "1G", "1048576"): positive bytes.
pub fn parse_max_size(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    if t.is_empty() || t.starts_with('-') {
        return Err(Error::BadSize(s.to_string()));
    }
    match crate::env::parse_bytes(t) {
        Some(0) => Err(Error::ZeroSize),
        Some(n) => Ok(n),
        None => Err(Error::BadSize(s.to_string())),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The clock rotated files are named by.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// The container log manager of one node.
pub struct LogManager {
    runtime: Arc<dyn Runtime>,
    node: String,
    policy: Policy,
    clock: Clock,
}

impl LogManager {
    pub fn new(runtime: Arc<dyn Runtime>, node: impl Into<String>, policy: Policy) -> LogManager {
        LogManager {
            runtime,
            node: node.into(),
            policy,
            clock: Arc::new(jiff::Timestamp::now),
        }
    }

    /// The same with another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> LogManager {
        self.clock = clock;
        self
    }

    /// Check the logs now and then every [`MONITOR_INTERVAL`], until dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(MONITOR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.rotate_all().await {
                tracing::warn!(error = %e, "listing containers for log rotation failed");
            }
        }
    }

    /// One round: rotate every running container's log that needs it.
    /// The containers that were rotated, by id. A failure with one
    /// container is logged and does not stop the others.
    pub async fn rotate_all(&self) -> Result<Vec<String>, Error> {
        let mine: Labels = [(LABEL_NODE.to_string(), self.node.clone())].into();
        let containers = self.runtime.list_containers(&mine).await?;
        let mut rotated = Vec::new();
        for c in containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            match self.rotate_if_needed(&c.id).await {
                Ok(true) => rotated.push(c.id.clone()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(container = %c.id, name = %c.name, error = %e, "container log rotation failed")
                }
            }
        }
        Ok(rotated)
    }

    /// Rotate one container's log if it has reached the maximum size.
    async fn rotate_if_needed(&self, id: &str) -> Result<bool, Error> {
        let status = self.runtime.container_status(id).await?;
        // It may have stopped since it was listed.
        if status.state != ContainerState::Running || status.log_path.is_empty() {
            return Ok(false);
        }
        let log = PathBuf::from(&status.log_path);
        let size = match std::fs::metadata(&log) {
            Ok(m) => m.len(),
            // Renamed, not yet reopened (a failed earlier round).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(container = %id, path = %log.display(), "no live log file");
                return Ok(false);
            }
            Err(e) => return Err(io_err(&log)(e)),
        };
        if size < self.policy.max_size {
            return Ok(false);
        }
        self.rotate(id, &log).await
    }

    /// Drop the excess rotated files, rename the live one and have the
    /// runtime reopen it (renamed back if it cannot).
    async fn rotate(&self, id: &str, log: &Path) -> Result<bool, Error> {
        let old = rotated_files(log)?;
        let excess = old.len().saturating_sub(self.policy.kept_before_rotation());
        for path in old.iter().take(excess) {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::debug!(container = %id, path = %path.display(), "old rotated log removed")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        let suffix = (self.clock)().strftime(TIMESTAMP_FORMAT).to_string();
        let mut name = log.as_os_str().to_os_string();
        name.push(".");
        name.push(&suffix);
        let target = PathBuf::from(name);
        if target.exists() {
            // Rotated within the same second: try again next round rather
            // than overwrite it.
            tracing::debug!(container = %id, path = %target.display(), "rotated log exists already");
            return Ok(false);
        }
        std::fs::rename(log, &target).map_err(io_err(log))?;
        if let Err(source) = self.runtime.reopen_container_log(id).await {
            // Keep the container logging into a file that kubectl sees.
            if let Err(e) = std::fs::rename(&target, log) {
                tracing::warn!(container = %id, path = %target.display(), error = %e, "renaming a rotated log back failed");
            }
            return Err(Error::Reopen {
                id: id.to_string(),
                source,
            });
        }
        tracing::debug!(container = %id, path = %target.display(), "container log rotated");
        Ok(true)
    }
}

/// The rotated files of `log` (`<log>.<suffix>` beside it), oldest first.
fn rotated_files(log: &Path) -> Result<Vec<PathBuf>, Error> {
    let Some(dir) = log.parent() else {
        return Ok(Vec::new());
    };
    let Some(base) = log.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}.");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.strip_prefix(&prefix).is_some_and(|s| !s.is_empty()))
        .collect();
    // The suffixes are fixed-width timestamps: by name is by age.
    names.sort_unstable();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;
    use crate::runtime::{ContainerConfig, SandboxConfig};

    const NODE: &str = "n1";

    /// A fake runtime with one running container `app` (attempt 0) of a
    /// pod whose log directory is under `dir`; its id and live log file.
    async fn running(dir: &Path) -> (Arc<FakeRuntime>, String, PathBuf) {
        let rt = Arc::new(FakeRuntime::with_images(&["busybox"]));
        let labels: Labels = [(LABEL_NODE.to_string(), NODE.to_string())].into();
        let sandbox = SandboxConfig {
            name: "p".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            log_directory: dir.join("default_p_u1"),
            labels: labels.clone(),
            ..Default::default()
        };
        let sb = rt.run_sandbox(&sandbox).await.unwrap();
        let config = ContainerConfig {
            name: "app".into(),
            image: "busybox".into(),
            log_path: "app/0.log".into(),
            labels,
            ..Default::default()
        };
        let id = rt.create_container(&sb, &config, &sandbox).await.unwrap();
        rt.start_container(&id).await.unwrap();
        let log = sandbox.log_directory.join("app/0.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        (rt, id, log)
    }

    fn at(s: &str) -> Clock {
        let t: jiff::Timestamp = s.parse().unwrap();
        Arc::new(move || t)
    }

    fn manager(rt: &Arc<FakeRuntime>, policy: Policy, clock: Clock) -> LogManager {
        LogManager::new(rt.clone(), NODE, policy).with_clock(clock)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    const SMALL: Policy = Policy {
        max_size: 10,
        max_files: 5,
    };

    #[tokio::test]
    async fn rotates_a_log_at_max_size_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, id, log) = running(dir.path()).await;
        std::fs::write(&log, "0123456789").unwrap();
        let m = manager(&rt, SMALL, at("2024-03-04T05:06:07Z"));
        assert_eq!(m.rotate_all().await.unwrap(), vec![id.clone()]);
        let app = log.parent().unwrap();
        assert_eq!(names(app), vec!["0.log", "0.log.20240304-050607"]);
        assert_eq!(
            std::fs::read_to_string(app.join("0.log.20240304-050607")).unwrap(),
            "0123456789"
        );
        // Reopened by the runtime: a new, empty live file.
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
        assert_eq!(rt.count_calls(&format!("ReopenContainerLog {id}")), 1);
    }

    #[tokio::test]
    async fn leaves_a_log_below_max_size_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _, log) = running(dir.path()).await;
        std::fs::write(&log, "012345678").unwrap();
        let m = manager(&rt, SMALL, at("2024-03-04T05:06:07Z"));
        assert!(m.rotate_all().await.unwrap().is_empty());
        assert_eq!(names(log.parent().unwrap()), vec!["0.log"]);
        assert_eq!(rt.count_calls("ReopenContainerLog"), 0);
    }

    #[tokio::test]
    async fn leaves_stopped_containers_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _, log) = running(dir.path()).await;
        std::fs::write(&log, "0123456789 and more").unwrap();
        rt.exit("app", 0);
        let m = manager(&rt, SMALL, at("2024-03-04T05:06:07Z"));
        assert!(m.rotate_all().await.unwrap().is_empty());
        assert_eq!(names(log.parent().unwrap()), vec!["0.log"]);
    }

    #[tokio::test]
    async fn keeps_at_most_max_files_counting_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _, log) = running(dir.path()).await;
        let app = log.parent().unwrap().to_path_buf();
        for ts in [
            "20240101-000000",
            "20240102-000000",
            "20240103-000000",
            "20240104-000000",
        ] {
            std::fs::write(app.join(format!("0.log.{ts}")), "old").unwrap();
        }
        // Another attempt's files are not this log's.
        std::fs::write(app.join("1.log"), "x").unwrap();
        std::fs::write(app.join("10.log.20240101-000000"), "x").unwrap();
        std::fs::write(&log, "0123456789").unwrap();
        let policy = Policy {
            max_size: 10,
            max_files: 3,
        };
        let m = manager(&rt, policy, at("2024-03-04T05:06:07Z"));
        m.rotate_all().await.unwrap();
        assert_eq!(
            names(&app),
            vec![
                "0.log",
                "0.log.20240104-000000",
                "0.log.20240304-050607",
                "1.log",
                "10.log.20240101-000000",
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_reopen_renames_the_log_back() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _, log) = running(dir.path()).await;
        rt.lock().fail_reopen.insert("app".into());
        std::fs::write(&log, "0123456789").unwrap();
        let m = manager(&rt, SMALL, at("2024-03-04T05:06:07Z"));
        assert!(m.rotate_all().await.unwrap().is_empty());
        assert_eq!(names(log.parent().unwrap()), vec!["0.log"]);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "0123456789");
    }

    #[tokio::test]
    async fn never_overwrites_a_file_rotated_in_the_same_second() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _, log) = running(dir.path()).await;
        let app = log.parent().unwrap().to_path_buf();
        std::fs::write(app.join("0.log.20240304-050607"), "earlier").unwrap();
        std::fs::write(&log, "0123456789").unwrap();
        let m = manager(&rt, SMALL, at("2024-03-04T05:06:07Z"));
        assert!(m.rotate_all().await.unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(app.join("0.log.20240304-050607")).unwrap(),
            "earlier"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "0123456789");
    }

    #[test]
    fn validates_the_policy() {
        assert!(Policy::default().validate().is_ok());
        assert_eq!(Policy::default().max_size, 10 * 1024 * 1024);
        assert_eq!(Policy::default().max_files, 5);
        assert!(matches!(
            Policy {
                max_size: 1,
                max_files: 1
            }
            .validate(),
            Err(Error::TooFewFiles(1))
        ));
        assert!(matches!(
            Policy {
                max_size: 0,
                max_files: 2
            }
            .validate(),
            Err(Error::ZeroSize)
        ));
    }

    #[test]
    fn parses_max_sizes() {
        assert_eq!(parse_max_size("10Mi").unwrap(), DEFAULT_MAX_SIZE);
        assert_eq!(parse_max_size("500Ki").unwrap(), 500 * 1024);
        assert_eq!(parse_max_size("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_max_size("4096").unwrap(), 4096);
        assert!(matches!(parse_max_size("0"), Err(Error::ZeroSize)));
        assert!(matches!(parse_max_size("-1Mi"), Err(Error::BadSize(_))));
        assert!(matches!(parse_max_size("ten"), Err(Error::BadSize(_))));
        assert!(matches!(parse_max_size(""), Err(Error::BadSize(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn checks_every_ten_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _, log) = running(dir.path()).await;
        std::fs::write(&log, "0123456789").unwrap();
        // A clock that moves with tokio's paused time.
        let start = tokio::time::Instant::now();
        let base: jiff::Timestamp = "2024-03-04T05:06:00Z".parse().unwrap();
        let clock: Clock = Arc::new(move || {
            let elapsed = jiff::SignedDuration::try_from(start.elapsed()).unwrap();
            base.checked_add(elapsed).unwrap()
        });
        let task = tokio::spawn(manager(&rt, SMALL, clock).run());
        // The first round is at once.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(rt.count_calls("ReopenContainerLog"), 1);
        std::fs::write(&log, "0123456789").unwrap();
        tokio::time::sleep(Duration::from_millis(9_990)).await;
        assert_eq!(rt.count_calls("ReopenContainerLog"), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rt.count_calls("ReopenContainerLog"), 2);
        assert_eq!(
            names(log.parent().unwrap()),
            vec!["0.log", "0.log.20240304-050600", "0.log.20240304-050610"]
        );
        task.abort();
    }
}
