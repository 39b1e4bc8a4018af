pub mod agent;
pub mod backup;
pub mod bench;
mod bench_crd;
mod bench_overload;
mod bench_pods;
mod bench_proxy;
pub mod controller_manager;
pub mod images;
mod join;
pub mod kubeconfig;
pub mod kubectl;
pub mod node;
pub mod scheduler;
pub mod secrets_encrypt;
pub mod server;
pub mod sim;

use std::path::PathBuf;

/// The token given with `--token`, or read from `--token-file` (k3s's
/// flag: a token on the command line is visible to every local user in
/// /proc/PID/cmdline), trimmed; None when neither is given.
pub fn resolve_token(
    token: Option<String>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    let token = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --token-file {}", path.display()))?,
        ),
        None => token,
    };
    Ok(token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// /var/lib/skiff for root, ~/.skiff otherwise (as k3s's rootless mode).
pub fn default_data_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        PathBuf::from("/var/lib/skiff")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".skiff")
    }
}

/// Creates `dir` (and its parents) readable by its owner only, and makes an
/// existing one so: the server's data directory and its database directory
/// hold every Secret and key (CIS 1.1.11, k3s keeps its server dir 0700).
pub fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Logs to stderr, filtered by RUST_LOG (default: info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A component identity for leader election: host name and a random suffix.
pub fn identity(component: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "skiff".into());
    format!(
        "{host}_{component}_{:08x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0))
    )
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Leader election timing of the scheduler and the controller manager
/// (kube-scheduler's `--leader-elect-*` flags). skiff's defaults are shorter
/// than Kubernetes' 15 s / 10 s / 2 s so that a standby server takes over
/// within 15 s of the leader's crash: the worst case is the lease duration
/// plus one retry period.
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderElectArgs {
    /// How long a standby waits after the last renewal it saw before taking the Lease.
    #[arg(long, default_value = "12s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: std::time::Duration,
}

impl LeaderElectArgs {
    /// The election settings, checked as client-go checks them.
    pub fn config(&self) -> anyhow::Result<skiff_runtime::leader::LeaderConfig> {
        let (lease, renew, retry) = (
            self.leader_elect_lease_duration,
            self.leader_elect_renew_deadline,
            self.leader_elect_retry_period,
        );
        if lease <= renew {
            anyhow::bail!(
                "--leader-elect-lease-duration ({lease:?}) must be greater than --leader-elect-renew-deadline ({renew:?})"
            );
        }
        if renew <= retry.mul_f64(1.2) {
            anyhow::bail!(
                "--leader-elect-renew-deadline ({renew:?}) must be greater than 1.2 × --leader-elect-retry-period ({retry:?})"
            );
        }
        Ok(skiff_runtime::leader::LeaderConfig {
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        })
    }
}

/// A duration as Kubernetes flags write them: `500ms`, `15s`, `2m`, `1h`,
/// or combinations such as `1m30s` (Go's); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"));
    }
    skiff_api::duration::parse_go_std(s)
        .ok_or_else(|| format!("{s}: not a duration (such as 500ms, 15s, 1m30s, 1h)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_come_from_the_flag_or_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "K10abc::server:s3cret\n").expect("write");
        assert_eq!(
            super::resolve_token(None, Some(&file)).expect("read"),
            Some("K10abc::server:s3cret".to_string())
        );
        assert_eq!(
            super::resolve_token(Some(" t ".into()), None).expect("flag"),
            Some("t".into())
        );
        assert_eq!(
            super::resolve_token(Some("  ".into()), None).expect("blank"),
            None
        );
        assert!(super::resolve_token(None, Some(&dir.path().join("missing"))).is_err());
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_kubernetes_flags_write_them() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn election_timing_is_checked_as_client_go_does() {
        let args = |l, r, p| LeaderElectArgs {
            leader_elect_lease_duration: Duration::from_secs(l),
            leader_elect_renew_deadline: Duration::from_secs(r),
            leader_elect_retry_period: Duration::from_secs(p),
        };
        assert!(args(12, 8, 2).config().is_ok());
        assert!(args(15, 10, 2).config().is_ok());
        assert!(args(10, 10, 2).config().is_err());
        assert!(args(15, 10, 9).config().is_err());
    }
}
