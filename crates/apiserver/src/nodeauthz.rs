//! The Node authorizer and the NodeRestriction admission plugin
//! (↔ plugin/pkg/auth/authorizer/node, plugin/pkg/admission/noderestriction).
//!
//! A kubelet authenticates as `system:node:<name>` in `system:nodes`. It
//! may read a Secret, ConfigMap or PersistentVolumeClaim (and the bound
//! PersistentVolume), and request a token for a ServiceAccount, only when a
//! pod bound to its node uses it; it may touch only its own Lease. The graph
//! of those references is kept from the watch cache's pods and claims, per
//! node, incrementally: a decision looks up one node's entry. Everything
//! else a kubelet may do is the fixed list of node rules (bootstrappolicy's
//! NodeRules), and NodeRestriction narrows writes to its own Node and pods.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::authz::{Attributes, UserInfo};
use crate::rbac::Rule;
use crate::status::ApiError;

pub const NODES_GROUP: &str = "system:nodes";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is the kubelet of (NodeIdentifier).
pub fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    user.in_group(NODES_GROUP).then_some(name)
}

/// The Node authorizer's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// No opinion, with the reason kube-apiserver appends to the 403.
    NoOpinion(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

/// (kind, namespace, name) an object a pod uses.
type Ref = (Kind, String, String);

/// What one pod contributes to its node's entry.
#[derive(Default, Clone)]
struct PodRefs {
    node: String,
    refs: Vec<Ref>,
}

#[derive(Default)]
struct Graph {
    pods: HashMap<String, PodRefs>,
    /// node → referenced object → number of pods on the node using it.
    nodes: HashMap<String, HashMap<Ref, u32>>,
    /// (namespace, claim) → the PersistentVolume it is bound to.
    claims: HashMap<(String, String), String>,
}

impl Graph {
    fn remove_pod(&mut self, key: &str) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        if let Some(entry) = self.nodes.get_mut(&old.node) {
            for r in old.refs {
                if let Some(n) = entry.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        entry.remove(&r);
                    }
                }
            }
            if entry.is_empty() {
                self.nodes.remove(&old.node);
            }
        }
    }

    fn put_pod(&mut self, key: &str, pod: &Value) {
        self.remove_pod(key);
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let refs = pod_refs(pod);
        let entry = self.nodes.entry(node.to_string()).or_default();
        for r in &refs {
            *entry.entry(r.clone()).or_default() += 1;
        }
        self.pods.insert(
            key.to_string(),
            PodRefs {
                node: node.to_string(),
                refs,
            },
        );
    }

    fn uses(&self, node: &str, r: &Ref) -> bool {
        self.nodes.get(node).is_some_and(|e| e.contains_key(r))
    }

    fn uses_volume(&self, node: &str, pv: &str) -> bool {
        self.nodes.get(node).is_some_and(|e| {
            e.keys().any(|(k, ns, name)| {
                *k == Kind::Claim
                    && self
                        .claims
                        .get(&(ns.clone(), name.clone()))
                        .is_some_and(|v| v == pv)
            })
        })
    }
}

/// The Secrets, ConfigMaps, claims and service account a pod uses
/// (the node graph's pod edges).
fn pod_refs(pod: &Value) -> Vec<Ref> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out: Vec<Ref> = Vec::new();
    let mut add = |k: Kind, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            let r = (k, ns.to_string(), n.to_string());
            if !out.contains(&r) {
                out.push(r);
            }
        }
    };
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let spec = pod.get("spec").cloned().unwrap_or_default();
    add(
        Kind::ServiceAccount,
        Some(
            s(&spec, "/serviceAccountName")
                .as_deref()
                .unwrap_or("default"),
        ),
    );
    for p in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(Kind::Secret, s(p, "/name").as_deref());
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                add(
                    Kind::Secret,
                    s(e, "/valueFrom/secretKeyRef/name").as_deref(),
                );
                add(
                    Kind::ConfigMap,
                    s(e, "/valueFrom/configMapKeyRef/name").as_deref(),
                );
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                add(Kind::Secret, s(e, "/secretRef/name").as_deref());
                add(Kind::ConfigMap, s(e, "/configMapRef/name").as_deref());
            }
        }
    }
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(Kind::Secret, s(v, "/secret/secretName").as_deref());
        add(Kind::ConfigMap, s(v, "/configMap/name").as_deref());
        add(
            Kind::Claim,
            s(v, "/persistentVolumeClaim/claimName").as_deref(),
        );
        if v.get("ephemeral").is_some_and(Value::is_object) {
            let vol = s(v, "/name").unwrap_or_default();
            add(Kind::Claim, Some(&format!("{pod_name}-{vol}")));
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(Kind::Secret, s(src, "/secret/name").as_deref());
            add(Kind::ConfigMap, s(src, "/configMap/name").as_deref());
        }
        // Volume plugins' credentials (CSI, iSCSI, RBD, ...).
        if let Some(obj) = v.as_object() {
            for src in obj.values() {
                for key in [
                    "/secretRef/name",
                    "/nodePublishSecretRef/name",
                    "/nodeStageSecretRef/name",
                ] {
                    add(Kind::Secret, s(src, key).as_deref());
                }
            }
        }
    }
    out
}

