//! The RBAC authorizer (↔ plugin/pkg/auth/authorizer/rbac): Roles,
//! ClusterRoles, RoleBindings and ClusterRoleBindings from the watch cache,
//! indexed by subject so that a decision looks only at the bindings that
//! name the user or one of its groups, never at every binding.
//!
//! The index is kept current by a watch on the four kinds (see
//! [`follow`]); like kube-apiserver's informers it lags a write by the time
//! the watch takes to deliver it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use skiff_api::value::strings;

use crate::authz::{Attributes, UserInfo};

/// One PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    pub fn from_value(v: &Value) -> Rule {
        Rule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &Vec<String>| {
            if !v.is_empty() {
                m.insert(k.into(), Value::from(v.clone()));
            }
        };
        put("verbs", &self.verbs);
        put("apiGroups", &self.api_groups);
        put("resources", &self.resources);
        put("resourceNames", &self.resource_names);
        put("nonResourceURLs", &self.non_resource_urls);
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    /// Whether the rule allows the request (rbac.RuleAllows).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verb_matches(&a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || u == &a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group)
            && self.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!a.subresource.is_empty()
                        && r.strip_prefix("*/") == Some(a.subresource.as_str()))
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }
}

fn rules_of(object: &Value) -> Arc<Vec<Rule>> {
    Arc::new(
        object
            .get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Rule::from_value).collect())
            .unwrap_or_default(),
    )
}

/// Who a binding names: a user (service accounts are users named
/// `system:serviceaccount:NS:NAME`) or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Group(String),
}

#[derive(Debug, Clone)]
struct Binding {
    subjects: Vec<Subject>,
    /// ("Role" | "ClusterRole", name).
    role_kind: String,
    role_name: String,
}

impl Binding {
    /// A binding's subjects; a service account without a namespace takes
    /// the binding's (RoleBindings only), as appliesToUser does.
    fn from_value(v: &Value, namespace: &str) -> Binding {
        let subjects = v
            .get("subjects")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        let name = s.get("name").and_then(Value::as_str)?.to_string();
                        match s.get("kind").and_then(Value::as_str)? {
                            "User" => Some(Subject::User(name)),
                            "Group" => Some(Subject::Group(name)),
                            "ServiceAccount" => {
                                let ns = s
                                    .get("namespace")
                                    .and_then(Value::as_str)
                                    .filter(|n| !n.is_empty())
                                    .unwrap_or(namespace);
                                (!ns.is_empty()).then(|| {
                                    Subject::User(format!("system:serviceaccount:{ns}:{name}"))
                                })
                            }
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Binding {
            subjects,
            role_kind: v
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            role_name: v
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// (namespace, name); the namespace is empty for cluster-scoped objects.
type Key = (String, String);

#[derive(Default)]
struct Index {
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    roles: HashMap<Key, Arc<Vec<Rule>>>,
    bindings: HashMap<Key, Binding>,
    /// (namespace of the binding, subject) → binding keys.
    by_subject: HashMap<(String, Subject), HashSet<Key>>,
}

impl Index {
    fn remove_binding(&mut self, key: &Key) {
        if let Some(old) = self.bindings.remove(key) {
            for s in old.subjects {
                let k = (key.0.clone(), s);
                if let Some(set) = self.by_subject.get_mut(&k) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_subject.remove(&k);
                    }
                }
            }
        }
    }

    fn put_binding(&mut self, key: Key, b: Binding) {
        self.remove_binding(&key);
        for s in &b.subjects {
            self.by_subject
                .entry((key.0.clone(), s.clone()))
                .or_default()
                .insert(key.clone());
        }
        self.bindings.insert(key, b);
    }

    fn role_rules(&self, namespace: &str, b: &Binding) -> Option<Arc<Vec<Rule>>> {
        match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&b.role_name).cloned(),
            "Role" if !namespace.is_empty() => self
                .roles
                .get(&(namespace.to_string(), b.role_name.clone()))
                .cloned(),
            _ => None,
        }
    }

