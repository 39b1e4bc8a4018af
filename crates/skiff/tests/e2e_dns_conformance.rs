//! The lookups of the conformance suite's `[sig-network] DNS` tests
//! (test/e2e/network/dns.go and dns_common.go), against the node's real
//! cluster DNS with real containers: the suite's prober pods run
//! `dig +notcp` and `dig +tcp` for each name, `dig +search` for partial
//! names through the pod's resolv.conf, and `getent hosts` for the
//! kubelet's /etc/hosts. busybox has no dig, so the test process asks the
//! node's DNS server itself (UDP and TCP, the same answer from both), and
//! a pod asks through its resolv.conf with busybox's nslookup and ping.
//! (busybox's nslookup asks every search candidate, not only up to the
//! first answer as dig and the C library do, and exits 1 when any of them
//! is NXDOMAIN: its output is checked, not its exit code.)
//! Needs root; skips otherwise.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use support::{Server, eventually, import_busybox};

const NS: &str = "dns-e2e";

/// The suite's Services (e2eservice.CreateServiceSpec: port `http` 80)
/// and its prober pod (hostname dns-querier-1, subdomain the headless
/// Service's name, labelled for both Services' selectors): a querier and
/// a web server of its file system (agnhost test-webserver serves /), whose
/// /results are read through pods/proxy as the suite
/// reads its probes' OK files (no container port declared, as there).
fn manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: dns-test-service, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{dns-test: "true"}}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: test-service-2, namespace: {NS}}}
spec:
  selector: {{dns-test: "true"}}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dns-test-service-3, namespace: {NS}}}
spec:
  type: ExternalName
  externalName: foo.example.com
---
apiVersion: v1
kind: Pod
metadata:
  name: dns-test
  namespace: {NS}
  labels: {{dns-test: "true"}}
spec:
  hostname: dns-querier-1
  subdomain: dns-test-service
  terminationGracePeriodSeconds: 1
  volumes:
  - name: results
    emptyDir: {{}}
  containers:
  - name: webserver
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "80", "-h", "/"]
    volumeMounts: [{{name: results, mountPath: /results}}]
  - name: querier
    image: busybox:skiff
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts: [{{name: results, mountPath: /results}}]
"#
    )
}

fn query_bytes(name: &str, qtype: RecordType) -> (u16, Vec<u8>) {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).expect("a valid name");
    msg.add_query(Query::query(name, qtype));
    (msg.id, msg.to_vec().expect("encode the query"))
}

fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let (id, q) = query_bytes(name, qtype);
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    socket.send_to(&q, server).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    let resp = Message::from_vec(&buf[..n]).ok()?;
    (resp.id == id).then_some(resp)
}

fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let (id, q) = query_bytes(name, qtype);
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let len = u16::try_from(q.len()).ok()?;
    stream.write_all(&len.to_be_bytes()).ok()?;
    stream.write_all(&q).ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).ok()?;
    let resp = Message::from_vec(&buf).ok()?;
    (resp.id == id).then_some(resp)
}

/// The answer as dig's `+noall +answer` shows it, sorted: `TYPE RDATA`.
type Answer = (ResponseCode, Vec<String>);

fn summary(msg: &Message) -> Answer {
    let mut v: Vec<String> = msg
        .answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect();
    v.sort();
    (msg.metadata.response_code, v)
}

/// Asks over UDP and over TCP; None unless both answer the same.
fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Answer> {
    let over_udp = summary(&udp(server, name, qtype)?);
    let over_tcp = summary(&tcp(server, name, qtype)?);
    (over_udp == over_tcp).then_some(over_udp)
}

/// Waits until `name` `qtype` answers `want` over both transports.
fn expect(s: &Server, dns: SocketAddr, name: &str, qtype: RecordType, want: Answer) {
    let mut last = None;
    let what = format!("{name} {qtype} to answer {want:?}");
    eventually(&what, s, || {
        last = ask(dns, name, qtype);
        if last.as_ref() != Some(&want) {
            eprintln!("{name} {qtype}: {last:?}");
        }
        last.as_ref() == Some(&want)
    });
}

fn records(items: &[&str]) -> Answer {
    (
        ResponseCode::NoError,
        items.iter().map(|s| s.to_string()).collect(),
    )
}

/// `10.1.2.3` → `3.2.1.10.in-addr.arpa.` (dnsclient.Reverseaddr).
fn reverse(ip: &str) -> String {
    let mut octets: Vec<&str> = ip.split('.').collect();
    octets.reverse();
    format!("{}.in-addr.arpa.", octets.join("."))
}

