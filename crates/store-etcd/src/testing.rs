//! Local etcd clusters for tests: members of Debian's `etcd-server` package
//! on loopback ports, each in its own temporary data directory, killed (by
//! PID) when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// Why a local etcd cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if Path::new(ETCD_BIN).exists() {
        None
    } else {
        Some(format!(
            "{ETCD_BIN} is missing (apt-get install etcd-server)"
        ))
    }
}

/// A free loopback TCP port (free when this returns).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One etcd process.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Member {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (SIGKILL, by its PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same data directory and ports.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.child = Some(spawn(&self.data_dir, &self.args)?);
        Ok(())
    }

    /// The member's log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("etcd.log")).unwrap_or_default()
    }

    /// Whether the member answers `GET /health` with a healthy cluster.
    pub fn healthy(&self) -> bool {
        let Some(addr) = self.client_url.strip_prefix("http://") else {
            return false;
        };
        let Ok(mut conn) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        if conn
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data_dir: &Path, args: &[String]) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("etcd.log"))?;
    Command::new(ETCD_BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// An etcd cluster of one or more members on loopback.
pub struct Cluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` members and waits (up to 60 s) until all are healthy.
    pub fn start(size: usize) -> std::io::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("skiff-etcd-").tempdir()?;
        let mut ports = Vec::new();
        // Hold the listeners until all ports are picked, so they differ.
        let mut held = Vec::new();
        for _ in 0..size * 2 {
            let l = TcpListener::bind("127.0.0.1:0")?;
            ports.push(l.local_addr()?.port());
            held.push(l);
        }
        drop(held);
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial: Vec<String> = (0..size).map(|i| format!("m{i}={}", peer(i))).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for i in 0..size {
            let name = format!("m{i}");
            let data_dir = dir.path().join(&name);
            std::fs::create_dir_all(&data_dir)?;
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data_dir.join("data").to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer(i),
                "--initial-advertise-peer-urls",
                &peer(i),
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "skiff-test",
                "--experimental-watch-progress-notify-interval",
                "5s",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let child = spawn(&data_dir, &args)?;
            members.push(Member {
                name,
                client_url,
                peer_url: peer(i),
                data_dir,
                child: Some(child),
                args,
            });
        }
        let cluster = Cluster { members, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.members.iter().all(Member::healthy) {
            if Instant::now() > deadline {
                let logs: Vec<String> = cluster.members.iter().map(Member::log).collect();
                return Err(std::io::Error::other(format!(
                    "etcd cluster not healthy within 60 s; logs:\n{}",
                    logs.join("\n----\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URLs joined with commas (the `--datastore-endpoint` form).
    pub fn endpoint_list(&self) -> String {
        self.endpoints().join(",")
    }
}
