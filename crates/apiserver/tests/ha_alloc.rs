//! Several API servers on one store: ClusterIP and NodePort allocation
//! never hands out a value twice, and a deleted Service's values are free
//! again on every server.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_store::Store;

struct Server {
    client: kube::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(dir: &Path, store: Arc<dyn Store>) -> Server {
    let mut config = skiff_apiserver::Config::new(dir.to_path_buf(), store);
    config.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.port = 0;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (running, _handle) = skiff_apiserver::start(config, async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig_path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    Server {
        client: kube::Client::try_from(config).unwrap(),
        _stop: tx,
    }
}

fn service(name: &str, cluster_ip: Option<&str>) -> Service {
    let mut v = json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}});
    if let Some(ip) = cluster_ip {
        v["spec"]["clusterIP"] = json!(ip);
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_hand_out_the_same_cluster_ip_or_node_port() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(skiff_store_sqlite::SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let a = start(&dir.path().join("a"), store.clone()).await;
    let b = start(&dir.path().join("b"), store.clone()).await;
    let apis = [
        Api::<Service>::namespaced(a.client.clone(), "default"),
        Api::<Service>::namespaced(b.client.clone(), "default"),
    ];

    // Both servers scan from the same cursor: without claims in the store
    // they would hand out the same addresses, in the same order.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let api = apis[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            api.create(&PostParams::default(), &service(&format!("s{i}"), None))
                .await
                .unwrap()
        }));
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for t in tasks {
        let svc = t.await.unwrap();
        let spec = svc.spec.unwrap();
        let ip = spec.cluster_ip.unwrap();
        assert!(ips.insert(ip.clone()), "ClusterIP {ip} handed out twice");
        for p in spec.ports.unwrap() {
            let np = p.node_port.unwrap();
            assert!(ports.insert(np), "NodePort {np} handed out twice");
        }
    }
    assert_eq!(ips.len(), 30);
    assert_eq!(ports.len(), 60);

    // Each allocation is claimed in the store.
    let claims = store
        .range("/registry/ipaddresses/", None, 0)
        .await
        .unwrap();
    let claimed: HashSet<String> = claims
        .kvs
        .iter()
        .map(|kv| {
            kv.key
                .trim_start_matches("/registry/ipaddresses/")
                .to_string()
        })
        .collect();
    assert!(ips.is_subset(&claimed), "{ips:?} not all in {claimed:?}");
    let s0_ip = apis[0]
        .get("s0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let s0_claim = claims
        .kvs
        .iter()
        .find(|kv| kv.key.ends_with(&format!("/{s0_ip}")))
        .unwrap();
    let s0: serde_json::Value = serde_json::from_slice(&s0_claim.value).unwrap();
    assert_eq!(
        s0["spec"]["parentRef"],
        json!({"group": "", "resource": "services", "namespace": "default", "name": "s0"})
    );

    // A taken address is refused on the other server; once its Service is
    // deleted (on one server) the other can have it.
    let held = apis[0].get("s0").await.unwrap().spec.unwrap();
    let ip = held.cluster_ip.unwrap();
    let err = apis[1]
        .create(&PostParams::default(), &service("again", Some(&ip)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422 && e.message.contains("already allocated")),
        "{err:?}"
    );
    apis[0]
        .delete("s0", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        store
            .get(&format!("/registry/ipaddresses/{ip}"))
            .await
            .unwrap()
            .is_none(),
        "the claim goes with the Service"
    );
    let mut node_port_svc = service("again", Some(&ip));
    let np = held.ports.unwrap()[0].node_port.unwrap();
    node_port_svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(np);
    let again = apis[1]
        .create(&PostParams::default(), &node_port_svc)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(again.cluster_ip.as_deref(), Some(ip.as_str()));
    assert_eq!(again.ports.unwrap()[0].node_port, Some(np));

    // A failed create gives back what it claimed.
    let mut clash = service("clash", None);
    let taken_port = apis[1]
        .get("s1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()[0]
        .node_port
        .unwrap();
    clash.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].node_port = Some(taken_port);
    let err = apis[0]
        .create(&PostParams::default(), &clash)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422),
        "{err:?}"
    );
    let after = store
        .range("/registry/ipaddresses/", None, 0)
        .await
        .unwrap()
        .kvs
        .len();
    assert_eq!(
        after,
        claims.kvs.len(),
        "no claim is left behind by the failed create"
    );
}

#[tokio::test]
async fn existing_services_are_claimed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(skiff_store_sqlite::SqliteStore::open(&dir.path().join("state.db")).unwrap());
    // A Service stored by an older server, without claims.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "old", "namespace": "default", "uid": "u1"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.7.7", "clusterIPs": ["10.43.7.7"], "ports": [{"port": 80, "nodePort": 31111}]}});
    store
        .create(
            "/registry/services/specs/default/old",
            serde_json::to_vec(&svc).unwrap(),
        )
        .await
        .unwrap();
    let a = start(&dir.path().join("a"), store.clone()).await;
    assert!(
        store
            .get("/registry/ipaddresses/10.43.7.7")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get("/registry/servicenodeports/31111")
            .await
            .unwrap()
            .is_some()
    );
    // A second server starting on the same store is fine with the claims there.
    let b = start(&dir.path().join("b"), store.clone()).await;
    for client in [a.client, b.client] {
        let api = Api::<Service>::namespaced(client, "default");
        let err = api
            .create(&PostParams::default(), &service("dup", Some("10.43.7.7")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref e) if e.code == 422),
            "{err:?}"
        );
    }
}
