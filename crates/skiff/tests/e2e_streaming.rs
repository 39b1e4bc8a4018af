//! Logs, exec, attach, port-forward and cp through the real kubectl: the
//! API server proxies pods/log, pods/exec, pods/attach and
//! pods/portforward to the kubelet API, which reads CRI log files and
//! relays SPDY streams to containerd's streaming server. kubectl 1.32
//! tries WebSocket first (exec/attach/cp as v5.channel.k8s.io, which the
//! API server translates to SPDY; port-forward as SPDY tunnelled in a
//! WebSocket); a raw WebSocket client checks what the server answers on
//! that path. Needs root and
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
    let Some(s) = support::node_ready("the streaming end-to-end test") else {
        return;
    };
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

/// A raw WebSocket client over TLS to the test server (kubectl hides which
/// protocol it used; this shows what the server answers).
mod wsclient {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;

    use base64::Engine;

    use super::support::Server;

    pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

    fn kubeconfig_field(s: &Server, field: &str) -> String {
        std::fs::read_to_string(s.kubeconfig())
            .expect("read kubeconfig")
            .lines()
            .find_map(|l| l.trim().strip_prefix(field).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {field} in the kubeconfig"))
    }

    fn connect(s: &Server) -> Tls {
        let ca = base64::engine::general_purpose::STANDARD
            .decode(kubeconfig_field(s, "certificate-authority-data:"))
            .expect("CA base64");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &ca[..]) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
        let tcp = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .expect("read timeout");
        rustls::StreamOwned::new(conn, tcp)
    }

    /// Open a WebSocket on `path` offering `protocols`: the status code and
    /// the response headers (lower-case names), and the stream.
    pub fn open(s: &Server, path: &str, protocols: &str) -> (u16, Vec<(String, String)>, Tls) {
        let mut tls = connect(s);
        // The admin's bearer token (the kubeconfig holds its certificate).
        let token = std::fs::read_to_string(s.data_dir().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n",
            s.port
        );
        tls.write_all(req.as_bytes()).expect("send upgrade");
        // The head, byte by byte so that no frame is consumed.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tls.read_exact(&mut b).expect("read response head");
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let code = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (code, headers, tls)
    }

    pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Read one message: (opcode, payload); None when the stream ends.
    pub fn read_message(tls: &mut Tls) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        tls.read_exact(&mut h).ok()?;
        let opcode = h[0] & 0x0F;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                tls.read_exact(&mut b).expect("length");
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                tls.read_exact(&mut b).expect("length");
                usize::try_from(u64::from_be_bytes(b)).expect("length")
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).expect("payload");
        Some((opcode, payload))
    }

    /// Read messages until the server closes: (opcode, payload) of each.
    pub fn read_all(tls: &mut Tls) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((opcode, payload)) = read_message(tls) {
            out.push((opcode, payload));
            if opcode == 0x8 {
                // Answer the close, as a client must.
                let _ = tls.write_all(&[0x88, 0x80, 0, 0, 0, 0]);
                break;
            }
        }
        out
    }

    /// Send one binary message (masked, as a client must).
    pub fn send(tls: &mut Tls, payload: &[u8]) {
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        assert!(payload.len() < 126, "short messages only");
        let mut f = vec![0x82, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tls.write_all(&f).expect("send message");
    }

    /// The data of the messages on one channel (first payload byte).
    pub fn channel(messages: &[(u8, Vec<u8>)], ch: u8) -> String {
        messages
            .iter()
            .filter(|(op, p)| *op == 0x2 && p.first() == Some(&ch))
            .map(|(_, p)| String::from_utf8_lossy(&p[1..]).into_owned())
            .collect()
    }
}

