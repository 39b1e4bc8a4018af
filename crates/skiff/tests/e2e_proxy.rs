//! pods/proxy and services/proxy through the real kubectl against a busybox
//! httpd pod (a CGI script echoes the method and query): the
//! `[scheme:]name[:port]` syntax, the first container port as the default,
//! service ports by name and by number, paths, queries and methods passed
//! on, HTML links rewritten to go through the proxy, the 301 to
//! `.../proxy/`, and Kubernetes' errors (503 without endpoints, 400 for a
//! bad request), and nodes/NAME:PORT/proxy to the kubelet's port. Needs root and what e2e_streaming needs.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Server, eventually, eventually_within};

const SCRIPT: &str = r#"mkdir -p /www/cgi-bin /alt
printf '<a href="/rewriteme">test</a>' > /www/page.html
echo plain > /www/data.txt
echo second > /alt/index.html
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REQUEST_METHOD $QUERY_STRING $(head -c ${CONTENT_LENGTH:-0})"\n' > /www/cgi-bin/echo
chmod +x /www/cgi-bin/echo
httpd -p 8081 -h /alt
exec httpd -f -p 8080 -h /www"#;

fn raw(s: &Server, path: &str) -> String {
    s.ok(&["get", "--raw", path])
}

#[test]
fn pods_and_services_proxy() {
    let Some(s) = support::node_ready("the proxy end-to-end test") else {
        return;
    };
    support::import_busybox(&s);
    let manifest = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
             "spec": {"containers": [{"name": "web", "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", SCRIPT],
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "alt", "containerPort": 8081}]}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "websvc"},
             "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "alt", "port": 81, "targetPort": 8081}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nothing"},
             "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]}}
        ]
    });
    s.ok_stdin(&["apply", "-f", "-"], &manifest.to_string());
    eventually_within(Duration::from_secs(120), "web Running", &s, || {
        s.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    let pods = "/api/v1/namespaces/default/pods";
    let services = "/api/v1/namespaces/default/services";

    // Pods: the first container port by default, a port by number, a scheme.
    eventually("httpd answering through pods/proxy", &s, || {
        s.kubectl(&["get", "--raw", &format!("{pods}/web/proxy/data.txt")])
            .stdout
            == b"plain\n"
    });
    assert_eq!(
        raw(&s, &format!("{pods}/web:8080/proxy/data.txt")),
        "plain\n"
    );
    assert_eq!(raw(&s, &format!("{pods}/http:web:8081/proxy/")), "second\n");
    // The query and the method reach the backend.
    assert_eq!(
        raw(&s, &format!("{pods}/web/proxy/cgi-bin/echo?a=1&b=two")),
        "GET a=1&b=two \n"
    );
    let body = s.data_dir().join("body.txt");
    std::fs::write(&body, "posted-body").expect("write body");
    assert_eq!(
        s.ok(&[
            "create",
            "--raw",
            &format!("{pods}/web/proxy/cgi-bin/echo?x=y"),
            "-f",
            body.to_str().expect("utf-8 path"),
        ]),
        // kubectl streams the file (no Content-Length), so the body goes on
        // chunked, as kube-apiserver's reverse proxy sends it too, and
        // busybox httpd's CGI reads no chunked bodies.
        "POST x=y \n"
    );
    // HTML links are rewritten to go through the proxy (as proxy.go expects).
    assert_eq!(
        raw(&s, &format!("{pods}/web:8080/proxy/page.html")),
        format!(r#"<a href="{pods}/web:8080/proxy/rewriteme">test</a>"#)
    );
    // ".../proxy" without a slash: 301 to ".../proxy/", which kubectl follows.
    assert_eq!(raw(&s, &format!("{pods}/web:8081/proxy")), "second\n");

    // Services: a port by name, by number (→ its name), with a scheme.
    eventually("the Service's endpoints", &s, || {
        !s.ok(&[
            "get",
            "endpoints",
            "websvc",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .trim()
        .is_empty()
    });
    assert_eq!(
        raw(&s, &format!("{services}/websvc:http/proxy/data.txt")),
        "plain\n"
    );
    assert_eq!(raw(&s, &format!("{services}/websvc:81/proxy/")), "second\n");
    assert_eq!(
        raw(&s, &format!("{services}/http:websvc:alt/proxy/")),
        "second\n"
    );
    assert_eq!(
        raw(
            &s,
            &format!("{services}/websvc:http/proxy/cgi-bin/echo?q=1")
        ),
        "GET q=1 \n"
    );

    // nodes/NAME:PORT/proxy with the kubelet's own port is the kubelet.
    let node = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let kubelet_port = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let pod_list = raw(
        &s,
        &format!("/api/v1/nodes/{node}:{kubelet_port}/proxy/pods"),
    );
    assert!(pod_list.contains(r#""name":"web""#), "{pod_list}");

    // Errors as Kubernetes gives them.
    // (404 until the endpoints controller wrote the empty Endpoints.)
    eventually("503 for a service without endpoints", &s, || {
        String::from_utf8_lossy(
            &s.kubectl(&["get", "--raw", &format!("{services}/nothing/proxy/")])
                .stderr,
        )
        .contains("no endpoints available")
    });
    let err = s.fails(&["get", "--raw", &format!("{services}/nothing/proxy/")]);
    assert!(
        err.contains("ServiceUnavailable") && err.contains("no endpoints available for service"),
        "{err}"
    );
    let err = s.fails(&["get", "--raw", &format!("{services}/websvc:99/proxy/")]);
    assert!(
        err.contains("no service port 99 found for service"),
        "{err}"
    );
    let err = s.fails(&["get", "--raw", &format!("{pods}/ftp:web:21/proxy/")]);
    assert!(
        err.contains("BadRequest") && err.contains("invalid pod request"),
        "{err}"
    );
    let err = s.fails(&["get", "--raw", &format!("{pods}/nope/proxy/")]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");

    s.ok(&["delete", "pod", "web", "--grace-period=1", "--timeout=90s"]);
}