    /// The bindings that apply to `user` in `namespace` (cluster bindings
    /// when it is empty).
    fn bindings_for<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Binding)> + 'a {
        let subjects = std::iter::once(Subject::User(user.name.clone()))
            .chain(user.groups.iter().cloned().map(Subject::Group));
        let mut seen = HashSet::new();
        subjects
            .filter_map(move |s| self.by_subject.get(&(namespace.to_string(), s)))
            .flatten()
            .filter(move |k| seen.insert((*k).clone()))
            .filter_map(move |k| self.bindings.get_key_value(k))
    }
}

/// Why a request was allowed (kube-apiserver's reason text).
fn reason(key: &Key, b: &Binding, user: &UserInfo) -> String {
    let binding = if key.0.is_empty() {
        format!("ClusterRoleBinding {:?}", key.1)
    } else {
        format!("RoleBinding {:?}", format!("{}/{}", key.0, key.1))
    };
    let role = if b.role_kind == "Role" {
        format!("Role {:?}", format!("{}/{}", key.0, b.role_name))
    } else {
        format!("ClusterRole {:?}", b.role_name)
    };
    format!(
        "RBAC: allowed by {binding} of {role} to User {:?}",
        user.name
    )
}

/// The RBAC authorizer's state.
#[derive(Default)]
pub struct Rbac {
    index: RwLock<Index>,
}

impl Rbac {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Allowed, with the reason, or None (no opinion).
    pub fn authorize(&self, a: &Attributes) -> Option<String> {
        let idx = self.read();
        let scopes: &[&str] = if a.namespace.is_empty() {
            &[""]
        } else {
            &["", a.namespace.as_str()]
        };
        for ns in scopes {
            for (key, b) in idx.bindings_for(&a.user, ns) {
                if let Some(rules) = idx.role_rules(ns, b)
                    && rules.iter().any(|r| r.allows(a))
                {
                    return Some(reason(key, b, &a.user));
                }
            }
        }
        None
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide rules
    /// included), as SelfSubjectRulesReview and escalation checks need them.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let idx = self.read();
        let mut out = Vec::new();
        let scopes: &[&str] = if namespace.is_empty() {
            &[""]
        } else {
            &["", namespace]
        };
        for ns in scopes {
            for (_, b) in idx.bindings_for(user, ns) {
                if let Some(rules) = idx.role_rules(ns, b) {
                    out.extend(rules.iter().cloned());
                }
            }
        }
        out
    }

    /// The rules of a Role (namespace set) or ClusterRole, if it exists.
    pub fn role(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<Vec<Rule>>> {
        let idx = self.read();
        match kind {
            "ClusterRole" => idx.cluster_roles.get(name).cloned(),
            "Role" => idx
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .cloned(),
            _ => None,
        }
    }

    /// Apply an object of `kind` put at (`namespace`, `name`), or deleted
    /// (`object` None).
    pub fn apply(&self, kind: &str, namespace: &str, name: &str, object: Option<&Value>) {
        let key = (namespace.to_string(), name.to_string());
        let mut idx = self.write();
        match (kind, object) {
            ("ClusterRole", Some(o)) => {
                idx.cluster_roles.insert(key.1, rules_of(o));
            }
            ("ClusterRole", None) => {
                idx.cluster_roles.remove(&key.1);
            }
            ("Role", Some(o)) => {
                idx.roles.insert(key, rules_of(o));
            }
            ("Role", None) => {
                idx.roles.remove(&key);
            }
            ("ClusterRoleBinding" | "RoleBinding", Some(o)) => {
                let b = Binding::from_value(o, namespace);
                idx.put_binding(key, b);
            }
            ("ClusterRoleBinding" | "RoleBinding", None) => idx.remove_binding(&key),
            _ => {}
        }
    }
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == "*" || s == item)
}

