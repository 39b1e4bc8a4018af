//! NetworkPolicy end to end with real containers: a busybox httpd pod and
//! two client pods on the in-process agent; a default-deny ingress policy
//! blocks both clients, a policy allowing role=client on port 80 lets one
//! through (also through a ClusterIP: the policy judges the real pod behind
//! it) and still blocks the other, an egress policy allowing only DNS blocks
//! the allowed client, and deleting the policies restores traffic. Enforced
//! by the node's nftables table (its own per test). Needs root; skips otherwise.

mod support;

use std::time::Duration;

use support::{Server, agent_prerequisite_missing, eventually, eventually_within, import_busybox};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client-a
  labels: {role: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: ["sleep", "100000"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client-b
  labels: {role: other}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: ["sleep", "100000"]
"#;

const DENY_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const ALLOW_CLIENTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-clients
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: client}
    ports:
    - port: 80
"#;

const ONLY_DNS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: client-a-only-dns
spec:
  podSelector:
    matchLabels: {role: client}
  policyTypes: [Egress]
  egress:
  - ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
"#;

/// Whether pod `from` gets an HTTP answer from `addr` port 80 (busybox nc; its wget crashes here).
fn reaches(s: &Server, from: &str, addr: &str) -> bool {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} 80");
    let out = s.kubectl(&["exec", from, "--", "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).contains("200 OK")
}

#[test]
fn network_policies_block_and_allow_pod_traffic() {
    if let Some(why) = agent_prerequisite_missing() {
        eprintln!("skipping the network policy end-to-end test: {why}");
        return;
    }
    let table = format!("skiff-np-test-{}", std::process::id() % 100_000);
    let s = Server::start_with_agent_and(&["--netpol-table", &table]);
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    import_busybox(&s);
    s.ok_stdin(&["apply", "-f", "-"], PODS);
    eventually_within(Duration::from_secs(120), "3 pods Running", &s, || {
        s.ok(&["get", "pods", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running"))
            .count()
            == 3
    });
    let web = s.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    assert!(!web.is_empty());
    s.ok(&["expose", "pod", "web", "--port=80", "--name=web"]);
    let cluster_ip = s.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    eventually("the Service's endpoints", &s, || {
        s.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]) == web
    });

    // No policy: both clients reach the server, directly and through the ClusterIP.
    eventually("both clients reaching web", &s, || {
        reaches(&s, "client-a", &web) && reaches(&s, "client-b", &web)
    });
    eventually("both clients reaching the ClusterIP", &s, || {
        reaches(&s, "client-a", &cluster_ip) && reaches(&s, "client-b", &cluster_ip)
    });
    let listing = std::process::Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .expect("nft");
    assert!(
        listing.status.success(),
        "the enforcer's table {table} is missing: {}",
        String::from_utf8_lossy(&listing.stderr)
    );

    // Default deny for ingress: both blocked.
    s.ok_stdin(&["apply", "-f", "-"], DENY_INGRESS);
    eventually("default-deny blocking both clients", &s, || {
        !reaches(&s, "client-a", &web) && !reaches(&s, "client-b", &web)
    });

    // Allow role=client on port 80: client-a passes, client-b still blocked, also through the ClusterIP.
    s.ok_stdin(&["apply", "-f", "-"], ALLOW_CLIENTS);
    eventually("client-a allowed", &s, || reaches(&s, "client-a", &web));
    assert!(
        !reaches(&s, "client-b", &web),
        "client-b (role=other) must stay blocked"
    );
    assert!(
        reaches(&s, "client-a", &cluster_ip),
        "client-a through the ClusterIP"
    );
    assert!(
        !reaches(&s, "client-b", &cluster_ip),
        "client-b through the ClusterIP must stay blocked"
    );
    // Pod churn: a new pod labelled role=client is let in once it runs (a set element, not a rule change).
    let script = format!(
        "for i in $(seq 1 20); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {web} 80 | grep -q '200 OK' && exit 0; sleep 1; done; exit 1"
    );
    s.ok(&[
        "run",
        "client-c",
        "--labels=role=client",
        "--image=busybox:skiff",
        "--image-pull-policy=IfNotPresent",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let mut phase = String::new();
    eventually_within(Duration::from_secs(90), "client-c to finish", &s, || {
        phase = s.ok(&["get", "pod", "client-c", "-o", "jsonpath={.status.phase}"]);
        phase == "Succeeded" || phase == "Failed"
    });
    assert_eq!(phase, "Succeeded", "a new role=client pod reaches web");

    // Egress from client-a limited to DNS: its connection is blocked.
    s.ok_stdin(&["apply", "-f", "-"], ONLY_DNS);
    eventually("client-a's egress blocked", &s, || {
        !reaches(&s, "client-a", &web)
    });

    // Deleting the policies restores traffic, step by step.
    s.ok(&["delete", "networkpolicy", "client-a-only-dns"]);
    eventually("client-a allowed again", &s, || {
        reaches(&s, "client-a", &web)
    });
    assert!(
        !reaches(&s, "client-b", &web),
        "client-b still blocked by default-deny"
    );
    s.ok(&["delete", "networkpolicy", "default-deny", "allow-clients"]);
    eventually("client-b allowed again", &s, || {
        reaches(&s, "client-b", &web)
    });
    assert!(reaches(&s, "client-b", &cluster_ip));
}
