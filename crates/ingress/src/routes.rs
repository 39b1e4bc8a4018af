//! The routing table: host → path → backend, as the Ingress API defines
//! matching (networking.k8s.io/v1, "Path types" and "Hostname wildcards"
//! in the Kubernetes Ingress concept page):
//!
//! - hosts: an exact name beats a `*.example.com` wildcard (which matches
//!   one label only); rules without a host match every request whose host
//!   has no rule of its own;
//! - paths: `Exact` matches the path as is; `Prefix` matches element-wise
//!   on `/` (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`);
//!   the longest match wins and an `Exact` match beats a `Prefix` one;
//!   `ImplementationSpecific` is treated as `Prefix`;
//! - unmatched paths go to the default backend of the ingress that defined
//!   the host, then to the oldest `spec.defaultBackend`, else 404.
//!
//! Several Ingresses may add paths to one host (as ingress-nginx merges
//! them); on a conflict the oldest Ingress wins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One Service port behind a route: the ready endpoints it resolves to.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs.
    pub name: String,
    /// Ready endpoint addresses (pod IP, target port).
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Up to `n` distinct endpoints to try in turn, starting round-robin
    /// from the one after the previous call's first.
    pub fn attempts(&self, n: usize) -> impl Iterator<Item = SocketAddr> + '_ {
        let len = self.endpoints.len();
        let start = if len == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % len
        };
        (0..n.min(len)).map(move |i| self.endpoints[(start + i) % len])
    }
}

/// How a path matches (`spec.rules[].http.paths[].pathType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    Exact,
    /// `Prefix` and `ImplementationSpecific`.
    Prefix,
}

impl PathType {
    /// The API's names; None for an unknown type (the path is ignored).
    pub fn parse(s: &str) -> Option<PathType> {
        match s {
            "Exact" => Some(PathType::Exact),
            "Prefix" | "ImplementationSpecific" => Some(PathType::Prefix),
            _ => None,
        }
    }
}

/// The path elements of `path`: split on `/`, empty elements dropped.
fn elements(path: &str) -> Vec<&str> {
    path.split('/').filter(|e| !e.is_empty()).collect()
}

/// The routes of one host.
#[derive(Debug, Default)]
pub struct HostRoutes {
    exact: HashMap<String, Arc<Backend>>,
    /// Prefix routes by their path elements, most elements first.
    prefix: Vec<(Vec<String>, Arc<Backend>)>,
    /// The default backend of the (oldest) Ingress that defined the host.
    default: Option<Arc<Backend>>,
}

impl HostRoutes {
    /// Adds a path; false when the same path and type is already routed
    /// (an older Ingress has it).
    pub fn insert(&mut self, path_type: PathType, path: &str, backend: Arc<Backend>) -> bool {
        match path_type {
            PathType::Exact => {
                if self.exact.contains_key(path) {
                    return false;
                }
                self.exact.insert(path.to_string(), backend);
            }
            PathType::Prefix => {
                let els: Vec<String> = elements(path).into_iter().map(str::to_string).collect();
                if self.prefix.iter().any(|(p, _)| *p == els) {
                    return false;
                }
                // Keep the order: most elements first, then insertion order.
                let at = self
                    .prefix
                    .iter()
                    .position(|(p, _)| p.len() < els.len())
                    .unwrap_or(self.prefix.len());
                self.prefix.insert(at, (els, backend));
            }
        }
        true
    }

    /// The backend for `path` (without the query), if a path matches.
    pub fn lookup(&self, path: &str) -> Option<&Arc<Backend>> {
        if let Some(b) = self.exact.get(path) {
            return Some(b);
        }
        let request = elements(path);
        self.prefix
            .iter()
            .find(|(p, _)| p.len() <= request.len() && p.iter().zip(&request).all(|(a, b)| a == b))
            .map(|(_, b)| b)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.default.is_none()
    }
}

/// Where a host's rules go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostKey {
    /// `foo.example.com`.
    Exact(String),
    /// `*.example.com`, stored as `example.com`.
    Wildcard(String),
    /// A rule without a host.
    Any,
}

impl HostKey {
    pub fn parse(host: Option<&str>) -> HostKey {
        match host.map(|h| h.trim_end_matches('.').to_ascii_lowercase()) {
            None => HostKey::Any,
            Some(h) if h.is_empty() => HostKey::Any,
            Some(h) => match h.strip_prefix("*.") {
                Some(rest) => HostKey::Wildcard(rest.to_string()),
                None => HostKey::Exact(h),
            },
        }
    }
}

