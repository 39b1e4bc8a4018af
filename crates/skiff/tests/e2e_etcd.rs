//! skiff on etcd (Debian's etcd-server, started by the tests on loopback):
//! the API server on an etcd store, backup and restore across both
//! backends, and two servers sharing one 3-member etcd cluster.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Output;

use skiff_store_etcd::testing::{Cluster, unavailable};
use support::{Server, skiff_backup, start_in};

fn etcd(size: usize) -> Option<Cluster> {
    if let Some(reason) = unavailable() {
        eprintln!("skipping: {reason}");
        return None;
    }
    Some(Cluster::start(size).unwrap())
}

fn ok(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {stderr}");
    stderr
}

fn names(s: &Server, args: &[&str]) -> Vec<String> {
    let v = s.json(args);
    let mut names: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Reads one key straight from etcd (not through skiff).
fn etcd_get(cluster: &Cluster, prefix: &str, key: &str) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use skiff_store::Store;
        let mut config = skiff_store_etcd::EtcdConfig::new(cluster.endpoints());
        config.prefix = prefix.to_string();
        let store = skiff_store_etcd::EtcdStore::connect(config).await.unwrap();
        store.get(key).await.unwrap().map(|kv| kv.value)
    })
}

#[test]
fn api_server_on_etcd() {
    let Some(cluster) = etcd(1) else { return };
    let endpoint = cluster.endpoint_list();
    let s = Server::start_with(&[
        "--datastore-endpoint",
        &endpoint,
        "--datastore-prefix",
        "/e2e/",
    ]);
    let ns = names(&s, &["get", "ns"]);
    assert!(
        ns.contains(&"default".to_string()) && ns.contains(&"kube-system".to_string()),
        "{ns:?}"
    );
    s.ok(&["create", "namespace", "shop"]);
    s.ok(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "prices",
        "--from-literal=apple=3",
    ]);
    // The objects are in etcd, under the prefix, in Kubernetes's layout.
    let raw =
        etcd_get(&cluster, "/e2e/", "/registry/configmaps/shop/prices").expect("configmap in etcd");
    assert!(String::from_utf8_lossy(&raw).contains("apple"));
    assert!(etcd_get(&cluster, "/registry/", "/registry/configmaps/shop/prices").is_none());
    // Updates and deletes go through etcd's CAS.
    s.ok(&[
        "-n",
        "shop",
        "patch",
        "configmap",
        "prices",
        "-p",
        r#"{"data":{"apple":"4"}}"#,
    ]);
    assert_eq!(
        s.json(&["-n", "shop", "get", "cm", "prices"])["data"]["apple"],
        "4"
    );
    s.ok(&["-n", "shop", "create", "configmap", "gone"]);
    s.ok(&["-n", "shop", "delete", "configmap", "gone"]);
    let cms = names(&s, &["-n", "shop", "get", "cm"]);
    assert!(
        cms.contains(&"prices".to_string()) && !cms.contains(&"gone".to_string()),
        "{cms:?}"
    );
    // A second server with its own data directory on the same etcd serves the same objects.
    let other = Server::start_with(&[
        "--datastore-endpoint",
        &endpoint,
        "--datastore-prefix",
        "/e2e/",
    ]);
    assert_eq!(
        other.json(&["-n", "shop", "get", "cm", "prices"])["data"]["apple"],
        "4"
    );
    other.ok(&["-n", "shop", "create", "configmap", "from-other"]);
    support::eventually(
        "the first server's watch cache to see the second's write",
        &s,
        || {
            s.kubectl(&["-n", "shop", "get", "cm", "from-other"])
                .status
                .success()
        },
    );
}