/// What `dig +search NAME QTYPE` settles on: with fewer dots than ndots
/// (5), each search domain in turn, then the name itself, moving on past
/// NXDOMAIN; the name asked and its answer.
fn dig_search(
    server: SocketAddr,
    search: &[String],
    name: &str,
    qtype: RecordType,
) -> Option<(String, Answer)> {
    let mut candidates: Vec<String> = Vec::new();
    if name.matches('.').count() < 5 {
        candidates.extend(search.iter().map(|d| format!("{name}.{d}.")));
    }
    candidates.push(format!("{name}."));
    for candidate in candidates {
        let answer = ask(server, &candidate, qtype)?;
        if answer.0 != ResponseCode::NXDomain {
            return Some((candidate, answer));
        }
    }
    None
}

/// Runs `script` in the prober pod; its stdout, or a panic with its output.
fn in_pod(s: &Server, script: &str) -> String {
    let out = s.kubectl(&[
        "exec", "-n", NS, "dns-test", "-c", "querier", "--", "sh", "-c", script,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn conformance_dns_lookups_answer_as_coredns() {
    let Some(s) = support::node_ready("the DNS conformance end-to-end test") else {
        return;
    };
    import_busybox(&s);

    // The node's DNS server, as kube-dns's EndpointSlice names it.
    let mut dns = None;
    eventually("kube-dns published", &s, || {
        // Until the node's DNS server publishes its slice the list is empty
        // and the jsonpath fails: not yet, rather than an error.
        let out = s.kubectl(&[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            r#"jsonpath={.items[0].endpoints[0].addresses[0]} {.items[0].ports[?(@.name=="dns")].port}"#,
        ]);
        if !out.status.success() {
            return false;
        }
        let addr = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut parts = addr.split_whitespace();
        if let (Some(ip), Some(port)) = (parts.next(), parts.next())
            && let (Ok(ip), Ok(port)) = (ip.parse::<IpAddr>(), port.parse::<u16>())
        {
            dns = Some(SocketAddr::new(ip, port));
        }
        dns.is_some()
    });
    let dns = dns.expect("the DNS address");

    s.ok(&["create", "namespace", NS]);
    s.ok_stdin(&["apply", "-f", "-"], &manifest());
    eventually("the prober pod Ready", &s, || {
        s.ok(&[
            "get",
            "pod",
            "-n",
            NS,
            "dns-test",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ]) == "True"
    });
    let pod_ip = s.ok(&[
        "get",
        "pod",
        "-n",
        NS,
        "dns-test",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    let cluster_ip = |ns: &str, name: &str| {
        s.ok(&[
            "get",
            "svc",
            "-n",
            ns,
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
    };
    let kubernetes_ip = cluster_ip("default", "kubernetes");
    let regular_ip = cluster_ip(NS, "test-service-2");

    // "should provide DNS for the cluster": the kubernetes Service.
    expect(
        &s,
        dns,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        records(&[&format!("A {kubernetes_ip}")]),
    );
    // The same through kube-dns's ClusterIP (what the pods' resolv.conf
    // names), UDP and TCP through the service proxy.
    let cluster_dns = SocketAddr::new(s.cluster_dns().parse().expect("the kube-dns ClusterIP"), 53);
    expect(
        &s,
        cluster_dns,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        records(&[&format!("A {kubernetes_ip}")]),
    );
    // And over TCP from inside the pod (dig +tcp): a length-prefixed
    // query through nc; the answer ends with the A record's address.
    let (_, q) = query_bytes("kubernetes.default.svc.cluster.local.", RecordType::A);
    let len = u16::try_from(q.len()).expect("a short query");
    let octal: String = len
        .to_be_bytes()
        .iter()
        .chain(q.iter())
        .map(|b| format!("\\{b:03o}"))
        .collect();
    let want: Vec<String> = kubernetes_ip.split('.').map(str::to_string).collect();
    let mut tail = String::new();
    eventually(
        "a TCP answer through the kube-dns ClusterIP from the pod",
        &s,
        || {
            tail = in_pod(
                &s,
                &format!(
                    "printf '{octal}' | nc -w 3 {} 53 | tail -c 4 | od -An -tu1",
                    s.cluster_dns()
                ),
            );
            tail.split_whitespace().collect::<Vec<_>>() == want
        },
    );

    // "should provide DNS for services" / "for pods for Subdomain": the
    // headless Service's ready pod, by the Service's name and by the pod's
    // hostname under its subdomain; SRV of the named port for the headless
    // (one per pod, at its hostname) and the ClusterIP Service; PTR of the
    // ClusterIP.
    let headless = format!("dns-test-service.{NS}.svc.cluster.local.");
    let host_fqdn = format!("dns-querier-1.dns-test-service.{NS}.svc.cluster.local.");
    let pod_a = format!("A {pod_ip}");
    expect(&s, dns, &headless, RecordType::A, records(&[&pod_a]));
    expect(&s, dns, &host_fqdn, RecordType::A, records(&[&pod_a]));
    expect(
        &s,
        dns,
        &format!("_http._tcp.{headless}"),
        RecordType::SRV,
        records(&[&format!("SRV 0 100 80 {host_fqdn}")]),
    );
    let regular = format!("test-service-2.{NS}.svc.cluster.local.");
    expect(
        &s,
        dns,
        &format!("_http._tcp.{regular}"),
        RecordType::SRV,
        records(&[&format!("SRV 0 100 80 {regular}")]),
    );
    expect(
        &s,
        dns,
        &reverse(&regular_ip),
        RecordType::PTR,
        records(&[&format!("PTR {regular}")]),
    );
    // The pod by its dashed address.
    expect(
        &s,
        dns,
        &format!("{}.{NS}.pod.cluster.local.", pod_ip.replace('.', "-")),
        RecordType::A,
        records(&[&pod_a]),
    );

    // What dig +search asks before the name itself (ndots:5, search
    // <ns>.svc.cluster.local svc.cluster.local cluster.local): each
    // candidate that does not exist is NXDOMAIN, so the search goes on;
    // a name that exists without the asked type is NODATA.
    for name in [
        format!("dns-test-service.{NS}.{NS}.svc.cluster.local."),
        format!("dns-test-service.{NS}.svc.{NS}.svc.cluster.local."),
        format!("dns-test-service.{NS}.svc.svc.cluster.local."),
        format!("kubernetes.default.svc.cluster.local.{NS}.svc.cluster.local."),
        "kubernetes.default.svc.cluster.local.svc.cluster.local.".to_string(),
        "kubernetes.default.svc.cluster.local.cluster.local.".to_string(),
        format!("_http._tcp.test-service-2.{NS}.svc.{NS}.svc.cluster.local."),
        format!("_http._tcp.test-service-2.{NS}.svc.svc.cluster.local."),
        format!("nope.{NS}.svc.cluster.local."),
    ] {
        expect(
            &s,
            dns,
            &name,
            RecordType::A,
            (ResponseCode::NXDomain, vec![]),
        );
    }
    expect(&s, dns, &headless, RecordType::AAAA, records(&[]));

    // "should provide DNS for ExternalName services": a CNAME, its change
    // to another name, then the Service as type ClusterIP (the suite's
    // update leaves externalName as it was).
    let external = format!("dns-test-service-3.{NS}.svc.cluster.local.");
    expect(
        &s,
        dns,
        &external,
        RecordType::CNAME,
        records(&["CNAME foo.example.com."]),
    );
    s.ok(&[
        "patch",
        "svc",
        "-n",
        NS,
        "dns-test-service-3",
        "-p",
        r#"{"spec":{"externalName":"bar.example.com"}}"#,
    ]);
    expect(
        &s,
        dns,
        &external,
        RecordType::CNAME,
        records(&["CNAME bar.example.com."]),
    );
    s.ok(&[
        "patch",
        "svc",
        "-n",
        NS,
        "dns-test-service-3",
        "-p",
        r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"name":"http","protocol":"TCP"}]}}"#,
    ]);
    let external_ip = cluster_ip(NS, "dns-test-service-3");
    assert!(external_ip.parse::<IpAddr>().is_ok(), "{external_ip:?}");
    expect(
        &s,
        dns,
        &external,
        RecordType::A,
        records(&[&format!("A {external_ip}")]),
    );

    // From inside the pod: its resolv.conf, partial names through the
    // search path ("should resolve DNS of partial qualified names for
    // services", "for the cluster"), and its /etc/hosts ("should provide
    // /etc/hosts entries for the cluster", "for pods for Hostname").
    let resolv = in_pod(&s, "cat /etc/resolv.conf");
    assert!(
        resolv.contains(&format!(
            "search {NS}.svc.cluster.local svc.cluster.local cluster.local"
        )) && resolv.contains("options ndots:5")
            && resolv.contains(&format!("nameserver {}", s.cluster_dns())),
        "{resolv}"
    );
    // Partial names as dig +search asks them (the suite's probes), over
    // UDP and TCP with this pod's search list and ndots.
    let search: Vec<String> = resolv
        .lines()
        .find_map(|l| l.strip_prefix("search "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let partial = |name: &str, qtype: RecordType, want: Answer, fqdn: &str| {
        let mut last = None;
        eventually(
            &format!("{name} {qtype} through the search path"),
            &s,
            || {
                last = dig_search(dns, &search, name, qtype);
                last.as_ref().map(|(n, a)| (n.as_str(), a)) == Some((fqdn, &want))
            },
        );
    };
    let headless_srv = format!("SRV 0 100 80 {host_fqdn}");
    let regular_srv = format!("SRV 0 100 80 {regular}");
    let kubernetes_a = format!("A {kubernetes_ip}");
    for (name, qtype, want, fqdn) in [
        (
            "dns-test-service".to_string(),
            RecordType::A,
            &pod_a,
            headless.clone(),
        ),
        (
            format!("dns-test-service.{NS}"),
            RecordType::A,
            &pod_a,
            headless.clone(),
        ),
        (
            format!("dns-test-service.{NS}.svc"),
            RecordType::A,
            &pod_a,
            headless.clone(),
        ),
        (
            format!("_http._tcp.dns-test-service.{NS}.svc"),
            RecordType::SRV,
            &headless_srv,
            format!("_http._tcp.{headless}"),
        ),
        (
            format!("_http._tcp.test-service-2.{NS}.svc"),
            RecordType::SRV,
            &regular_srv,
            format!("_http._tcp.{regular}"),
        ),
        (
            "kubernetes.default".to_string(),
            RecordType::A,
            &kubernetes_a,
            "kubernetes.default.svc.cluster.local.".to_string(),
        ),
        (
            "kubernetes.default.svc".to_string(),
            RecordType::A,
            &kubernetes_a,
            "kubernetes.default.svc.cluster.local.".to_string(),
        ),
        (
            "kubernetes.default.svc.cluster.local".to_string(),
            RecordType::A,
            &kubernetes_a,
            "kubernetes.default.svc.cluster.local.".to_string(),
        ),
    ] {
        partial(&name, qtype, records(&[want]), &fqdn);
    }
    // And through the pod's own C library resolver (getaddrinfo, as ping
    // resolves): the same partial names.
    for (name, ip) in [
        ("dns-test-service".to_string(), &pod_ip),
        (format!("dns-test-service.{NS}"), &pod_ip),
        (format!("dns-test-service.{NS}.svc"), &pod_ip),
        ("test-service-2".to_string(), &regular_ip),
        ("kubernetes.default".to_string(), &kubernetes_ip),
        ("kubernetes.default.svc".to_string(), &kubernetes_ip),
    ] {
        let out = in_pod(&s, &format!("ping -c 1 -W 1 {name} | head -n 1"));
        assert!(out.contains(&format!("({ip})")), "{name}:\n{out}");
    }
    let hosts_fqdn = format!("dns-querier-1.dns-test-service.{NS}.svc.cluster.local");
    let hosts = in_pod(&s, "cat /etc/hosts; hostname");
    assert!(
        hosts.contains(&format!("{pod_ip}\t{hosts_fqdn}\tdns-querier-1\n"))
            && hosts.ends_with("dns-querier-1\n"),
        "{hosts}"
    );
    // Resolved through the C library (files before DNS), as getent does.
    for name in [hosts_fqdn.as_str(), "dns-querier-1"] {
        let out = in_pod(&s, &format!("ping -c 1 -W 1 {name} | head -n 1"));
        assert!(out.contains(&format!("({pod_ip})")), "{name}:\n{out}");
    }
    // The suite's probes write /results/<prefix>_<udp|tcp|hosts>@<name>
    // and read it through pods/proxy (the '@' stays in the path).
    in_pod(
        &s,
        &format!(
            "for n in dns-querier-1 {hosts_fqdn} kubernetes.default; do \
               ping -c 1 -W 1 $n | head -n 1 | grep -q '(' && echo OK > /results/busybox_hosts@$n; done"
        ),
    );
    for name in ["dns-querier-1", hosts_fqdn.as_str(), "kubernetes.default"] {
        let body = s.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{NS}/pods/dns-test/proxy/results/busybox_hosts@{name}"),
        ]);
        assert_eq!(body.trim(), "OK", "{name}");
    }

    s.ok(&["delete", "namespace", NS, "--wait=false"]);
}