/// The whole routing table; immutable once built, swapped as a whole.
#[derive(Debug, Default)]
pub struct Table {
    hosts: HashMap<String, HostRoutes>,
    wildcards: HashMap<String, HostRoutes>,
    any: HostRoutes,
    default: Option<Arc<Backend>>,
}

impl Table {
    pub fn host_mut(&mut self, key: &HostKey) -> &mut HostRoutes {
        match key {
            HostKey::Exact(h) => self.hosts.entry(h.clone()).or_default(),
            HostKey::Wildcard(h) => self.wildcards.entry(h.clone()).or_default(),
            HostKey::Any => &mut self.any,
        }
    }

    /// Sets the host's default backend unless it has one.
    pub fn set_host_default(&mut self, key: &HostKey, backend: Arc<Backend>) {
        self.host_mut(key).default.get_or_insert(backend);
    }

    /// Sets the table's default backend unless it has one.
    pub fn set_default(&mut self, backend: Arc<Backend>) {
        self.default.get_or_insert(backend);
    }

    /// The routes for a request's host: its exact rules, else a wildcard's,
    /// else the rules without a host.
    fn host_routes(&self, host: &str) -> &HostRoutes {
        if let Some(r) = self.hosts.get(host) {
            return r;
        }
        if let Some((first, rest)) = host.split_once('.')
            && !first.is_empty()
            && let Some(r) = self.wildcards.get(rest)
        {
            return r;
        }
        &self.any
    }

    /// The backend for a request to `host` (a Host header: port and case
    /// are ignored) and `path`; None: 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = normalize_host(host);
        let routes = self.host_routes(&host);
        routes
            .lookup(path)
            .or(routes.default.as_ref())
            .or(self.default.as_ref())
    }

    /// How many hosts (exact and wildcard) have routes.
    pub fn host_count(&self) -> usize {
        self.hosts.len() + self.wildcards.len() + usize::from(!self.any.is_empty())
    }
}

/// A Host header without its port, lower-case, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The current table, swapped atomically as a whole: a request takes the
/// `Arc` once and routes on it, so a reload never disturbs it.
#[derive(Debug, Default)]
pub struct Routes(RwLock<Arc<Table>>);

impl Routes {
    pub fn load(&self) -> Arc<Table> {
        match self.0.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn store(&self, table: Arc<Table>) {
        match self.0.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b(name: &str) -> Arc<Backend> {
        Arc::new(Backend::new(name, vec![]))
    }

    fn routed<'a>(t: &'a Table, host: &str, path: &str) -> Option<&'a str> {
        t.route(host, path).map(|b| b.name.as_str())
    }

    #[test]
    fn prefix_matches_element_wise() {
        let mut h = HostRoutes::default();
        h.insert(PathType::Prefix, "/foo", b("foo"));
        for (path, want) in [
            ("/foo", true),
            ("/foo/", true),
            ("/foo/bar", true),
            ("/foobar", false),
            ("/fo", false),
            ("/", false),
            ("/bar/foo", false),
        ] {
            assert_eq!(h.lookup(path).is_some(), want, "{path}");
        }
        // A trailing slash in the rule is ignored.
        let mut h = HostRoutes::default();
        h.insert(PathType::Prefix, "/foo/", b("foo"));
        assert!(h.lookup("/foo").is_some());
        // "/" matches everything.
        let mut h = HostRoutes::default();
        h.insert(PathType::Prefix, "/", b("root"));
        assert!(h.lookup("/anything/at/all").is_some());
        assert!(h.lookup("/").is_some());
    }

    #[test]
    fn exact_matches_only_the_path() {
        let mut h = HostRoutes::default();
        h.insert(PathType::Exact, "/foo", b("foo"));
        assert!(h.lookup("/foo").is_some());
        assert!(h.lookup("/foo/").is_none());
        assert!(h.lookup("/FOO").is_none());
        assert!(h.lookup("/foo/bar").is_none());
    }

