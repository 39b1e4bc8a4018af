//! The service load balancer (↔ k3s's ServiceLB, formerly Klipper): a
//! Service of type LoadBalancer (without a loadBalancerClass) gets the
//! InternalIP of every Ready, schedulable node as its
//! status.loadBalancer.ingress; the service proxy on each node forwards
//! those addresses' ports to the Service's endpoints. A Service that stops
//! being a LoadBalancer has its status cleared.

use std::sync::Arc;

use crate::loopkit::Store;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::loopkit::{self, Key, Outcome, WorkQueue, is_status};

const CONTROLLER: &str = "servicelb";

fn node_ready(n: &Node) -> bool {
    let schedulable = !n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    schedulable && ready
}

fn internal_ip(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

/// The ingress addresses a Service should show: None when it is not ours
/// (not a LoadBalancer, or another class's).
pub fn desired_ingress<'a>(
    svc: &Service,
    nodes: impl Iterator<Item = &'a Node>,
) -> Option<Vec<String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    let mut ips: Vec<String> = nodes
        .filter(|n| node_ready(n))
        .filter_map(internal_ip)
        .collect();
    ips.sort();
    ips.dedup();
    Some(ips)
}

fn current_ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

pub async fn run(ctx: crate::Context) {
    let queue = Arc::new(WorkQueue::<Key>::new());
    let q = queue.clone();
    let (services, service_informer) = ctx.informers.get::<Service>().informer(move |ev, _| {
        if let Some(s) = loopkit::event_object(ev) {
            q.add(Key::of(s));
        }
    });
    let q = queue.clone();
    let services_for_nodes: Arc<std::sync::OnceLock<Store<Service>>> = Arc::default();
    let s4n = services_for_nodes.clone();
    let (nodes, node_informer) = ctx.informers.get::<Node>().informer(move |ev, _| {
        if loopkit::event_object(ev).is_none() {
            return;
        }
        // The node set changed: every LoadBalancer Service may need new addresses.
        if let Some(services) = s4n.get() {
            for s in services.state().iter().filter(|s| {
                s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
            }) {
                q.add(Key::of(s.as_ref()));
            }
        }
    });
    let _ = services_for_nodes.set(services.clone());
    let worker = async {
        if !loopkit::wait_ready(&services).await || !loopkit::wait_ready(&nodes).await {
            return;
        }
        for s in services.state() {
            queue.add(Key::of(s.as_ref()));
        }
        loop {
            let key = queue.next().await;
            let outcome =
                crate::loopkit::guarded(CONTROLLER, &key, reconcile(&ctx, &services, &nodes, &key))
                    .await;
            queue.finish(CONTROLLER, key, outcome);
        }
    };
    tokio::join!(service_informer, node_informer, worker);
}

async fn reconcile(
    ctx: &crate::Context,
    services: &Store<Service>,
    nodes: &Store<Node>,
    key: &Key,
) -> Outcome {
    let Some(svc) = services.get(&key.object_ref::<Service>()) else {
        return Ok(None);
    };
    let all_nodes = nodes.state();
    let current = current_ingress(&svc);
    let status = match desired_ingress(&svc, all_nodes.iter().map(|n| n.as_ref())) {
        Some(ips) if ips != current => {
            json!({"loadBalancer": {"ingress": ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect::<Vec<_>>()}})
        }
        // Not ours any more: clear what we (or anyone) left there.
        None if !current.is_empty()
            && svc
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_class.as_ref())
                .is_none() =>
        {
            json!({"loadBalancer": {}})
        }
        _ => return Ok(None),
    };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(None),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: bool, unschedulable: bool) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"unschedulable": unschedulable},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}], "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}))
        .expect("node")
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn load_balancers_get_the_ready_schedulable_nodes_addresses() {
        let nodes = [
            node("b", "10.0.0.2", true, false),
            node("a", "10.0.0.1", true, false),
            node("c", "10.0.0.3", false, false),
            node("d", "10.0.0.4", true, true),
        ];
        let lb = svc(json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}));
        assert_eq!(
            desired_ingress(&lb, nodes.iter()),
            Some(vec!["10.0.0.1".to_string(), "10.0.0.2".into()])
        );
        let cluster_ip = svc(json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}));
        assert_eq!(desired_ingress(&cluster_ip, nodes.iter()), None);
        let other_class = svc(
            json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}}),
        );
        assert_eq!(desired_ingress(&other_class, nodes.iter()), None);
        assert_eq!(desired_ingress(&lb, std::iter::empty()), Some(vec![]));
    }
}
