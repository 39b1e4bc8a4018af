//! End-to-end test support: a real `skiff server` process on a free
//! loopback port with its own data directory, driven by the real kubectl.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
    /// Held while this server owns its network slot (see [`claim_network_slot`]).
    slot: Option<std::net::TcpListener>,
}

/// The first port of the network slots' locks: below Linux's ephemeral
/// range (32768–60999), so no `free_port()` ever lands on one.
const SLOT_LOCK_BASE: u16 = 29100;

/// Claims one of 60 network slots (the octet of a cluster CIDR
/// 10.100-218.0.0/16, its bridge and nftables tables), exclusively across
/// every test process on the host: the claim is a listener on
/// 127.0.0.1:SLOT_LOCK_BASE+slot, held by the [`Server`] and released by
/// the kernel when the process goes, so a crashed test leaves no stale
/// claim. Two servers sharing a slot would share a bridge, and the first
/// one dropped would delete the other's bridge and proxy table.
fn claim_network_slot() -> (usize, std::net::TcpListener) {
    let start = (std::process::id() as usize * 7 + free_port() as usize) % 60;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        for i in 0..60 {
            let slot = (start + i) % 60;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", SLOT_LOCK_BASE + slot as u16))
            {
                return (100 + 2 * slot, l);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no free network slot for a test server in 300 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The kubectl binary of a given minor version ("" for the one on PATH).
pub fn kubectl_bin(version: &str) -> PathBuf {
    let path = which("kubectl").expect("kubectl on PATH");
    if version.is_empty() {
        return path;
    }
    let real = std::fs::canonicalize(&path).expect("resolve kubectl");
    real.parent()
        .expect("dir")
        .join(format!("kubectl.{version}"))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// The disk thresholds of test nodes, off, as kind's clusters have them:
/// the tests share one disk with builds, whose free space says nothing of
/// what a test does. Memory and PID pressure keep the kubelet's defaults.
pub const EVICTION_HARD: &str = "nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%";

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Start with extra `skiff server` flags (no node agent).
    pub fn start_with(extra: &[&str]) -> Server {
        let mut args = vec!["--disable-agent".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Server::start_args(args)
    }

    /// Start with the in-process node agent (containerd): needs root.
    /// Each such server gets its own cluster CIDR (10.100-219.0.0/16), so
    /// that agents of tests running side by side on one host never hand
    /// out the same pod IP on the shared bridge.
    /// The same for the service CIDR (10.<octet+1>.0.0/16, the cluster DNS
    /// at its 10th address), and each has its own nftables table (removed
    /// on drop) and a DNS server on a free port of the node's address.
    pub fn start_with_agent() -> Server {
        Server::start_with_agent_and(&[])
    }

    pub fn start_with_agent_and(extra: &[&str]) -> Server {
        let (octet, slot) = claim_network_slot();
        let mut args = vec![
            "--cluster-cidr".to_string(),
            format!("10.{octet}.0.0/16"),
            "--service-cidr".into(),
            format!("10.{}.0.0/16", octet + 1),
            "--dns-port".into(),
            "0".into(),
            "--ingress-http-port".into(),
            free_port().to_string(),
            "--ingress-https-port".into(),
            free_port().to_string(),
            "--proxy-table".into(),
            format!("skiff-test-{octet}"),
            "--cni-bridge".into(),
            format!("skiff-t{octet}"),
            // Servers of tests running side by side each have their own kubelet API.
            "--kubelet-port".into(),
            "0".into(),
        ];
        if !extra.contains(&"--netpol-table") {
            args.extend(["--netpol-table".to_string(), format!("skiff-np-{octet}")]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        Server::start_args_holding(args, Some(slot))
    }

    /// The node's network as the kernel has it (the bridge and the service
    /// proxy's table), for failure messages; empty without an agent.
    pub fn network_state(&self) -> String {
        let mut out = String::new();
        let mut run = |title: &str, args: &[&str]| {
            if let Ok(o) = Command::new(args[0]).args(&args[1..]).output() {
                let text = String::from_utf8_lossy(&o.stdout);
                let lines: Vec<&str> = text.lines().take(80).collect();
                out.push_str(&format!(
                    "\n{title}:\n{}{}",
                    lines.join("\n"),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        };
        if let Some(bridge) = self.flag("--cni-bridge") {
            run("bridge", &["ip", "-br", "addr", "show", "dev", &bridge]);
        }
        if let Some(table) = self.flag("--proxy-table") {
            run(
                "service proxy table",
                &["nft", "list", "table", "ip", &table],
            );
        }
        out
    }

    /// The value of one of this server's extra flags.
    pub fn flag(&self, name: &str) -> Option<String> {
        self.extra.iter().skip_while(|a| *a != name).nth(1).cloned()
    }

    /// The ClusterIP of kube-dns for a server started with an agent.
    pub fn cluster_dns(&self) -> String {
        let cidr = self
            .extra
            .iter()
            .skip_while(|a| *a != "--service-cidr")
            .nth(1)
            .cloned()
            .unwrap_or_else(|| "10.43.0.0/16".into());
        cidr.replace(".0.0/16", ".0.10")
    }

    fn start_args(extra: Vec<String>) -> Server {
        Server::start_args_holding(extra, None)
    }

    fn start_args_holding(extra: Vec<String>, slot: Option<std::net::TcpListener>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Server {
            dir,
            port: free_port(),
            extra,
            child: None,
            slot,
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        // Loopback unless the test binds elsewhere itself.
        let bind: &[&str] = if self.extra.iter().any(|a| a == "--bind-address") {
            &[]
        } else {
            &["--bind-address", "127.0.0.1"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("server")
            .args(bind)
            .args(["--https-listen-port", &self.port.to_string(), "--data-dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .args(if self.extra.iter().any(|a| a == "--eviction-hard") {
                &[][..]
            } else {
                &["--eviction-hard", EVICTION_HARD][..]
            })
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.dir.path().join("kubeconfig.yaml").exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("skiff server did not become ready; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL the server (no clean shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// A kubeconfig for this server whose only credential is `token` (the
    /// admin kubeconfig's client certificate would otherwise authenticate
    /// first, as it does with kube-apiserver).
    pub fn token_kubeconfig(&self, token: &str) -> PathBuf {
        let admin = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        let mut lines: Vec<String> = admin
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !l.starts_with("client-certificate-data:")
                    && !l.starts_with("client-key-data:")
                    && !l.starts_with("token:")
            })
            .map(str::to_string)
            .collect();
        lines.push(format!("    token: {token}"));
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.path().join(format!("token-{n}.kubeconfig"));
        std::fs::write(&path, lines.join("\n") + "\n").expect("write kubeconfig");
        path
    }

    pub fn kubectl_version(&self, version: &str, args: &[&str]) -> Output {
        self.kubectl_full(version, args, None, &[])
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_full("", args, None, &[])
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_full("", args, Some(stdin), &[])
    }

    pub fn kubectl_full(
        &self,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        let mut cmd = Command::new(kubectl_bin(version));
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn kubectl");
        if let Some(input) = stdin {
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Run kubectl and insist that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl and insist that it fails; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl json output")
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Path of a scenario manifest from the seeds.
pub fn scenario(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/scenarios")
        .join(name);
    p.to_string_lossy().into_owned()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first so the agent stops its containerd, then SIGKILL.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever this server started (containerd, shims) names its data directory.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.dir.path())
            .status();
        remove_containers_under(self.dir.path());
        // The service proxy's rules stay after it exits, as kube-proxy's do.
        if let Some(table) = self
            .extra
            .iter()
            .skip_while(|a| *a != "--proxy-table")
            .nth(1)
        {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", table])
                .stderr(Stdio::null())
                .status();
        }
        // The NetworkPolicy table, should the server have been killed before removing it.
        if let Some(table) = self
            .extra
            .iter()
            .skip_while(|a| *a != "--netpol-table")
            .nth(1)
        {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", table])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(bridge) = self
            .extra
            .iter()
            .skip_while(|a| *a != "--cni-bridge")
            .nth(1)
        {
            let _ = Command::new("ip")
                .args(["link", "delete", bridge])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &format!("skiff-pods-{bridge}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub struct Sim(Option<std::process::Child>);

impl Sim {
    /// A handle that owns no process.
    pub fn none() -> Sim {
        Sim(None)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn sim(s: &Server, nodes: usize) -> Sim {
    sim_named(s, nodes, "sim-node-")
}

/// Hollow nodes named `<prefix>0..N` in their own process.
pub fn sim_named(s: &Server, nodes: usize, prefix: &str) -> Sim {
    sim_sized(s, nodes, prefix, "2")
}

/// Hollow nodes with `cpu` cores each.
pub fn sim_sized(s: &Server, nodes: usize, prefix: &str, cpu: &str) -> Sim {
    let log =
        std::fs::File::create(s.data_dir().join(format!("sim-{prefix}log"))).expect("sim log");
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "sim",
            "--nodes",
            &nodes.to_string(),
            "--prefix",
            prefix,
            "--cpu",
            cpu,
            "--memory",
            "4Gi",
            "--kubeconfig",
        ])
        .arg(s.kubeconfig())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn skiff sim");
    Sim(Some(child))
}

/// Poll `check` until it returns true (60 s at most).
pub fn eventually(what: &str, s: &Server, check: impl FnMut() -> bool) {
    eventually_within(Duration::from_secs(60), what, s, check)
}

/// Poll `check` until it returns true, for at most `limit`.
pub fn eventually_within(limit: Duration, what: &str, s: &Server, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "timed out waiting for {what}\nserver log tail:\n{}{}",
        s.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
        s.network_state()
    );
}

/// Start a server (no node agent) in a data directory prepared beforehand
/// (e.g. restored from a backup, or holding another server's CA).
pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
    let mut args = vec!["--disable-agent".to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut s = Server {
        dir,
        port: free_port(),
        extra: args,
        child: None,
        slot: None,
    };
    s.spawn();
    s
}

/// Run `skiff backup ARGS...`.
pub fn skiff_backup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("backup")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run skiff backup")
}

/// Why tests with real containers cannot run here, if they cannot: they
/// need root and Debian's containerd, runc, containernetworking-plugins,
/// busybox-static and nftables.
pub fn agent_prerequisite_missing() -> Option<String> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        return Some("not running as root".into());
    }
    for (path, pkg) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/sbin/nft", "nftables"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {pkg})"));
        }
    }
    None
}

/// A server with its node agent and the node Ready, or None (with the
/// reason printed) where this host cannot run real containers, so that the
/// end-to-end test `what` skips.
pub fn node_ready(what: &str) -> Option<Server> {
    if let Some(why) = agent_prerequisite_missing() {
        eprintln!("skipping {what}: {why}");
        return None;
    }
    let s = Server::start_with_agent();
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    Some(s)
}

/// Build `busybox:skiff` from busybox-static and import it into the
/// server's node (there is no registry here).
pub fn import_busybox(s: &Server) {
    let image = s.data_dir().join("busybox-skiff.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&image)
        .output()
        .expect("build image");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["images", "import"])
        .arg(&image)
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .expect("skiff images import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start a server (no node agent) listening on `address` instead of the
/// loopback, with `address` in its certificate: for agents in other
/// network namespaces that reach it through a bridge.
pub fn start_bound(address: &str, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "--disable-agent".to_string(),
        "--tls-san".into(),
        address.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut s = Server {
        dir,
        port: free_port(),
        extra: args,
        child: None,
        slot: None,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.path().join("server.log"))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--bind-address",
            address,
            "--https-listen-port",
            &s.port.to_string(),
            "--data-dir",
        ])
        .arg(s.dir.path())
        .args(&s.extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn skiff server");
    s.child = Some(child);
    s.wait_ready();
    s
}

/// GET http://addr/ from the host (HTTP/1.0, 3 s timeouts): the body,
/// trimmed, of a 200 answer; None otherwise.
pub fn host_http_get(addr: &str) -> Option<String> {
    use std::io::Read;
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"))
        .then(|| body.trim().to_string())
}

/// The Service `web` of the tests' two `app=web` pods, as the host reaches it.
pub struct Web {
    pub pods: std::collections::BTreeSet<String>,
    pub cluster_ip: String,
    pub node_port: String,
    pub node_ip: String,
}

/// Wait for the two `app=web` pods to run and be the endpoints of Service
/// `web`; its addresses.
pub fn wait_for_web(s: &Server) -> Web {
    eventually_within(Duration::from_secs(120), "2 web pods Running", s, || {
        s.ok(&["get", "pods", "-l", "app=web", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running"))
            .count()
            == 2
    });
    let pods = s
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
    eventually("the Service's endpoints", s, || {
        s.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .split_whitespace()
        .count()
            == 2
    });
    Web {
        pods,
        cluster_ip: s.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]),
        node_port: s.ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ]),
        node_ip: s.ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ]),
    }
}

/// After an agent's containerd and shims under `dir` were killed: kill and
/// delete the containers they ran (their processes would live on,
/// reparented to init, since a shim's death does not stop them), through
/// runc's state in the agent's data directory, then lazily unmount what is
/// left mounted under `dir` (rootfs overlays, volumes) so that it can be
/// removed.
pub fn remove_containers_under(dir: &Path) {
    fn runc_roots(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if dir.ends_with("containerd/state/runc") {
            // One runc root per containerd namespace (k8s.io).
            out.extend(
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
            return;
        }
        if depth == 0 {
            return;
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                runc_roots(&e.path(), depth - 1, out);
            }
        }
    }
    /// The named network namespace (`/var/run/netns/cni-...`, made by
    /// containerd for a pod sandbox) a container runs in, from runc's state.
    fn netns_of(state: &Path) -> Option<String> {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("state.json")).ok()?).ok()?;
        state
            .pointer("/config/namespaces")?
            .as_array()?
            .iter()
            .filter(|ns| {
                matches!(
                    ns.get("type").and_then(|t| t.as_str()),
                    Some("NEWNET" | "network")
                )
            })
            .find_map(|ns| ns.get("path")?.as_str()?.strip_prefix("/var/run/netns/"))
            .map(str::to_string)
    }
    let mut roots = Vec::new();
    runc_roots(dir, 5, &mut roots);
    let mut netns = Vec::new();
    for root in roots {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            netns.extend(netns_of(&e.path()));
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    // The sandboxes' network namespaces: containerd removes them with the
    // sandbox, which a killed agent never does.
    netns.sort();
    netns.dedup();
    for ns in netns {
        let _ = Command::new("ip")
            .args(["netns", "delete", &ns])
            .stderr(Stdio::null())
            .status();
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount")
            .args(["-l", m])
            .stderr(Stdio::null())
            .status();
    }
}
