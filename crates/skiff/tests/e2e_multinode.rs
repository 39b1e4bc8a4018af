//! The pod network across nodes end to end: two nodes as network
//! namespaces on this machine (each a veth into one host bridge), each
//! running `skiff agent` with its own containerd and CNI bridge, joined to
//! a `skiff server` listening on the host side of the bridge. A pod on
//! node-b reaches an httpd pod on node-a by pod IP and through a ClusterIP
//! Service, over the host-gateway routes the agents keep, and the server
//! pod sees the client pod's own address (no masquerade between pods).
//!
//! The second test puts each node namespace behind a router namespace on
//! its own /30 (no shared layer 2: host-gw routes cannot work) and runs
//! the agents with `--flannel-backend vxlan`; the same traffic then goes
//! over the VXLAN overlay.
//! Needs root; skips otherwise.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Server, agent_prerequisite_missing, eventually_within};

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command in a network namespace; its output.
fn in_netns(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    must("ip", &all)
}

/// The tests build network namespaces and run four agents: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How the node namespaces reach each other.
#[derive(Clone, Copy, PartialEq)]
enum Topology {
    /// Veths into one host bridge, 172.31.<net>.0/24 (one layer-2 segment).
    Bridged,
    /// Veths into a router namespace, each node on its own /30 in
    /// 172.30.<net>.0/24; the host reaches them through the router.
    Routed,
}

/// The host bridge (or router), the nodes' network namespaces and their
/// agents; everything is removed on drop.
struct Nodes {
    net: u8,
    topology: Topology,
    /// Host links and namespaces besides the nodes' (the bridge; the router).
    links: Vec<String>,
    other_netns: Vec<String>,
    /// Host routes, as `ip route del` arguments.
    host_routes: Vec<Vec<String>>,
    names: Vec<(String, String)>,
    dirs: Vec<tempfile::TempDir>,
    agents: Vec<Child>,
    agent_args: Vec<String>,
}

impl Nodes {
    fn netns(&self, i: usize) -> &str {
        &self.names[i].0
    }

    fn ip(&self, i: usize) -> String {
        match self.topology {
            Topology::Bridged => format!("172.31.{}.{}", self.net, i + 2),
            Topology::Routed => format!("172.30.{}.{}", self.net, 4 * (i + 1) + 2),
        }
    }

    /// The host's address the nodes reach the server on.
    fn gateway(&self) -> String {
        match self.topology {
            Topology::Bridged => format!("172.31.{}.1", self.net),
            Topology::Routed => format!("172.30.{}.1", self.net),
        }
    }

    fn empty(net: u8, topology: Topology) -> Nodes {
        Nodes {
            net,
            topology,
            links: vec![],
            other_netns: vec![],
            host_routes: vec![],
            names: vec![],
            dirs: vec![],
            agents: vec![],
            agent_args: vec![],
        }
    }

