//! The kill -9 soak of the robustness issue: 64 clients create and delete
//! ConfigMaps while the server is killed with SIGKILL and started again,
//! several times. Afterwards every acknowledged create that was not
//! deleted is there, every acknowledged delete is gone, and every object
//! decodes. A write whose answer never came (the server died under it) may
//! or may not have landed, as with etcd, and is not counted either way.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use support::Server;

const CLIENTS: usize = 64;
const KILLS: u64 = 6;
/// Acknowledged writes between two kills.
const WRITES_PER_ROUND: u64 = 600;

#[derive(Default)]
struct Ledger {
    /// Created (201), not deleted since.
    live: BTreeSet<String>,
    /// Deleted (200) after an acknowledged create.
    deleted: BTreeSet<String>,
    /// Writes without an answer: their outcome is unknown.
    unknown: BTreeSet<String>,
}

async fn client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

async fn writer(
    cms: Api<ConfigMap>,
    id: usize,
    ledger: Arc<Mutex<Ledger>>,
    acks: tokio::sync::watch::Sender<u64>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let name = format!("soak-{id}-{n}");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"soak": "yes"}},
            "data": {"client": id.to_string(), "n": n.to_string()},
        }))
        .expect("configmap");
        match cms.create(&PostParams::default(), &cm).await {
            Ok(_) => {
                ledger.lock().unwrap().live.insert(name.clone());
                acks.send_modify(|a| *a += 1);
            }
            Err(_) => {
                ledger.lock().unwrap().unknown.insert(name);
                // The server is down or restarting: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        // Every third object is deleted again.
        if n.is_multiple_of(3) {
            match cms.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    {
                        let mut l = ledger.lock().unwrap();
                        l.live.remove(&name);
                        l.deleted.insert(name);
                    }
                    acks.send_modify(|a| *a += 1);
                }
                Err(_) => {
                    {
                        let mut l = ledger.lock().unwrap();
                        l.live.remove(&name);
                        l.unknown.insert(name);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[test]
fn no_acknowledged_write_is_lost_across_kill_9() {
    let mut s = Server::start_with(&["--disable-scheduler"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (acks, mut acked) = tokio::sync::watch::channel(0u64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client = rt.block_on(client(&s));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
            rt.spawn(writer(
                cms,
                id,
                ledger.clone(),
                acks.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    for round in 1..=KILLS {
        let target = round * WRITES_PER_ROUND;
        rt.block_on(acked.wait_for(|a| *a >= target))
            .expect("writers stopped");
        s.kill9();
        s.spawn();
    }
    // One more round after the last restart, then stop.
    let target = (KILLS + 1) * WRITES_PER_ROUND;
    rt.block_on(acked.wait_for(|a| *a >= target))
        .expect("writers stopped");
    stop_tx.send_replace(true);
    for w in writers {
        rt.block_on(w).expect("writer");
    }

    let ledger = ledger.lock().unwrap();
    let listed = rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        // A typed list: every object must decode.
        cms.list(&ListParams::default().labels("soak=yes")).await
    });
    let listed = listed.unwrap_or_else(|e| panic!("listing after the soak: {e}\n{}", s.log()));
    let present: BTreeSet<String> = listed
        .items
        .iter()
        .filter_map(|cm| cm.metadata.name.clone())
        .collect();
    let lost: Vec<&String> = ledger.live.difference(&present).collect();
    let resurrected: Vec<&String> = ledger.deleted.intersection(&present).collect();
    println!(
        "soak: {KILLS} kills, {} acknowledged creates kept, {} acknowledged deletes, {} writes without an answer, {} objects listed",
        ledger.live.len(),
        ledger.deleted.len(),
        ledger.unknown.len(),
        present.len()
    );
    assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");
    assert!(
        resurrected.is_empty(),
        "acknowledged deletes undone: {resurrected:?}"
    );
    // Nothing is there that nobody wrote.
    let known: BTreeSet<&String> = ledger.live.iter().chain(&ledger.unknown).collect();
    let strangers: Vec<&String> = present.iter().filter(|n| !known.contains(n)).collect();
    assert!(strangers.is_empty(), "objects nobody wrote: {strangers:?}");
    // And kubectl reads everything the server holds.
    s.ok(&["get", "all,configmaps,leases,events", "-A", "-o", "json"]);
}