    #[test]
    fn longest_match_wins_and_exact_beats_prefix() {
        let mut h = HostRoutes::default();
        h.insert(PathType::Prefix, "/", b("root"));
        h.insert(PathType::Prefix, "/aaa/bbb", b("deep"));
        h.insert(PathType::Prefix, "/aaa", b("aaa"));
        h.insert(PathType::Prefix, "/foo", b("foo-prefix"));
        h.insert(PathType::Exact, "/foo", b("foo-exact"));
        let name = |p: &str| h.lookup(p).map(|b| b.name.clone()).unwrap();
        assert_eq!(name("/aaa/bbb/ccc"), "deep");
        assert_eq!(name("/aaa/bbbxyz"), "aaa");
        assert_eq!(name("/aaa"), "aaa");
        assert_eq!(name("/x"), "root");
        assert_eq!(name("/foo"), "foo-exact");
        assert_eq!(name("/foo/"), "foo-prefix");
        assert_eq!(name("/foo/x"), "foo-prefix");
    }

    #[test]
    fn first_insert_wins_a_conflict() {
        let mut h = HostRoutes::default();
        assert!(h.insert(PathType::Prefix, "/a", b("old")));
        assert!(!h.insert(PathType::Prefix, "/a/", b("new")));
        assert!(h.insert(PathType::Exact, "/a", b("exact")));
        assert!(!h.insert(PathType::Exact, "/a", b("exact-new")));
        assert_eq!(h.lookup("/a/b").unwrap().name, "old");
        assert_eq!(h.lookup("/a").unwrap().name, "exact");
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let mut t = Table::default();
        t.host_mut(&HostKey::parse(Some("foo.example.com"))).insert(
            PathType::Prefix,
            "/",
            b("foo"),
        );
        t.host_mut(&HostKey::parse(Some("*.example.com")))
            .insert(PathType::Prefix, "/", b("wild"));
        t.host_mut(&HostKey::parse(None))
            .insert(PathType::Prefix, "/any", b("any"));
        assert_eq!(routed(&t, "foo.example.com", "/x"), Some("foo"));
        assert_eq!(routed(&t, "FOO.Example.com:8080", "/x"), Some("foo"));
        assert_eq!(routed(&t, "bar.example.com", "/x"), Some("wild"));
        // A wildcard covers exactly one label.
        assert_eq!(routed(&t, "a.bar.example.com", "/any"), Some("any"));
        assert_eq!(routed(&t, "example.com", "/any"), Some("any"));
        assert_eq!(routed(&t, "example.com", "/x"), None);
        assert_eq!(routed(&t, "10.0.0.1", "/any/thing"), Some("any"));
        assert_eq!(routed(&t, "[::1]:80", "/any"), Some("any"));
        // A host with rules does not fall through to the host-less rules.
        assert_eq!(routed(&t, "foo.example.com", "/any"), Some("foo"));
    }

    #[test]
    fn default_backends() {
        let mut t = Table::default();
        let foo = HostKey::parse(Some("foo.com"));
        t.host_mut(&foo).insert(PathType::Exact, "/a", b("a"));
        assert_eq!(routed(&t, "foo.com", "/b"), None);
        assert_eq!(routed(&t, "other.com", "/"), None);
        t.set_default(b("global"));
        assert_eq!(routed(&t, "foo.com", "/b"), Some("global"));
        assert_eq!(routed(&t, "other.com", "/"), Some("global"));
        t.set_host_default(&foo, b("foo-default"));
        t.set_default(b("ignored, one is set"));
        assert_eq!(routed(&t, "foo.com", "/b"), Some("foo-default"));
        assert_eq!(routed(&t, "foo.com", "/a"), Some("a"));
        assert_eq!(routed(&t, "other.com", "/"), Some("global"));
    }

    #[test]
    fn round_robin_attempts() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
            .collect();
        let be = Backend::new("x", eps.clone());
        let firsts: Vec<u16> = (0..6)
            .map(|_| be.attempts(1).next().unwrap().port())
            .collect();
        assert_eq!(firsts, [1, 2, 3, 1, 2, 3]);
        let all: Vec<u16> = be.attempts(5).map(|a| a.port()).collect();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(Backend::new("none", vec![]).attempts(3).count(), 0);
    }

    #[test]
    fn swap_keeps_old_tables_alive() {
        let routes = Routes::default();
        let mut t = Table::default();
        t.set_default(b("one"));
        routes.store(Arc::new(t));
        let held = routes.load();
        let mut t = Table::default();
        t.set_default(b("two"));
        routes.store(Arc::new(t));
        assert_eq!(routed(&held, "x", "/"), Some("one"));
        assert_eq!(routed(&routes.load(), "x", "/"), Some("two"));
    }
}
