//! The resource metrics API, `metrics.k8s.io/v1beta1` (↔ metrics-server,
//! which k3s bundles and kube-apiserver aggregates): NodeMetrics and
//! PodMetrics for `kubectl top` and autoscalers. skiff has no API
//! aggregation, so the API server serves the group itself.
//!
//! Like metrics-server, usage comes from the kubelets' Summary API
//! (`/stats/summary`, reached as [`crate::proxy`] reaches kubelets): memory
//! is the working set of the latest sample, CPU is a rate computed from the
//! cumulative `usageCoreNanoSeconds` of two samples of the same node, the
//! `window` being the time between them. Where metrics-server scrapes every
//! node every 15 s in the background, this scrapes on demand: a refresh
//! younger than [`FRESH`] is reused, and a node whose previous sample is
//! missing or older than [`STALE`] is sampled twice, [`PAIR_GAP`] apart, so
//! the first `kubectl top` already answers. Nodes that do not answer are
//! left out, and so are pods without stats in both samples (as
//! metrics-server does).
//!
//! Read-only: `get` and `list` with labelSelector and fieldSelector, filtered
//! on the Node and Pod objects; other verbs get 405.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::header::HeaderMap;
use hyper::{Method, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use skiff_api::registry::registry;
use skiff_api::selector::{FieldSelector, LabelSelector};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::RequestLabels;
use crate::request::Query;
use crate::server::{Body, json_response};
use crate::state::ApiServer;
use crate::status::{ApiError, ApiResult};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "metrics.k8s.io/v1beta1";
const PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";

/// A refresh younger than this is reused (metrics-server's resolution is 15 s).
pub const FRESH: Duration = Duration::from_secs(10);
/// A previous sample older than this is not paired with a new one.
pub const STALE: Duration = Duration::from_secs(60);
/// The gap between the two samples of a node without a usable previous one.
pub const PAIR_GAP: Duration = Duration::from_secs(1);
/// How long one kubelet may take to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_SUMMARY: usize = 64 * 1024 * 1024;

// --- The Summary API (k8s.io/kubelet/pkg/apis/stats/v1alpha1), the part read here.

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStats {
    pub node_name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStats {
    pub pod_ref: PodRef,
    pub containers: Vec<ContainerStats>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerStats {
    pub name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CpuStats {
    pub time: String,
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MemoryStats {
    pub working_set_bytes: Option<u64>,
}

// --- metrics.k8s.io/v1beta1 (k8s.io/metrics/pkg/apis/metrics/v1beta1).

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub creation_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    pub timestamp: String,
    pub window: String,
    pub usage: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    pub timestamp: String,
    pub window: String,
    pub containers: Vec<ContainerMetrics>,
}

// --- Quantities and times as metrics-server writes them.

/// A CPU rate in nanocores as a canonical DecimalSI quantity
/// (`resource.NewScaledQuantity(n, -9)`): "0", "1500u", "200m", "2".
pub fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        return "0".into();
    }
    let (mut v, mut exp) = (u128::from(nano_cores), -9i32);
    while v % 10 == 0 {
        v /= 10;
        exp += 1;
    }
    let r = exp.rem_euclid(3);
    v *= 10u128.pow(r as u32);
    exp -= r;
    let suffix = match exp {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    format!("{v}{suffix}")
}

/// Bytes as a canonical BinarySI quantity: "0", "512", "1536", "2Ki", "3Mi".
/// Below 1024 the quantity is written as DecimalSI (so 1000 is "1k").
pub fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return cpu_quantity(bytes.saturating_mul(1_000_000_000));
    }
    let (mut v, mut exp) = (bytes, 0usize);
    while v % 1024 == 0 && exp < 6 {
        v /= 1024;
        exp += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
    format!("{v}{suffix}")
}

fn fraction(v: u128, unit: u128, digits: usize) -> String {
    let (int, rem) = (v / unit, v % unit);
    if rem == 0 {
        int.to_string()
    } else {
        let f = format!("{rem:0digits$}");
        format!("{int}.{}", f.trim_end_matches('0'))
    }
}

/// A duration as Go's `time.Duration.String()` writes it (metav1.Duration).
pub fn go_duration(ns: u128) -> String {
    match ns {
        0 => "0s".into(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", fraction(ns, 1_000, 3)),
        1_000_000..1_000_000_000 => format!("{}ms", fraction(ns, 1_000_000, 6)),
        _ => {
            let secs = ns / 1_000_000_000;
            let (h, m) = (secs / 3600, (secs / 60) % 60);
            let s = fraction(ns % 60_000_000_000, 1_000_000_000, 9);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

fn parse_time(s: &str) -> Option<i128> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_nanosecond())
}

/// metav1.Time: RFC 3339 in whole seconds.
fn meta_time(ns: i128) -> String {
    jiff::Timestamp::from_nanosecond(ns)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

// --- Samples and rates (metrics-server's MetricsPoint and resourceUsage).

/// One measurement: when, cumulative CPU time, memory working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub time_ns: i128,
    pub cpu_ns: u64,
    pub memory: u64,
}

impl Point {
    fn from_stats(cpu: Option<&CpuStats>, memory: Option<&MemoryStats>) -> Option<Point> {
        let cpu = cpu?;
        Some(Point {
            time_ns: parse_time(&cpu.time)?,
            cpu_ns: cpu.usage_core_nano_seconds?,
            memory: memory?.working_set_bytes?,
        })
    }
}

/// Usage between two points of the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub time_ns: i128,
    pub window_ns: u128,
    pub nano_cores: u64,
    pub memory: u64,
}

impl Usage {
    /// None when time did not advance or the cumulative CPU went down (a restart).
    pub fn between(prev: &Point, last: &Point) -> Option<Usage> {
        if last.time_ns <= prev.time_ns || last.cpu_ns < prev.cpu_ns {
            return None;
        }
        let window = (last.time_ns - prev.time_ns) as u128;
        let rate = u128::from(last.cpu_ns - prev.cpu_ns) * 1_000_000_000 / window;
        Some(Usage {
            time_ns: last.time_ns,
            window_ns: window,
            nano_cores: u64::try_from(rate).unwrap_or(u64::MAX),
            memory: last.memory,
        })
    }

    fn resources(&self) -> BTreeMap<String, String> {
        [
            ("cpu".to_string(), cpu_quantity(self.nano_cores)),
            ("memory".to_string(), memory_quantity(self.memory)),
        ]
        .into()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSample {
    pub uid: String,
    /// In the Summary's order.
    pub containers: Vec<(String, Point)>,
}

/// One scrape of one node's Summary, reduced to what the API needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub node: Option<Point>,
    /// By (namespace, name).
    pub pods: BTreeMap<(String, String), PodSample>,
}

impl Sample {
    /// Stats without CPU time or working set are dropped (metrics-server's decode).
    pub fn from_summary(s: &Summary) -> Sample {
        let node = Point::from_stats(s.node.cpu.as_ref(), s.node.memory.as_ref());
        let mut pods = BTreeMap::new();
        for p in &s.pods {
            let containers: Vec<(String, Point)> = p
                .containers
                .iter()
                .filter_map(|c| {
                    Point::from_stats(c.cpu.as_ref(), c.memory.as_ref())
                        .map(|pt| (c.name.clone(), pt))
                })
                .collect();
            if !containers.is_empty() {
                pods.insert(
                    (p.pod_ref.namespace.clone(), p.pod_ref.name.clone()),
                    PodSample {
                        uid: p.pod_ref.uid.clone(),
                        containers,
                    },
                );
            }
        }
        Sample { node, pods }
    }
}

/// Two samples of a node, the later one last.
#[derive(Clone, Debug)]
pub struct Pair {
    pub prev: Arc<Sample>,
    pub last: Arc<Sample>,
}

impl Pair {
    pub fn node_usage(&self) -> Option<Usage> {
        Usage::between(self.prev.node.as_ref()?, self.last.node.as_ref()?)
    }

    /// The containers' usage, and the time and window of the earliest one.
    /// None when a container of the last sample is missing from the previous
    /// one; a container whose CPU time went down is skipped (metrics-server).
    pub fn pod_usage(&self, namespace: &str, name: &str) -> Option<(Usage, Vec<(String, Usage)>)> {
        let key = (namespace.to_string(), name.to_string());
        let (prev, last) = (self.prev.pods.get(&key)?, self.last.pods.get(&key)?);
        if prev.uid != last.uid {
            return None;
        }
        let mut out = Vec::new();
        let mut earliest: Option<Usage> = None;
        for (c, point) in &last.containers {
            let (_, before) = prev.containers.iter().find(|(n, _)| n == c)?;
            let Some(u) = Usage::between(before, point) else {
                continue;
            };
            if earliest.is_none_or(|e| u.time_ns < e.time_ns) {
                earliest = Some(u);
            }
            out.push((c.clone(), u));
        }
        Some((earliest?, out))
    }
}

// --- The scrape cache.

#[derive(Clone, Debug)]
struct NodeSamples {
    prev: Option<Arc<Sample>>,
    last: Arc<Sample>,
    taken: Instant,
}

impl NodeSamples {
    fn pair(&self) -> Option<Pair> {
        Some(Pair {
            prev: self.prev.clone()?,
            last: self.last.clone(),
        })
    }
}

#[derive(Default)]
struct CacheState {
    refreshed: Option<Instant>,
    scraped_nodes: BTreeSet<String>,
    nodes: HashMap<String, NodeSamples>,
}

impl CacheState {
    /// Keep a new sample of `node`, or forget the node when it did not answer.
    fn record(&mut self, node: &str, sample: Option<Sample>, now: Instant) {
        let Some(sample) = sample else {
            self.nodes.remove(node);
            return;
        };
        let sample = Arc::new(sample);
        let kept = self
            .nodes
            .remove(node)
            .filter(|s| now.duration_since(s.taken) <= STALE);
        let entry = match kept {
            // A newer sample: the last one becomes the previous one.
            Some(s) if newer(&sample, &s.last) => NodeSamples {
                prev: Some(s.last),
                last: sample,
                taken: now,
            },
            Some(s) => s,
            None => NodeSamples {
                prev: None,
                last: sample,
                taken: now,
            },
        };
        self.nodes.insert(node.to_string(), entry);
    }
}

fn newer(a: &Sample, b: &Sample) -> bool {
    match (a.node, b.node) {
        (Some(x), Some(y)) => x.time_ns > y.time_ns,
        _ => true,
    }
}

/// The latest samples of every node, shared by all requests.
#[derive(Default)]
pub struct MetricsCache {
    state: Mutex<CacheState>,
}

impl MetricsCache {
    /// Sample `nodes` with `scrape` unless the last refresh of the same
    /// nodes is younger than [`FRESH`]; returns each answering node's pair.
    pub async fn refresh<F, Fut>(&self, nodes: &[String], scrape: F) -> HashMap<String, Pair>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Option<Summary>>,
    {
        let mut st = self.state.lock().await;
        let wanted: BTreeSet<String> = nodes.iter().cloned().collect();
        let fresh = st
            .refreshed
            .is_some_and(|t| t.elapsed() < FRESH && st.scraped_nodes == wanted);
        if !fresh {
            st.nodes.retain(|n, _| wanted.contains(n));
            let got = futures::future::join_all(nodes.iter().map(|n| scrape(n.clone()))).await;
            let now = Instant::now();
            for (n, s) in nodes.iter().zip(got) {
                st.record(n, s.as_ref().map(Sample::from_summary), now);
            }
            let unpaired: Vec<String> = nodes
                .iter()
                .filter(|n| st.nodes.get(*n).is_some_and(|s| s.prev.is_none()))
                .cloned()
                .collect();
            if !unpaired.is_empty() {
                tokio::time::sleep(PAIR_GAP).await;
                let got =
                    futures::future::join_all(unpaired.iter().map(|n| scrape(n.clone()))).await;
                let now = Instant::now();
                for (n, s) in unpaired.iter().zip(got) {
                    st.record(n, s.as_ref().map(Sample::from_summary), now);
                }
            }
            st.refreshed = Some(Instant::now());
            st.scraped_nodes = wanted;
        }
        st.nodes
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.pair()?)))
            .collect()
    }
}

// --- Building the API objects.

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

fn str_at<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The NodeMetrics of `node` (a Node object), if its pair has usage.
pub fn node_metrics(node: &Value, pair: &Pair, now: &str) -> Option<NodeMetrics> {
    let u = pair.node_usage()?;
    Some(NodeMetrics {
        api_version: API_VERSION.into(),
        kind: "NodeMetrics".into(),
        metadata: Meta {
            name: str_at(node, "/metadata/name").into(),
            namespace: String::new(),
            creation_timestamp: now.into(),
            labels: labels_of(node),
        },
        timestamp: meta_time(u.time_ns),
        window: go_duration(u.window_ns),
        usage: u.resources(),
    })
}

/// The PodMetrics of `pod` (a Pod object), if its node's pair has its stats.
pub fn pod_metrics(pod: &Value, pair: &Pair, now: &str) -> Option<PodMetrics> {
    let (ns, name) = (
        str_at(pod, "/metadata/namespace"),
        str_at(pod, "/metadata/name"),
    );
    let (when, containers) = pair.pod_usage(ns, name)?;
    Some(PodMetrics {
        api_version: API_VERSION.into(),
        kind: "PodMetrics".into(),
        metadata: Meta {
            name: name.into(),
            namespace: ns.into(),
            creation_timestamp: now.into(),
            labels: labels_of(pod),
        },
        timestamp: meta_time(when.time_ns),
        window: go_duration(when.window_ns),
        containers: containers
            .into_iter()
            .map(|(name, u)| ContainerMetrics {
                name,
                usage: u.resources(),
            })
            .collect(),
    })
}

// --- Discovery.

/// `/apis/metrics.k8s.io/v1beta1` (as metrics-server serves it).
pub fn api_resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

/// The group's entry in aggregated discovery (apidiscovery.k8s.io/v2).
pub fn aggregated_group() -> Value {
    let res = |plural: &str, kind: &str, scope: &str| {
        json!({
            "resource": plural,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "singularResource": "",
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{
            "version": VERSION,
            "resources": [res("nodes", "NodeMetrics", "Cluster"), res("pods", "PodMetrics", "Namespaced")],
            "freshness": "Current",
        }],
    })
}

// --- Serving.

/// Whether `path` is a metrics.k8s.io resource path.
pub fn handles(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| !rest.trim_matches('/').is_empty())
}