/// The Node authorizer's state.
#[derive(Default)]
pub struct NodeAuthorizer {
    graph: RwLock<Graph>,
    /// The node rules, parsed once.
    rules: std::sync::OnceLock<Vec<Rule>>,
}

impl NodeAuthorizer {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Graph> {
        self.graph.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Graph> {
        self.graph.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put_pod(&self, key: &str, pod: &Value) {
        self.write().put_pod(key, pod);
    }

    pub fn remove_pod(&self, key: &str) {
        self.write().remove_pod(key);
    }

    pub fn put_claim(&self, namespace: &str, name: &str, claim: Option<&Value>) {
        let mut g = self.write();
        let key = (namespace.to_string(), name.to_string());
        match claim
            .and_then(|c| c.pointer("/spec/volumeName"))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            Some(pv) => {
                g.claims.insert(key, pv.to_string());
            }
            None => {
                g.claims.remove(&key);
            }
        }
    }

    fn node_rules(&self) -> &[Rule] {
        self.rules.get_or_init(crate::policy::node_rules)
    }

    pub fn authorize(&self, a: &Attributes) -> Verdict {
        let Some(node) = node_name(&a.user) else {
            return Verdict::NoOpinion(String::new());
        };
        if node.is_empty() {
            return Verdict::NoOpinion("unknown node".into());
        }
        if a.resource_request {
            let kind = match (a.api_group.as_str(), a.resource.as_str()) {
                ("", "secrets") => Some(Kind::Secret),
                ("", "configmaps") => Some(Kind::ConfigMap),
                ("", "persistentvolumeclaims") => Some(Kind::Claim),
                ("", "persistentvolumes") => {
                    return self.read_object(a, |g| g.uses_volume(node, &a.name), node);
                }
                ("", "serviceaccounts") => {
                    return self.create_token(a, node);
                }
                ("coordination.k8s.io", "leases") => return lease(a, node),
                _ => None,
            };
            if let Some(kind) = kind {
                if kind == Kind::Claim && a.subresource == "status" {
                    // Status updates of claims (volume expansion) are not
                    // something skiff's kubelet does.
                    return Verdict::NoOpinion(format!(
                        "no relationship found between node '{node}' and this object"
                    ));
                }
                let r = (kind, a.namespace.clone(), a.name.clone());
                return self.read_object(a, |g| g.uses(node, &r), node);
            }
        }
        if self.node_rules().iter().any(|r| r.allows(a)) {
            Verdict::Allow
        } else {
            Verdict::NoOpinion(String::new())
        }
    }

