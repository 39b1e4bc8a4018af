//! What the conformance suite's node tests check, in real containers
//! through the in-process node agent: the environment (envFrom keys such
//! as `data-1`, service links, limits defaulting to the node's
//! allocatable), the kubelet-managed /etc/hosts (hostAliases,
//! hostname.subdomain), sysctls, no_new_privs, supplemental groups and
//! fsGroup ownership of a secret volume read by a non-root user,
//! termination messages (a non-root user at a custom path, and the log
//! tail with FallbackToLogsOnError), activeDeadlineSeconds lowered on
//! a running pod, a pod rejected for a hostPort taken on the node, and
//! RuntimeClass handlers (runc runs; an unconfigured handler leaves the pod
//! Pending with FailedCreatePodSandBox).
//! Needs root and Debian's containerd, runc, containernetworking-plugins
//! and busybox-static, which .ci/run installs.

mod support;

use std::time::Duration;

use support::{Server, eventually, eventually_within};

/// Wait for `pod` to end in `phase` (Succeeded or Failed); on the other
/// one, show why.
fn ends(s: &Server, pod: &str, phase: &str) {
    eventually_within(
        Duration::from_secs(120),
        &format!("pod {pod} {phase}"),
        s,
        || {
            let now = s.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
            if (now == "Failed" || now == "Succeeded") && now != phase {
                let logs = s.kubectl(&["logs", pod]);
                panic!(
                    "pod {pod} is {now}: {}\nlogs: {}{}\n{}",
                    s.ok(&["get", "pod", pod, "-o", "jsonpath={.status}"]),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr),
                    s.ok(&["describe", "pod", pod])
                );
            }
            now == phase
        },
    );
}

fn logs(s: &Server, pod: &str) -> String {
    s.ok(&["logs", pod])
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: env-config}
data: {data-1: value-1, data-2: value-2}
---
apiVersion: v1
kind: Secret
metadata: {name: vol-secret}
stringData: {data-1: value-1}
---
apiVersion: v1
kind: Pod
metadata: {name: env}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    # The environment as the runtime gave it, without a shell between
    # (busybox's sh does not pass names such as data-1 on to its children).
    command: [env]
    envFrom:
    - configMapRef: {name: env-config}
    - configMapRef: {name: env-config}
      prefix: p-
    env:
    - name: MEMORY_LIMIT
      valueFrom: {resourceFieldRef: {resource: limits.memory}}
    - name: CPU_LIMIT
      valueFrom: {resourceFieldRef: {resource: limits.cpu}}
---
apiVersion: v1
kind: Pod
metadata: {name: hosts}
spec:
  restartPolicy: Never
  hostname: h1
  subdomain: sub
  hostAliases:
  - {ip: 123.45.67.89, hostnames: [foo.remote, bar.remote]}
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'cat /etc/hosts; echo "hostname=$(hostname)"']
---
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
    fsGroup: 1001
    supplementalGroups: [3000]
    sysctls: [{name: kernel.shm_rmid_forced, value: "1"}]
  volumes:
  - name: sec
    secret: {secretName: vol-secret, defaultMode: 0440}
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    securityContext: {allowPrivilegeEscalation: false}
    command:
    - sh
    - -c
    - |
      echo "uid=$(id -u) groups=$(id -G)"
      grep NoNewPrivs /proc/self/status
      echo "shm_rmid_forced=$(cat /proc/sys/kernel/shm_rmid_forced)"
      echo "mode=$(stat -L -c '%a %g' /etc/secret-volume/data-1)"
      echo "content=$(cat /etc/secret-volume/data-1)"
    volumeMounts: [{name: sec, mountPath: /etc/secret-volume}]
---
apiVersion: v1
kind: Pod
metadata: {name: term-file}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    securityContext: {runAsUser: 1000}
    terminationMessagePath: /dev/termination-custom-log
    command: [sh, -c, 'echo -n DONE > /dev/termination-custom-log']
