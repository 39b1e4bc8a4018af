//! Logs, exec, attach, port-forward and cp through the real kubectl: the
//! API server proxies pods/log, pods/exec, pods/attach and
//! pods/portforward to the kubelet API, which reads CRI log files and
//! relays SPDY streams to containerd's streaming server. Needs root and
//! Debian's containerd, runc, containernetworking-plugins and
//! busybox-static, which .ci/run installs.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, eventually, eventually_within};

/// kubectl in the background (for -f and port-forward).
fn spawn_kubectl(s: &Server, args: &[&str]) -> Child {
    Command::new(support::kubectl_bin(""))
        .args(args)
        .env("KUBECONFIG", s.kubeconfig())
        .env("HOME", s.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl")
}

/// Wait for `child` at most `limit`; kill it and fail when it takes longer.
fn wait_output(mut child: Child, limit: Duration, what: &str) -> (i32, String, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut out)
                .expect("read stdout");
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read stderr");
            return (status.code().unwrap_or(-1), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn running(s: &Server, pod: &str) -> bool {
    s.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]) == "Running"
}

#[test]
fn logs_exec_attach_port_forward_and_cp() {
    if let Some(why) = support::agent_prerequisite_missing() {
        eprintln!("skipping the streaming end-to-end test: {why}");
        return;
    }
    let s = Server::start_with_agent();
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    let port = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "kubelet port {port:?}"
    );
    support::import_busybox(&s);
    let run = |name: &str, script: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            name,
            "--image=busybox:skiff",
            "--image-pull-policy=IfNotPresent",
        ];
        args.extend_from_slice(extra);
        args.extend(["--", "sh", "-c", script]);
        s.ok(&args);
    };
    run(
        "talker",
        "for i in 1 2 3 4 5; do echo line $i; done; sleep 0.5; echo oops >&2; sleep 3600",
        &[],
    );
    run(
        "ticker",
        "for i in 1 2 3 4; do echo tick $i; sleep 1; done",
        &["--restart=Never"],
    );
    run(
        "web",
        "mkdir -p /www && echo hello-through-port-forward > /www/index.html && httpd -f -p 8080 -h /www",
        &[],
    );
    run("crasher", "echo attempt; exit 1", &[]);
    eventually_within(Duration::from_secs(120), "talker Running", &s, || {
        running(&s, "talker")
    });

    // Logs: all, tail, limit, timestamps, container selection.
    eventually("talker's logs", &s, || {
        s.kubectl(&["logs", "talker"]).stdout.ends_with(b"oops\n")
    });
    assert_eq!(
        s.ok(&["logs", "talker"]),
        "line 1\nline 2\nline 3\nline 4\nline 5\noops\n"
    );
    assert_eq!(s.ok(&["logs", "talker", "--tail=2"]), "line 5\noops\n");
    assert_eq!(
        s.ok(&["logs", "talker", "-c", "talker", "--limit-bytes=4"]),
        "line"
    );
    let stamped = s.ok(&["logs", "talker", "--timestamps", "--tail=1"]);
    let (stamp, text) = stamped
        .trim_end()
        .split_once(' ')
        .expect("timestamped line");
    assert_eq!(text, "oops");
    assert!(stamp.starts_with("20") && stamp.contains('T'), "{stamped}");
    let err = s.fails(&["logs", "talker", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod talker"),
        "{err}"
    );
    let err = s.fails(&["logs", "talker", "--previous"]);
    assert!(
        err.contains("previous terminated container \"talker\" in pod \"talker\" not found"),
        "{err}"
    );
    let err = s.fails(&["logs", "no-such-pod"]);
    assert!(err.contains("pods \"no-such-pod\" not found"), "{err}");

    // Follow: ends when the container exits, with every line.
    eventually("ticker Running", &s, || running(&s, "ticker"));
    let follow = spawn_kubectl(&s, &["logs", "-f", "ticker"]);
    let (code, out, err) = wait_output(follow, Duration::from_secs(60), "kubectl logs -f");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "tick 1\ntick 2\ntick 3\ntick 4\n");

    // Exec: output, exit codes, stdin.
    assert_eq!(
        s.ok(&["exec", "talker", "--", "cat", "/etc/hostname"])
            .trim(),
        "talker"
    );
    let out = s.kubectl(&[
        "exec",
        "talker",
        "--",
        "sh",
        "-c",
        "echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));
    assert_eq!(
        s.ok_stdin(
            &["exec", "-i", "talker", "--", "sh", "-c", "tr a-z A-Z"],
            "hello stdin\n"
        ),
        "HELLO STDIN\n"
    );
    let err = s.fails(&["exec", "talker", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod talker"),
        "{err}"
    );

    // cp both ways (tar through exec).
    let local = s.data_dir().join("to-pod.txt");
    std::fs::write(&local, "copied in\n").expect("write local file");
    s.ok(&[
        "cp",
        local.to_str().expect("utf-8 path"),
        "talker:/tmp/in.txt",
    ]);
    assert_eq!(
        s.ok(&["exec", "talker", "--", "cat", "/tmp/in.txt"]),
        "copied in\n"
    );
    let back = s.data_dir().join("from-pod.txt");
    s.ok(&[
        "cp",
        "talker:/tmp/in.txt",
        back.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        std::fs::read_to_string(&back).expect("read copied file"),
        "copied in\n"
    );

    // Port-forward to busybox httpd.
    eventually("web Running", &s, || running(&s, "web"));
    let mut pf = spawn_kubectl(&s, &["port-forward", "pod/web", ":8080"]);
    let mut line = String::new();
    BufReader::new(pf.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("port-forward output");
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local_port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        body.clear();
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", local_port)) {
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("read timeout");
            let _ = c.write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n");
            let _ = c.read_to_string(&mut body);
            if body.contains("hello-through-port-forward") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(
        body.starts_with("HTTP/1.") && body.contains("hello-through-port-forward"),
        "{body}"
    );

    // Attach to a container reading its stdin.
    let manifest = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
      "spec": {"restartPolicy": "Never", "containers": [{"name": "reader", "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent",
        "stdin": true, "stdinOnce": true, "command": ["sh", "-c", "read l; echo got $l"]}]}}"#;
    s.ok_stdin(&["apply", "-f", "-"], manifest);
    eventually("reader Running", &s, || running(&s, "reader"));
    let out = s.kubectl_stdin(&["attach", "-i", "reader"], "over attach\n");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("got over attach"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Previous: the logs of the container before the last restart.
    eventually_within(Duration::from_secs(90), "crasher restarted", &s, || {
        s.ok(&[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .parse::<u32>()
        .unwrap_or(0)
            >= 1
    });
    assert_eq!(s.ok(&["logs", "crasher", "--previous"]), "attempt\n");

    // The kubelet's Summary API through nodes/proxy (what metrics-server reads).
    let node = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let summary: serde_json::Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ]))
    .expect("summary JSON");
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    assert!(
        summary["node"]["memory"]["availableBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{summary}"
    );
    let talker = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "talker"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(talker["containers"][0]["name"], "talker", "{summary}");
    assert!(
        talker["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0,
        "{talker}"
    );

    // Exec into a pod that is not bound to a node.
    s.ok(&[
        "run",
        "unbound",
        "--image=busybox:skiff",
        "--overrides",
        r#"{"spec": {"schedulerName": "none"}}"#,
    ]);
    let err = s.fails(&["exec", "unbound", "--", "true"]);
    assert!(err.contains("does not have a host assigned"), "{err}");

    s.ok(&[
        "delete",
        "pod",
        "--all",
        "--grace-period=1",
        "--timeout=90s",
    ]);
}
