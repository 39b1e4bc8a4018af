//! Root-only: applies real rulesets with nft inside a fresh network
//! namespace and checks what the kernel holds. Skips (with the reason) when
//! not root or when nft / ip are missing.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_proxy::rules::object_name;
use skiff_proxy::{Config, Proxier, RealNft, Update};

fn skip_reason() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not root".into());
    }
    if skiff_proxy::netfilter::find_nft().is_none() {
        return Some("nft is not installed".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (ip) is not installed".into());
    }
    None
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("skiff-proxy-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn service(name: &str, spec: serde_json::Value) -> Box<Service> {
    Box::new(
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .unwrap(),
    )
}

fn slice(svc: &str, ips: &[&str], family: &str) -> Box<EndpointSlice> {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-{family}"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn programs_a_real_ruleset_in_a_netns() {
    if let Some(reason) = skip_reason() {
        println!("skipping programs_a_real_ruleset_in_a_netns: {reason}");
        return;
    }
    let ns = Netns::new("rules");
    let nft = RealNft::in_netns(&ns.0);
    let config = Config {
        node_name: "n1".into(),
        node_ips: vec!["192.168.50.2".parse().unwrap(), "fd50::2".parse().unwrap()],
        cluster_cidr: vec![
            "10.42.0.0/16".parse().unwrap(),
            "fd42::/56".parse().unwrap(),
        ],
        table: "skiff-proxy-test".into(),
        ..Config::default()
    };
    let mut p = Proxier::new(config, nft.clone());
    p.update(Update::ServicesListed(vec![
        *service(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.43.0.5", "externalIPs": ["192.0.2.9"], "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        ),
        *service("sticky", json!({"clusterIP": "10.43.0.7", "sessionAffinity": "ClientIP", "ports": [{"name": "http", "port": 80}]})),
        *service("empty", json!({"clusterIP": "10.43.0.8", "ports": [{"name": "http", "port": 80, "protocol": "UDP"}]})),
        *service("v6", json!({"clusterIP": "fd43::6", "clusterIPs": ["fd43::6"], "ports": [{"name": "http", "port": 80}]})),
    ]));
    p.update(Update::SlicesListed(vec![
        *slice("web", &["10.42.0.2", "10.42.1.3"], "IPv4"),
        *slice("sticky", &["10.42.0.4"], "IPv4"),
        *slice("v6", &["fd42::2"], "IPv6"),
    ]));
    let stats = p.sync().await.unwrap();
    assert!(stats.full);

    let v4 = nft
        .run(&["list", "table", "ip", "skiff-proxy-test"])
        .await
        .unwrap();
    let web = object_name("service", "default/web/tcp/http");
    let ext = object_name("external", "default/web/tcp/http");
    let ep2 = object_name("endpoint", "default/web/tcp/http__10.42.0.2/8080");
    let sticky_set = object_name("affinity", "default/sticky/tcp/http__10.42.0.4/8080@10800");
    for want in [
        format!("chain {web} {{"),
        format!("chain {ext} {{"),
        format!("chain {ep2} {{"),
        "dnat to 10.42.0.2:8080".to_string(),
        format!("10.43.0.5 . tcp . 80 : goto {web}"),
        format!("192.0.2.9 . tcp . 80 : goto {ext}"),
        format!("tcp . 30080 : goto {ext}"),
        "10.43.0.8 . udp . 80 : goto reject-chain".to_string(),
        format!("set {sticky_set} {{"),
        "masquerade fully-random".to_string(),
        format!("numgen random mod 2 0 goto {ep2}"),
        "type nat hook prerouting priority dstnat; policy accept;".to_string(),
    ] {
        assert!(v4.contains(&want), "missing {want:?} in:\n{v4}");
    }
    let v6 = nft
        .run(&["list", "table", "ip6", "skiff-proxy-test"])
        .await
        .unwrap();
    assert!(v6.contains("dnat to [fd42::2]:8080"), "{v6}");

    // One endpoint changes: an incremental transaction the kernel accepts.
    p.update(Update::SliceApplied(slice(
        "web",
        &["10.42.0.2", "10.42.1.9"],
        "IPv4",
    )));
    let stats = p.sync().await.unwrap();
    assert!(!stats.full);
    let v4 = nft
        .run(&["list", "table", "ip", "skiff-proxy-test"])
        .await
        .unwrap();
    assert!(v4.contains("dnat to 10.42.1.9:8080"));
    assert!(!v4.contains("10.42.1.3"), "{v4}");

    // The endpoint-less service gets one; the affinity service loses its affinity; web goes.
    p.update(Update::SliceApplied(Box::new({
        let mut s = *slice("empty", &["10.42.0.6"], "IPv4");
        s.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        s
    })));
    p.update(Update::ServiceApplied(service(
        "sticky",
        json!({"clusterIP": "10.43.0.7", "ports": [{"name": "http", "port": 80}]}),
    )));
    p.update(Update::ServiceDeleted(service(
        "web",
        json!({"clusterIP": "10.43.0.5"}),
    )));
    p.sync().await.unwrap();
    let v4 = nft
        .run(&["list", "table", "ip", "skiff-proxy-test"])
        .await
        .unwrap();
    assert!(!v4.contains("default/web/"), "web's rules remain:\n{v4}");
    assert!(!v4.contains("10.43.0.5"), "{v4}");
    assert!(!v4.contains(&sticky_set), "{v4}");
    assert!(
        v4.contains("meta l4proto udp dnat to 10.42.0.6:8080"),
        "{v4}"
    );
    assert!(
        !v4.contains("10.43.0.8 . udp . 80 : goto reject-chain"),
        "{v4}"
    );

    // A periodic resync in place and a table removed behind our back (hard resync after the error).
    p.request_resync();
    assert!(p.sync().await.unwrap().full);
    nft.run(&["delete", "table", "ip", "skiff-proxy-test"])
        .await
        .unwrap();
    p.update(Update::SliceApplied(slice(
        "sticky",
        &["10.42.0.5"],
        "IPv4",
    )));
    assert!(
        p.sync().await.is_err(),
        "an incremental change to a missing table fails"
    );
    assert!(p.sync().await.unwrap().full);
    let v4 = nft
        .run(&["list", "table", "ip", "skiff-proxy-test"])
        .await
        .unwrap();
    assert!(v4.contains("dnat to 10.42.0.5:8080"), "{v4}");

    // kube-proxy's vmap selection is accepted by the kernel too.
    let vmap_config = Config {
        table: "skiff-proxy-vmap".into(),
        selection: skiff_proxy::rules::Selection::Vmap,
        ..Config::default()
    };
    let mut pv = Proxier::new(vmap_config, nft.clone());
    pv.update(Update::ServicesListed(vec![*service(
        "web",
        json!({"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80}]}),
    )]));
    pv.update(Update::SlicesListed(vec![*slice(
        "web",
        &["10.42.0.2", "10.42.1.3"],
        "IPv4",
    )]));
    pv.sync().await.unwrap();
    let listed = nft
        .run(&["list", "table", "ip", "skiff-proxy-vmap"])
        .await
        .unwrap();
    assert!(
        listed.contains(&format!("numgen random mod 2 vmap {{ 0 : goto {ep2}")),
        "{listed}"
    );
    skiff_proxy::cleanup(&nft, "skiff-proxy-vmap")
        .await
        .unwrap();

    skiff_proxy::cleanup(&nft, "skiff-proxy-test")
        .await
        .unwrap();
    let tables = nft.run(&["list", "tables"]).await.unwrap();
    assert!(!tables.contains("skiff-proxy-test"), "{tables}");
}

fn sh(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn curl(ns: &str, url: &str) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", "5", url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A "node" namespace and a "pod" namespace joined by a veth; the pod serves
/// HTTP on 8080 with busybox httpd. Traffic from the node to the ClusterIP
/// and to a NodePort reaches the pod; a service without endpoints refuses.
#[tokio::test]
async fn forwards_traffic_in_a_netns() {
    if let Some(reason) = skip_reason() {
        println!("skipping forwards_traffic_in_a_netns: {reason}");
        return;
    }
    for tool in ["busybox", "curl"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            println!("skipping forwards_traffic_in_a_netns: {tool} is not installed");
            return;
        }
    }
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    sh(&[
        "ip", "-n", &node.0, "link", "add", "vn", "type", "veth", "peer", "name", "vp", "netns",
        &pod.0,
    ]);
    for (ns, dev, addr) in [
        (&node.0, "vn", "10.42.0.1/24"),
        (&pod.0, "vp", "10.42.0.2/24"),
    ] {
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    sh(&[
        "ip",
        "-n",
        &pod.0,
        "route",
        "add",
        "default",
        "via",
        "10.42.0.1",
    ]);
    sh(&[
        "ip",
        "-n",
        &node.0,
        "route",
        "add",
        "10.43.0.0/16",
        "dev",
        "vn",
    ]);
    let root = std::env::temp_dir().join(format!("skiff-proxy-www-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello from the pod\n").unwrap();
    let mut httpd = Command::new("ip")
        .args([
            "netns", "exec", &pod.0, "busybox", "httpd", "-f", "-p", "8080", "-h",
        ])
        .arg(&root)
        .spawn()
        .unwrap();

    let nft = RealNft::in_netns(&node.0);
    let mut p = Proxier::new(
        Config {
            table: "skiff-proxy-traffic".into(),
            ..Config::default()
        },
        nft.clone(),
    );
    p.update(Update::ServicesListed(vec![
        *service("web", json!({"type": "NodePort", "clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})),
        *service("empty", json!({"clusterIP": "10.43.0.8", "ports": [{"name": "http", "port": 80}]})),
    ]));
    p.update(Update::SlicesListed(vec![*slice(
        "web",
        &["10.42.0.2"],
        "IPv4",
    )]));
    p.sync().await.unwrap();

    let mut direct = (0, String::new());
    for _ in 0..50 {
        direct = curl(&node.0, "http://10.42.0.2:8080/");
        if direct.0 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let cluster_ip = curl(&node.0, "http://10.43.0.5/");
    let node_port = curl(&node.0, "http://10.42.0.1:30080/");
    let loopback_node_port = curl(&node.0, "http://127.0.0.1:30080/");
    let no_endpoints = curl(&node.0, "http://10.43.0.8/");
    let wrong_port = curl(&node.0, "http://10.43.0.5:81/");
    // The endpoint goes: the ClusterIP now refuses.
    p.update(Update::SliceApplied(slice("web", &[], "IPv4")));
    p.sync().await.unwrap();
    let after_removal = curl(&node.0, "http://10.43.0.5/");

    let _ = httpd.kill();
    let _ = httpd.wait();
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(
        direct,
        (0, "hello from the pod\n".into()),
        "the pod serves directly"
    );
    assert_eq!(
        cluster_ip,
        (0, "hello from the pod\n".into()),
        "through the ClusterIP"
    );
    assert_eq!(
        node_port,
        (0, "hello from the pod\n".into()),
        "through the NodePort"
    );
    assert_eq!(
        loopback_node_port.0, 7,
        "NodePorts are not served on loopback (no route_localnet)"
    );
    assert_eq!(
        no_endpoints.0, 7,
        "a service without endpoints refuses the connection (curl exit 7)"
    );
    assert_eq!(
        wrong_port.0, 7,
        "a port the ClusterIP does not serve is rejected"
    );
    assert_eq!(after_removal.0, 7, "after its last endpoint went");
}