/// Whether `owner` grants one atomic rule (ruleCovers): every field of
/// `sub` is one value, or empty.
fn covers_one(owner: &Rule, sub: &Rule) -> bool {
    let all = |set: &[String], wanted: &[String]| wanted.iter().all(|w| has(set, w));
    let resources = owner.resources.iter().any(|r| r == "*")
        || sub.resources.iter().all(|w| {
            owner.resources.contains(w)
                || w.split_once('/').is_some_and(|(_, subres)| {
                    owner
                        .resources
                        .iter()
                        .any(|r| r.strip_prefix("*/") == Some(subres))
                })
        });
    let names = owner.resource_names.is_empty()
        || (!sub.resource_names.is_empty()
            && sub
                .resource_names
                .iter()
                .all(|n| owner.resource_names.contains(n)));
    let urls = sub.non_resource_urls.iter().all(|u| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| o == "*" || o == u || o.strip_suffix('*').is_some_and(|p| u.starts_with(p)))
    });
    all(&owner.verbs, &sub.verbs)
        && all(&owner.api_groups, &sub.api_groups)
        && resources
        && names
        && urls
}

/// Whether `owner` grants everything `servant` does (validation.Covers):
/// each servant rule is broken into one verb, group, resource and name at
/// a time, and each of those must be granted by one owner rule.
pub fn covers(owner: &[Rule], servant: &[Rule]) -> bool {
    uncovered(owner, servant).is_empty()
}

/// The atomic rules of `servant` that `owner` does not grant.
pub fn uncovered(owner: &[Rule], servant: &[Rule]) -> Vec<Rule> {
    let mut missing = Vec::new();
    let one = |s: &str| vec![s.to_string()];
    for r in servant {
        for verb in &r.verbs {
            for url in &r.non_resource_urls {
                let sub = Rule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Default::default()
                };
                if !owner.iter().any(|o| covers_one(o, &sub)) {
                    missing.push(sub);
                }
            }
            for group in &r.api_groups {
                for resource in &r.resources {
                    let names: Vec<Vec<String>> = if r.resource_names.is_empty() {
                        vec![vec![]]
                    } else {
                        r.resource_names.iter().map(|n| one(n)).collect()
                    };
                    for resource_names in names {
                        let sub = Rule {
                            verbs: one(verb),
                            api_groups: one(group),
                            resources: one(resource),
                            resource_names,
                            non_resource_urls: vec![],
                        };
                        if !owner.iter().any(|o| covers_one(o, &sub)) {
                            missing.push(sub);
                        }
                    }
                }
            }
        }
    }
    missing
}

