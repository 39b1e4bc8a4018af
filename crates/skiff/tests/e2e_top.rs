//! The resource metrics API (metrics.k8s.io/v1beta1, metrics-server's)
//! with real containers and the real kubectl: `kubectl top node`,
//! `kubectl top pod`, discovery and the raw NodeMetrics/PodMetrics. Needs
//! root and Debian's containerd, runc, containernetworking-plugins,
//! busybox-static and nftables, which .ci/run installs.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, eventually, eventually_within};

fn pod(name: &str, container: &str, script: &str, cpu_limit: Option<&str>) -> String {
    let mut c = json!({"name": container, "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]});
    if let Some(cpu) = cpu_limit {
        c["resources"] = json!({"limits": {"cpu": cpu, "memory": "32Mi"}});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [c]},
    })
    .to_string()
}

/// kubectl's "250m" or "1" as millicores.
fn millicores(s: &str) -> u64 {
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or_else(|_| panic!("cpu {s:?}")),
        None => s.parse::<u64>().unwrap_or_else(|_| panic!("cpu {s:?}")) * 1000,
    }
}

/// kubectl's "12Mi" as MiB.
fn mebibytes(s: &str) -> u64 {
    s.strip_suffix("Mi")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("memory {s:?}"))
}

/// The rows of `kubectl top ...` (headers included), split on whitespace.
fn rows(s: &Server, args: &[&str]) -> Option<Vec<Vec<String>>> {
    let out = s.kubectl(args);
    if !out.status.success() {
        eprintln!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect(),
    )
}

#[test]
fn kubectl_top_nodes_and_pods() {
    let Some(s) = support::node_ready("the kubectl top end-to-end test") else {
        return;
    };

    // Discovery: the group, its resources, and kubectl's view of them.
    let resources = s.ok(&["api-resources"]);
    let metrics: Vec<&str> = resources
        .lines()
        .filter(|l| l.contains("metrics.k8s.io"))
        .collect();
    assert!(
        metrics
            .iter()
            .any(|l| l.starts_with("nodes ") && l.contains("NodeMetrics") && l.contains("false")),
        "api-resources: {metrics:?}"
    );
    assert!(
        metrics
            .iter()
            .any(|l| l.starts_with("pods ") && l.contains("PodMetrics") && l.contains("true")),
        "api-resources: {metrics:?}"
    );
    assert!(s.ok(&["api-versions"]).contains("metrics.k8s.io/v1beta1"));
    let list: Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1"])).unwrap();
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "metrics.k8s.io/v1beta1");

    support::import_busybox(&s);
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod("busy", "burn", "while :; do :; done", Some("200m")),
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod("idle", "rest", "sleep 3600", None),
    );
    eventually("both pods Running", &s, || {
        let out = s.ok(&["get", "pods", "--no-headers"]);
        out.lines().filter(|l| l.contains(" Running ")).count() == 2
    });

    // kubectl top node: the node with CPU and memory in use.
    let node = s
        .ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
        .trim()
        .to_string();
    eventually_within(Duration::from_secs(90), "kubectl top node", &s, || {
        let Some(rows) = rows(&s, &["top", "node"]) else {
            return false;
        };
        eprintln!("{rows:?}");
        assert_eq!(
            rows[0],
            ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
        );
        rows.iter()
            .skip(1)
            .any(|r| r[0] == node && millicores(&r[1]) > 0 && mebibytes(&r[3]) > 0)
    });

    // kubectl top pod: both pods, the busy one using more CPU.
    eventually_within(Duration::from_secs(90), "kubectl top pod", &s, || {
        let Some(rows) = rows(&s, &["top", "pod", "--no-headers"]) else {
            return false;
        };
        eprintln!("{rows:?}");
        let cpu = |name: &str| {
            rows.iter()
                .find(|r| r[0] == name)
                .map(|r| millicores(&r[1]))
        };
        match (cpu("busy"), cpu("idle")) {
            (Some(busy), Some(idle)) => {
                assert!(busy <= 400, "busy is limited to 200m: {busy}m");
                busy > idle && busy >= 50
            }
            _ => false,
        }
    });
    let containers = rows(&s, &["top", "pod", "--containers", "--no-headers"]).unwrap();
    assert!(
        containers.iter().any(|r| r[0] == "busy" && r[1] == "burn"),
        "{containers:?}"
    );
    assert!(
        containers.iter().any(|r| r[0] == "idle" && r[1] == "rest"),
        "{containers:?}"
    );
    // A label selector and a single pod.
    let selected = rows(&s, &["top", "pod", "-l", "app=busy", "--no-headers"]).unwrap();
    assert_eq!(selected.len(), 1, "{selected:?}");
    assert_eq!(selected[0][0], "busy");
    let one = rows(&s, &["top", "pod", "idle", "--no-headers"]).unwrap();
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0][0], "idle");
    // kubectl 1.27 reads the legacy (unaggregated) discovery documents.
    let old = s.kubectl_version("1.27", &["top", "pod", "busy", "--no-headers"]);
    assert!(
        String::from_utf8_lossy(&old.stdout).starts_with("busy "),
        "kubectl 1.27 top pod: {}",
        String::from_utf8_lossy(&old.stderr)
    );
    let err = s.fails(&["top", "pod", "nope"]);
    assert!(err.contains("not found"), "{err}");

    // The raw objects as metrics-server writes them.
    let raw: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy",
    ]))
    .unwrap();
    eprintln!("{raw}");
    assert_eq!(raw["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(raw["kind"], "PodMetrics");
    assert_eq!(raw["metadata"]["name"], "busy");
    assert_eq!(raw["metadata"]["namespace"], "default");
    assert_eq!(raw["metadata"]["labels"]["app"], "busy");
    assert!(raw["timestamp"].as_str().unwrap().ends_with('Z'), "{raw}");
    assert!(raw["window"].as_str().unwrap().ends_with('s'), "{raw}");
    assert_eq!(raw["containers"][0]["name"], "burn");
    let cpu = raw["containers"][0]["usage"]["cpu"].as_str().unwrap();
    assert!(
        cpu.ends_with('n') || cpu.ends_with('u') || cpu.ends_with('m'),
        "{raw}"
    );
    let memory = raw["containers"][0]["usage"]["memory"].as_str().unwrap();
    assert!(memory.ends_with("Ki") || memory.ends_with("Mi"), "{raw}");
    let nodes: Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]))
            .unwrap();
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["items"][0]["metadata"]["name"], node.as_str());
    assert_eq!(nodes["items"][0]["kind"], "NodeMetrics");
    let all: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Didle",
    ]))
    .unwrap();
    assert_eq!(all["kind"], "PodMetricsList");
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all["items"][0]["metadata"]["name"], "idle");

    // Read-only.
    let err = s
        .kubectl_stdin(
            &[
                "create",
                "--raw",
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                "-f",
                "-",
            ],
            "{}",
        )
        .stderr;
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("MethodNotAllowed") || err.contains("does not allow this method"),
        "{err}"
    );
}