    /// Node `letter`'s namespace, its eth0 at `addr` with a default route
    /// via `gateway`, the peer of `veth` made in `veth_netns` (the host when None).
    fn add_node(
        &mut self,
        letter: &str,
        veth: &str,
        veth_netns: Option<&str>,
        addr: &str,
        gateway: &str,
    ) {
        let ns = format!("sk{}-{letter}-{}", self.prefix(), self.net);
        let _ = run("ip", &["netns", "delete", &ns]);
        self.names.push((ns.clone(), format!("node-{letter}")));
        must("ip", &["netns", "add", &ns]);
        let mut add = vec![];
        if let Some(r) = veth_netns {
            add.extend(["-n", r]);
        }
        add.extend([
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must("ip", &add);
        in_netns(&ns, &["ip", "link", "set", "lo", "up"]);
        in_netns(&ns, &["ip", "addr", "add", addr, "dev", "eth0"]);
        in_netns(&ns, &["ip", "link", "set", "eth0", "up"]);
        in_netns(&ns, &["ip", "route", "add", "default", "via", gateway]);
        self.dirs.push(tempfile::tempdir().expect("tempdir"));
    }

    fn prefix(&self) -> &'static str {
        match self.topology {
            Topology::Bridged => "mn",
            Topology::Routed => "vx",
        }
    }

    fn agent_dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.agent_dir(i).join("agent.log")).unwrap_or_default()
    }

    /// A bridge and two namespaces with a veth each, addressed in
    /// 172.31.<net>.0/24 with the bridge as their default gateway.
    fn create(net: u8) -> Nodes {
        let bridge = format!("skmn{net}");
        let mut nodes = Nodes::empty(net, Topology::Bridged);
        let _ = run("ip", &["link", "delete", &bridge]);
        nodes.links.push(bridge.clone());
        must("ip", &["link", "add", &bridge, "type", "bridge"]);
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", nodes.gateway()),
                "dev",
                &bridge,
            ],
        );
        must("ip", &["link", "set", &bridge, "up"]);
        for (i, letter) in ["a", "b"].iter().enumerate() {
            let veth = format!("skmn{net}{letter}");
            let (addr, gateway) = (format!("{}/24", nodes.ip(i)), nodes.gateway());
            nodes.add_node(letter, &veth, None, &addr, &gateway);
            must("ip", &["link", "set", &veth, "master", &bridge, "up"]);
        }
        nodes
    }

    /// A router namespace joined to the host by a veth (172.30.<net>.0/30,
    /// the host .1) and to each node namespace by its own veth and /30
    /// (node-a 172.30.<net>.6, node-b .10, the router .5 and .9); the
    /// host routes 172.30.<net>.0/24 via the router. The nodes share no
    /// layer 2 with each other or the host.
    fn create_routed(net: u8) -> Nodes {
        let mut nodes = Nodes::empty(net, Topology::Routed);
        let router = format!("skvx-r-{net}");
        let uplink = format!("skvx{net}h");
        let _ = run("ip", &["netns", "delete", &router]);
        let _ = run("ip", &["link", "delete", &uplink]);
        nodes.other_netns.push(router.clone());
        must("ip", &["netns", "add", &router]);
        nodes.links.push(uplink.clone());
        must(
            "ip",
            &[
                "link", "add", &uplink, "type", "veth", "peer", "name", "up0", "netns", &router,
            ],
        );
        let host = format!("{}/30", nodes.gateway());
        must("ip", &["addr", "add", &host, "dev", &uplink]);
        must("ip", &["link", "set", &uplink, "up"]);
        let router_ip = format!("172.30.{net}.2");
        in_netns(&router, &["ip", "link", "set", "lo", "up"]);
        in_netns(
            &router,
            &[
                "ip",
                "addr",
                "add",
                &format!("{router_ip}/30"),
                "dev",
                "up0",
            ],
        );
        in_netns(&router, &["ip", "link", "set", "up0", "up"]);
        in_netns(
            &router,
            &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
        );
        let route: Vec<String> = [format!("172.30.{net}.0/24"), "via".into(), router_ip]
            .into_iter()
            .collect();
        let mut add = vec!["route", "add"];
        add.extend(route.iter().map(String::as_str));
        must("ip", &add);
        nodes.host_routes.push(route);
        for (i, letter) in ["a", "b"].iter().enumerate() {
            let hop = format!("172.30.{net}.{}", 4 * (i + 1) + 1);
            let veth = format!("n{letter}");
            let addr = format!("{}/30", nodes.ip(i));
            nodes.add_node(letter, &veth, Some(&router), &addr, &hop);
            in_netns(
                &router,
                &["ip", "addr", "add", &format!("{hop}/30"), "dev", &veth],
            );
            in_netns(&router, &["ip", "link", "set", &veth, "up"]);
        }
        nodes
    }

    /// Start `skiff agent` in each namespace (nsenter --net only: `ip
    /// netns exec` remounts /sys, hiding the cgroup filesystem runc needs).
    fn start_agents(&mut self, s: &Server) {
        let token = std::fs::read_to_string(s.data_dir().join("node-token")).expect("node-token");
        let ca = s.data_dir().join("tls/server-ca.crt");
        let url = format!("https://{}:{}", self.gateway(), s.port);
        for i in 0..self.names.len() {
            let (ns, node) = self.names[i].clone();
            let dir = self.agent_dir(i).to_path_buf();
            let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
            let child = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{ns}"))
                .arg(env!("CARGO_BIN_EXE_skiff"))
                .args(["agent", "--server", &url])
                .args(["--eviction-hard", support::EVICTION_HARD])
                // The bridged nodes are given the CA and the token; the
                // routed ones read the token from its file and find the CA
                // by the hash it pins.
                .args(if self.topology == Topology::Bridged {
                    vec![
                        "--token".to_string(),
                        token.trim().to_string(),
                        "--ca-file".to_string(),
                        ca.display().to_string(),
                    ]
                } else {
                    vec![
                        "--token-file".to_string(),
                        s.data_dir().join("node-token").display().to_string(),
                    ]
                })
                .arg("--data-dir")
                .arg(&dir)
                .args([
                    "--node-name",
                    &node,
                    "--disable-ingress",
                    "--dns-port",
                    "0",
                    "--kubelet-port",
                    "0",
                ])
                .args([
                    "--cluster-cidr",
                    &s.flag("--cluster-cidr").expect("cluster cidr"),
                ])
                .args([
                    "--service-cidr",
                    &s.flag("--service-cidr").expect("service cidr"),
                ])
                .args(&self.agent_args)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn skiff agent");
            self.agents.push(child);
        }
    }

    /// Wait until node `i`'s skiff routes hold `want`, then check they hold only that.
    fn wait_for_only_route(&self, s: &Server, i: usize, want: &str) {
        eventually_within(
            Duration::from_secs(30),
            &format!("the route {want} on node {i}"),
            s,
            || self.skiff_routes(i).contains(want),
        );
        let routes = self.skiff_routes(i);
        assert_eq!(
            routes.lines().count(),
            1,
            "node {i}'s skiff routes:\n{routes}"
        );
    }

    /// `ip route show proto 67` in a node's namespace.
    fn skiff_routes(&self, i: usize) -> String {
        must(
            "ip",
            &[
                "netns",
                "exec",
                self.netns(i),
                "ip",
                "-4",
                "route",
                "show",
                "proto",
                "67",
            ],
        )
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for mut c in self.agents.drain(..) {
            // SIGTERM first so the agent stops its containerd, then SIGKILL.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            // Whatever the agent started (containerd, shims) names its data directory.
            let _ = Command::new("pkill")
                .args(["-KILL", "-f"])
                .arg(d.path())
                .status();
            support::remove_containers_under(d.path());
        }
        for route in &self.host_routes {
            let _ = Command::new("ip")
                .args(["route", "del"])
                .args(route)
                .stderr(Stdio::null())
                .status();
        }
        for ns in self.names.iter().map(|(ns, _)| ns).chain(&self.other_netns) {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "delete", link])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Build `busybox:skiff` once and import it into each agent's containerd.
