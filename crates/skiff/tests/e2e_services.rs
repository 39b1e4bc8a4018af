//! Services end to end with real containers: the seeds' Deployment of two
//! web pods behind a NodePort Service (busybox httpd instead of nginx: no
//! registry is reachable here), answered through its ClusterIP, its
//! NodePort and its DNS name, by both pods; a headless Service's DNS
//! records. Through the service proxy (nftables) and the cluster DNS of
//! the in-process agent. Needs root; skips otherwise.

mod support;

use std::collections::BTreeSet;

use support::{
    Server, agent_prerequisite_missing, eventually, eventually_within, host_http_get,
    import_busybox, scenario,
};

const WEB: &str = "touch /tmp/ready && mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

/// The seeds' manifest, with busybox httpd serving each pod's name, Ready
/// while /tmp/ready exists (an exec readiness probe).
fn web_manifest() -> String {
    let text = std::fs::read_to_string(scenario("web-deployment-service.yaml"))
        .expect("the seeds' manifest");
    let cmd = format!(
        "        image: busybox:skiff\n        imagePullPolicy: IfNotPresent\n        command: [\"sh\", \"-c\", {WEB:?}]\n        readinessProbe:\n          exec: {{command: [\"test\", \"-f\", \"/tmp/ready\"]}}\n          periodSeconds: 1\n"
    );
    text.replace("        image: nginx\n", &cmd)
}

