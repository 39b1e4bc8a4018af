//! Probes, lifecycle hooks, crash loops and memory limits with real
//! containers (containerd + runc through the in-process node agent) and
//! the real kubectl. Needs root and Debian's containerd, runc,
//! containernetworking-plugins and busybox-static, which .ci/run installs.
//!
//! One server runs every scenario: the pods are created together and each
//! is then checked on its own.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, eventually, eventually_within};

/// A server with the agent, its node Ready and busybox:skiff imported.
fn server_with_busybox() -> Server {
    let s = Server::start_with_agent();
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    support::import_busybox(&s);
    s
}

fn pod(name: &str, spec: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}).to_string()
}

fn container(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]})
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// The (reason, message) of the events about pod `name`.
fn events(s: &Server, name: &str) -> Vec<(String, String)> {
    let list = s.json(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ]);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    (
                        e["reason"].as_str().unwrap_or_default().to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn condition(p: &Value, kind: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn probes_hooks_crash_loops_and_oom() {
    if let Some(why) = support::agent_prerequisite_missing() {
        eprintln!("skipping the probes end-to-end test: {why}");
        return;
    }
    let s = server_with_busybox();

    // (1) An init container, then a container that becomes ready only once
    // /tmp/ready exists (it creates the file after 8 s).
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "ready",
            json!({
                "initContainers": [container("init", "echo init done")],
                "containers": [with(container("app", "sleep 8; touch /tmp/ready; sleep 3600"), json!({
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
                }))],
            }),
        ),
    );
    // (2) A liveness probe that always fails.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "live",
            json!({
                "terminationGracePeriodSeconds": 1,
                "containers": [with(container("app", "sleep 3600"), json!({
                    "livenessProbe": {"exec": {"command": ["sh", "-c", "echo not alive; exit 1"]}, "periodSeconds": 1, "failureThreshold": 2},
                }))],
            }),
        ),
    );
    // (6) httpGet readiness against busybox httpd (404 until /www/healthz
    // exists) and a tcpSocket liveness probe on the same port.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "web",
            json!({
                "containers": [with(container("app", "mkdir -p /www; httpd -f -p 8080 -h /www & sleep 6; echo ok > /www/healthz; wait"), json!({
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "initialDelaySeconds": 2},
                }))],
            }),
        ),
    );
    // (3) A container that crashes at once.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "crash",
            json!({"containers": [container("app", "echo crashing; exit 1")]}),
        ),
    );
    // (5) A container that allocates beyond its 20Mi memory limit (tail
    // keeps the newline-less /dev/zero in memory).
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "oom",
            json!({"containers": [with(container("app", "tail /dev/zero"), json!({"resources": {"limits": {"memory": "20Mi"}}}))]}),
        ),
    );

    // (1): Running but not ready while the file is missing, then ready.
    let created = Instant::now();
    eventually("ready Running", &s, || {
        s.json(&["get", "pod", "ready"])["status"]["phase"] == "Running"
    });
    let p = s.json(&["get", "pod", "ready"]);
    assert_eq!(condition(&p, "Initialized"), "True", "{p:#}");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed",
        "{p:#}"
    );
    if created.elapsed() < Duration::from_secs(6) {
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], false, "{p:#}");
        assert_eq!(condition(&p, "Ready"), "False", "{p:#}");
        assert_eq!(condition(&p, "ContainersReady"), "False", "{p:#}");
    }
    eventually("ready Ready", &s, || {
        condition(&s.json(&["get", "pod", "ready"]), "Ready") == "True"
    });
    assert!(
        created.elapsed() >= Duration::from_secs(8),
        "ready before the file existed: {:?}",
        created.elapsed()
    );
    let p = s.json(&["get", "pod", "ready"]);
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    assert_eq!(p["status"]["containerStatuses"][0]["started"], true);
    assert_eq!(condition(&p, "ContainersReady"), "True");
    assert!(
        s.ok(&["get", "pod", "ready", "--no-headers"])
            .contains("1/1")
    );
    let ev = events(&s, "ready");
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Unhealthy" && m.starts_with("Readiness probe failed")),
        "{ev:?}"
    );

    // (6): ready once the page is there, never restarted.
    eventually("web Ready", &s, || {
        condition(&s.json(&["get", "pod", "web"]), "Ready") == "True"
    });
    let ev = events(&s, "web");
    assert!(
        ev.iter().any(|(r, m)| r == "Unhealthy"
            && m == "Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{ev:?}"
    );
    let p = s.json(&["get", "pod", "web"]);
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p:#}"
    );

    // (2): killed and restarted, again and again.
    eventually("live restarted twice", &s, || {
        s.json(&["get", "pod", "live"])["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    });
    let ev = events(&s, "live");
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Unhealthy" && m == "Liveness probe failed: not alive"),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|(r, m)| r == "Killing"
            && m == "Container app failed liveness probe, will be restarted"),
        "{ev:?}"
    );
    let p = s.json(&["get", "pod", "live"]);
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137,
        "{p:#}"
    );

    // (3): CrashLoopBackOff with a growing restart count.
    let mut saw_backoff = false;
    eventually("crash restarted twice", &s, || {
        let p = s.json(&["get", "pod", "crash"]);
        let c = &p["status"]["containerStatuses"][0];
        saw_backoff |= c["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        c["restartCount"].as_i64().unwrap_or(0) >= 2
    });
    eventually("crash in CrashLoopBackOff", &s, || {
        saw_backoff |= s
            .ok(&["get", "pod", "crash", "--no-headers"])
            .contains("CrashLoopBackOff");
        saw_backoff
    });
    let p = s.json(&["get", "pod", "crash"]);
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 1, "{p:#}");
    assert_eq!(last["reason"], "Error", "{p:#}");
    let ev = events(&s, "crash");
    assert!(
        ev.iter()
            .any(|(r, m)| r == "BackOff"
                && m.starts_with("Back-off restarting failed container app")),
        "{ev:?}"
    );

    // (5): OOMKilled.
    eventually("oom OOMKilled", &s, || {
        let p = s.json(&["get", "pod", "oom"]);
        let c = &p["status"]["containerStatuses"][0];
        c["lastState"]["terminated"]["reason"] == "OOMKilled"
            || c["state"]["terminated"]["reason"] == "OOMKilled"
    });
    let p = s.json(&["get", "pod", "oom"]);
    let c = &p["status"]["containerStatuses"][0];
    let t = if c["lastState"]["terminated"].is_object() {
        &c["lastState"]["terminated"]
    } else {
        &c["state"]["terminated"]
    };
    assert_eq!(t["exitCode"], 137, "{p:#}");

    s.ok(&[
        "delete",
        "pod",
        "ready",
        "web",
        "live",
        "crash",
        "oom",
        "--grace-period=1",
        "--timeout=60s",
    ]);

    // (4) A pod deleted with a preStop hook: the hook writes to the
    // container's output, sleeps 3 s, and only then does the container get
    // its SIGTERM (which its trap also writes to the output).
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "stop",
            json!({
                "terminationGracePeriodSeconds": 30,
                "containers": [with(container("app", "trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 1; done"), json!({
                    "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop-ran > /proc/1/fd/1; sleep 3"]}}},
                }))],
            }),
        ),
    );
    eventually("stop Running", &s, || {
        s.json(&["get", "pod", "stop"])["status"]["phase"] == "Running"
    });
    let uid = s.json(&["get", "pod", "stop"])["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The agent keeps container logs in <its data dir>/pods (the server's agent: <data dir>/agent).
    let log = ["agent/pods", "pods"]
        .iter()
        .map(|d| {
            s.data_dir()
                .join(d)
                .join(format!("default_stop_{uid}"))
                .join("app")
                .join("0.log")
        })
        .find(|p| p.parent().is_some_and(Path::exists))
        .unwrap_or_else(|| {
            panic!(
                "no log directory for pod stop under {}",
                s.data_dir().display()
            )
        });
    eventually("the container's log", &s, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("up")
    });
    let began = Instant::now();
    s.ok(&["delete", "pod", "stop", "--wait=false"]);
    let mut output = String::new();
    eventually_within(
        Duration::from_secs(40),
        "the preStop hook, then SIGTERM",
        &s,
        || {
            if let Ok(text) = std::fs::read_to_string(&log) {
                output = text;
            }
            output.contains("got-term")
        },
    );
    let (hook, term) = (output.find("prestop-ran"), output.find("got-term"));
    assert!(
        matches!((hook, term), (Some(h), Some(t)) if h < t),
        "the preStop hook ran before SIGTERM: {output}"
    );
    assert!(
        began.elapsed() >= Duration::from_secs(3),
        "SIGTERM came before the hook's 3 s: {:?}",
        began.elapsed()
    );
    eventually("stop deleted", &s, || {
        s.ok(&["get", "pods", "--no-headers"]).trim().is_empty()
    });
    let ev = events(&s, "stop");
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Killing" && m == "Stopping container app"),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|(r, _)| r == "FailedPreStopHook"), "{ev:?}");
}
