//! The kubectl verbs a user reaches for, end to end.

mod support;
use support::Server;

const MULTI: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
  labels: {app: api}
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: busybox:1.36
        env:
        - {name: A, value: "1"}
        ports:
        - containerPort: 8080
      - name: sidecar
        image: busybox:1.36
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  mode: fast
"#;

#[test]
fn apply_multi_document_then_change_and_prune_fields() {
    let s = Server::start();
    let out = s.ok_stdin(&["apply", "-f", "-"], MULTI);
    assert!(
        out.contains("namespace/shop created")
            && out.contains("deployment.apps/api created")
            && out.contains("configmap/settings created"),
        "{out}"
    );
    // Client-side apply of a change: strategic merge keeps the other container, changes one image, adds an env var.
    let changed = MULTI.replace("image: busybox:1.36\n        env:\n        - {name: A, value: \"1\"}", "image: busybox:1.37\n        env:\n        - {name: A, value: \"1\"}\n        - {name: B, value: \"2\"}");
    let out = s.ok_stdin(&["apply", "-f", "-"], &changed);
    assert!(out.contains("deployment.apps/api configured"), "{out}");
    let d = s.json(&["get", "deploy", "api", "-n", "shop"]);
    let c = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(c[0]["image"], "busybox:1.37");
    assert_eq!(c[0]["env"][1]["name"], "B");
    assert_eq!(c[1]["name"], "sidecar");
    assert_eq!(d["metadata"]["generation"], 2);
    // Removing the sidecar from the manifest removes it from the object.
    let pruned = changed.replace("      - name: sidecar\n        image: busybox:1.36\n", "");
    s.ok_stdin(&["apply", "-f", "-"], &pruned);
    let d = s.json(&["get", "deploy", "api", "-n", "shop"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // get -o yaml / jsonpath / custom columns.
    let y = s.ok(&["get", "cm", "settings", "-n", "shop", "-o", "yaml"]);
    assert!(
        y.contains("mode: fast") && y.contains("resourceVersion:"),
        "{y}"
    );
    let jp = s.ok(&[
        "get",
        "deploy",
        "-n",
        "shop",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(jp, "api");
    let all = s.ok(&["get", "all", "-n", "shop"]);
    assert!(all.contains("deployment.apps/api"), "{all}");
    s.ok(&["run", "p", "--image=busybox", "-n", "shop"]);
    let all_ns = s.ok(&["get", "pods", "-A"]);
    assert!(
        all_ns.starts_with("NAMESPACE") && all_ns.contains("shop ") && all_ns.contains(" p "),
        "{all_ns}"
    );
}

#[test]
fn server_side_apply_with_conflicts_and_force() {
    let s = Server::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n";
    let out = s.ok_stdin(&["apply", "--server-side", "-f", "-"], cm);
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let obj = s.json(&["get", "cm", "ssa", "--show-managed-fields"]);
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    // Another manager takes the same field: conflict, then force.
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"2\"\n";
    let out = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        other,
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && msg.contains("conflict"), "{msg}");
    s.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        other,
    );
    assert_eq!(s.json(&["get", "cm", "ssa"])["data"]["a"], "2");
}

#[test]
fn label_annotate_patch_scale_edit() {
    let s = Server::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=1",
    ]);
    s.ok(&["label", "deployment", "web", "tier=front"]);
    s.ok(&["annotate", "deployment", "web", "note=hello"]);
    let d = s.json(&["get", "deploy", "web"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");
    assert_eq!(
        s.ok(&["get", "deploy", "-l", "tier=front", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        s.ok(&["get", "deploy", "-l", "tier!=front", "-o", "name"])
            .trim(),
        ""
    );
    s.ok(&["label", "deployment", "web", "tier-"]);
    assert!(
        s.json(&["get", "deploy", "web"])["metadata"]["labels"]
            .get("tier")
            .is_none()
    );
    // Three patch types.
    s.ok(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"busybox","image":"busybox:1.37"}]}}}}"#]);
    s.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    s.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]"#,
    ]);
    let d = s.json(&["get", "deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    assert_eq!(d["spec"]["minReadySeconds"], 5);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 3);
    // Scale through the scale subresource.
    let out = s.ok(&["scale", "deployment", "web", "--replicas=4"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(s.json(&["get", "deploy", "web"])["spec"]["replicas"], 4);
    // Edit with an editor that rewrites the replicas.
    let editor = s.data_dir().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 4/replicas: 6/' \"$1\"\n",
    )
    .expect("editor");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    let out = s.kubectl_full(
        "",
        &["edit", "deployment", "web"],
        None,
        &[("KUBE_EDITOR", editor.to_str().unwrap_or_default())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.json(&["get", "deploy", "web"])["spec"]["replicas"], 6);
}

#[test]
fn create_helpers_dry_run_server_explain_diff() {
    let s = Server::start();
    s.ok(&["create", "configmap", "cfg", "--from-literal=a=1"]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=p=secret",
    ]);
    assert_eq!(s.json(&["get", "secret", "sec"])["data"]["p"], "c2VjcmV0");
    let out = s.ok(&["get", "secret", "sec"]);
    assert!(out.contains("Opaque"), "{out}");
    let out = s.ok(&[
        "run",
        "dry",
        "--image=busybox",
        "--dry-run=server",
        "-o",
        "yaml",
    ]);
    assert!(out.contains("uid:") && out.contains("name: dry"), "{out}");
    assert!(
        !s.kubectl(&["get", "pod", "dry"]).status.success(),
        "dry-run=server created the pod"
    );
    assert_eq!(s.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert!(s.ok(&["auth", "whoami"]).contains("admin"));
    let out = s.ok(&["explain", "pods.spec.containers.image"]);
    assert!(
        out.contains("image") && out.contains("Container image name"),
        "{out}"
    );
    let out = s.ok(&["explain", "deployment.spec"]);
    assert!(out.contains("replicas"), "{out}");
    // diff: exit 1 when different, 0 when the same.
    let cm = s.ok(&["get", "cm", "cfg", "-o", "yaml"]);
    let changed = cm.replace("a: \"1\"", "a: \"2\"");
    let out = s.kubectl_full(
        "",
        &["diff", "-f", "-"],
        Some(&changed),
        &[("KUBECTL_EXTERNAL_DIFF", "diff -u")],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("+  a: \"2\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn delete_with_cascade_and_watch() {
    let s = Server::start();
    s.ok(&["create", "configmap", "w1"]);
    // A watch sees a later change.
    let mut watch = std::process::Command::new(support::kubectl_bin(""))
        .args([
            "get",
            "configmaps",
            "--watch",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watch");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.ok(&["create", "configmap", "w2"]);
    s.ok(&["delete", "configmap", "w1"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "ADDED w1"), "{text}");
    assert!(text.lines().any(|l| l == "ADDED w2"), "{text}");
    assert!(text.lines().any(|l| l == "DELETED w1"), "{text}");
    // --cascade=orphan: the deployment goes, its ReplicaSet stays, released
    // (the orphan finalizer is processed by the garbage collector).
    s.ok(&["create", "deployment", "keep", "--image=busybox"]);
    support::eventually("the ReplicaSet of keep", &s, || {
        !s.ok(&["get", "rs", "-l", "app=keep", "--no-headers"])
            .trim()
            .is_empty()
    });
    let out = s.kubectl(&["delete", "deployment", "keep", "--cascade=orphan"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s.kubectl(&["get", "deploy", "keep"]).status.success());
    support::eventually("the orphaned ReplicaSet released", &s, || {
        s.ok(&[
            "get",
            "rs",
            "-l",
            "app=keep",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ])
        .trim()
        .is_empty()
    });
    assert_eq!(
        s.ok(&["get", "rs", "-l", "app=keep", "--no-headers"])
            .lines()
            .count(),
        1
    );
    // Plain delete waits for the object to go.
    s.ok(&["create", "deployment", "gone", "--image=busybox"]);
    let out = s.ok(&["delete", "deployment", "gone"]);
    assert!(out.contains("deployment.apps \"gone\" deleted"), "{out}");
    assert!(!s.kubectl(&["get", "deploy", "gone"]).status.success());
}

#[test]
fn service_account_token_from_kubectl_create_token() {
    let s = Server::start();
    s.ok(&["create", "serviceaccount", "bot"]);
    let token = s.ok(&["create", "token", "bot", "--duration=1h"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let as_bot = s.token_kubeconfig(token);
    let as_bot = as_bot.to_str().unwrap_or_default();
    let who = s.ok(&["auth", "whoami", "--kubeconfig", as_bot]);
    assert!(who.contains("system:serviceaccount:default:bot"), "{who}");
    s.ok(&["delete", "serviceaccount", "bot"]);
    let out = s.kubectl(&["auth", "whoami", "--kubeconfig", as_bot]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Unauthorized"),
        "a deleted account's token still works: {stderr}"
    );
}
