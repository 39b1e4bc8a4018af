//! Prometheus metrics in the shape of kube-apiserver's `apiserver_request_*`
//! series, rendered in the text exposition format on /metrics.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Labels {
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    totals: Mutex<HashMap<(Labels, u16), u64>>,
    durations: Mutex<HashMap<Labels, Histogram>>,
    panics: std::sync::atomic::AtomicU64,
}

/// What one request was, for its metric labels.
#[derive(Clone)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: &'static str,
}

impl Metrics {
    /// A request handler panicked (and was answered 500).
    pub fn count_panic(&self) {
        self.panics
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn observe(&self, req: &RequestLabels, code: u16, elapsed: Duration) {
        let labels = Labels {
            verb: req.verb,
            group: req.group.clone(),
            version: req.version.clone(),
            resource: req.resource.clone(),
            subresource: req.subresource.clone(),
            scope: req.scope,
            component: "apiserver",
        };
        if let Ok(mut t) = self.totals.lock() {
            *t.entry((labels.clone(), code)).or_default() += 1;
        }
        // Long-running requests (watch) are not in the latency histogram, as in Kubernetes.
        if req.verb == "WATCH" {
            return;
        }
        let secs = elapsed.as_secs_f64();
        if let Ok(mut d) = self.durations.lock() {
            let h = d.entry(labels).or_default();
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let fmt_labels = |l: &Labels| {
            format!(
                "component=\"{}\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"",
                l.component, l.group, l.resource, l.scope, l.subresource, l.verb, l.version
            )
        };
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        if let Ok(t) = self.totals.lock() {
            let mut rows: Vec<_> = t.iter().collect();
            rows.sort_by_key(|((l, c), _)| (fmt_labels(l), *c));
            for ((l, code), n) in rows {
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{code=\"{code}\",{}}} {n}",
                    fmt_labels(l)
                );
            }
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.\n# TYPE apiserver_request_duration_seconds histogram\n");
        if let Ok(d) = self.durations.lock() {
            let mut rows: Vec<_> = d.iter().collect();
            rows.sort_by_key(|(l, _)| fmt_labels(l));
            for (l, h) in rows {
                let ls = fmt_labels(l);
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "apiserver_request_duration_seconds_bucket{{{ls},le=\"{le}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{ls},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_sum{{{ls}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_count{{{ls}}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_request_panics_total Requests whose handler panicked (answered 500; the server goes on).\n# TYPE apiserver_request_panics_total counter\napiserver_request_panics_total {}",
            self.panics.load(std::sync::atomic::Ordering::Relaxed)
        );
        for (name, help, value) in extra {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let m = Metrics::default();
        let req = RequestLabels {
            verb: "GET",
            group: "".into(),
            version: "v1".into(),
            resource: "pods".into(),
            subresource: "".into(),
            scope: "resource",
        };
        m.observe(&req, 200, Duration::from_millis(3));
        m.observe(&req, 404, Duration::from_millis(30));
        let text = m.render(&[("apiserver_watchers", "watchers", 2.0)]);
        assert!(text.contains("apiserver_request_total{code=\"200\",component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("apiserver_request_duration_seconds_count{component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 2"));
        assert!(text.contains("apiserver_watchers 2"));
    }
}