---
apiVersion: v1
kind: Pod
metadata: {name: term-logs}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, 'echo -n DONE; false']
---
apiVersion: v1
kind: Pod
metadata: {name: deadline}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: skiff-runc}
handler: runc
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: skiff-unconfigured}
handler: nonexistent
---
apiVersion: v1
kind: Pod
metadata: {name: rc-runc}
spec:
  restartPolicy: Never
  runtimeClassName: skiff-runc
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [echo, ran]
---
apiVersion: v1
kind: Pod
metadata: {name: rc-unconfigured}
spec:
  terminationGracePeriodSeconds: 1
  runtimeClassName: skiff-unconfigured
  containers:
  - name: c
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
"#;

#[test]
fn node_behaviours_in_real_containers() {
    let Some(s) = support::node_ready("the node conformance end-to-end test") else {
        return;
    };
    support::import_busybox(&s);
    s.ok(&[
        "create",
        "service",
        "clusterip",
        "fooservice",
        "--tcp=8765:8080",
    ]);
    let service_ip = s.ok(&[
        "get",
        "service",
        "fooservice",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    eventually("the default service account", &s, || {
        s.kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
    });
    s.ok_stdin(&["apply", "-f", "-"], OBJECTS);

    // The environment: envFrom keys as they are (and prefixed), service
    // links, memory and cpu limits from the node's allocatable.
    ends(&s, "env", "Succeeded");
    let env = logs(&s, "env");
    for want in [
        "data-1=value-1",
        "data-2=value-2",
        "p-data-1=value-1",
        &format!("FOOSERVICE_SERVICE_HOST={service_ip}"),
        "FOOSERVICE_SERVICE_PORT=8765",
        &format!("FOOSERVICE_PORT=tcp://{service_ip}:8765"),
        "FOOSERVICE_PORT_8765_TCP_PROTO=tcp",
        "KUBERNETES_SERVICE_HOST=",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(want)),
            "{want} in:\n{env}"
        );
    }
    let memory: u64 = env
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY_LIMIT="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        memory > 1 << 20,
        "MEMORY_LIMIT from the node's memory:\n{env}"
    );
    assert!(env.lines().any(|l| l.starts_with("CPU_LIMIT=")), "{env}");

    // The kubelet-managed /etc/hosts.
    ends(&s, "hosts", "Succeeded");
    let hosts = logs(&s, "hosts");
    let ip = s.ok(&["get", "pod", "hosts", "-o", "jsonpath={.status.podIP}"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("\n{ip}\th1.sub.default.svc.cluster.local\th1\n")),
        "{hosts}"
    );
    assert!(
        hosts.contains("# Entries added by HostAliases.\n123.45.67.89\tfoo.remote\tbar.remote\n"),
        "{hosts}"
    );
    assert!(hosts.contains("hostname=h1"), "{hosts}");

    // Security: uid, fsGroup as a supplemental group, no_new_privs, the
    // sysctl, and a 0440 secret the fsGroup may read.
    ends(&s, "secure", "Succeeded");
    let secure = logs(&s, "secure");
    assert!(secure.contains("uid=1000 groups="), "{secure}");
    let groups = secure
        .lines()
        .find_map(|l| l.split_once("groups=").map(|(_, g)| g.to_string()))
        .unwrap_or_default();
    for g in ["1001", "3000"] {
        assert!(groups.split(' ').any(|x| x == g), "group {g} in {secure}");
    }
    assert!(secure.contains("NoNewPrivs:\t1"), "{secure}");
    assert!(secure.contains("shm_rmid_forced=1"), "{secure}");
    assert!(secure.contains("mode=440 1001"), "{secure}");
    assert!(secure.contains("content=value-1"), "{secure}");

    // Termination messages.
    ends(&s, "term-file", "Succeeded");
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "term-file",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.message}"
        ]),
        "DONE"
    );
    ends(&s, "term-logs", "Failed");
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "term-logs",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.message}"
        ]),
        "DONE"
    );

    // activeDeadlineSeconds set on a running pod: killed, Failed, DeadlineExceeded.
    eventually("deadline Running", &s, || {
        s.ok(&["get", "pod", "deadline", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    s.ok(&[
        "patch",
        "pod",
        "deadline",
        "--type=merge",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":1}}"#,
    ]);
    ends(&s, "deadline", "Failed");
    assert_eq!(
        s.ok(&["get", "pod", "deadline", "-o", "jsonpath={.status.reason}"]),
        "DeadlineExceeded"
    );
    assert!(
        s.ok(&[
            "get",
            "pod",
            "deadline",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated}"
        ])
        .contains("exitCode"),
    );

    // A pod whose hostPort is taken on the node is not admitted: Failed
    // with reason NodePorts (so that a controller replaces it).
    let port = 20000 + std::process::id() % 10000;
    let host_port_pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:skiff\n    imagePullPolicy: IfNotPresent\n    command: [sleep, \"3600\"]\n    ports: [{{containerPort: 80, hostPort: {port}}}]\n",
            node = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]),
        )
    };
    s.ok_stdin(&["apply", "-f", "-"], &host_port_pod("port-a"));
    eventually("port-a Running", &s, || {
        s.ok(&["get", "pod", "port-a", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    s.ok_stdin(&["apply", "-f", "-"], &host_port_pod("port-b"));
    ends(&s, "port-b", "Failed");
    assert_eq!(
        s.ok(&["get", "pod", "port-b", "-o", "jsonpath={.status.reason}"]),
        "NodePorts"
    );
    assert_eq!(
        s.ok(&["get", "pod", "port-a", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );

    // RuntimeClass handlers: runc (containerd's runtime) runs; a handler
    // containerd does not know creates no sandbox and the pod stays Pending.
    ends(&s, "rc-runc", "Succeeded");
    assert_eq!(logs(&s, "rc-runc").trim(), "ran");
    eventually("FailedCreatePodSandBox naming the handler", &s, || {
        s.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=rc-unconfigured",
            "-o",
            r#"jsonpath={range .items[*]}{.type} {.reason}: {.message}{"\n"}{end}"#,
        ])
        .lines()
        .any(|l| l.starts_with("Warning FailedCreatePodSandBox: ") && l.contains("nonexistent"))
    });
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "rc-unconfigured",
            "-o",
            "jsonpath={.status.phase}"
        ]),
        "Pending"
    );

    s.ok(&[
        "delete",
        "pod",
        "--all",
        "--grace-period=1",
        "--timeout=90s",
    ]);
}