#[test]
fn websocket_exec_logs_and_port_forward() {
    use base64::Engine;
    use wsclient::{channel, header, open, read_all};

    let Some(s) = support::node_ready("the websocket end-to-end test") else {
        return;
    };
    support::import_busybox(&s);
    s.ok(&[
        "run",
        "alive",
        "--image=busybox:skiff",
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo container is alive; mkdir -p /www && echo through-the-tunnel > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    eventually_within(Duration::from_secs(120), "alive Running", &s, || {
        running(&s, "alive")
    });
    let pod = "/api/v1/namespaces/default/pods/alive";

    // exec over v5.channel.k8s.io (kubectl 1.31+'s only offer): stdout on
    // channel 1, stderr on 2, the exit status as a Status on 3, then close.
    let cmd = "command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203";
    let (code, headers, mut ws) = open(
        &s,
        &format!("{pod}/exec?{cmd}&stdout=1&stderr=1"),
        "v5.channel.k8s.io",
    );
    assert_eq!(code, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    let messages = read_all(&mut ws);
    assert_eq!(channel(&messages, 1), "out\n", "{messages:?}");
    assert_eq!(channel(&messages, 2), "err\n", "{messages:?}");
    let status: serde_json::Value =
        serde_json::from_str(&channel(&messages, 3)).expect("status JSON on channel 3");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(
        status["details"]["causes"][0]["reason"], "ExitCode",
        "{status}"
    );
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
    assert_eq!(messages.last().map(|m| m.0), Some(0x8), "ends with a close");

    // The conformance test's form: channel.k8s.io, spliced to containerd.
    let (code, headers, mut ws) = open(
        &s,
        &format!(
            "{pod}/exec?command=echo&command=remote%20execution%20test&stdout=1&stderr=1&container=alive"
        ),
        "channel.k8s.io",
    );
    assert_eq!(code, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("channel.k8s.io")
    );
    let messages = read_all(&mut ws);
    assert_eq!(
        channel(&messages, 1),
        "remote execution test\n",
        "{messages:?}"
    );

    // stdin over v5: data on channel 0, then v5's close signal [255, 0]
    // ends the SPDY stdin stream to the kubelet, so `tr` sees EOF.
    let (code, headers, mut ws) = open(
        &s,
        &format!("{pod}/exec?command=tr&command=a-z&command=A-Z&stdin=1&stdout=1&stderr=1"),
        "v5.channel.k8s.io",
    );
    assert_eq!(code, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    wsclient::send(&mut ws, b"\x00hello stdin\n");
    wsclient::send(&mut ws, &[255, 0]);
    let messages = read_all(&mut ws);
    assert_eq!(channel(&messages, 1), "HELLO STDIN\n", "{messages:?}");
    let status: serde_json::Value =
        serde_json::from_str(&channel(&messages, 3)).expect("status JSON on channel 3");
    assert_eq!(status["status"], "Success", "{status}");

    // Logs: binary messages, then a close (↔ the conformance test).
    let (code, headers, mut ws) = open(&s, &format!("{pod}/log?container=alive"), "binary.k8s.io");
    assert_eq!(code, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("binary.k8s.io")
    );
    let messages = read_all(&mut ws);
    let text: String = messages
        .iter()
        .filter(|(op, _)| *op == 0x2)
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(text, "container is alive\n", "{messages:?}");
    assert_eq!(messages.last().map(|m| m.0), Some(0x8), "ends with a close");
    // base64 in text messages.
    let (code, _, mut ws) = open(&s, &format!("{pod}/log"), "base64.binary.k8s.io");
    assert_eq!(code, 101);
    let decoded: Vec<u8> = read_all(&mut ws)
        .iter()
        .filter(|(op, _)| *op == 0x1)
        .flat_map(|(_, p)| {
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("base64 message")
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&decoded), "container is alive\n");

    // Port-forward: the server accepts kubectl's SPDY-in-WebSocket tunnel.
    let (code, headers, _) = open(
        &s,
        &format!("{pod}/portforward"),
        "SPDY/3.1+portforward.k8s.io",
    );
    assert_eq!(code, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("SPDY/3.1+portforward.k8s.io")
    );
    // The older WebSocket port-forward (v4.channel.k8s.io, as the e2e
    // suite's test): spliced to containerd; each port's data and error
    // channels first carry the port, then the data channel the bytes.
    let (code, headers, mut ws) = open(
        &s,
        &format!("{pod}/portforward?ports=8080"),
        "v4.channel.k8s.io",
    );
    assert_eq!(code, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("v4.channel.k8s.io")
    );
    wsclient::send(&mut ws, b"\x00GET / HTTP/1.0\r\n\r\n");
    let mut seen = Vec::new();
    let mut forwarded = String::new();
    while let Some((_, payload)) = wsclient::read_message(&mut ws) {
        if payload.len() == 3 && payload[1..] == 8080u16.to_le_bytes() {
            seen.push(payload[0]);
            continue;
        }
        if payload.first() == Some(&0) {
            forwarded.push_str(&String::from_utf8_lossy(&payload[1..]));
            if forwarded.contains("through-the-tunnel") {
                break;
            }
        }
    }
    assert!(forwarded.contains("through-the-tunnel"), "{forwarded}");
    assert_eq!(seen, vec![0, 1], "the port on the data and error channels");

    // kubectl 1.32 (WebSocket first) forwards through the tunnel.
    let mut pf = spawn_kubectl(&s, &["port-forward", "pod/alive", ":8080"]);
    let mut line = String::new();
    BufReader::new(pf.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("port-forward output");
    let local_port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    let mut body = String::new();
    for _ in 0..3 {
        body.clear();
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", local_port)) {
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("read timeout");
            let _ = c.write_all(b"GET /index.html HTTP/1.0\r\nHost: alive\r\n\r\n");
            let _ = c.read_to_string(&mut body);
            if body.contains("through-the-tunnel") {
                break;
            }
        }
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains("through-the-tunnel"), "{body}");

    // kubectl 1.32 exec (WebSocket first, no stdin): output and exit code.
    let out = s.kubectl(&[
        "exec",
        "alive",
        "--",
        "sh",
        "-c",
        "echo via-kubectl; exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-kubectl\n");

    s.ok(&[
        "delete",
        "pod",
        "alive",
        "--grace-period=1",
        "--timeout=90s",
    ]);
}