fn import_busybox(nodes: &Nodes, s: &Server) {
    let image = s.data_dir().join("busybox-skiff.tar");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
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
    for i in 0..nodes.names.len() {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["images", "import"])
            .arg(&image)
            .arg("--data-dir")
            .arg(nodes.agent_dir(i))
            .output()
            .expect("skiff images import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn pod(name: &str, node: &str, labels: &str, script: &str, restart: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  restartPolicy: {restart}\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:skiff\n    imagePullPolicy: IfNotPresent\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// Whether `ip` (a.b.c.d) is inside `cidr` (a.b.c.0/24 as the node IPAM controller hands out).
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').expect("cidr");
    let to_u32 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().expect("ipv4"));
    let bits: u32 = bits.parse().expect("bits");
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    to_u32(ip) & mask == to_u32(net) & mask
}

/// Why the multi-node tests cannot run here, if they cannot.
fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    if let Some(why) = agent_prerequisite_missing() {
        return Some(why);
    }
    for tool in tools {
        if !Path::new(tool).exists() && !Path::new(&tool.replace("/usr", "")).exists() {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

/// Both nodes registered, Ready, with their own podCIDR and the
/// namespace's address as InternalIP; their podCIDRs.
fn wait_for_nodes(nodes: &Nodes, s: &Server) -> Vec<String> {
    // Both nodes register, get a podCIDR and become Ready.
    let mut cidrs = vec![String::new(); 2];
    eventually_within(
        Duration::from_secs(120),
        "both nodes Ready with a podCIDR",
        s,
        || {
            for (i, (_, node)) in nodes.names.iter().enumerate() {
                let out = s.kubectl(&[
                    "get",
                    "node",
                    node,
                    "-o",
                    "jsonpath={.spec.podCIDR} {.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                match text.split_once(' ') {
                    Some((cidr, "True")) if !cidr.is_empty() => cidrs[i] = cidr.to_string(),
                    _ => return false,
                }
            }
            true
        },
    );
    assert_ne!(cidrs[0], cidrs[1]);
    for (i, (_, node)) in nodes.names.iter().enumerate() {
        let ip = s.ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ]);
        assert_eq!(ip.trim(), nodes.ip(i), "{node}'s InternalIP");
    }

    cidrs
}

/// An httpd pod on node-a behind a ClusterIP Service; a pod on node-b
/// reaches it by pod IP and through the Service with its own address, and
/// a listener outside the pod network only masqueraded.
fn pods_talk_across_nodes(nodes: &Nodes, s: &Server, cidrs: &[String]) {
    import_busybox(nodes, s);
    let web = "mkdir -p /www && echo hello-from-node-a > /www/index.html && exec httpd -f -vv -p 8080 -h /www";
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod("web", "node-a", "app: web", web, "Always"),
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    let mut web_ip = String::new();
    eventually_within(
        Duration::from_secs(120),
        "the web pod Running on node-a",
        s,
        || {
            let out = s.kubectl(&[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ]);
            match String::from_utf8_lossy(&out.stdout).split_once(' ') {
                Some(("Running", ip)) if !ip.is_empty() => {
                    web_ip = ip.to_string();
                    true
                }
                _ => false,
            }
        },
    );
    assert!(
        in_cidr(&web_ip, &cidrs[0]),
        "web pod IP {web_ip} outside node-a's podCIDR {}",
        cidrs[0]
    );
    let cluster_ip = s
        .ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    eventually_within(
        Duration::from_secs(30),
        "the web Service's endpoints",
        s,
        || {
            s.ok(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            ])
            .contains(&web_ip)
        },
    );

    // A pod on node-b: by pod IP, then through the ClusterIP (retried: the
    // proxy on node-b programs the service asynchronously).
    let get = |addr: &str, port: u16| {
        format!(
            "ok=; for i in $(seq 1 20); do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port} | grep -q hello-from-node-a; then ok=1; break; fi; sleep 1; done; test -n \"$ok\""
        )
    };
    // And a listener outside the pod network (on the host side of the
    // bridge, which has no route to the pods): reachable only masqueraded.
    let outside = std::net::TcpListener::bind((nodes.gateway().as_str(), 0))
        .expect("bind an outside listener");
    let outside_port = outside.local_addr().expect("addr").port();
    let outside_peer = std::thread::spawn(move || {
        outside.set_nonblocking(true).expect("nonblocking");
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        while std::time::Instant::now() < deadline {
            if let Ok((_, peer)) = outside.accept() {
                return Some(peer.ip().to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    });
    let client = format!(
        "{} && echo pod-ip-ok && {} && echo cluster-ip-ok && echo hi | nc -w 3 {} {outside_port} && echo outside-ok",
        get(&web_ip, 8080),
        get(&cluster_ip, 80),
        nodes.gateway()
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod("client", "node-b", "app: client", &client, "Never"),
    );
    let mut phase = String::new();
    eventually_within(
        Duration::from_secs(120),
        "the client pod to finish",
        s,
        || {
            phase = s.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
            phase == "Succeeded" || phase == "Failed"
        },
    );
    let client_logs = s.ok(&["logs", "client"]);
    let web_logs = s.ok(&["logs", "web"]);
    assert_eq!(
        phase,
        "Succeeded",
        "client output:\n{client_logs}\nweb log:\n{web_logs}\nnode-a routes:\n{}\nnode-b routes:\n{}\nnode-b agent log tail:\n{}",
        nodes.skiff_routes(0),
        nodes.skiff_routes(1),
        nodes
            .agent_log(1)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        client_logs.contains("pod-ip-ok")
            && client_logs.contains("cluster-ip-ok")
            && client_logs.contains("outside-ok"),
        "{client_logs}"
    );
    // Traffic leaving the pod network is masqueraded to the node's address.
    assert_eq!(
        outside_peer.join().expect("listener thread"),
        Some(nodes.ip(1))
    );
    let client_ip = s
        .ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"])
        .trim()
        .to_string();
    assert!(
        in_cidr(&client_ip, &cidrs[1]),
        "client pod IP {client_ip} outside node-b's podCIDR {}",
        cidrs[1]
    );
    // httpd -vv logs each request's peer: the client pod's own address,
    // both directly and through the Service (no masquerade between pods).
    // (busybox prints the peer as "10.42.1.2:port" or "[::ffff:10.42.1.2]:port".)
    let peer = |l: &str| {
        l.trim_start_matches('[')
            .trim_start_matches("::ffff:")
            .split([']', ':'])
            .next()
            .map(str::to_string)
    };
    let from_client = web_logs
        .lines()
        .filter(|l| peer(l).as_deref() == Some(client_ip.as_str()) && l.contains("response:200"))
        .count();
    assert!(
        from_client >= 2,
        "the web pod saw no requests from {client_ip}; its log:\n{web_logs}"
    );
}

/// Delete the pods, stop node-b's agent and delete its Node.
fn remove_node_b(nodes: &mut Nodes, s: &Server) {
    s.ok(&["delete", "pod", "client", "--wait=true", "--timeout=60s"]);
    s.ok(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
    let mut b = nodes.agents.remove(1);
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    let _ = b.wait();
    s.ok(&["delete", "node", "node-b"]);
}

#[test]
fn pods_reach_each_other_across_nodes() {
    if let Some(why) = missing_prerequisite(&["/usr/bin/nsenter", "/usr/sbin/ip"]) {
        eprintln!("skipping the multi-node end-to-end test: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = 200 + (std::process::id() % 50) as u8;
    let mut nodes = Nodes::create(net);
    let s = support::start_bound(
        &nodes.gateway(),
        &[
            "--cluster-cidr",
            "10.240.0.0/16",
            "--service-cidr",
            "10.241.0.0/16",
        ],
    );
    nodes.start_agents(&s);
    let cidrs = wait_for_nodes(&nodes, &s);
    agents_act_as_their_nodes(&nodes, &s);

    // Each node routes the other's podCIDR via the other's address, and only that.
    for (i, other) in [(0, 1), (1, 0)] {
        let want = format!("{} via {}", cidrs[other], nodes.ip(other));
        nodes.wait_for_only_route(&s, i, &want);
        let fwd = must(
            "ip",
            &[
                "netns",
                "exec",
                nodes.netns(i),
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ],
        );
        assert_eq!(fwd.trim(), "1");
    }

    pods_talk_across_nodes(&nodes, &s, &cidrs);

    // A node that goes away takes its route with it.
    remove_node_b(&mut nodes, &s);
    eventually_within(
        Duration::from_secs(30),
        "node-a to remove the route to node-b's pods",
        &s,
        || nodes.skiff_routes(0).trim().is_empty(),
    );
}

/// Each agent joined through the CSR API and acts as its own node: its
/// certificate cannot read a Secret no pod of its uses, nor change another
/// Node.
fn agents_act_as_their_nodes(nodes: &Nodes, s: &Server) {
    let csrs = s.json(&["get", "csr"]);
    let kubelet_csrs: Vec<&serde_json::Value> = csrs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .collect();
    assert_eq!(kubelet_csrs.len(), nodes.names.len(), "{csrs}");
    for c in &kubelet_csrs {
        assert_eq!(c["spec"]["username"], "system:node-token", "{c}");
        assert_eq!(c["status"]["conditions"][0]["type"], "Approved", "{c}");
        assert_eq!(
            c["status"]["conditions"][0]["reason"], "AutoApproved",
            "{c}"
        );
        assert!(
            c["status"]["certificate"]
                .as_str()
                .is_some_and(|x| !x.is_empty()),
            "{c}"
        );
    }
    // A kubeconfig with node-a's own credentials.
    let dir = nodes.agent_dir(0).join("agent");
    let admin = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    let b64 = |p: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join(p)).expect(p))
    };
    let as_node: Vec<String> = admin
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("client-certificate-data:") {
                format!("    client-certificate-data: {}", b64("client-kubelet.crt"))
            } else if t.starts_with("client-key-data:") {
                format!("    client-key-data: {}", b64("client-kubelet.key"))
            } else {
                l.to_string()
            }
        })
        .collect();
    let kc = nodes.agent_dir(0).join("node.kubeconfig");
    std::fs::write(&kc, as_node.join("\n") + "\n").expect("write kubeconfig");
    let kc = kc.to_str().unwrap_or_default();
    let (node_a, node_b) = (&nodes.names[0].1, &nodes.names[1].1);
    let who = s.ok(&["auth", "whoami", "--kubeconfig", kc]);
    assert!(
        who.contains(&format!("system:node:{node_a}")) && who.contains("system:nodes"),
        "{who}"
    );
    s.ok(&[
        "create",
        "secret",
        "generic",
        "nobodys",
        "--from-literal=k=v",
    ]);
    let out = s.kubectl(&["get", "secret", "nobodys", "--kubeconfig", kc]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "no relationship found between node '{node_a}' and this object"
            )),
        "{err}"
    );
    let out = s.kubectl(&["label", "node", node_b, "stolen=yes", "--kubeconfig", kc]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "node \"{node_a}\" is not allowed to modify node \"{node_b}\""
            )),
        "{err}"
    );
    s.ok(&["label", "node", node_a, "mine=yes", "--kubeconfig", kc]);
}

