//! The kubelet's Summary API (`/stats/summary`, ↔ pkg/kubelet/server/stats):
//! per-pod and per-container CPU and memory from the runtime's container
//! stats (CRI ListContainerStats), and the node's from /proc, in the JSON
//! shape of k8s.io/kubelet/pkg/apis/stats/v1alpha1 that metrics-server reads.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::runtime::{
    ContainerStats, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

/// RFC 3339 with as many fractional digits as needed (Go's RFC3339Nano):
/// consumers compute CPU rates from these times, so whole seconds would
/// not do.
fn rfc3339_ns(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn cpu(s: &ContainerStats) -> Value {
    json!({"time": rfc3339_ns(s.timestamp), "usageNanoCores": s.usage_nano_cores, "usageCoreNanoSeconds": s.usage_core_nano_seconds})
}

fn memory(s: &ContainerStats) -> Value {
    json!({"time": rfc3339_ns(s.timestamp), "workingSetBytes": s.working_set_bytes, "usageBytes": s.usage_bytes, "rssBytes": s.rss_bytes})
}

/// The node's CPU time and memory as /proc reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub timestamp_ns: i64,
    /// Busy CPU time of all cores since boot.
    pub usage_core_nano_seconds: u64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
}

impl NodeUsage {
    /// From the first line of /proc/stat and /proc/meminfo.
    pub fn parse(stat: &str, meminfo: &str, timestamp_ns: i64) -> NodeUsage {
        // cpu  user nice system idle iowait irq softirq steal ... (USER_HZ = 100)
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let total: u64 = fields.iter().take(8).sum();
        let kib = |key: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        NodeUsage {
            timestamp_ns,
            usage_core_nano_seconds: total.saturating_sub(idle) * 10_000_000,
            memory_total_bytes: kib("MemTotal:"),
            memory_available_bytes: kib("MemAvailable:"),
        }
    }

    pub fn read(timestamp_ns: i64) -> NodeUsage {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        NodeUsage::parse(&stat, &meminfo, timestamp_ns)
    }
}

/// The Summary document for `node` from the runtime's container stats.
pub fn summary(node: &str, usage: &NodeUsage, stats: &[ContainerStats]) -> Value {
    let mut pods: BTreeMap<(String, String, String), Vec<&ContainerStats>> = BTreeMap::new();
    for s in stats {
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        if l(LABEL_POD_UID).is_empty() {
            continue;
        }
        pods.entry((l(LABEL_POD_NAMESPACE), l(LABEL_POD_NAME), l(LABEL_POD_UID)))
            .or_default()
            .push(s);
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|((namespace, name, uid), cs)| {
            let sum = |f: fn(&ContainerStats) -> u64| cs.iter().map(|c| f(c)).sum::<u64>();
            let time = cs.iter().map(|c| c.timestamp).max().unwrap_or(usage.timestamp_ns);
            json!({
                "podRef": {"name": name, "namespace": namespace, "uid": uid},
                "startTime": rfc3339_ns(cs.iter().map(|c| c.timestamp).min().unwrap_or(time)),
                "containers": cs.iter().map(|c| json!({
                    "name": c.labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default(),
                    "cpu": cpu(c),
                    "memory": memory(c),
                })).collect::<Vec<_>>(),
                "cpu": {"time": rfc3339_ns(time), "usageNanoCores": sum(|c| c.usage_nano_cores), "usageCoreNanoSeconds": sum(|c| c.usage_core_nano_seconds)},
                "memory": {"time": rfc3339_ns(time), "workingSetBytes": sum(|c| c.working_set_bytes), "usageBytes": sum(|c| c.usage_bytes)},
            })
        })
        .collect();
    let used = usage
        .memory_total_bytes
        .saturating_sub(usage.memory_available_bytes);
    json!({
        "node": {
            "nodeName": node,
            "cpu": {"time": rfc3339_ns(usage.timestamp_ns), "usageCoreNanoSeconds": usage.usage_core_nano_seconds},
            "memory": {"time": rfc3339_ns(usage.timestamp_ns), "availableBytes": usage.memory_available_bytes, "usageBytes": used, "workingSetBytes": used},
        },
        "pods": pods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_usage_from_proc() {
        let u = NodeUsage::parse(
            "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n",
            "MemTotal:  2048 kB\nMemFree: 10 kB\nMemAvailable:  1024 kB\n",
            7,
        );
        assert_eq!(u.usage_core_nano_seconds, 150 * 10_000_000);
        assert_eq!(
            (u.memory_total_bytes, u.memory_available_bytes),
            (2048 * 1024, 1024 * 1024)
        );
    }

    #[test]
    fn containers_are_grouped_by_pod_and_summed() {
        let c = |pod: &str, name: &str, cpu: u64, mem: u64| ContainerStats {
            labels: [
                (LABEL_POD_UID.to_string(), format!("uid-{pod}")),
                (LABEL_POD_NAME.to_string(), pod.to_string()),
                (LABEL_POD_NAMESPACE.to_string(), "default".to_string()),
                (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
            ]
            .into(),
            timestamp: 1_700_000_000_000_000_000,
            usage_nano_cores: cpu,
            working_set_bytes: mem,
            ..Default::default()
        };
        let s = summary(
            "n1",
            &NodeUsage::default(),
            &[c("a", "x", 10, 100), c("a", "y", 5, 50), c("b", "z", 1, 1)],
        );
        assert_eq!(s["node"]["nodeName"], "n1");
        let pods = s["pods"].as_array().unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0]["podRef"]["name"], "a");
        assert_eq!(pods[0]["cpu"]["usageNanoCores"], 15);
        assert_eq!(pods[0]["memory"]["workingSetBytes"], 150);
        assert_eq!(pods[0]["containers"][1]["name"], "y");
        assert_eq!(
            pods[0]["containers"][1]["cpu"]["time"],
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn times_keep_their_fraction() {
        assert_eq!(
            rfc3339_ns(1_700_000_000_250_000_000),
            "2023-11-14T22:13:20.25Z"
        );
        assert_eq!(
            rfc3339_ns(1_700_000_000_000_000_001),
            "2023-11-14T22:13:20.000000001Z"
        );
    }
}
