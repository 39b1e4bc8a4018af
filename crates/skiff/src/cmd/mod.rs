pub mod bench;
pub mod kubectl;
pub mod server;

use std::path::PathBuf;

/// /var/lib/skiff for root, ~/.skiff otherwise (as k3s's rootless mode).
pub fn default_data_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if root {
        PathBuf::from("/var/lib/skiff")
    } else {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".skiff")
    }
}

/// Logs to stderr, filtered by RUST_LOG (default: info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
