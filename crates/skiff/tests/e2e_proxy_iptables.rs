//! The service proxy's iptables mode end to end (`--proxy-mode iptables`,
//! kube-proxy's iptables layout through iptables-restore): a Deployment of
//! two busybox httpd pods behind a NodePort Service answers from the host
//! through its ClusterIP and through its NodePort on the node's address, by
//! both pods; deleting the Service removes its rules. The proxy's chains
//! and jump rules are removed at the end, also when the test fails. Needs
//! root, the agent's packages and iptables; skips otherwise.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use support::{Server, agent_prerequisite_missing, eventually, host_http_get, import_busybox};

const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

/// A server whose proxy runs in iptables mode; on drop (pass or panic) the
/// server stops first, then its proxy's iptables chains and jump rules go.
struct IptablesServer {
    server: Option<Server>,
    table: String,
}

impl IptablesServer {
    fn start() -> IptablesServer {
        let server = Server::start_with_agent_and(&["--proxy-mode", "iptables"]);
        let table = server.flag("--proxy-table").expect("the test table");
        IptablesServer {
            server: Some(server),
            table,
        }
    }

    fn s(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    fn prefix(&self) -> String {
        skiff_proxy::iptables::chain_prefix(&self.table)
    }
}

impl Drop for IptablesServer {
    fn drop(&mut self) {
        drop(self.server.take());
        let cleaned = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| {
                rt.block_on(skiff_proxy::iptables::cleanup(
                    &skiff_proxy::RealIptables,
                    &self.table,
                ))
            });
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!(
                "cleaning up the iptables chains of {}: {cleaned:?}",
                self.table
            );
        }
    }
}

fn iptables_save() -> String {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `addr` until every pod of `pods` has answered.
fn all_answer(s: &Server, what: &str, addr: &str, pods: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    eventually(what, s, || {
        if let Some(body) = host_http_get(addr) {
            seen.insert(body);
        }
        &seen == pods
    });
}

#[test]
fn iptables_mode_serves_cluster_ip_and_node_port() {
    if let Some(why) = agent_prerequisite_missing() {
        eprintln!("skipping the iptables proxy end-to-end test: {why}");
        return;
    }
    if !std::path::Path::new("/usr/sbin/iptables-restore").exists() {
        eprintln!(
            "skipping the iptables proxy end-to-end test: iptables-restore is missing (apt-get install iptables)"
        );
        return;
    }
    let guard = IptablesServer::start();
    let s = guard.s();
    let prefix = guard.prefix();
    eventually("the node Ready", s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    import_busybox(s);
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:skiff",
        "--replicas=2",
        "--",
        "sh",
        "-c",
        WEB,
    ]);
    s.ok(&[
        "expose",
        "deployment",
        "web",
        "--type=NodePort",
        "--port=80",
    ]);
    let support::Web {
        pods,
        cluster_ip,
        node_port,
        node_ip,
    } = support::wait_for_web(s);

    all_answer(
        s,
        "both pods answering through the ClusterIP",
        &format!("{cluster_ip}:80"),
        &pods,
    );
    all_answer(
        s,
        "both pods answering through the NodePort",
        &format!("{node_ip}:{node_port}"),
        &pods,
    );

    // It was iptables: our chains and jump rules are there, the nftables proxy table is not.
    let saved = iptables_save();
    for rule in [
        format!(
            "-A PREROUTING -m comment --comment \"skiff service portals\" -j {prefix}-SERVICES"
        ),
        format!(
            "-A POSTROUTING -m comment --comment \"skiff postrouting rules\" -j {prefix}-POSTROUTING"
        ),
        format!("--dport {node_port} -m comment --comment \"default/web:80\" -j {prefix}-EXT-"),
        "--probability 0.5".to_string(),
    ] {
        assert!(saved.contains(&rule), "{rule} not in:\n{saved}");
    }
    let nft = Command::new("nft")
        .args(["list", "table", "ip", &guard.table])
        .output()
        .expect("nft");
    assert!(
        !nft.status.success(),
        "no nftables proxy table in iptables mode"
    );

    // The Service goes: its ClusterIP stops answering and its chains go.
    s.ok(&["delete", "svc", "web"]);
    eventually("the ClusterIP no longer answering", s, || {
        host_http_get(&format!("{cluster_ip}:80")).is_none()
    });
    eventually("the Service's rules gone", s, || {
        let saved = iptables_save();
        !saved.contains(&format!("-d {cluster_ip}/32 ")) && !saved.contains("default/web:80")
    });

    drop(guard);
    let left: Vec<String> = iptables_save()
        .lines()
        .filter(|l| l.contains(&format!("{prefix}-")))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "left on the host: {left:#?}");
}
