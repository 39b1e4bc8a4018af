//! The kubelet honours the security context in real containers
//! (containerd + runc through the in-process node agent): runAsNonRoot
//! refuses busybox:skiff (an image that runs as root) with the kubelet's
//! CreateContainerConfigError, readOnlyRootFilesystem, capabilities drop
//! ALL, seccompProfile RuntimeDefault and allowPrivilegeEscalation=false
//! (no_new_privs) take effect, a container without a profile runs
//! unconfined, and the pod's token volume is private to root on the
//! node; a subPath through a symlink out of its volume creates nothing
//! on the host. Needs root and Debian's containerd, runc,
//! containernetworking-plugins and busybox-static, which .ci/run installs.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, eventually, eventually_within};

fn container(name: &str, script: &str, security: Value) -> Value {
    json!({"name": name, "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script], "securityContext": security})
}

fn with_mounts(mut c: Value, mounts: Value) -> Value {
    c["volumeMounts"] = mounts;
    c
}

fn create(s: &Server, name: &str, spec: Value) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
    s.ok_stdin(&["create", "-f", "-"], &pod.to_string());
}

fn logs(s: &Server, pod: &str, container: &str) -> String {
    s.ok(&["logs", pod, "-c", container])
}

#[test]
fn the_kubelet_honours_security_contexts() {
    let Some(s) = support::node_ready("the security context end-to-end test") else {
        return;
    };
    support::import_busybox(&s);

    create(
        &s,
        "nonroot",
        json!({"restartPolicy": "Never", "securityContext": {"runAsNonRoot": true},
            "containers": [container("app", "true", json!({}))]}),
    );
    create(
        &s,
        "hardened",
        json!({"restartPolicy": "Never", "containers": [
            container("readonly", "touch /x; echo rc=$?", json!({"readOnlyRootFilesystem": true})),
            container("nocaps", "touch /f && chown 1:1 /f; echo rc=$?", json!({"capabilities": {"drop": ["ALL"]}})),
            container("caps", "touch /f && chown 1:1 /f; echo rc=$?", json!({})),
            container("seccomp", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status",
                json!({"seccompProfile": {"type": "RuntimeDefault"}, "allowPrivilegeEscalation": false})),
            container("plain", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status", json!({})),
        ]}),
    );

    // An init container links a name in an emptyDir to a directory of
    // the host; a subPath through that link must not create anything there.
    let outside = s.data_dir().join("outside");
    std::fs::create_dir_all(&outside).expect("a host directory");
    let link = format!("ln -s {} /vol/a", outside.display());
    create(
        &s,
        "subpath",
        json!({"restartPolicy": "Never", "volumes": [{"name": "vol", "emptyDir": {}}],
            "initContainers": [with_mounts(container("link", &link, json!({})), json!([{"name": "vol", "mountPath": "/vol"}]))],
            "containers": [with_mounts(container("app", "true", json!({})),
                json!([{"name": "vol", "mountPath": "/x", "subPath": "a/x.service.d"}]))]}),
    );

    let expected = "container has runAsNonRoot and image will run as root (pod: \"nonroot_default(";
    eventually(
        "nonroot refused with CreateContainerConfigError",
        &s,
        || {
            let p = s.json(&["get", "pod", "nonroot"]);
            let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            w["reason"] == "CreateContainerConfigError"
                && w["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(expected) && m.ends_with(")\", container: app)"))
        },
    );
    let p = s.json(&["get", "pod", "nonroot"]);
    // Its volumes are set up: the service account token's tmpfs is not
    // world-writable and no other user of the node reaches it.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let pods = s.data_dir().join("agent/pods");
        let uid = p["metadata"]["uid"].as_str().expect("the pod's uid");
        assert_eq!(mode(&pods), 0o750);
        assert_eq!(mode(&pods.join(uid)), 0o750);
        let projected = pods.join(uid).join("volumes/kubernetes.io~projected");
        let token_dir = std::fs::read_dir(&projected)
            .expect("the pod's projected volumes")
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("kube-api-access-")
            })
            .expect("the service account token volume")
            .path();
        assert_eq!(mode(&token_dir), 0o755);
        assert!(token_dir.join("token").is_file());
    }
    assert!(
        p["status"]["containerStatuses"][0]["state"]["running"].is_null(),
        "{p:#}"
    );

    eventually_within(
        Duration::from_secs(120),
        "pod hardened Succeeded",
        &s,
        || {
            let phase = s.ok(&["get", "pod", "hardened", "-o", "jsonpath={.status.phase}"]);
            assert_ne!(
                phase,
                "Failed",
                "{}",
                s.ok(&["describe", "pod", "hardened"])
            );
            phase == "Succeeded"
        },
    );
    let readonly = logs(&s, "hardened", "readonly");
    assert!(readonly.contains("Read-only file system"), "{readonly}");
    assert!(readonly.contains("rc=1"), "{readonly}");
    let nocaps = logs(&s, "hardened", "nocaps");
    assert!(nocaps.contains("Operation not permitted"), "{nocaps}");
    assert!(nocaps.contains("rc=1"), "{nocaps}");
    assert_eq!(logs(&s, "hardened", "caps").trim(), "rc=0");
    let seccomp = logs(&s, "hardened", "seccomp");
    assert!(seccomp.contains("Seccomp:\t2"), "{seccomp}");
    assert!(seccomp.contains("NoNewPrivs:\t1"), "{seccomp}");
    let plain = logs(&s, "hardened", "plain");
    assert!(plain.contains("Seccomp:\t0"), "{plain}");
    assert!(plain.contains("NoNewPrivs:\t0"), "{plain}");

    eventually("the subPath through a link refused", &s, || {
        let p = s.json(&["get", "pod", "subpath"]);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        w["reason"] == "CreateContainerConfigError"
            && w["message"]
                == "failed to create subPath directory for volumeMount \"vol\" of container \"app\""
    });
    assert!(!outside.join("x.service.d").exists());
}
