//! The control loops end to end: `skiff server` (scheduler and controllers
//! in-process) with hollow nodes from `skiff sim`, driven by kubectl.

mod support;

use std::time::Duration;

use support::{Server, eventually, eventually_within, sim, sim_named, sim_sized};

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
    assert_eq!(
        cidrs
            .split_whitespace()
            .filter(|c| c.starts_with("10.42."))
            .count(),
        3,
        "{cidrs}"
    );

    let out = s.ok(&[
        "apply",
        "-f",
        &support::scenario("web-deployment-service.yaml"),
    ]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let wide = s.ok(&["get", "pods", "-o", "wide", "-l", "app=web"]);
    assert_eq!(
        wide.lines()
            .filter(|l| l.contains("Running") && l.contains("sim-node-"))
            .count(),
        2,
        "{wide}"
    );
    // Endpoints follow the ready pods.
    eventually("2 endpoints", &s, || {
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
    // Every namespace has its default service account.
    eventually("default service account", &s, || {
        s.kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
    });

    s.ok(&["scale", "deployment", "web", "--replicas=4"]);
    eventually("4 running pods", &s, || {
        s.ok(&["get", "pods", "-l", "app=web", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running"))
            .count()
            == 4
    });
    s.ok(&["scale", "deployment", "web", "--replicas=3"]);
    eventually("3 pods after scaling down", &s, || {
        s.ok(&["get", "pods", "-l", "app=web", "--no-headers"])
            .lines()
            .count()
            == 3
    });
    // A new template rolls out a new ReplicaSet; undo goes back.
    s.ok(&["set", "image", "deployment/web", "web=busybox:1.37"]);
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    s.ok(&["rollout", "undo", "deployment/web"]);
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let image = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "nginx");
    // describe shows the controllers' events.
    let desc = s.ok(&["describe", "deployment", "web"]);
    assert!(desc.contains("ScalingReplicaSet"), "{desc}");

    // Deleting the deployment removes its ReplicaSets and pods (garbage collector).
    s.ok(&["delete", "deployment", "web"]);
    eventually("pods gone", &s, || {
        s.ok(&["get", "pods", "-l", "app=web", "--no-headers"])
            .trim()
            .is_empty()
    });
    assert!(s.ok(&["get", "rs", "--no-headers"]).trim().is_empty());
}

#[test]
fn replicaset_heals_and_namespace_deletion_cleans_up() {
    let s = Server::start();
    let _sim = sim(&s, 2);
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "apply",
        "-n",
        "team",
        "-f",
        &support::scenario("replicaset.yaml"),
    ]);
    eventually("3 running pods", &s, || {
        s.ok(&["get", "pods", "-n", "team", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running"))
            .count()
            == 3
    });
    let first = s.ok(&[
        "get",
        "pods",
        "-n",
        "team",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    s.ok(&["delete", "pod", "-n", "team", &first]);
    eventually("the ReplicaSet replaced the pod", &s, || {
        let out = s.ok(&["get", "pods", "-n", "team", "--no-headers"]);
        out.lines().filter(|l| l.contains("Running")).count() == 3 && !out.contains(&first)
    });
    // An unschedulable pod says why.
    s.ok(&["run", "huge", "-n", "team", "--image=busybox", "--overrides", r#"{"spec":{"containers":[{"name":"huge","image":"busybox","resources":{"requests":{"cpu":"64"}}}]}}"#]);
    eventually("FailedScheduling event", &s, || {
        s.ok(&["describe", "pod", "huge", "-n", "team"])
            .contains("Insufficient cpu")
    });
    assert!(
        s.ok(&["get", "pod", "huge", "-n", "team", "--no-headers"])
            .contains("Pending")
    );
    // A node with room appears: the pending pod is bound to it.
    let _big = sim_sized(&s, 1, "big-", "128");
    eventually("huge bound to the big node", &s, || {
        s.ok(&[
            "get",
            "pod",
            "huge",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.nodeName}",
        ]) == "big-0"
    });
    // Deleting the namespace deletes its contents, then the namespace.
    s.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    assert!(!s.kubectl(&["get", "namespace", "team"]).status.success());
}

#[test]
fn taints_tolerations_and_affinity_steer_pods() {
    let s = Server::start();
    let _sim = sim(&s, 3);
    eventually("3 Ready nodes", &s, || {
        s.ok(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 3
    });
    s.ok(&["taint", "nodes", "sim-node-0", "dedicated=db:NoSchedule"]);
    s.ok(&[
        "create",
        "deployment",
        "spread",
        "--image=busybox",
        "--replicas=4",
    ]);
    eventually("4 running pods", &s, || {
        s.ok(&["get", "pods", "-l", "app=spread", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running"))
            .count()
            == 4
    });
    let nodes = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert!(
        !nodes.contains("sim-node-0"),
        "a pod landed on the tainted node: {nodes}"
    );
    // A pod that tolerates the taint and requires that node by affinity goes there.
    let pod = r#"
apiVersion: v1
kind: Pod
metadata:
  name: db
spec:
  tolerations:
  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: kubernetes.io/hostname, operator: In, values: [sim-node-0]}
  containers:
  - {name: db, image: busybox}
"#;
    s.ok_stdin(&["apply", "-f", "-"], pod);
    eventually("db on sim-node-0", &s, || {
        s.ok(&["get", "pod", "db", "-o", "jsonpath={.spec.nodeName}"]) == "sim-node-0"
    });
    // Required anti-affinity: no two 'solo' pods on one node.
    let solo = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: solo}
spec:
  replicas: 3
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      tolerations: [{key: dedicated, operator: Exists}]
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: solo}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: busybox}]
"#;
    s.ok_stdin(&["apply", "-f", "-"], solo);
    eventually("3 solo pods on 3 nodes", &s, || {
        let nodes = s.ok(&[
            "get",
            "pods",
            "-l",
            "app=solo",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ]);
        let mut v: Vec<&str> = nodes.split_whitespace().collect();
        v.sort();
        v.dedup();
        v.len() == 3
    });
}

#[test]
fn failed_node_is_tainted_and_its_pods_recreated_elsewhere() {
    let s = Server::start_with(&["--node-monitor-grace-period", "6"]);
    let mut doomed = sim_named(&s, 1, "doomed-");
    eventually("doomed node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    let web = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 3}
      containers: [{name: web, image: busybox}]
"#;
    s.ok_stdin(&["apply", "-f", "-"], web);
    eventually("2 pods on the doomed node", &s, || {
        s.ok(&["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"])
            .lines()
            .filter(|l| l.contains("Running") && l.contains("doomed-0"))
            .count()
            == 2
    });
    let _healthy = sim_named(&s, 2, "healthy-");
    // The doomed node's agent dies: no more Lease renewals.
    drop(std::mem::replace(&mut doomed, support::Sim::none()));
    eventually_within(
        Duration::from_secs(90),
        "doomed node NotReady and tainted",
        &s,
        || {
            let taints = s.ok(&[
                "get",
                "node",
                "doomed-0",
                "-o",
                "jsonpath={.spec.taints[*].key}",
            ]);
            let ready = s.ok(&[
                "get",
                "node",
                "doomed-0",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            taints.contains("node.kubernetes.io/unreachable") && ready == "Unknown"
        },
    );
    eventually_within(
        Duration::from_secs(90),
        "pods recreated on healthy nodes",
        &s,
        || {
            let out = s.ok(&["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"]);
            out.lines()
                .filter(|l| l.contains("Running") && l.contains("healthy-"))
                .count()
                == 2
        },
    );
    let events = s.ok(&["get", "events", "-A"]);
    assert!(
        events.contains("TaintManagerEviction") || events.contains("NodeNotReady"),
        "{events}"
    );
}

#[test]
fn daemonset_statefulset_and_job() {
    let s = Server::start();
    let _sim = sim(&s, 3);
    eventually("3 Ready nodes", &s, || {
        s.ok(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 3
    });
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox}]
"#;
    s.ok_stdin(&["apply", "-f", "-"], ds);
    let out = s.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let mut v: Vec<&str> = nodes.split_whitespace().collect();
    v.sort();
    assert_eq!(v, ["sim-node-0", "sim-node-1", "sim-node-2"]);

    let sts = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;
    s.ok_stdin(&["apply", "-f", "-"], sts);
    let out = s.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(
        out.contains("partitioned roll out complete") || out.contains("roll out complete"),
        "{out}"
    );
    let names = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(names, "web-0 web-1 web-2");
    let pvcs = s.ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(pvcs, "data-web-0 data-web-1 data-web-2");

    s.ok(&[
        "create",
        "job",
        "pi",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo done",
    ]);
    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=60s",
    ]);
    let job = s.ok(&["get", "job", "pi"]);
    assert!(job.contains("Complete") && job.contains("1/1"), "{job}");
    let selector = s.ok(&[
        "get",
        "job",
        "pi",
        "-o",
        "jsonpath={.spec.selector.matchLabels}",
    ]);
    assert!(
        selector.contains("batch.kubernetes.io/controller-uid"),
        "{selector}"
    );
}
