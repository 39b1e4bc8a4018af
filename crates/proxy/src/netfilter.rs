//! The kernel side, behind traits: nftables transactions ([`Netfilter`],
//! [`RealNft`] runs `nft -f -`) and host preparation ([`Host`], [`RealHost`]
//! loads br_netfilter and sets the sysctls the bridge data path needs).

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;

/// Applies nftables scripts; a script is one atomic transaction.
#[async_trait::async_trait]
pub trait Netfilter: Send + Sync {
    async fn apply(&self, script: &str) -> Result<(), Error>;
}

#[async_trait::async_trait]
impl<T: Netfilter + ?Sized> Netfilter for std::sync::Arc<T> {
    async fn apply(&self, script: &str) -> Result<(), Error> {
        (**self).apply(script).await
    }
}

/// `nft -f -`, optionally inside a named network namespace (`ip netns exec`).
#[derive(Debug, Clone)]
pub struct RealNft {
    pub nft: String,
    pub netns: Option<String>,
}

/// Where Debian installs nft.
pub const NFT_PATH: &str = "/usr/sbin/nft";

impl RealNft {
    /// nft from PATH (or /usr/sbin/nft) in the current network namespace.
    pub fn new() -> Self {
        RealNft {
            nft: find_nft().unwrap_or_else(|| "nft".into()),
            netns: None,
        }
    }
    /// nft inside the network namespace `netns` (as made by `ip netns add`).
    pub fn in_netns(netns: &str) -> Self {
        RealNft {
            netns: Some(netns.into()),
            ..RealNft::new()
        }
    }
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &self.nft]);
                c
            }
            None => Command::new(&self.nft),
        }
    }
    /// Runs `nft <args>` and returns its standard output (for listing).
    pub async fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(|e| Error::Spawn {
                cmd: self.nft.clone(),
                source: e,
            })?;
        if !out.status.success() {
            return Err(Error::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Default for RealNft {
    fn default() -> Self {
        RealNft::new()
    }
}

/// nft's path if it is installed.
pub fn find_nft() -> Option<String> {
    find_program("nft")
}

/// A program's path: in /usr/sbin (where Debian installs nft and the
/// iptables tools) or on PATH; None if it is not installed.
pub fn find_program(name: &str) -> Option<String> {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        return Some(sbin.to_string_lossy().into_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
}

#[async_trait::async_trait]
impl Netfilter for RealNft {
    async fn apply(&self, script: &str) -> Result<(), Error> {
        let mut cmd = self.command();
        cmd.args(["-f", "-"]);
        let out = run_with_input(cmd, &self.nft, script).await?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // nft repeats the failing line under the message; keep the message short.
            let msg: Vec<&str> = stderr.lines().take(6).collect();
            Err(Error::Nft(msg.join("\n")))
        }
    }
}

/// Runs `cmd` with `input` on its standard input and returns its output
/// (`name` names it in errors); a non-zero exit is the caller's to judge.
pub(crate) async fn run_with_input(
    mut cmd: Command,
    name: &str,
    input: &str,
) -> Result<std::process::Output, Error> {
    let spawn_error = |source| Error::Spawn {
        cmd: name.to_string(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(spawn_error)?;
        drop(stdin);
    }
    child.wait_with_output().await.map_err(spawn_error)
}

/// Host preparation the proxy needs.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Make bridged traffic pass the IP-layer netfilter hooks: load
    /// `br_netfilter` and set `net.bridge.bridge-nf-call-iptables` (and the
    /// ip6 one) to 1. Without it a pod reaching a ClusterIP whose endpoint is
    /// on the same CNI bridge gets the reply straight over the bridge, which
    /// conntrack never sees, so the reply is not un-DNATed and is dropped.
    async fn enable_bridge_netfilter(&self) -> Result<(), Error>;
}

/// The real host: `modprobe br_netfilter` and /proc/sys writes.
#[derive(Debug, Clone, Default)]
pub struct RealHost;

const BRIDGE_SYSCTLS: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

#[async_trait::async_trait]
impl Host for RealHost {
    async fn enable_bridge_netfilter(&self) -> Result<(), Error> {
        if !Path::new(BRIDGE_SYSCTLS[0]).exists() {
            let out = Command::new("modprobe")
                .arg("br_netfilter")
                .output()
                .await
                .map_err(|e| Error::Spawn {
                    cmd: "modprobe".into(),
                    source: e,
                })?;
            if !out.status.success() {
                return Err(Error::Host(format!(
                    "modprobe br_netfilter: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        for path in BRIDGE_SYSCTLS {
            match tokio::fs::read_to_string(path).await {
                Ok(v) if v.trim() == "1" => {}
                Ok(_) => tokio::fs::write(path, "1\n")
                    .await
                    .map_err(|e| Error::Host(format!("writing {path}: {e}")))?,
                Err(e) => return Err(Error::Host(format!("reading {path}: {e}"))),
            }
        }
        Ok(())
    }
}

/// A host that does nothing (tests, or when the operator prepares the host).
#[derive(Debug, Clone, Default)]
pub struct NoHost;

#[async_trait::async_trait]
impl Host for NoHost {
    async fn enable_bridge_netfilter(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A [`Netfilter`] that records the scripts it is given (with the tokio
/// clock's time, so paused-time tests see batching) and fails while
/// `fail` is set: the test double of rule-programming unit tests.
#[derive(Default, Clone)]
pub struct Recorder {
    pub scripts: std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, String)>>>,
    pub fail: std::sync::Arc<std::sync::Mutex<bool>>,
}

impl Recorder {
    /// The scripts applied since the last call.
    pub fn take(&self) -> Vec<String> {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .map(|(_, s)| s)
            .collect()
    }
}

#[async_trait::async_trait]
impl Netfilter for Recorder {
    async fn apply(&self, script: &str) -> Result<(), Error> {
        if *self.fail.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(Error::Nft("injected".into()));
        }
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tokio::time::Instant::now(), script.to_string()));
        Ok(())
    }
}
