//! The seeds' own manifests and kubectl commands (shared/scenarios), with
//! the real kubectl against a real `skiff server`.

mod support;
use support::{Server, eventually, scenario, sim};

#[test]
fn pod_manifest_apply_get_describe() {
    let s = Server::start();
    let out = s.ok(&["apply", "-f", &scenario("pod.yaml")]);
    assert!(out.contains("pod/myapp-pod created"), "{out}");
    let out = s.ok(&["get", "pods"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out}"
    );
    assert!(
        out.contains("myapp-pod") && out.contains("0/1") && out.contains("Pending"),
        "{out}"
    );
    let wide = s.ok(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ],
        "{wide}"
    );
    let desc = s.ok(&["describe", "pod", "myapp-pod"]);
    for want in [
        "Name:",
        "myapp-pod",
        "Namespace:",
        "default",
        "Labels:",
        "app=myapp",
        "type=front-end",
        "nginx-container",
        "Image:",
        "nginx",
    ] {
        assert!(desc.contains(want), "describe lacks {want}:\n{desc}");
    }
    // Re-applying the same manifest changes nothing.
    let out = s.ok(&["apply", "-f", &scenario("pod.yaml")]);
    assert!(out.contains("pod/myapp-pod unchanged"), "{out}");
}

#[test]
fn replicaset_and_deployment_with_service() {
    let s = Server::start();
    let out = s.ok(&["apply", "-f", &scenario("replicaset.yaml")]);
    assert!(
        out.contains("replicaset.apps/myapp-replicaset created"),
        "{out}"
    );
    let rs = s.json(&["get", "rs", "myapp-replicaset"]);
    assert_eq!(rs["spec"]["replicas"], 3);
    assert_eq!(
        rs["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );

    let out = s.ok(&["apply", "-f", &scenario("web-deployment-service.yaml")]);
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );
    let svc = s.json(&["get", "svc", "web"]);
    assert_eq!(svc["spec"]["type"], "NodePort");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or_default();
    assert!(ip.starts_with("10.43."), "clusterIP {ip}");
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_default();
    assert!((30000..=32767).contains(&node_port), "nodePort {node_port}");
    let out = s.ok(&["get", "svc"]);
    assert!(
        out.contains("kubernetes") && out.contains("10.43.0.1"),
        "{out}"
    );
    assert!(out.contains(&format!("80:{node_port}/TCP")), "{out}");
    let out = s.ok(&["get", "deploy", "web", "-o", "wide"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{out}"
    );
}

#[test]
fn run_dry_run_client_and_imperative_run() {
    let s = Server::start();
    let yaml = s.ok(&[
        "run",
        "redis",
        "--image=redis123",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    assert!(
        yaml.contains("kind: Pod")
            && yaml.contains("image: redis123")
            && yaml.contains("run: redis"),
        "{yaml}"
    );
    // Nothing was created by a client dry run.
    assert!(!s.ok(&["get", "pods"]).contains("redis"));
    // The generated manifest applies.
    let out = s.ok_stdin(&["apply", "-f", "-"], &yaml);
    assert!(out.contains("pod/redis created"), "{out}");
    let out = s.ok(&["run", "nginx", "--image=nginx"]);
    assert!(out.contains("pod/nginx created"), "{out}");
    let pod = s.json(&["get", "pod", "nginx"]);
    assert_eq!(pod["metadata"]["labels"]["run"], "nginx");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
}

#[test]
fn pod_is_scheduled_onto_a_node_and_runs() {
    let s = Server::start();
    let _sim = sim(&s, 3);
    s.ok(&["apply", "-f", &scenario("pod.yaml")]);
    eventually("myapp-pod running on a node", &s, || {
        let wide = s.ok(&["get", "pods", "-o", "wide", "--no-headers"]);
        wide.contains("myapp-pod") && wide.contains("Running") && wide.contains("sim-node-")
    });
    let desc = s.ok(&["describe", "pod", "myapp-pod"]);
    assert!(
        desc.contains("Successfully assigned default/myapp-pod to sim-node-"),
        "{desc}"
    );
    assert!(
        desc.contains("Node:") && desc.contains("sim-node-"),
        "{desc}"
    );
}
