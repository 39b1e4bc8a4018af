//! `scripts/second-node.sh`: a second node on this machine, `skiff agent`
//! in a network namespace joined to the local server through a bridge, as
//! the README documents for the conformance suite's two untainted nodes.
//! Needs root; skips otherwise.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Server, eventually_within};

/// Runs the script with this test's names, so that it cannot collide with
/// a real second node or with other tests.
fn script(s: &Server, node_dir: &std::path::Path, action: &str) -> std::process::Output {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/second-node.sh");
    Command::new("bash")
        .arg(script)
        .arg(action)
        .env("SKIFF", env!("CARGO_BIN_EXE_skiff"))
        .env("SKIFF_DATA_DIR", s.data_dir())
        .env("SKIFF_PORT", s.port.to_string())
        .env("SKIFF_NODE", "second-node-e2e")
        .env("SKIFF_NODE_DIR", node_dir)
        .env("SKIFF_NODE_NET", NET)
        .env("SKIFF_NODE_BRIDGE", "skiffn2e")
        .env("SKIFF_NODE_NETNS", "skiff-n2e")
        .env(
            "SKIFF_NODE_EXTRA",
            format!(
                "--kubelet-port 0 --dns-port 0 --cluster-cidr {} --service-cidr {}",
                s.flag("--cluster-cidr").expect("cluster cidr"),
                s.flag("--service-cidr").expect("service cidr"),
            ),
        )
        .output()
        .expect("run scripts/second-node.sh")
}

const NET: &str = "172.31.253";

#[test]
fn second_node_script_joins_an_untainted_node() {
    if let Some(why) = support::agent_prerequisite_missing().or_else(|| {
        ["/usr/bin/nsenter", "/usr/sbin/ip"]
            .into_iter()
            .find(|p| !std::path::Path::new(p).exists())
            .map(|p| format!("{p} is missing"))
    }) {
        eprintln!("skipping the second-node script end-to-end test: {why}");
        return;
    }
    let bridge_ip = format!("{NET}.1");
    let s = Server::start_with_agent_and(&[
        "--bind-address",
        "0.0.0.0",
        "--tls-san",
        &bridge_ip,
        "--flannel-backend",
        "vxlan",
    ]);
    let node_dir = tempfile::tempdir().expect("tempdir");
    let up = script(&s, node_dir.path(), "up");
    let ok = up.status.success();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(
            ok,
            "second-node.sh up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        eventually_within(Duration::from_secs(90), "two Ready nodes", &s, || {
            let nodes = s.ok(&["get", "nodes", "--no-headers"]);
            nodes.lines().filter(|l| l.contains(" Ready ")).count() == 2
                && nodes.contains("second-node-e2e")
        });
        // Untainted, as the suite's "at least two untainted nodes" wants.
        let taints = s.ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.spec.taints}{end}",
        ]);
        assert_eq!(taints.trim(), "", "{taints}");
        let ip = s.ok(&[
            "get",
            "node",
            "second-node-e2e",
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ]);
        assert_eq!(ip.trim(), format!("{NET}.2"));
    }));
    let down = script(&s, node_dir.path(), "down");
    support::remove_containers_under(node_dir.path());
    // The host node's VXLAN device stays after its agent, as flannel's does.
    let _ = Command::new("ip")
        .args(["link", "delete", "skiff.vxlan"])
        .status();
    if let Err(e) = result {
        eprintln!(
            "agent log:\n{}",
            std::fs::read_to_string(node_dir.path().join("agent.log")).unwrap_or_default()
        );
        std::panic::resume_unwind(e);
    }
    assert!(
        down.status.success(),
        "second-node.sh down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("skiff-n2e"));
}