/// `kubectl debug` adds an ephemeral container through the
/// pods/ephemeralcontainers subresource; the kubelet starts it in the
/// target's PID namespace and reports it, and `kubectl exec` reaches it
/// (the conformance suite's "will start an ephemeral container in an
/// existing pod").
#[test]
fn ephemeral_containers_run_through_kubectl_debug() {
    let Some(s) = support::node_ready("the ephemeral container end-to-end test") else {
        return;
    };
    support::import_busybox(&s);
    eventually("the default service account", &s, || {
        s.kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
    });
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: target}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: main\n    image: busybox:skiff\n    imagePullPolicy: IfNotPresent\n    \
         command: [sh, -c, 'echo main-running; sleep 3600']\n",
    );
    eventually("the target pod Running", &s, || {
        s.ok(&["get", "pod", "target", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    s.ok(&[
        "debug",
        "target",
        "--image=busybox:skiff",
        "--image-pull-policy=IfNotPresent",
        "--target=main",
        "--container=debugger",
        "--",
        "sleep",
        "3599",
    ]);
    eventually("the ephemeral container running", &s, || {
        s.ok(&[
            "get",
            "pod",
            "target",
            "-o",
            "jsonpath={.status.ephemeralContainerStatuses[0].state.running.startedAt}",
        ]) != ""
    });
    // In the target's PID namespace it sees the main container's process
    // (`sleep 3600`, which the shell exec'd; its own is `sleep 3599`).
    let ps = s.ok(&["exec", "target", "-c", "debugger", "--", "ps"]);
    assert!(ps.contains("sleep 3600"), "{ps}");
    assert_eq!(
        s.ok(&[
            "exec",
            "target",
            "-c",
            "debugger",
            "--",
            "echo",
            "from-debugger"
        ])
        .trim(),
        "from-debugger"
    );
}
