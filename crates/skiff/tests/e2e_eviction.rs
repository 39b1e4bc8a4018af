//! Node-pressure eviction with real containers and the real kubectl: a
//! node whose memory threshold is always crossed (`memory.available<1000Ti`)
//! has MemoryPressure from the start, so
//! - a new BestEffort pod is rejected by the kubelet's admission (Failed,
//!   Evicted, "The node had condition: [MemoryPressure]");
//! - a Burstable pod (admitted under memory pressure alone, as upstream
//!   does) is evicted by the eviction manager: Failed, Evicted, upstream's
//!   message, a DisruptionTarget condition and a Warning Evicted event,
//!   with a Warning EvictionThresholdMet event on the node;
//! - a system-node-critical pod is never evicted, however many passes go by.
//!
//! Pods are bound by spec.nodeName: the node's memory-pressure taint keeps
//! the scheduler away, and it is the kubelet that is under test. Needs
//! root and Debian's containerd, runc, containernetworking-plugins,
//! busybox-static and nftables, which .ci/run installs.

mod support;

use serde_json::{Value, json};
use support::{Server, eventually};

/// Memory always "low"; the disk signals off as in every test node.
const ALWAYS_LOW_MEMORY: &str =
    "memory.available<1000Ti,nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%";

fn pod(namespace: &str, name: &str, node: &str, extra: Value) -> String {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
        },
    });
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    p.to_string()
}

fn get(s: &Server, namespace: &str, name: &str) -> Value {
    s.json(&["get", "pod", "-n", namespace, name])
}

/// The events about `name` in `namespace` with `reason`.
fn events(s: &Server, namespace: &str, name: &str, reason: &str) -> Vec<Value> {
    let list = s.json(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .cloned()
        .collect()
}

fn count(events: &[Value]) -> i64 {
    events
        .iter()
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum()
}

#[test]
fn memory_pressure_evicts_and_rejects_but_spares_critical_pods() {
    if let Some(why) = support::agent_prerequisite_missing() {
        eprintln!("skipping the eviction end-to-end test: {why}");
        return;
    }
    let s = Server::start_with_agent_and(&["--eviction-hard", ALWAYS_LOW_MEMORY]);
    eventually("the node Ready", &s, || {
        s.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    });
    support::import_busybox(&s);
    let node = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    eventually("MemoryPressure on the node", &s, || {
        s.ok(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        ]) == "True"
    });

    // A critical pod is admitted under pressure and runs.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "kube-system",
            "critical",
            &node,
            json!({"priorityClassName": "system-node-critical"}),
        ),
    );
    eventually("the critical pod Running", &s, || {
        get(&s, "kube-system", "critical")["status"]["phase"] == "Running"
    });

    // A BestEffort pod is not admitted.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod("default", "best-effort", &node, json!({})),
    );
    eventually("the BestEffort pod rejected", &s, || {
        get(&s, "default", "best-effort")["status"]["phase"] == "Failed"
    });
    let rejected = get(&s, "default", "best-effort");
    assert_eq!(rejected["status"]["reason"], "Evicted", "{rejected:#}");
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. ",
        "{rejected:#}"
    );

    // A Burstable pod is admitted, then evicted by the next pass.
    let burstable = pod(
        "default",
        "burstable",
        &node,
        json!({"containers": [{"name": "app", "image": "busybox:skiff", "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"], "resources": {"requests": {"memory": "1Ki"}}}]}),
    );
    s.ok_stdin(&["apply", "-f", "-"], &burstable);
    eventually("the Burstable pod evicted", &s, || {
        get(&s, "default", "burstable")["status"]["phase"] == "Failed"
    });
    let evicted = get(&s, "default", "burstable");
    let status = &evicted["status"];
    assert_eq!(status["reason"], "Evicted", "{evicted:#}");
    let message = status["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1000Ti, available: "
        ),
        "{message}"
    );
    let disruption = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap_or_else(|| panic!("no DisruptionTarget condition: {evicted:#}"));
    assert_eq!(disruption["status"], "True");
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    assert_eq!(disruption["message"], message.as_str());
    // Its container was killed, not left running.
    eventually("the evicted pod's container terminated", &s, || {
        get(&s, "default", "burstable")["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["state"].get("running").is_none())
    });
    eventually("the Evicted event on the pod", &s, || {
        events(&s, "default", "burstable", "Evicted")
            .iter()
            .any(|e| {
                e["type"] == "Warning"
                    && e["message"] == message.as_str()
                    && e["source"]["component"] == "kubelet"
            })
    });
    let threshold_met = |s: &Server| count(&events(s, "default", &node, "EvictionThresholdMet"));
    eventually("the EvictionThresholdMet event on the node", &s, || {
        events(&s, "default", &node, "EvictionThresholdMet")
            .iter()
            .any(|e| e["type"] == "Warning" && e["message"] == "Attempting to reclaim memory")
    });
    assert!(
        !events(&s, "default", &node, "NodeHasInsufficientMemory").is_empty(),
        "no NodeHasInsufficientMemory event"
    );

    // Two more passes with the threshold crossed: the critical pod stays.
    let seen = threshold_met(&s);
    eventually("two more eviction passes", &s, || {
        threshold_met(&s) >= seen + 2
    });
    let critical = get(&s, "kube-system", "critical");
    assert_eq!(critical["status"]["phase"], "Running", "{critical:#}");
    assert!(
        events(&s, "kube-system", "critical", "Evicted").is_empty(),
        "the critical pod was evicted"
    );

    s.ok(&[
        "delete",
        "pod",
        "-n",
        "kube-system",
        "critical",
        "--grace-period=0",
        "--force",
    ]);
}