/// How kube-apiserver prints a rule in an escalation error
/// (`{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`).
pub fn compact(r: &Rule) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", list(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", list(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", list(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:[{}]", list(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// The cache prefixes of the four kinds, and their kinds.
const KINDS: &[(&str, &str)] = &[
    ("/registry/clusterroles/", "ClusterRole"),
    ("/registry/roles/", "Role"),
    ("/registry/clusterrolebindings/", "ClusterRoleBinding"),
    ("/registry/rolebindings/", "RoleBinding"),
];

/// (namespace, name) of a key under `prefix`.
pub(crate) fn split_key<'a>(prefix: &str, key: &'a str) -> (&'a str, &'a str) {
    let rest = key.get(prefix.len()..).unwrap_or_default();
    rest.split_once('/').unwrap_or(("", rest))
}

/// Keep `rbac` current from the watch cache. Returns once the index holds
/// what the cache has now, so that the server authorizes with the whole
/// policy from its first request.
pub fn follow(rbac: &Arc<Rbac>, cache: &Arc<crate::cache::WatchCache>) {
    for (prefix, kind) in KINDS {
        let rbac = rbac.clone();
        crate::cache::follow(cache, prefix, move |ev| match ev {
            crate::cache::Followed::Put(o) => {
                let (ns, name) = split_key(prefix, &o.key);
                rbac.apply(kind, ns, name, Some(&o.value));
            }
            crate::cache::Followed::Delete(key) => {
                let (ns, name) = split_key(prefix, key);
                rbac.apply(kind, ns, name, None);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn res(u: &UserInfo, verb: &str, group: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            user: u.clone(),
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn rule_matching() {
        let r = Rule::from_value(&json!({
            "verbs": ["get"], "apiGroups": [""], "resources": ["pods", "*/status"], "resourceNames": ["a"]
        }));
        let u = user("u", &[]);
        let mut a = res(&u, "get", "", "pods", "ns");
        a.name = "a".into();
        assert!(r.allows(&a));
        a.name = "b".into();
        assert!(!r.allows(&a), "resourceNames");
        a.name = "a".into();
        a.subresource = "log".into();
        assert!(!r.allows(&a), "a subresource needs its own rule");
        a.subresource = "status".into();
        a.resource = "nodes".into();
        assert!(r.allows(&a), "*/status");
        let nr = Rule::from_value(
            &json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]}),
        );
        let mut p = Attributes {
            user: u.clone(),
            verb: "get".into(),
            path: "/apis/apps/v1".into(),
            ..Default::default()
        };
        assert!(nr.allows(&p));
        p.path = "/version".into();
        assert!(nr.allows(&p));
        p.path = "/versions".into();
        assert!(!nr.allows(&p));
        p.verb = "post".into();
        p.path = "/version".into();
        assert!(!nr.allows(&p));
    }

    #[test]
    fn bindings_grant_by_subject_and_scope() {
        let rbac = Rbac::default();
        rbac.apply("ClusterRole", "", "view", Some(&json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})));
        rbac.apply("Role", "a", "secrets", Some(&json!({"metadata": {"name": "secrets", "namespace": "a"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]})));
        rbac.apply("RoleBinding", "a", "b1", Some(&json!({"metadata": {"name": "b1", "namespace": "a"},
                    "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Group", "name": "team"}],
                    "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"}})));
        rbac.apply(
            "RoleBinding",
            "a",
            "b2",
            Some(&json!({"metadata": {"name": "b2", "namespace": "a"},
                    "subjects": [{"kind": "User", "name": "alice"}],
                    "roleRef": {"kind": "Role", "name": "secrets"}})),
        );
        let sa = user("system:serviceaccount:a:sa", &["system:serviceaccounts"]);
        assert!(rbac.authorize(&res(&sa, "list", "", "pods", "a")).is_some());
        assert!(
            rbac.authorize(&res(&sa, "list", "", "pods", "b")).is_none(),
            "other namespace"
        );
        assert!(
            rbac.authorize(&res(&sa, "list", "", "pods", "")).is_none(),
            "cluster scope"
        );
        assert!(
            rbac.authorize(&res(&sa, "delete", "", "pods", "a"))
                .is_none()
        );
        assert!(
            rbac.authorize(&res(&sa, "get", "", "secrets", "a"))
                .is_none()
        );
        let member = user("bob", &["team"]);
        assert!(
            rbac.authorize(&res(&member, "get", "", "pods", "a"))
                .is_some()
        );
        let alice = user("alice", &[]);
        let why = rbac
            .authorize(&res(&alice, "get", "", "secrets", "a"))
            .unwrap();
        assert_eq!(
            why,
            "RBAC: allowed by RoleBinding \"a/b2\" of Role \"a/secrets\" to User \"alice\""
        );
        // Updating a binding drops its old subjects.
        rbac.apply(
            "RoleBinding",
            "a",
            "b2",
            Some(&json!({"metadata": {"name": "b2", "namespace": "a"},
                    "subjects": [{"kind": "User", "name": "carol"}],
                    "roleRef": {"kind": "Role", "name": "secrets"}})),
        );
        assert!(
            rbac.authorize(&res(&alice, "get", "", "secrets", "a"))
                .is_none()
        );
        // Deleting the role removes what the binding grants.
        rbac.apply("ClusterRole", "", "view", None);
        assert!(rbac.authorize(&res(&sa, "list", "", "pods", "a")).is_none());
        // A ClusterRoleBinding grants everywhere.
        rbac.apply("ClusterRole", "", "all", Some(&json!({"metadata": {"name": "all"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]})));
        rbac.apply("ClusterRoleBinding", "", "admins", Some(&json!({"metadata": {"name": "admins"}, "subjects": [{"kind": "Group", "name": "system:masters"}],
                    "roleRef": {"kind": "ClusterRole", "name": "all"}})));
        let admin = user("root", &["system:masters"]);
        assert!(
            rbac.authorize(&res(&admin, "delete", "apps", "deployments", "x"))
                .is_some()
        );
        assert!(
            rbac.authorize(&res(&admin, "create", "", "nodes", ""))
                .is_some()
        );
        assert_eq!(rbac.rules_for(&carol(), "a").len(), 1);
    }

    fn carol() -> UserInfo {
        user("carol", &[])
    }
}