/// The network address of a podCIDR: the node's VTEP address.
fn vtep(cidr: &str) -> &str {
    cidr.split_once('/').expect("cidr").0
}

#[test]
fn pods_reach_each_other_across_nodes_over_vxlan() {
    let tools = ["/usr/bin/nsenter", "/usr/sbin/ip", "/usr/sbin/bridge"];
    if let Some(why) = missing_prerequisite(&tools) {
        eprintln!("skipping the multi-node VXLAN end-to-end test: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = 200 + (std::process::id() % 50) as u8;
    let mut nodes = Nodes::create_routed(net);
    nodes.agent_args = vec!["--flannel-backend".into(), "vxlan".into()];
    // No shared layer 2: each node reaches the other through the router,
    // so a host-gw route via the other's address could not be set.
    for (i, other) in [(0, 1), (1, 0)] {
        let route = in_netns(
            nodes.netns(i),
            &["ip", "-4", "route", "get", &nodes.ip(other)],
        );
        assert!(
            route.contains(&format!(" via 172.30.{net}.")),
            "node {i} reaches node {other} directly: {route}"
        );
    }
    let s = support::start_bound(
        &nodes.gateway(),
        &[
            "--cluster-cidr",
            "10.242.0.0/16",
            "--service-cidr",
            "10.243.0.0/16",
        ],
    );
    nodes.start_agents(&s);
    let cidrs = wait_for_nodes(&nodes, &s);

    // Each node has its VXLAN device and publishes it on its Node.
    let mut macs = vec![];
    for (i, (ns, node)) in nodes.names.iter().enumerate() {
        let mut annotations = serde_json::Value::Null;
        eventually_within(
            Duration::from_secs(30),
            &format!("{node}'s VXLAN annotations"),
            &s,
            || {
                let json = s.ok(&["get", "node", node, "-o", "json"]);
                let v: serde_json::Value = serde_json::from_str(&json).expect("node json");
                annotations = v["metadata"]["annotations"].clone();
                annotations["flannel.alpha.coreos.com/backend-type"] == "vxlan"
            },
        );
        let mac = in_netns(ns, &["cat", "/sys/class/net/skiff.vxlan/address"])
            .trim()
            .to_string();
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-data"],
            format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}").as_str(),
            "{node}'s annotations: {annotations}"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/public-ip"],
            nodes.ip(i).as_str()
        );
        let link = in_netns(ns, &["ip", "-d", "link", "show", "dev", "skiff.vxlan"]);
        for want in [
            "mtu 1450 ".to_string(),
            ",UP,".to_string(),
            "vxlan id 1 ".to_string(),
            format!("local {} dev eth0 ", nodes.ip(i)),
            "dstport 8472 ".to_string(),
            "nolearning".to_string(),
        ] {
            assert!(
                link.contains(&want),
                "{node}'s device has no {want:?}: {link}"
            );
        }
        let addr = in_netns(
            ns,
            &["ip", "-4", "-o", "addr", "show", "dev", "skiff.vxlan"],
        );
        assert!(
            addr.contains(&format!("inet {}/32 ", vtep(&cidrs[i]))),
            "{node}'s VTEP address: {addr}"
        );
        macs.push(mac);
    }

    // Each node reaches the other's podCIDR via its VTEP: a route on the
    // device, a permanent neighbour entry and a forwarding entry to the
    // other node's address.
    let netns: Vec<String> = nodes.names.iter().map(|(ns, _)| ns.clone()).collect();
    let neighbours = |i: usize| in_netns(&netns[i], &["ip", "neigh", "show", "dev", "skiff.vxlan"]);
    let fdb = |i: usize| in_netns(&netns[i], &["bridge", "fdb", "show", "dev", "skiff.vxlan"]);
    for (i, other) in [(0, 1), (1, 0)] {
        let want = format!(
            "{} via {} dev skiff.vxlan onlink",
            cidrs[other],
            vtep(&cidrs[other])
        );
        nodes.wait_for_only_route(&s, i, &want);
        let n = neighbours(i);
        assert!(
            n.contains(&format!(
                "{} lladdr {} PERMANENT",
                vtep(&cidrs[other]),
                macs[other]
            )),
            "node {i}'s neighbours:\n{n}"
        );
        let f = fdb(i);
        assert!(
            f.contains(&format!(
                "{} dst {} self permanent",
                macs[other],
                nodes.ip(other)
            )),
            "node {i}'s forwarding entries:\n{f}"
        );
    }

    pods_talk_across_nodes(&nodes, &s, &cidrs);
    // The pods' interfaces have the overlay's MTU (the CNI bridge config's),
    // so that full-size packets fit in the VXLAN encapsulation: the web
    // pod's veth on node-a.
    let ports = in_netns(&netns[0], &["ip", "-o", "link", "show", "master", "skiff0"]);
    assert!(
        ports.contains("mtu 1450 ") && !ports.contains("mtu 1500 "),
        "node-a's pod interfaces: {ports}"
    );

    // A node that goes away takes its route and entries with it.
    remove_node_b(&mut nodes, &s);
    eventually_within(
        Duration::from_secs(30),
        "node-a to remove node-b's route and VXLAN entries",
        &s,
        || {
            nodes.skiff_routes(0).trim().is_empty()
                && neighbours(0).trim().is_empty()
                && !fdb(0).contains(&macs[1])
        },
    );
}
