//! Pod volumes in real containers through the in-process node agent:
//! configMap, secret, downwardAPI, projected service account token,
//! emptyDir (on disk and in memory) shared with an init container, a
//! missing configMap (FailedMount), a configMap update reaching a running
//! container, and the pod's resolv.conf. Needs root and Debian's
//! containerd, runc, containernetworking-plugins and busybox-static, which
//! .ci/run installs.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, eventually, eventually_within};

/// The mount points under `dir` (from /proc/self/mountinfo).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Unmounts whatever the test left mounted under the data directory, so
/// that a failed run leaks no tmpfs.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        let mut left = mounts_under(&self.0);
        left.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in left {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&m)
                .status();
        }
    }
}

/// Wait for `pod` to reach phase Succeeded; on Failed, show why.
fn succeeded(s: &Server, pod: &str) {
    eventually_within(
        Duration::from_secs(120),
        &format!("pod {pod} Succeeded"),
        s,
        || {
            let phase = s.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
            if phase == "Failed" {
                let logs = s.kubectl(&["logs", pod]);
                panic!(
                    "pod {pod} failed: {}\nlogs: {}{}\nevents: {}",
                    s.ok(&[
                        "get",
                        "pod",
                        pod,
                        "-o",
                        "jsonpath={.status.containerStatuses}"
                    ]),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr),
                    s.ok(&["describe", "pod", pod])
                );
            }
            phase == "Succeeded"
        },
    );
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello, other: x}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: vols}
spec:
  restartPolicy: Never
  volumes:
  - name: cfg
    configMap: {name: app-config, items: [{key: greeting, path: greeting}]}
  - name: sec
    secret: {secretName: creds, defaultMode: 0400}
  - name: shared
    emptyDir: {}
  - name: mem
    emptyDir: {medium: Memory}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: kube-api-access-test
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}
  initContainers:
  - name: writer
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo from-init > /shared/msg"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: check
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      set -e
      fail() { echo "FAILED: $1"; ls -la /cfg/ /sec/ /mem/ /shared/; grep -E " /(cfg|sec|mem|shared|info) " /proc/self/mountinfo; exit 1; }
      test "$(cat /cfg/greeting)" = hello || fail configmap
      test ! -e /cfg/other || fail items
      test "$(cat /sec/password)" = s3cret || fail secret
      test "$(stat -L -c %a /sec/password)" = 400 || fail secret-mode
      test "$(cat /shared/msg)" = from-init || fail emptydir
      test "$(cat /shared-sub)" = from-init || fail subpath
      grep -q 'app="vols"' /info/labels || fail downward
      t=/var/run/secrets/kubernetes.io/serviceaccount
      test -s $t/token || fail token
      test "$(cut -d. -f1 $t/token | wc -c)" -gt 10 || fail token-jwt
      test "$(cat $t/namespace)" = default || fail namespace
      grep -q "BEGIN CERTIFICATE" $t/ca.crt || fail ca
      grep -q " /mem .* - tmpfs " /proc/self/mountinfo || fail tmpfs
      if touch /cfg/new 2>/dev/null; then fail read-only; fi
      echo scratch > /mem/x
      grep -q "^nameserver CLUSTER_DNS" /etc/resolv.conf || fail nameserver
      grep -q "^search default.svc.cluster.local svc.cluster.local cluster.local" /etc/resolv.conf || fail search
      grep -q "ndots:5" /etc/resolv.conf || fail ndots
      echo all volumes good
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
    - {name: shared, mountPath: /shared}
    - {name: shared, mountPath: /shared-sub, subPath: msg}
    - {name: mem, mountPath: /mem}
    - {name: info, mountPath: /info}
    - {name: kube-api-access-test, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}
"#;

const MISSING: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: nocfg}
spec:
  restartPolicy: Never
  volumes:
  - name: cfg
    configMap: {name: late-config}
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'test "$(cat /cfg/k)" = v1']
    volumeMounts: [{name: cfg, mountPath: /cfg}]
"#;

const UPDATED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: live-config}
data: {k: v1}
---
apiVersion: v1
kind: Pod
metadata: {name: watcher}
spec:
  restartPolicy: Never
  volumes:
  - name: cfg
    configMap: {name: live-config}
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'test "$(cat /cfg/k)" = v1 || exit 3; while [ "$(cat /cfg/k)" != v2 ]; do sleep 1; done']
    volumeMounts: [{name: cfg, mountPath: /cfg}]
"#;

#[test]
fn volumes_in_real_containers() {
    if let Some(why) = support::agent_prerequisite_missing() {
        eprintln!("skipping the volumes end-to-end test: {why}");
        return;
    }
    let s = Server::start_with_agent();
    let _unmount = Unmounter(s.data_dir().to_path_buf());
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    support::import_busybox(&s);
    // The token's service account and the root CA come from the controllers.
    eventually("the default service account", &s, || {
        s.kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
    });
    eventually("kube-root-ca.crt", &s, || {
        s.kubectl(&["get", "configmap", "kube-root-ca.crt"])
            .status
            .success()
    });

    s.ok_stdin(
        &["apply", "-f", "-"],
        &OBJECTS.replace("CLUSTER_DNS", &s.cluster_dns()),
    );
    succeeded(&s, "vols");
    let uid = s.ok(&["get", "pod", "vols", "-o", "jsonpath={.metadata.uid}"]);
    let pod_dir = s.data_dir().join("agent/pods").join(&uid);
    assert!(
        pod_dir
            .join("volumes/kubernetes.io~configmap/cfg/..data")
            .exists(),
        "{}",
        pod_dir.display()
    );
    assert!(
        !mounts_under(&pod_dir).is_empty(),
        "the secret, projection and memory emptyDir are tmpfs"
    );

    // A missing configMap: ContainerCreating with FailedMount, until it exists.
    s.ok_stdin(&["apply", "-f", "-"], MISSING);
    eventually("FailedMount for nocfg", &s, || {
        let d = s.ok(&["describe", "pod", "nocfg"]);
        d.contains("FailedMount")
            && d.contains(
                "MountVolume.SetUp failed for volume \"cfg\" : configmap \"late-config\" not found",
            )
    });
    let row = s.ok(&["get", "pod", "nocfg", "--no-headers"]);
    assert!(row.contains("ContainerCreating"), "{row}");
    s.ok(&["create", "configmap", "late-config", "--from-literal=k=v1"]);
    succeeded(&s, "nocfg");

    // An update reaches a running container through the ..data swap.
    s.ok_stdin(&["apply", "-f", "-"], UPDATED);
    eventually("watcher Running", &s, || {
        s.ok(&["get", "pod", "watcher", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    s.ok(&[
        "patch",
        "configmap",
        "live-config",
        "--type=merge",
        "-p",
        r#"{"data":{"k":"v2"}}"#,
    ]);
    succeeded(&s, "watcher");

    // Deleting the pods unmounts and removes their volumes.
    s.ok(&[
        "delete",
        "pod",
        "vols",
        "nocfg",
        "watcher",
        "--grace-period=1",
        "--timeout=90s",
    ]);
    eventually("the volumes removed", &s, || !pod_dir.exists());
    assert!(
        mounts_under(&s.data_dir().join("agent/pods")).is_empty(),
        "{:?}",
        mounts_under(&s.data_dir().join("agent/pods"))
    );
}