    /// get (or list/watch of one name) of an object a pod on the node uses.
    fn read_object(&self, a: &Attributes, uses: impl Fn(&Graph) -> bool, node: &str) -> Verdict {
        if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
            return Verdict::NoOpinion("can only read resources of this type".into());
        }
        if !a.subresource.is_empty() {
            return Verdict::NoOpinion(format!("cannot read subresource {}", a.subresource));
        }
        if a.name.is_empty() {
            return Verdict::NoOpinion("can only read individual resources of this type".into());
        }
        if uses(&self.read()) {
            Verdict::Allow
        } else {
            Verdict::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    /// serviceaccounts/token for a service account a pod on the node runs as.
    fn create_token(&self, a: &Attributes, node: &str) -> Verdict {
        if a.verb != "create" || a.subresource != "token" || a.name.is_empty() {
            return Verdict::NoOpinion(
                "can only create tokens for individual service accounts".into(),
            );
        }
        let r = (Kind::ServiceAccount, a.namespace.clone(), a.name.clone());
        if self.read().uses(node, &r) {
            Verdict::Allow
        } else {
            Verdict::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }
}

/// A node's own Lease in kube-node-lease (authorizeLease).
fn lease(a: &Attributes, node: &str) -> Verdict {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return Verdict::NoOpinion(
            "can only get, create, update, patch, or delete a node lease".into(),
        );
    }
    if a.namespace != LEASE_NAMESPACE {
        return Verdict::NoOpinion(format!(
            "can only access leases in the {LEASE_NAMESPACE} system namespace"
        ));
    }
    if a.verb != "create" && a.name != node {
        return Verdict::NoOpinion(
            "can only access node lease with the same name as the requesting node".into(),
        );
    }
    Verdict::Allow
}

/// Keep the graph current from the watch cache's pods and claims.
pub fn follow(node_authz: &Arc<NodeAuthorizer>, cache: &Arc<crate::cache::WatchCache>) {
    let n = node_authz.clone();
    crate::cache::follow(cache, "/registry/pods/", move |ev| match ev {
        crate::cache::Followed::Put(o) => n.put_pod(&o.key, &o.value),
        crate::cache::Followed::Delete(key) => n.remove_pod(key),
    });
    let n = node_authz.clone();
    let prefix = "/registry/persistentvolumeclaims/";
    crate::cache::follow(cache, prefix, move |ev| match ev {
        crate::cache::Followed::Put(o) => {
            let (ns, name) = crate::rbac::split_key(prefix, &o.key);
            n.put_claim(ns, name, Some(&o.value));
        }
        crate::cache::Followed::Delete(key) => {
            let (ns, name) = crate::rbac::split_key(prefix, key);
            n.put_claim(ns, name, None);
        }
    });
}

/// NodeRestriction: what a node may write (plugin/pkg/admission/noderestriction).
/// `old` is the stored object of an update or delete.
pub fn admit(
    user: &UserInfo,
    verb: &str,
    resource: &str,
    subresource: &str,
    name: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let forbid = |msg: String| {
        Err(ApiError::forbidden(format!(
            "{resource} \"{name}\" is forbidden: {msg}"
        )))
    };
    let bound_node = |v: Option<&Value>| {
        v.and_then(|p| p.pointer("/spec/nodeName"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match (resource, subresource) {
        ("nodes", _) => {
            if name != node {
                return forbid(format!(
                    "node \"{node}\" is not allowed to modify node \"{name}\""
                ));
            }
            if verb == "update" || verb == "patch" {
                let taints = |v: Option<&Value>| v.and_then(|n| n.pointer("/spec/taints")).cloned();
                if subresource.is_empty() && taints(object) != taints(old) {
                    return forbid("node is not allowed to modify taints".into());
                }
            }
            Ok(())
        }
        ("pods", "") => match verb {
            "create" => {
                let pod = object.cloned().unwrap_or_default();
                let mirror = pod
                    .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                    .is_some();
                if !mirror {
                    return forbid(format!(
                        "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
                    ));
                }
                if bound_node(Some(&pod)) != node {
                    return forbid(format!(
                        "node \"{node}\" can only create pods with spec.nodeName set to itself"
                    ));
                }
                Ok(())
            }
            "delete" => {
                if bound_node(old) != node {
                    return forbid(format!(
                        "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                    ));
                }
                Ok(())
            }
            _ => forbid(format!("node \"{node}\" can only create and delete pods")),
        },
        ("pods", "status") => {
            if bound_node(old) != node {
                return forbid(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        ("pods", "eviction") => {
            if bound_node(old) != node {
                return forbid(format!(
                    "node \"{node}\" can only evict pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        ("leases", _) => {
            if name != node {
                return forbid(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kubelet(node: &str) -> UserInfo {
        UserInfo::new(format!("system:node:{node}"), &[NODES_GROUP])
    }

    fn get(user: &UserInfo, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            user: user.clone(),
            verb: "get".into(),
            resource_request: true,
            namespace: ns.into(),
            resource: resource.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "builder",
                "containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                                "envFrom": [{"configMapRef": {"name": "env-cm"}}]}],
                "volumes": [
                    {"name": "v", "secret": {"secretName": "vol-secret"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "proj-cm"}}]}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}
                ]
            }
        })
    }

    #[test]
    fn a_node_reads_only_what_its_pods_use() {
        let n = NodeAuthorizer::default();
        n.put_pod("/registry/pods/ns/p1", &pod("p1", "n1"));
        n.put_claim("ns", "data", Some(&json!({"spec": {"volumeName": "pv-1"}})));
        let n1 = kubelet("n1");
        let n2 = kubelet("n2");
        for (res, name) in [
            ("secrets", "env-secret"),
            ("secrets", "vol-secret"),
            ("configmaps", "env-cm"),
            ("configmaps", "proj-cm"),
            ("persistentvolumeclaims", "data"),
        ] {
            assert_eq!(
                n.authorize(&get(&n1, res, "ns", name)),
                Verdict::Allow,
                "{res}/{name}"
            );
            assert_ne!(
                n.authorize(&get(&n2, res, "ns", name)),
                Verdict::Allow,
                "other node: {res}/{name}"
            );
            assert_ne!(
                n.authorize(&get(&n1, res, "other", name)),
                Verdict::Allow,
                "other namespace"
            );
        }
        assert_eq!(
            n.authorize(&get(&n1, "persistentvolumes", "", "pv-1")),
            Verdict::Allow
        );
        assert_ne!(
            n.authorize(&get(&n1, "persistentvolumes", "", "pv-2")),
            Verdict::Allow
        );
        let mut list = get(&n1, "secrets", "ns", "");
        list.verb = "list".into();
        assert_ne!(n.authorize(&list), Verdict::Allow, "no listing of secrets");
        let mut token = get(&n1, "serviceaccounts", "ns", "builder");
        token.verb = "create".into();
        token.subresource = "token".into();
        assert_eq!(n.authorize(&token), Verdict::Allow);
        token.name = "default".into();
        assert_ne!(n.authorize(&token), Verdict::Allow);
        // Once the pod is gone, so is the access.
        n.remove_pod("/registry/pods/ns/p1");
        assert_eq!(
            n.authorize(&get(&n1, "secrets", "ns", "env-secret")),
            Verdict::NoOpinion("no relationship found between node 'n1' and this object".into())
        );
        // A pod moved to another node moves its references (update).
        n.put_pod("/registry/pods/ns/p1", &pod("p1", "n1"));
        n.put_pod("/registry/pods/ns/p1", &pod("p1", "n2"));
        assert_ne!(
            n.authorize(&get(&n1, "secrets", "ns", "env-secret")),
            Verdict::Allow
        );
        assert_eq!(
            n.authorize(&get(&n2, "secrets", "ns", "env-secret")),
            Verdict::Allow
        );
    }

    #[test]
    fn static_node_rules_and_leases() {
        let n = NodeAuthorizer::default();
        let n1 = kubelet("n1");
        assert_eq!(n.authorize(&get(&n1, "nodes", "", "n2")), Verdict::Allow);
        let mut status = get(&n1, "pods", "ns", "p");
        status.verb = "patch".into();
        status.subresource = "status".into();
        assert_eq!(n.authorize(&status), Verdict::Allow);
        let mut lease = get(&n1, "leases", LEASE_NAMESPACE, "n1");
        lease.api_group = "coordination.k8s.io".into();
        assert_eq!(n.authorize(&lease), Verdict::Allow);
        lease.name = "n2".into();
        assert_ne!(n.authorize(&lease), Verdict::Allow);
        let mut del = get(&n1, "namespaces", "", "ns");
        del.verb = "delete".into();
        assert_ne!(n.authorize(&del), Verdict::Allow);
        // Not a node: no opinion.
        let other = UserInfo::new("system:node:n1", &[]);
        assert_eq!(
            n.authorize(&get(&other, "nodes", "", "n1")),
            Verdict::NoOpinion(String::new())
        );
    }

    #[test]
    fn node_restriction() {
        let n1 = kubelet("n1");
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(
            admit(
                &n1,
                "update",
                "nodes",
                "status",
                "n1",
                Some(&node),
                Some(&node)
            )
            .is_ok()
        );
        let e = admit(&n1, "patch", "nodes", "", "n2", Some(&node), Some(&node)).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let tainted = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert!(
            admit(
                &n1,
                "update",
                "nodes",
                "",
                "n1",
                Some(&node),
                Some(&tainted)
            )
            .is_err()
        );
        let mine = json!({"spec": {"nodeName": "n1"}});
        let theirs = json!({"spec": {"nodeName": "n2"}});
        assert!(
            admit(
                &n1,
                "update",
                "pods",
                "status",
                "p",
                Some(&mine),
                Some(&mine)
            )
            .is_ok()
        );
        assert!(
            admit(
                &n1,
                "update",
                "pods",
                "status",
                "p",
                Some(&theirs),
                Some(&theirs)
            )
            .is_err()
        );
        assert!(admit(&n1, "delete", "pods", "", "p", None, Some(&theirs)).is_err());
        assert!(
            admit(&n1, "create", "pods", "", "p", Some(&mine), None).is_err(),
            "not a mirror pod"
        );
        let mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}, "spec": {"nodeName": "n1"}});
        assert!(admit(&n1, "create", "pods", "", "p", Some(&mirror), None).is_ok());
        // Other users are not restricted here.
        assert!(
            admit(
                &UserInfo::new("admin", &[]),
                "patch",
                "nodes",
                "",
                "n2",
                None,
                None
            )
            .is_ok()
        );
    }
}
