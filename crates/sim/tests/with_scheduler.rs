//! Hollow nodes and the scheduler together: the scheduler places pods on
//! hollow nodes, which run them; deleting pods frees room for pending ones.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_sim::SimConfig;
use skiff_testsupport::TestServer;

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn create(pods: &Api<Pod>, name: &str, cpu: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_places_pods_on_hollow_nodes() {
    let ts = TestServer::start().await;
    let c = ts.client.clone();
    let sim = tokio::spawn(skiff_sim::run(
        c.clone(),
        SimConfig {
            nodes: 3,
            cpu: "2".into(),
            ..Default::default()
        },
    ));
    let sched = tokio::spawn(skiff_scheduler::run(
        c.clone(),
        skiff_scheduler::Config::default(),
    ));
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");

    for i in 0..6 {
        create(&pods, &format!("web-{i}"), "500m").await;
    }
    let placed = eventually("six running pods", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let running: Vec<&Pod> = list.items.iter().filter(|p| running(p)).collect();
        if running.len() < 6 {
            return None;
        }
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for p in running {
            *per_node
                .entry(p.spec.as_ref()?.node_name.clone()?)
                .or_default() += 1;
        }
        Some(per_node)
    })
    .await;
    // Least allocated spreads them evenly.
    assert_eq!(
        placed.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{placed:?}"
    );

    // 1.5 cpu fits nowhere (1 cpu left on each node).
    create(&pods, "big", "1500m").await;
    let lp = ListParams::default().fields("involvedObject.name=big,reason=FailedScheduling");
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let ev = eventually("FailedScheduling", || async {
        events.list(&lp).await.ok()?.items.into_iter().next()
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        )
    );

    // Graceful deletes: the hollow kubelet finishes them, which frees a node for big.
    let node = placed.keys().next().unwrap().clone();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()) {
            pods.delete(
                p.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
        }
    }
    let big = eventually("big to run", || async {
        let p = pods.get("big").await.ok()?;
        running(&p).then_some(p)
    })
    .await;
    assert_eq!(big.spec.unwrap().node_name.as_deref(), Some(node.as_str()));
    sched.abort();
    sim.abort();
}