async fn scrape(server: Arc<ApiServer>, node_name: String, node: Option<Value>) -> Option<Summary> {
    let (host, port) = crate::proxy::kubelet_endpoint(&node?)?;
    let fetch = async {
        let resp = crate::proxy::kubelet_request(
            &server,
            &host,
            port,
            Method::GET,
            "/stats/summary",
            &HeaderMap::new(),
        )
        .await
        .map_err(|e| e.message)?;
        if !resp.status().is_success() {
            return Err(format!("the kubelet answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_SUMMARY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<Summary>(&body).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(node = %node_name, error = %e, "cannot scrape the kubelet's Summary");
            None
        }
        Err(_) => {
            tracing::debug!(node = %node_name, "the kubelet's Summary timed out");
            None
        }
    }
}

/// Scrape (or reuse) every node's samples.
async fn pairs(server: &Arc<ApiServer>, node_objects: &[Value]) -> HashMap<String, Pair> {
    let by_name: Arc<HashMap<String, Value>> = Arc::new(
        node_objects
            .iter()
            .map(|n| (str_at(n, "/metadata/name").to_string(), n.clone()))
            .collect(),
    );
    let names: Vec<String> = by_name.keys().cloned().collect();
    server
        .resource_metrics
        .refresh(&names, |n| {
            scrape(server.clone(), n.clone(), by_name.get(&n).cloned())
        })
        .await
}

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn parse(query: &Query, kind: &str) -> ApiResult<Selectors> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let fields = FieldSelector::parse(
            query.get("fieldSelector").unwrap_or_default(),
            "metrics.k8s.io",
            kind,
            kind == "PodMetrics",
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Selectors { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
}

/// Objects of core/v1 `plural` in `namespace` (all when None) that `keep` accepts.
async fn objects(
    server: &ApiServer,
    plural: &str,
    namespace: Option<&str>,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult<Vec<Value>> {
    let info = registry()
        .lookup("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} resource")))?;
    server.cache.sync().await?;
    let prefix = match namespace {
        Some(ns) => info.namespace_prefix(ns),
        None => info.key_prefix(),
    };
    let (items, _, _) = server.cache.list(&prefix, None, 0, |o| keep(&o.value));
    Ok(items.into_iter().map(|o| o.value.clone()).collect())
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

/// Serve `GET /apis/metrics.k8s.io/v1beta1/...` (see [`handles`]).
pub async fn handle(
    server: &Arc<ApiServer>,
    method: &Method,
    path: &str,
    query: &Query,
    labels: &mut RequestLabels,
) -> ApiResult<Response<Body>> {
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (plural, namespace, name) = match segs.as_slice() {
        ["nodes"] => ("nodes", None, None),
        ["nodes", n] => ("nodes", None, Some(*n)),
        ["pods"] => ("pods", None, None),
        ["namespaces", ns, "pods"] => ("pods", Some(*ns), None),
        ["namespaces", ns, "pods", n] => ("pods", Some(*ns), Some(*n)),
        _ => return Err(ApiError::no_route()),
    };
    labels.group = GROUP.into();
    labels.version = VERSION.into();
    labels.resource = plural.into();
    labels.scope = match (name, namespace) {
        (Some(_), _) => "resource",
        (None, Some(_)) => "namespace",
        (None, None) => "cluster",
    };
    labels.verb = if name.is_some() { "GET" } else { "LIST" };
    if *method != Method::GET || query.flag("watch") {
        labels.verb = "OTHER";
        return Err(ApiError::method_not_allowed());
    }
    let now = crate::handlers::now_rfc3339();
    let all_nodes = objects(server, "nodes", None, |_| true).await?;
    if plural == "nodes" {
        let selectors = Selectors::parse(query, "Node")?;
        let wanted: Vec<&Value> = all_nodes
            .iter()
            .filter(|n| name.is_none_or(|want| str_at(n, "/metadata/name") == want))
            .filter(|n| name.is_some() || selectors.matches(n))
            .collect();
        if let Some(n) = name
            && wanted.is_empty()
        {
            return Err(ApiError::not_found(GROUP, "nodemetrics", n));
        }
        let pairs = pairs(server, &all_nodes).await;
        let items: Vec<NodeMetrics> = wanted
            .into_iter()
            .filter_map(|n| node_metrics(n, pairs.get(str_at(n, "/metadata/name"))?, &now))
            .collect();
        return match name {
            Some(n) => {
                let m = items
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", n))?;
                Ok(json_response(
                    200,
                    &serde_json::to_value(m).unwrap_or_default(),
                ))
            }
            None => Ok(json_response(
                200,
                &list(
                    "NodeMetricsList",
                    items
                        .into_iter()
                        .filter_map(|m| serde_json::to_value(m).ok())
                        .collect(),
                ),
            )),
        };
    }
    let selectors = Selectors::parse(query, "Pod")?;
    let pods = objects(server, "pods", namespace, |p| match name {
        Some(want) => str_at(p, "/metadata/name") == want,
        None => selectors.matches(p),
    })
    .await?;
    if let Some(n) = name
        && pods.is_empty()
    {
        return Err(ApiError::not_found(GROUP, "podmetrics", n));
    }
    let pairs = pairs(server, &all_nodes).await;
    let items: Vec<PodMetrics> = pods
        .iter()
        .filter_map(|p| pod_metrics(p, pairs.get(str_at(p, "/spec/nodeName"))?, &now))
        .collect();
    match name {
        Some(n) => {
            let m = items
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found(GROUP, "podmetrics", n))?;
            Ok(json_response(
                200,
                &serde_json::to_value(m).unwrap_or_default(),
            ))
        }
        None => Ok(json_response(
            200,
            &list(
                "PodMetricsList",
                items
                    .into_iter()
                    .filter_map(|m| serde_json::to_value(m).ok())
                    .collect(),
            ),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const T0: i64 = 1_700_000_000_000_000_000;

    fn time(ns: i64) -> String {
        jiff::Timestamp::from_nanosecond(i128::from(ns))
            .unwrap()
            .to_string()
    }

    /// A Summary in the shape the kubelet's stats.rs writes: node `n1`,
    /// pod default/busy with containers (burn, side), pod default/idle.
    fn summary(at: i64, node_cpu: u64, burn_cpu: u64, idle_cpu: u64) -> Value {
        let c = |name: &str, cpu: u64, ws: u64| {
            json!({"name": name,
                "cpu": {"time": time(at), "usageNanoCores": 0, "usageCoreNanoSeconds": cpu},
                "memory": {"time": time(at), "workingSetBytes": ws, "usageBytes": ws + 4096, "rssBytes": ws}})
        };
        json!({
            "node": {"nodeName": "n1",
                "cpu": {"time": time(at), "usageCoreNanoSeconds": node_cpu},
                "memory": {"time": time(at), "availableBytes": 1u64 << 30, "usageBytes": 3u64 << 30, "workingSetBytes": 3u64 << 30}},
            "pods": [
                {"podRef": {"name": "busy", "namespace": "default", "uid": "u1"}, "startTime": time(T0),
                 "containers": [c("burn", burn_cpu, 1_048_576), c("side", 1_000, 2_048_000)],
                 "cpu": {"time": time(at), "usageCoreNanoSeconds": burn_cpu + 1_000}, "memory": {"time": time(at), "workingSetBytes": 3_096_576}},
                {"podRef": {"name": "idle", "namespace": "default", "uid": "u2"}, "startTime": time(T0),
                 "containers": [c("idle", idle_cpu, 4096)],
                 "cpu": {"time": time(at), "usageCoreNanoSeconds": idle_cpu}, "memory": {"time": time(at), "workingSetBytes": 4096}},
            ],
        })
    }

    fn sample(v: Value) -> Arc<Sample> {
        Arc::new(Sample::from_summary(&serde_json::from_value(v).unwrap()))
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn quantities_are_canonical_as_in_metrics_server() {
        for (n, want) in [
            (0, "0"),
            (7, "7n"),
            (123_456_789, "123456789n"),
            (1_500_000, "1500u"),
            (200_000_000, "200m"),
            (2_500_000_000, "2500m"),
            (1_000_000_000, "1"),
            (30_000_000_000_000, "30k"),
        ] {
            assert_eq!(cpu_quantity(n), want, "{n} nanocores");
        }
        for (b, want) in [
            (0, "0"),
            (512, "512"),
            (1000, "1k"),
            (1536, "1536"),
            (2048, "2Ki"),
            (24_717_312, "24138Ki"),
            (3 << 20, "3Mi"),
            (5 << 30, "5Gi"),
        ] {
            assert_eq!(memory_quantity(b), want, "{b} bytes");
        }
    }

    #[test]
    fn windows_are_go_durations() {
        for (ns, want) in [
            (0, "0s"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_000_000_000, "1s"),
            (15_001_000_000, "15.001s"),
            (10_000_000_001, "10.000000001s"),
            (90_000_000_000, "1m30s"),
            (120_000_000_000, "2m0s"),
            (3_600_000_000_000, "1h0m0s"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns} ns");
        }
    }

    #[test]
    fn rates_come_from_two_cumulative_samples() {
        let prev = sample(summary(T0, 10_000_000_000, 1_000_000_000, 5_000_000));
        // 10 s later: the node used 4 core-seconds, burn 2, idle 0.001.
        let last = sample(summary(
            T0 + 10_000_000_000,
            14_000_000_000,
            3_000_000_000,
            6_000_000,
        ));
        let pair = Pair { prev, last };
        let node = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
        let nm = node_metrics(&node, &pair, "2024-01-01T00:00:00Z").unwrap();
        let v = serde_json::to_value(&nm).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "metrics.k8s.io/v1beta1",
                "kind": "NodeMetrics",
                "metadata": {"name": "n1", "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"kubernetes.io/hostname": "n1"}},
                "timestamp": "2023-11-14T22:13:30Z",
                "window": "10s",
                "usage": {"cpu": "400m", "memory": "3Gi"},
            })
        );
        let pm = pod_metrics(&pod("busy"), &pair, "2024-01-01T00:00:00Z").unwrap();
        let v = serde_json::to_value(&pm).unwrap();
        assert_eq!(v["kind"], "PodMetrics");
        assert_eq!(v["metadata"]["namespace"], "default");
        assert_eq!(v["metadata"]["labels"]["app"], "busy");
        assert_eq!(v["window"], "10s");
        assert_eq!(
            v["containers"],
            json!([
                {"name": "burn", "usage": {"cpu": "200m", "memory": "1Mi"}},
                {"name": "side", "usage": {"cpu": "0", "memory": "2000Ki"}},
            ])
        );
        let idle = pod_metrics(&pod("idle"), &pair, "x").unwrap();
        assert_eq!(idle.containers[0].usage["cpu"], "100u");
        assert_eq!(idle.containers[0].usage["memory"], "4Ki");
        // Round trip: what kubectl decodes.
        let back: PodMetrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, pm);
        // A pod that is in neither sample has no metrics.
        assert!(pod_metrics(&pod("gone"), &pair, "x").is_none());
    }

    #[test]
    fn pods_without_two_samples_or_recreated_are_left_out() {
        let prev_v = summary(T0, 1, 1_000, 1_000);
        let mut last_v = summary(T0 + 1_000_000_000, 2, 2_000, 500);
        // The idle container restarted: its CPU time went down, it is skipped
        // and the pod, left without containers, is left out.
        let prev = sample(prev_v.clone());
        let last = sample(last_v.clone());
        let pair = Pair {
            prev: prev.clone(),
            last,
        };
        assert!(pod_metrics(&pod("idle"), &pair, "x").is_none());
        // busy was recreated (another uid): no metrics until two samples.
        last_v["pods"][0]["podRef"]["uid"] = json!("u9");
        let pair = Pair {
            prev: prev.clone(),
            last: sample(last_v.clone()),
        };
        assert!(pod_metrics(&pod("busy"), &pair, "x").is_none());
        // A container the previous sample does not have: the pod waits.
        let mut prev_v2 = prev_v.clone();
        prev_v2["pods"][0]["containers"]
            .as_array_mut()
            .unwrap()
            .pop();
        let pair = Pair {
            prev: sample(prev_v2),
            last: sample(summary(T0 + 1_000_000_000, 2, 2_000, 2_000)),
        };
        assert!(pod_metrics(&pod("busy"), &pair, "x").is_none());
        assert!(pod_metrics(&pod("idle"), &pair, "x").is_some());
        // Stats without working set are not usable (metrics-server's decode).
        let mut bad = summary(T0, 1, 1, 1);
        bad["node"]["memory"] = json!({"time": time(T0)});
        assert!(sample(bad).node.is_none());
        // The same sample twice: time did not advance, no rate.
        let pair = Pair {
            prev: prev.clone(),
            last: prev,
        };
        assert!(pair.node_usage().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn scrapes_on_demand_pairs_first_samples_and_reuses_fresh_ones() {
        let cache = MetricsCache::default();
        let calls = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        // Each scrape: the kubelet's clock is tokio's; the node burns half a core.
        let scrape = |node: String| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if node == "down" {
                    return None;
                }
                let ns = started.elapsed().as_nanos() as u64;
                let v = summary(T0 + ns as i64, ns / 2, ns / 5, 0);
                Some(serde_json::from_value::<Summary>(v).unwrap())
            }
        };
        let nodes = vec!["n1".to_string(), "down".to_string()];
        // First request: each node is sampled, then the answering one again
        // PAIR_GAP later.
        let pairs = cache.refresh(&nodes, scrape).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), PAIR_GAP);
        assert_eq!(pairs.len(), 1, "the node that does not answer is left out");
        let u = pairs["n1"].node_usage().unwrap();
        assert_eq!((u.nano_cores, u.window_ns), (500_000_000, 1_000_000_000));
        let nm = node_metrics(&json!({"metadata": {"name": "n1"}}), &pairs["n1"], "x").unwrap();
        assert_eq!(
            (nm.window.as_str(), nm.usage["cpu"].as_str()),
            ("1s", "500m")
        );
        let busy = pod_metrics(&pod("busy"), &pairs["n1"], "x").unwrap();
        assert_eq!(busy.containers[0].usage["cpu"], "200m");

        // Within FRESH: nothing is scraped.
        tokio::time::advance(FRESH - Duration::from_secs(1)).await;
        let again = cache.refresh(&nodes, scrape).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(again["n1"].node_usage(), Some(u));

        // Later: one scrape per node, paired with the previous sample.
        tokio::time::advance(Duration::from_secs(5)).await;
        let later = cache.refresh(&nodes, scrape).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let u2 = later["n1"].node_usage().unwrap();
        assert_eq!(u2.window_ns, 14_000_000_000);
        assert_eq!(u2.nano_cores, 500_000_000);

        // Another set of nodes is not served from the cache.
        let only = vec!["n1".to_string()];
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = cache.refresh(&only, scrape).await;
        assert_eq!(calls.load(Ordering::SeqCst), 6);

        // After STALE, the old sample is not used: two fresh samples again.
        tokio::time::advance(STALE + Duration::from_secs(1)).await;
        let stale = cache.refresh(&only, scrape).await;
        assert_eq!(calls.load(Ordering::SeqCst), 8);
        assert_eq!(stale["n1"].node_usage().unwrap().window_ns, 1_000_000_000);
    }

    #[test]
    fn routes_and_discovery() {
        assert!(handles("/apis/metrics.k8s.io/v1beta1/nodes"));
        assert!(handles(
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/x"
        ));
        assert!(!handles("/apis/metrics.k8s.io/v1beta1"));
        assert!(!handles("/apis/metrics.k8s.io/v1beta1/"));
        assert!(!handles("/apis/apps/v1/deployments"));
        let list =
            crate::discovery::api_resource_list(&Default::default(), GROUP, VERSION).unwrap();
        assert_eq!(list["resources"][0]["kind"], "NodeMetrics");
        assert_eq!(list["resources"][1]["namespaced"], true);
        let groups = crate::discovery::api_group_list(&Default::default());
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == GROUP && g["preferredVersion"]["groupVersion"] == API_VERSION)
        );
        assert_eq!(
            crate::discovery::api_group_doc(&Default::default(), GROUP).unwrap()["kind"],
            "APIGroup"
        );
        let agg = crate::discovery::aggregated(
            &Default::default(),
            false,
            crate::discovery::AGGREGATED_V2,
        );
        let g = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == GROUP)
            .unwrap();
        assert_eq!(g["versions"][0]["resources"][1]["scope"], "Namespaced");
        let legacy = crate::discovery::aggregated(
            &Default::default(),
            true,
            crate::discovery::AGGREGATED_V2,
        );
        assert_eq!(legacy["items"].as_array().unwrap().len(), 1);
    }
}