#[test]
fn backup_restore_across_backends() {
    let Some(cluster) = etcd(1) else { return };
    let endpoint = cluster.endpoint_list();
    let work = tempfile::tempdir().unwrap();
    let f1 = work.path().join("embedded.skiffbak");
    let f2 = work.path().join("etcd.skiffbak");

    // Embedded store, saved while the server runs.
    let a = Server::start();
    a.ok(&["create", "namespace", "shop"]);
    a.ok(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "prices",
        "--from-literal=apple=3",
    ]);
    a.ok(&[
        "-n",
        "shop",
        "create",
        "secret",
        "generic",
        "key",
        "--from-literal=k=v",
    ]);
    let before = a.json(&["-n", "shop", "get", "cm", "prices"]);
    let a_dir = a.data_dir().to_string_lossy().into_owned();
    let msg = ok(
        skiff_backup(&["save", f1.to_str().unwrap(), "--data-dir", &a_dir]),
        "save from the embedded store",
    );
    assert!(msg.contains("saved"), "{msg}");
    a.ok(&["-n", "shop", "create", "configmap", "after-backup"]);

    // Into an empty etcd prefix: migration embedded -> etcd.
    ok(
        skiff_backup(&[
            "restore",
            f1.to_str().unwrap(),
            "--datastore-endpoint",
            &endpoint,
            "--datastore-prefix",
            "/restored/",
        ]),
        "restore into etcd",
    );
    // Its Secrets stay encrypted: without the original's key a server
    // refuses to start rather than serve a cluster missing them.
    let keyless = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            "0",
        ])
        .args([
            "--datastore-endpoint",
            &endpoint,
            "--datastore-prefix",
            "/restored/",
            "--data-dir",
        ])
        .arg(work.path().join("keyless"))
        .output()
        .expect("skiff server");
    let err = String::from_utf8_lossy(&keyless.stderr);
    assert!(!keyless.status.success(), "{err}");
    assert!(
        err.contains("the datastore holds Secrets encrypted at rest (k8s:enc:aescbc:v1"),
        "{err}"
    );
    let config = format!("{a_dir}/cred/encryption-config.json");
    let b = Server::start_with(&[
        "--datastore-endpoint",
        &endpoint,
        "--datastore-prefix",
        "/restored/",
        "--encryption-provider-config",
        &config,
    ]);
    let got = b.json(&["-n", "shop", "get", "cm", "prices"]);
    assert_eq!(got["data"], before["data"]);
    assert_eq!(got["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        b.json(&["-n", "shop", "get", "secret", "key"])["data"]["k"],
        "dg=="
    );
    assert!(
        !b.kubectl(&["-n", "shop", "get", "cm", "after-backup"])
            .status
            .success(),
        "a write after the backup was restored"
    );
    // A non-empty target is refused.
    let out = skiff_backup(&[
        "restore",
        f1.to_str().unwrap(),
        "--datastore-endpoint",
        &endpoint,
        "--datastore-prefix",
        "/restored/",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds cluster state"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Back from etcd (saved while server b runs) into a new embedded store: etcd -> embedded.
    b.ok(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "on-etcd",
        "--from-literal=x=1",
    ]);
    ok(
        skiff_backup(&[
            "save",
            f2.to_str().unwrap(),
            "--datastore-endpoint",
            &endpoint,
            "--datastore-prefix",
            "/restored/",
        ]),
        "save from etcd",
    );
    let c_dir = tempfile::tempdir().unwrap();
    ok(
        skiff_backup(&[
            "restore",
            f2.to_str().unwrap(),
            "--data-dir",
            c_dir.path().to_str().unwrap(),
        ]),
        "restore into a new data dir",
    );
    // Still encrypted: the restored server needs the original's key.
    let c = start_in(c_dir, &["--encryption-provider-config", &config]);
    assert_eq!(
        c.json(&["-n", "shop", "get", "cm", "prices"])["metadata"]["uid"],
        before["metadata"]["uid"]
    );
    assert_eq!(
        c.json(&["-n", "shop", "get", "secret", "key"])["data"]["k"],
        "dg=="
    );
    assert_eq!(
        c.json(&["-n", "shop", "get", "cm", "on-etcd"])["data"]["x"],
        "1"
    );
    assert!(names(&c, &["get", "ns"]).contains(&"shop".to_string()));

    // A truncated or corrupt file is refused, and nothing is written.
    let data = std::fs::read(&f2).unwrap();
    let cut = work.path().join("cut.skiffbak");
    std::fs::write(&cut, &data[..data.len() - 100]).unwrap();
    let d_dir = work.path().join("d");
    let out = skiff_backup(&[
        "restore",
        cut.to_str().unwrap(),
        "--data-dir",
        d_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt or truncated"), "{err}");
    assert!(
        !d_dir.exists(),
        "a refused restore wrote {}",
        d_dir.display()
    );
    let mut flipped = data.clone();
    flipped[40] ^= 0x20;
    std::fs::write(&cut, &flipped).unwrap();
    let out = skiff_backup(&[
        "restore",
        cut.to_str().unwrap(),
        "--datastore-endpoint",
        &endpoint,
        "--datastore-prefix",
        "/never/",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(etcd_get(&cluster, "/never/", "/registry/namespaces/shop").is_none());
}

/// The holder of a kube-system Lease, as the server `s` sees it.
fn lease_holder(s: &Server, lease: &str) -> Option<String> {
    let out = s.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "lease",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let holder = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

/// A data directory for a second server of the same cluster: the first's
/// cluster CA, service-account key and tokens (what `--server --token`
/// joining would hand over).
fn joining_dir(first: &Server) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    for f in [
        "tls/server-ca.crt",
        "tls/server-ca.key",
        "tls/service-account.key",
        "admin.token",
        "node-token",
    ] {
        let from = first.data_dir().join(f);
        assert!(from.exists(), "{} missing", from.display());
        std::fs::copy(&from, dir.path().join(f)).unwrap();
    }
    dir
}

/// Three etcd members, two skiff servers: kill the server holding the
/// scheduler and controller-manager Leases and the other takes them and
/// schedules; kill an etcd member and writes continue; no acknowledged write
/// is lost.
#[test]
fn two_servers_on_three_etcd_members_fail_over() {
    let Some(mut cluster) = etcd(3) else { return };
    let endpoint = cluster.endpoint_list();
    let flags = ["--datastore-endpoint", endpoint.as_str()];
    let mut s1 = Server::start_with(&flags);
    support::eventually("the first server to take the scheduler Lease", &s1, || {
        lease_holder(&s1, "kube-scheduler").is_some()
    });
    let first = lease_holder(&s1, "kube-scheduler").unwrap();
    let s2 = start_in(joining_dir(&s1), &flags);
    // One cluster: both serve the same objects, both with the same CA.
    s1.ok(&["create", "configmap", "written-on-1"]);
    support::eventually("server 2 to see server 1's write", &s2, || {
        s2.kubectl(&["get", "cm", "written-on-1"]).status.success()
    });
    assert_eq!(
        std::fs::read(s1.data_dir().join("tls/server-ca.crt")).unwrap(),
        std::fs::read(s2.data_dir().join("tls/server-ca.crt")).unwrap()
    );
    let mut acknowledged = vec!["written-on-1".to_string()];
    for i in 0..10 {
        let name = format!("ack-{i}");
        s2.ok(&["create", "configmap", &name]);
        acknowledged.push(name);
    }
    assert_eq!(
        lease_holder(&s2, "kube-scheduler").as_deref(),
        Some(first.as_str()),
        "the lease moved while its holder was alive"
    );
    // Services created on either server never share a ClusterIP or NodePort
    // (both servers' allocators start at the same place).
    for i in 0..4 {
        let s = if i % 2 == 0 { &s1 } else { &s2 };
        s.ok(&[
            "create",
            "service",
            "nodeport",
            &format!("np-{i}"),
            "--tcp=80:80",
        ]);
    }
    support::eventually("server 2 to see every Service", &s2, || {
        s2.ok(&["get", "svc", "-o", "name"])
            .lines()
            .filter(|l| l.contains("np-"))
            .count()
            == 4
    });
    let ips: Vec<String> = s2
        .ok(&["get", "svc", "-o", "jsonpath={.items[*].spec.clusterIP}"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let unique: std::collections::HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "duplicate ClusterIPs: {ips:?}");
    let ports: Vec<String> = s2
        .ok(&[
            "get",
            "svc",
            "-o",
            "jsonpath={.items[*].spec.ports[*].nodePort}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let unique: std::collections::HashSet<&String> = ports.iter().collect();
    assert_eq!(
        (unique.len(), ports.len()),
        (4, 4),
        "duplicate NodePorts: {ports:?}"
    );
    // Each server publishes its identity Lease.
    support::eventually("an identity Lease per server", &s2, || {
        s2.ok(&[
            "-n",
            "kube-system",
            "get",
            "lease",
            "-l",
            "apiserver.kubernetes.io/identity=kube-apiserver",
            "-o",
            "name",
        ])
        .lines()
        .count()
            == 2
    });
    support::eventually(
        "the first server to take the controller-manager Lease",
        &s1,
        || lease_holder(&s1, "kube-controller-manager").is_some(),
    );
    let first_cm = lease_holder(&s1, "kube-controller-manager").unwrap();

    // Kill -9 the server holding the Leases.
    s1.kill9();
    let killed = std::time::Instant::now();
    support::eventually_within(
        std::time::Duration::from_secs(45),
        "server 2 to take the scheduler Lease",
        &s2,
        || lease_holder(&s2, "kube-scheduler").is_some_and(|h| h != first),
    );
    eprintln!(
        "scheduler Lease taken over {:?} after the kill",
        killed.elapsed()
    );
    support::eventually_within(
        std::time::Duration::from_secs(45),
        "server 2 to take the controller-manager Lease",
        &s2,
        || lease_holder(&s2, "kube-controller-manager").is_some_and(|h| h != first_cm),
    );
    // And it schedules.
    let _sim = support::sim(&s2, 1);
    support::eventually("a simulated node", &s2, || {
        s2.ok(&["get", "nodes", "-o", "name"])
            .contains("sim-node-0")
    });
    s2.ok(&[
        "run",
        "after-failover",
        "--image=busybox",
        "--restart=Never",
    ]);
    support::eventually("the pod scheduled by server 2", &s2, || {
        s2.ok(&[
            "get",
            "pod",
            "after-failover",
            "-o",
            "jsonpath={.spec.nodeName}",
        ]) == "sim-node-0"
    });

    // Lose one etcd member (of three): still serving, reads and writes.
    cluster.members[0].kill();
    let mut n = 0;
    support::eventually("a write with one etcd member down", &s2, || {
        n += 1;
        s2.kubectl(&["create", "configmap", &format!("degraded-{n}")])
            .status
            .success()
    });
    acknowledged.push(format!("degraded-{n}"));
    eprintln!("first write with an etcd member down succeeded at attempt {n}");
    let cms = names(&s2, &["get", "cm"]);
    for name in &acknowledged {
        assert!(
            cms.contains(name),
            "acknowledged write {name} lost: {cms:?}"
        );
    }
}

/// Two of three etcd members down: writes answer 503 with a Status; when
/// quorum returns, the server recovers by itself and keeps every write.
#[test]
fn quorum_loss_is_503_and_recovers() {
    let Some(mut cluster) = etcd(3) else { return };
    let endpoint = cluster.endpoint_list();
    let s = Server::start_with(&["--datastore-endpoint", &endpoint]);
    s.ok(&["create", "configmap", "before"]);
    cluster.members[1].kill();
    cluster.members[2].kill();
    let out = s.kubectl(&["create", "configmap", "during", "-v=6"]);
    assert!(!out.status.success(), "a write succeeded without quorum");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("503") || err.contains("ServiceUnavailable"),
        "{err}"
    );
    eprintln!(
        "write without quorum: {}",
        err.lines().last().unwrap_or_default()
    );
    cluster.members[1].restart().unwrap();
    cluster.members[2].restart().unwrap();
    support::eventually("writes to work again after quorum returned", &s, || {
        s.kubectl(&["create", "configmap", "after"])
            .status
            .success()
    });
    support::eventually("the watch cache to follow again", &s, || {
        s.kubectl(&["get", "cm", "after"]).status.success()
    });
    let cms = names(&s, &["get", "cm"]);
    assert!(
        cms.contains(&"before".to_string()) && cms.contains(&"after".to_string()),
        "{cms:?}"
    );
    // ("during" may or may not be there: as with etcd itself, a write that
    // timed out while quorum was lost has an unknown outcome.)
}

/// A server started with an empty data directory and the same datastore
/// and cluster token restores the cluster CA, keys and tokens that the
/// first server stored there (encrypted with the token) and serves the same
/// cluster; with another token it gets none of them.
#[test]
fn a_server_joins_with_the_cluster_token() {
    let Some(cluster) = etcd(1) else { return };
    let endpoint = cluster.endpoint_list();
    let flags = [
        "--datastore-endpoint",
        endpoint.as_str(),
        "--token",
        "cluster-secret",
    ];
    let s1 = Server::start_with(&flags);
    s1.ok(&["create", "configmap", "from-1"]);
    // The node-token holds the cluster token pinned to the CA (k3s's form).
    let node_token = std::fs::read_to_string(s1.data_dir().join("node-token")).unwrap();
    assert!(
        node_token.trim().starts_with("K10")
            && node_token.trim().ends_with("::server:cluster-secret"),
        "{node_token}"
    );
    let s2 = Server::start_with(&flags);
    for f in [
        "tls/server-ca.crt",
        "tls/server-ca.key",
        "tls/service-account.key",
        "admin.token",
        "node-token",
    ] {
        assert_eq!(
            std::fs::read(s1.data_dir().join(f)).unwrap(),
            std::fs::read(s2.data_dir().join(f)).unwrap(),
            "{f}"
        );
    }
    s2.ok(&["get", "configmap", "from-1"]);
    // The data in etcd is encrypted.
    let sealed = etcd_get(
        &cluster,
        "/registry/",
        &skiff_apiserver::bootdata::key_for("cluster-secret"),
    )
    .unwrap();
    let ca_key = std::fs::read_to_string(s1.data_dir().join("tls/server-ca.key")).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(ca_key.lines().nth(1).unwrap()));
    let other = Server::start_with(&[
        "--datastore-endpoint",
        endpoint.as_str(),
        "--token",
        "another-secret",
    ]);
    assert_ne!(
        std::fs::read(s1.data_dir().join("tls/server-ca.crt")).unwrap(),
        std::fs::read(other.data_dir().join("tls/server-ca.crt")).unwrap()
    );
}
