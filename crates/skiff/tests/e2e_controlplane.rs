//! The control loops end to end: `skiff server` (scheduler and controllers
//! in-process) with hollow nodes from `skiff sim`, driven by kubectl.

mod support;

use support::{Server, eventually, sim};

#[test]
fn deployment_is_scheduled_rolled_out_scaled_and_deleted() {
    let s = Server::start();
    let _sim = sim(&s, 3);
    eventually("3 Ready nodes", &s, || {
        let out = s.ok(&["get", "nodes", "--no-headers"]);
        out.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });
    // Nodes got pod CIDRs from the cluster CIDR.
    let cidrs = s.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
    assert_eq!(cidrs.split_whitespace().filter(|c| c.starts_with("10.42.")).count(), 3, "{cidrs}");

    let out = s.ok(&["apply", "-f", &support::scenario("web-deployment-service.yaml")]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let wide = s.ok(&["get", "pods", "-o", "wide", "-l", "app=web"]);
    assert_eq!(wide.lines().filter(|l| l.contains("Running") && l.contains("sim-node-")).count(), 2, "{wide}");
    // Endpoints follow the ready pods.
    eventually("2 endpoints", &s, || s.ok(&["get", "endpoints", "web", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]).split_whitespace().count() == 2);
    // Every namespace has its default service account.
    eventually("default service account", &s, || s.kubectl(&["get", "serviceaccount", "default"]).status.success());

    s.ok(&["scale", "deployment", "web", "--replicas=4"]);
    eventually("4 running pods", &s, || {
        s.ok(&["get", "pods", "-l", "app=web", "--no-headers"]).lines().filter(|l| l.contains("Running")).count() == 4
    });
    // A new template rolls out a new ReplicaSet; undo goes back.
    s.ok(&["set", "image", "deployment/web", "web=busybox:1.37"]);
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    s.ok(&["rollout", "undo", "deployment/web"]);
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let image = s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "nginx");
    // describe shows the controllers' events.
    let desc = s.ok(&["describe", "deployment", "web"]);
    assert!(desc.contains("ScalingReplicaSet"), "{desc}");

    // Deleting the deployment removes its ReplicaSets and pods (garbage collector).
    s.ok(&["delete", "deployment", "web"]);
    eventually("pods gone", &s, || s.ok(&["get", "pods", "-l", "app=web", "--no-headers"]).trim().is_empty());
    assert!(s.ok(&["get", "rs", "--no-headers"]).trim().is_empty());
}

#[test]
fn replicaset_heals_and_namespace_deletion_cleans_up() {
    let s = Server::start();
    let _sim = sim(&s, 2);
    s.ok(&["create", "namespace", "team"]);
    s.ok(&["apply", "-n", "team", "-f", &support::scenario("replicaset.yaml")]);
    eventually("3 running pods", &s, || {
        s.ok(&["get", "pods", "-n", "team", "--no-headers"]).lines().filter(|l| l.contains("Running")).count() == 3
    });
    let first = s.ok(&["get", "pods", "-n", "team", "-o", "jsonpath={.items[0].metadata.name}"]);
    s.ok(&["delete", "pod", "-n", "team", &first]);
    eventually("the ReplicaSet replaced the pod", &s, || {
        let out = s.ok(&["get", "pods", "-n", "team", "--no-headers"]);
        out.lines().filter(|l| l.contains("Running")).count() == 3 && !out.contains(&first)
    });
    // An unschedulable pod says why.
    s.ok(&["run", "huge", "-n", "team", "--image=busybox", "--overrides", r#"{"spec":{"containers":[{"name":"huge","image":"busybox","resources":{"requests":{"cpu":"64"}}}]}}"#]);
    eventually("FailedScheduling event", &s, || s.ok(&["describe", "pod", "huge", "-n", "team"]).contains("Insufficient cpu"));
    // Deleting the namespace deletes its contents, then the namespace.
    s.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    assert!(!s.kubectl(&["get", "namespace", "team"]).status.success());
}
