//! The bootstrap RBAC policy (↔ plugin/pkg/auth/authorizer/rbac/bootstrappolicy),
//! reconciled at every start as kube-apiserver's `rbac/bootstrap-roles`
//! post-start hook does: missing roles and bindings are created, and those
//! marked `rbac.authorization.kubernetes.io/autoupdate: "true"` get back the
//! rules and subjects they lack; other changes an administrator made stay.
//!
//! Kubernetes' roles keep their names and meaning (cluster-admin, admin,
//! edit, view aggregated by label, system:basic-user, system:discovery,
//! system:public-info-viewer, system:node-proxier, system:kube-scheduler...).
//! skiff's own components get roles named `system:skiff-*`: the controller
//! manager runs every controller under one identity, so its role is the
//! union of what skiff's controllers need; the node agent's DNS, ingress
//! and network-policy components have one each.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::rbac::Rule;
use crate::state::ApiServer;
use crate::status::ApiResult;

const RBAC_API: &str = "rbac.authorization.k8s.io/v1";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const AGGREGATE: &str = "rbac.authorization.k8s.io/aggregate-to-";

fn split(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            if w == "core" {
                String::new()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// A rule: space-separated verbs, API groups (`core` is the core group) and resources.
fn rule(verbs: &str, groups: &str, resources: &str) -> Rule {
    Rule {
        verbs: split(verbs),
        api_groups: split(groups),
        resources: split(resources),
        ..Default::default()
    }
}

fn named(mut r: Rule, names: &str) -> Rule {
    r.resource_names = split(names);
    r
}

/// A non-resource rule.
fn urls(verbs: &str, urls: &str) -> Rule {
    Rule {
        verbs: split(verbs),
        non_resource_urls: split(urls),
        ..Default::default()
    }
}

const READ: &str = "get list watch";
const WRITE: &str = "create delete deletecollection patch update";
const READ_WRITE: &str = "get list watch create delete deletecollection patch update";

fn events() -> Rule {
    rule("create update patch", "core events.k8s.io", "events")
}

/// A bootstrap ClusterRole.
struct ClusterRole {
    name: &'static str,
    rules: Vec<Rule>,
    /// `aggregate-to-X` labels this role carries.
    aggregate_to: &'static [&'static str],
    /// The `aggregate-to-X` label this role aggregates (admin, edit, view).
    aggregates: Option<&'static str>,
}

fn role(name: &'static str, rules: Vec<Rule>) -> ClusterRole {
    ClusterRole {
        name,
        rules,
        aggregate_to: &[],
        aggregates: None,
    }
}

/// What a kubelet may do beyond the Node authorizer's graph (NodeRules).
pub fn node_rules() -> Vec<Rule> {
    vec![
        rule("create", "authentication.k8s.io", "tokenreviews"),
        rule(
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews localsubjectaccessreviews",
        ),
        rule(READ, "core", "services"),
        rule("create get list watch", "core", "nodes"),
        rule("update patch", "core", "nodes/status"),
        rule("update patch", "core", "nodes"),
        rule("create update patch", "core", "events"),
        rule(READ, "core", "pods"),
        rule("create delete", "core", "pods"),
        rule("update patch", "core", "pods/status"),
        rule("create", "core", "pods/eviction"),
        rule(READ, "core", "secrets configmaps"),
        rule("get", "core", "persistentvolumeclaims persistentvolumes"),
        rule("get", "core", "endpoints"),
        rule(
            "create get list watch",
            "certificates.k8s.io",
            "certificatesigningrequests",
        ),
        rule(
            "get create update patch delete",
            "coordination.k8s.io",
            "leases",
        ),
        rule("get", "storage.k8s.io", "volumeattachments"),
        rule(READ, "storage.k8s.io", "csidrivers"),
        rule(
            "get create update patch delete",
            "storage.k8s.io",
            "csinodes",
        ),
        rule(READ, "node.k8s.io", "runtimeclasses"),
        rule("create", "core", "serviceaccounts/token"),
    ]
}

fn cluster_roles() -> Vec<ClusterRole> {
    vec![
        role("cluster-admin", vec![rule("*", "*", "*"), urls("*", "*")]),
        role(
            "system:discovery",
            vec![urls(
                "get",
                "/api /api/* /apis /apis/* /healthz /livez /openapi /openapi/* /readyz /version /version/",
            )],
        ),
        role(
            "system:monitoring",
            vec![urls(
                "get",
                "/healthz /healthz/* /livez /livez/* /metrics /metrics/slis /readyz /readyz/*",
            )],
        ),
        role(
            "system:basic-user",
            vec![
                rule("create", "authentication.k8s.io", "selfsubjectreviews"),
                rule(
                    "create",
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews selfsubjectrulesreviews",
                ),
            ],
        ),
        role(
            "system:public-info-viewer",
            vec![urls("get", "/healthz /livez /readyz /version /version/")],
        ),
        ClusterRole {
            name: "admin",
            rules: vec![],
            aggregate_to: &[],
            aggregates: Some("admin"),
        },
        ClusterRole {
            name: "edit",
            rules: vec![],
            aggregate_to: &["admin"],
            aggregates: Some("edit"),
        },
        ClusterRole {
            name: "view",
            rules: vec![],
            aggregate_to: &["edit"],
            aggregates: Some("view"),
        },
        ClusterRole {
            name: "system:aggregate-to-admin",
            rules: vec![
                rule(
                    "create",
                    "authorization.k8s.io",
                    "localsubjectaccessreviews",
                ),
                rule(
                    READ_WRITE,
                    "rbac.authorization.k8s.io",
                    "roles rolebindings",
                ),
            ],
            aggregate_to: &["admin"],
            aggregates: None,
        },
        ClusterRole {
            name: "system:aggregate-to-edit",
            rules: vec![
                rule(
                    READ,
                    "core",
                    "pods/attach pods/proxy pods/exec pods/portforward secrets services/proxy",
                ),
                rule("impersonate", "core", "serviceaccounts"),
                rule(
                    WRITE,
                    "core",
                    "pods pods/attach pods/proxy pods/exec pods/portforward",
                ),
                rule("create", "core", "pods/eviction"),
                rule(
                    WRITE,
                    "core",
                    "replicationcontrollers replicationcontrollers/scale serviceaccounts services services/proxy persistentvolumeclaims configmaps secrets events",
                ),
                rule("create", "core", "serviceaccounts/token"),
                rule(
                    WRITE,
                    "apps",
                    "statefulsets statefulsets/scale daemonsets deployments deployments/scale deployments/rollback replicasets replicasets/scale",
                ),
                rule(WRITE, "autoscaling", "horizontalpodautoscalers"),
                rule(WRITE, "batch", "jobs cronjobs"),
                rule(WRITE, "policy", "poddisruptionbudgets"),
                rule(WRITE, "networking.k8s.io", "networkpolicies ingresses"),
                rule(READ_WRITE, "coordination.k8s.io", "leases"),
                rule(WRITE, "discovery.k8s.io", "endpointslices"),
            ],
            aggregate_to: &["edit"],
            aggregates: None,
        },
        ClusterRole {
            name: "system:aggregate-to-view",
            rules: vec![
                rule(
                    READ,
                    "core",
                    "pods replicationcontrollers replicationcontrollers/scale serviceaccounts services services/status endpoints persistentvolumeclaims persistentvolumeclaims/status configmaps",
                ),
                rule(
                    READ,
                    "core",
                    "limitranges resourcequotas bindings events pods/status resourcequotas/status namespaces/status replicationcontrollers/status pods/log",
                ),
                rule(READ, "core", "namespaces"),
                rule(READ, "discovery.k8s.io", "endpointslices"),
                rule(
                    READ,
                    "apps",
                    "controllerrevisions statefulsets statefulsets/status statefulsets/scale daemonsets daemonsets/status deployments deployments/status deployments/scale replicasets replicasets/status replicasets/scale",
                ),
                rule(
                    READ,
                    "autoscaling",
                    "horizontalpodautoscalers horizontalpodautoscalers/status",
                ),
                rule(READ, "batch", "jobs cronjobs cronjobs/status jobs/status"),
                rule(
                    READ,
                    "policy",
                    "poddisruptionbudgets poddisruptionbudgets/status",
                ),
                rule(
                    READ,
                    "networking.k8s.io",
                    "networkpolicies ingresses ingresses/status",
                ),
                rule(READ, "events.k8s.io", "events"),
            ],
            aggregate_to: &["view"],
            aggregates: None,
        },
        // metrics-server's role for the resource metrics API (kubectl top).
        ClusterRole {
            name: "system:aggregated-metrics-reader",
            rules: vec![rule(READ, "metrics.k8s.io", "pods nodes")],
            aggregate_to: &["view", "edit", "admin"],
            aggregates: None,
        },
        role(
            "system:auth-delegator",
            vec![
                rule("create", "authentication.k8s.io", "tokenreviews"),
                rule("create", "authorization.k8s.io", "subjectaccessreviews"),
            ],
        ),
        role("system:node", node_rules()),
        role(
            "system:node-bootstrapper",
            vec![rule(
                "create get list watch",
                "certificates.k8s.io",
                "certificatesigningrequests",
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/nodeclient",
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/selfnodeclient",
            )],
        ),
        role(
            "system:kubelet-api-admin",
            vec![
                rule("get list watch proxy", "core", "nodes"),
                rule(
                    "*",
                    "core",
                    "nodes/log nodes/metrics nodes/proxy nodes/stats nodes/configz nodes/healthz nodes/pods",
                ),
            ],
        ),
        role(
            "system:node-proxier",
            vec![
                rule("list watch", "core", "services endpoints"),
                rule("get list watch", "core", "nodes"),
                rule("list watch", "discovery.k8s.io", "endpointslices"),
                events(),
            ],
        ),
        role(
            "system:kube-dns",
            vec![rule("list watch", "core", "endpoints services")],
        ),
        role(
            "system:kube-scheduler",
            vec![
                events(),
                rule("create", "coordination.k8s.io", "leases"),
                named(
                    rule("get update", "coordination.k8s.io", "leases"),
                    "kube-scheduler",
                ),
                rule(READ, "core", "nodes pods namespaces"),
                rule("delete", "core", "pods"),
                rule("create", "core", "pods/binding bindings"),
                rule("patch update", "core", "pods/status"),
                rule(READ, "core", "replicationcontrollers services"),
                rule(READ, "apps extensions", "replicasets"),
                rule(READ, "apps", "statefulsets"),
                rule(READ, "policy", "poddisruptionbudgets"),
                rule(READ, "core", "persistentvolumeclaims persistentvolumes"),
                rule("create", "authentication.k8s.io", "tokenreviews"),
                rule("create", "authorization.k8s.io", "subjectaccessreviews"),
                rule(
                    READ,
                    "storage.k8s.io",
                    "csinodes csidrivers csistoragecapacities storageclasses",
                ),
                rule(READ, "scheduling.k8s.io", "priorityclasses"),
            ],
        ),
        role(
            "system:volume-scheduler",
            vec![
                rule("get list patch update watch", "core", "persistentvolumes"),
                rule(READ, "storage.k8s.io", "storageclasses"),
                rule(
                    "get list patch update watch",
                    "core",
                    "persistentvolumeclaims",
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                events(),
                rule("create", "coordination.k8s.io", "leases"),
                named(
                    rule("get update", "coordination.k8s.io", "leases"),
                    "kube-controller-manager",
                ),
                rule("create", "core", "secrets serviceaccounts"),
                rule("delete", "core", "secrets"),
                rule(
                    "get",
                    "core",
                    "endpoints namespaces secrets serviceaccounts configmaps",
                ),
                rule("update", "core", "secrets serviceaccounts"),
                rule("create", "authentication.k8s.io", "tokenreviews"),
                rule("create", "authorization.k8s.io", "subjectaccessreviews"),
                rule("list watch", "*", "*"),
                rule("create", "core", "serviceaccounts/token"),
            ],
        ),
        // Every controller skiff runs, under the controller manager's one
        // identity: the garbage collector and namespace controller already
        // need to read, update and delete everything.
        role(
            "system:skiff-controller-manager",
            vec![
                rule(
                    "get list watch patch update delete deletecollection",
                    "*",
                    "*",
                ),
                rule(
                    "create",
                    "core",
                    "pods endpoints events configmaps secrets serviceaccounts persistentvolumeclaims persistentvolumes services pods/eviction serviceaccounts/token",
                ),
                rule(
                    "create",
                    "apps",
                    "replicasets controllerrevisions daemonsets deployments statefulsets",
                ),
                rule("create", "batch", "jobs"),
                rule("create", "discovery.k8s.io", "endpointslices"),
                rule("create", "events.k8s.io", "events"),
                rule("create", "coordination.k8s.io", "leases"),
                rule("create", "authentication.k8s.io", "tokenreviews"),
                rule("create", "authorization.k8s.io", "subjectaccessreviews"),
                // The clusterrole-aggregation controller writes rules it
                // does not hold itself.
                rule("escalate", "rbac.authorization.k8s.io", "clusterroles"),
                // The CSR approver and signer.
                rule("approve", "certificates.k8s.io", "signers"),
                rule("sign", "certificates.k8s.io", "signers"),
            ],
        ),
        role(
            "system:skiff-dns",
            vec![
                rule(READ, "core", "services endpoints namespaces pods"),
                rule(READ, "discovery.k8s.io", "endpointslices"),
                // Every Node's addresses are in the DNS source ACL (pods on
                // other nodes arrive masqueraded to them).
                rule(READ, "core", "nodes"),
                // Each node's DNS publishes its address in kube-system's
                // kube-dns Service and EndpointSlice.
                rule("create get update patch", "core", "services"),
                rule(
                    "create get update patch delete",
                    "discovery.k8s.io",
                    "endpointslices",
                ),
                events(),
            ],
        ),
        role(
            "system:skiff-ingress",
            vec![
                rule(READ, "core", "services endpoints secrets"),
                rule(READ, "discovery.k8s.io", "endpointslices"),
                rule(READ, "networking.k8s.io", "ingresses ingressclasses"),
                // The default IngressClass, made when missing.
                rule("create", "networking.k8s.io", "ingressclasses"),
                rule("update patch", "networking.k8s.io", "ingresses/status"),
                events(),
            ],
        ),
        role(
            "system:skiff-netpol",
            vec![
                rule(READ, "core", "pods namespaces nodes"),
                rule(READ, "networking.k8s.io", "networkpolicies"),
                events(),
            ],
        ),
    ]
}

/// (binding name, role, subjects as (kind, name[, namespace])).
fn cluster_role_bindings() -> Vec<(&'static str, &'static str, Vec<Value>)> {
    let group =
        |n: &str| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": n});
    let user =
        |n: &str| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": n});
    vec![
        (
            "cluster-admin",
            "cluster-admin",
            vec![group("system:masters")],
        ),
        (
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        (
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        (
            "system:monitoring",
            "system:monitoring",
            vec![group("system:monitoring")],
        ),
        ("system:node", "system:node", vec![]),
        (
            "system:node-proxier",
            "system:node-proxier",
            vec![user("system:kube-proxy")],
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        (
            "system:volume-scheduler",
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        (
            "system:skiff-controller-manager",
            "system:skiff-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        (
            "system:skiff-dns",
            "system:skiff-dns",
            vec![user("system:skiff-dns")],
        ),
        (
            "system:skiff-ingress",
            "system:skiff-ingress",
            vec![user("system:skiff-ingress")],
        ),
        (
            "system:skiff-netpol",
            "system:skiff-netpol",
            vec![user("system:skiff-netpol")],
        ),
        // The API server's client identity towards kubelets.
        (
            "system:kube-apiserver-kubelet-client",
            "system:kubelet-api-admin",
            vec![user("system:kube-apiserver-kubelet-client")],
        ),
        // TLS bootstrap: agents joining with the node token create CSRs for
        // their node's client certificate, approved automatically, and
        // renew them as nodes (kubeadm's bindings of the same roles).
        (
            "skiff:node-bootstrapper",
            "system:node-bootstrapper",
            vec![group("system:bootstrappers")],
        ),
        (
            "skiff:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![group("system:bootstrappers")],
        ),
        (
            "skiff:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![group("system:nodes")],
        ),
    ]
}

fn bootstrap_meta(name: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role_object(r: &ClusterRole) -> Value {
    let mut labels = json!({});
    for to in r.aggregate_to {
        labels[format!("{AGGREGATE}{to}")] = json!("true");
    }
    let mut v = json!({
        "apiVersion": RBAC_API, "kind": "ClusterRole",
        "metadata": bootstrap_meta(r.name, labels),
        "rules": r.rules.iter().map(Rule::to_value).collect::<Vec<_>>(),
    });
    if let Some(label) = r.aggregates {
        v["aggregationRule"] = json!({"clusterRoleSelectors": [
            {"matchLabels": {format!("{AGGREGATE}{label}"): "true"}}
        ]});
    }
    v
}

fn autoupdate(existing: &Value) -> bool {
    existing
        .pointer(&format!(
            "/metadata/annotations/{}",
            AUTOUPDATE.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        != Some("false")
}

/// Create the bootstrap roles and bindings, and give back to those left
/// on autoupdate what they lack.
pub async fn reconcile(server: &Arc<ApiServer>) -> ApiResult<()> {
    for r in cluster_roles() {
        let want = cluster_role_object(&r);
        let key = format!("/registry/clusterroles/{}", r.name);
        match server.cache.get(&key) {
            None => {
                crate::bootstrap::ensure(server, RBAC_API, "ClusterRole", None, want).await?;
            }
            Some(have) if autoupdate(&have.value) && r.aggregates.is_none() => {
                let have_rules: Vec<Rule> = have
                    .value
                    .get("rules")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(Rule::from_value).collect())
                    .unwrap_or_default();
                let missing: Vec<&Rule> = r
                    .rules
                    .iter()
                    .filter(|w| !crate::rbac::covers(&have_rules, std::slice::from_ref(*w)))
                    .collect();
                if !missing.is_empty() {
                    let mut next = have.value.clone();
                    let rules = next["rules"].as_array().cloned().unwrap_or_default();
                    let mut rules = rules;
                    rules.extend(missing.iter().map(|r| r.to_value()));
                    next["rules"] = Value::Array(rules);
                    crate::bootstrap::replace(server, RBAC_API, "ClusterRole", None, next).await?;
                }
            }
            Some(_) => {}
        }
    }
    for (name, role, subjects) in cluster_role_bindings() {
        let key = format!("/registry/clusterrolebindings/{name}");
        match server.cache.get(&key) {
            None => {
                let obj = json!({
                    "apiVersion": RBAC_API, "kind": "ClusterRoleBinding",
                    "metadata": bootstrap_meta(name, json!({})),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": subjects,
                });
                crate::bootstrap::ensure(server, RBAC_API, "ClusterRoleBinding", None, obj).await?;
            }
            Some(have) if autoupdate(&have.value) => {
                let have_subjects = have
                    .value
                    .get("subjects")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let same = |a: &Value, b: &Value| {
                    a.get("kind") == b.get("kind") && a.get("name") == b.get("name")
                };
                let missing: Vec<Value> = subjects
                    .into_iter()
                    .filter(|s| !have_subjects.iter().any(|h| same(h, s)))
                    .collect();
                if !missing.is_empty() {
                    let mut next = have.value.clone();
                    let mut all = have_subjects;
                    all.extend(missing);
                    next["subjects"] = Value::Array(all);
                    crate::bootstrap::replace(server, RBAC_API, "ClusterRoleBinding", None, next)
                        .await?;
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_roles_select_their_parts() {
        let roles = cluster_roles();
        let view = roles.iter().find(|r| r.name == "view").unwrap();
        let v = cluster_role_object(view);
        assert_eq!(
            v["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"],
            "true"
        );
        assert_eq!(
            v["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true",
            "view is part of edit"
        );
        let names: Vec<&str> = roles.iter().map(|r| r.name).collect();
        for (b, role, _) in cluster_role_bindings() {
            assert!(
                names.contains(&role),
                "binding {b} names a missing role {role}"
            );
        }
    }

    #[test]
    fn edit_reads_secrets_and_view_does_not() {
        let roles = cluster_roles();
        let rules = |n: &str| roles.iter().find(|r| r.name == n).unwrap().rules.clone();
        let secrets = rule("get", "core", "secrets");
        assert!(crate::rbac::covers(
            &rules("system:aggregate-to-edit"),
            &[secrets.clone()]
        ));
        assert!(!crate::rbac::covers(
            &rules("system:aggregate-to-view"),
            &[secrets]
        ));
    }
}