/// Run a one-shot client pod; its output (through its exit code: 0 when
/// the command succeeded) and its logs are read from the pod's status.
fn client_pod(s: &Server, name: &str, script: &str) -> bool {
    s.ok(&[
        "run",
        name,
        "--image=busybox:skiff",
        "--image-pull-policy=IfNotPresent",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let mut phase = String::new();
    eventually_within(
        std::time::Duration::from_secs(90),
        &format!("{name} to finish"),
        s,
        || {
            phase = s.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
            phase == "Succeeded" || phase == "Failed"
        },
    );
    if phase != "Succeeded" {
        let logs = s.kubectl(&["logs", name]);
        eprintln!(
            "{name} failed; its output:\n{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    phase == "Succeeded"
}

#[test]
fn deployment_behind_a_service_answers_through_cluster_ip_node_port_and_dns() {
    if let Some(why) = agent_prerequisite_missing() {
        eprintln!("skipping the services end-to-end test: {why}");
        return;
    }
    let s = Server::start_with_agent();
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    import_busybox(&s);
    s.ok_stdin(&["apply", "-f", "-"], &web_manifest());
    let support::Web {
        pods,
        cluster_ip,
        node_port,
        node_ip,
    } = support::wait_for_web(&s);

    // From the host, through the ClusterIP: both pods answer (random choice per connection).
    let mut seen = BTreeSet::new();
    eventually("both pods answering through the ClusterIP", &s, || {
        if let Some(body) = host_http_get(&format!("{cluster_ip}:80")) {
            seen.insert(body);
        }
        seen == pods
    });
    // Through the NodePort on the node's address.
    let mut seen = BTreeSet::new();
    eventually("both pods answering through the NodePort", &s, || {
        if let Some(body) = host_http_get(&format!("{node_ip}:{node_port}")) {
            seen.insert(body);
        }
        seen == pods
    });
    // From another pod, by the Service's DNS name (cluster DNS through the kube-dns ClusterIP).
    eventually("kube-dns published", &s, || {
        s.ok(&[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "--no-headers",
        ])
        .lines()
        .count()
            == 1
    });
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        s.cluster_dns()
    );
    let script = "cat /etc/resolv.conf; for n in web web.default web.default.svc.cluster.local; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $n 80 | tee /dev/stderr | grep -q '200 OK' || exit 1; done; \
                  nslookup web.default.svc.cluster.local | grep -q Address || exit 2; \
                  grep -q 'search default.svc.cluster.local svc.cluster.local cluster.local' /etc/resolv.conf || exit 3";
    assert!(
        client_pod(&s, "client", script),
        "client pod failed: {}",
        s.ok(&[
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.status.containerStatuses[0].state}"
        ])
    );

    // A headless Service: one A record per ready pod.
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-headless\nspec:\n  clusterIP: None\n  selector:\n    app: web\n  ports:\n  - port: 80\n",
    );
    let ips = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let checks: Vec<String> = ips
        .split_whitespace()
        .map(|ip| {
            format!("nslookup web-headless.default.svc.cluster.local | grep -q {ip} || exit 4")
        })
        .collect();
    eventually("headless endpoints", &s, || {
        s.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web-headless",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ])
        .split_whitespace()
        .count()
            == 2
    });
    assert!(
        client_pod(&s, "headless", &checks.join("; ")),
        "headless lookup failed"
    );

    // A failing readiness probe takes a pod out of rotation.
    let out_of_rotation = pods.iter().next().cloned().expect("a pod");
    s.ok(&["exec", &out_of_rotation, "--", "rm", "/tmp/ready"]);
    eventually("one endpoint left", &s, || {
        s.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .split_whitespace()
        .count()
            == 1
    });
    let answers: Vec<Option<String>> = (0..20)
        .map(|_| host_http_get(&format!("{cluster_ip}:80")))
        .collect();
    assert!(
        answers.iter().all(|a| a
            .as_ref()
            .is_some_and(|b| *b != out_of_rotation && pods.contains(b))),
        "{answers:?}"
    );
    s.ok(&["exec", &out_of_rotation, "--", "touch", "/tmp/ready"]);
    eventually("both endpoints back", &s, || {
        s.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .split_whitespace()
        .count()
            == 2
    });

    // As a LoadBalancer (ServiceLB): the node's address is its external IP, port 80 answers there.
    s.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    eventually("the LoadBalancer ingress", &s, || {
        s.ok(&["get", "svc", "web", "--no-headers"])
            .split_whitespace()
            .nth(3)
            == Some(node_ip.as_str())
    });
    eventually("the LoadBalancer address answering on port 80", &s, || {
        host_http_get(&format!("{node_ip}:80")).is_some_and(|b| pods.contains(&b))
    });

    // A Service going away takes its rules with it.
    s.ok(&["delete", "svc", "web"]);
    eventually("the ClusterIP no longer answering", &s, || {
        host_http_get(&format!("{cluster_ip}:80")).is_none()
    });
}

fn status_of(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

fn http_get_host(port: &str, host: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut c =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)).ok()?;
    c.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .ok()?;
    c.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[test]
fn ingress_routes_two_hosts_to_two_services_with_tls() {
    if let Some(why) = agent_prerequisite_missing() {
        eprintln!("skipping the ingress end-to-end test: {why}");
        return;
    }
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipping the ingress end-to-end test: openssl is missing");
        return;
    }
    let s = Server::start_with_agent();
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    import_busybox(&s);
    for app in ["alpha", "beta"] {
        let serve = format!(
            "mkdir -p /www && echo {app} > /www/index.html && exec httpd -f -p 8080 -h /www"
        );
        s.ok(&[
            "create",
            "deployment",
            app,
            "--image=busybox:skiff",
            "--port=8080",
            "--",
            "sh",
            "-c",
            &serve,
        ]);
        s.ok(&[
            "expose",
            "deployment",
            app,
            "--port=80",
            "--target-port=8080",
        ]);
    }
    // A certificate for alpha.example.com, as a kubernetes.io/tls Secret.
    let (crt, key) = (
        s.data_dir().join("alpha.crt"),
        s.data_dir().join("alpha.key"),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=alpha.example.com",
            "-addext",
            "subjectAltName=DNS:alpha.example.com",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&[
        "create",
        "secret",
        "tls",
        "alpha-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: two-hosts\nspec:\n  tls:\n  - hosts: [alpha.example.com]\n    secretName: alpha-tls\n  rules:\n  - host: alpha.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}\n  - host: beta.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: beta, port: {number: 80}}}}\n",
    );
    assert!(
        s.ok(&[
            "get",
            "ingressclass",
            "skiff",
            "-o",
            "jsonpath={.metadata.annotations}"
        ])
        .contains("is-default-class")
    );
    let http = s.flag("--ingress-http-port").expect("http port");
    let https = s.flag("--ingress-https-port").expect("https port");
    for (host, body) in [("alpha.example.com", "alpha"), ("beta.example.com", "beta")] {
        eventually(&format!("{host} served"), &s, || {
            http_get_host(&http, host)
                .is_some_and(|r| status_of(&r) == Some(200) && r.trim_end().ends_with(body))
        });
    }
    assert!(
        http_get_host(&http, "other.example.com").is_some_and(|r| status_of(&r) == Some(404)),
        "an unknown host gets 404"
    );
    // TLS: the Secret's certificate by SNI, and the request routed.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.0\\r\\nHost: alpha.example.com\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:{https} -servername alpha.example.com -CAfile {} -verify_return_error -ign_eof 2>&1",
            crt.display()
        ))
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Verify return code: 0 (ok)") && text.contains("alpha"),
        "TLS through the ingress:\n{text}"
    );
    // status.loadBalancer carries the node's address.
    let node_ip = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    eventually("the Ingress status", &s, || {
        s.ok(&[
            "get",
            "ingress",
            "two-hosts",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]) == node_ip
    });
    // A change to the rules takes effect without a restart.
    s.ok(&["patch", "ingress", "two-hosts", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/rules/1/http/paths/0/backend/service/name","value":"alpha"}]"#]);
    eventually("beta.example.com now served by alpha", &s, || {
        http_get_host(&http, "beta.example.com").is_some_and(|r| r.trim_end().ends_with("alpha"))
    });
}
