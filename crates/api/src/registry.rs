//! The resource registry: every kind skiff serves, with the facts discovery,
//! routing, storage and printing need (group, version, kind, plural, scope,
//! short names, categories, subresources). Built from k8s-openapi's types:
//! nothing here is a hand-written copy of an API type.

use std::collections::HashMap;
use std::sync::LazyLock;

use k8s_openapi::api::{
    admissionregistration::v1 as admissionregistration, apps::v1 as apps,
    autoscaling::v2 as autoscaling, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, networking::v1 as networking, node::v1 as node, policy::v1 as policy,
    rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use serde_json::Value;

/// What a typed round trip of an object can fail with (a type mismatch in the body).
pub type DecodeError = serde_json::Error;

/// One served resource (a group/version/plural).
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    /// Lower-case kind, as discovery's singularName.
    pub singular: String,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresource names ("status", "scale", "log", ...).
    pub subresources: &'static [&'static str],
    /// The first path segment under /registry/ (Kubernetes' own etcd layout).
    pub storage_prefix: &'static str,
    /// The OpenAPI schema name of the kind ("io.k8s.api.core.v1.Pod").
    pub schema_name: String,
    /// Decode into the k8s-openapi type and encode again: drops unknown
    /// fields and fails on type mismatches, as kube-apiserver's decoder does.
    pub roundtrip: fn(Value) -> Result<Value, DecodeError>,
    /// Adds the kind's schema (and all it references) to a schema generator.
    pub add_schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The strategic-merge-patch strategies of the kind's fields (cached).
    pub patch_schema: fn() -> crate::patch::PatchSchema,
    /// A custom resource (served for a CustomResourceDefinition): no typed
    /// round trip, no strategic merge; its schema lives with its definition.
    pub custom: bool,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.plural)
    }
}

impl ResourceInfo {
    /// "v1" or "apps/v1".
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// "/api/v1" or "/apis/apps/v1".
    pub fn gv_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// The verbs discovery lists for the resource itself.
    pub fn verbs(&self) -> &'static [&'static str] {
        match (self.group, self.kind) {
            ("", "Binding") | ("policy", "Eviction") => &["create"],
            _ => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }

    /// The store key prefix of all objects of this resource (ends with '/').
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage_prefix)
    }

    /// The store key prefix of the objects in one namespace (ends with '/').
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.storage_prefix, namespace)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("/registry/{}/{}/{}", self.storage_prefix, ns, name)
            }
            _ => format!("/registry/{}/{}", self.storage_prefix, name),
        }
    }
}

/// The names a custom resource is served under (from its definition).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CustomNames {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
}

impl ResourceInfo {
    /// A custom resource: stored under `/registry/{group}/{plural}/` as
    /// kube-apiserver stores them; its schema is applied by the server.
    pub fn custom(n: &CustomNames, storage_prefix: &'static str) -> ResourceInfo {
        ResourceInfo {
            group: n.group,
            version: n.version,
            kind: n.kind,
            list_kind: n.list_kind,
            plural: n.plural,
            singular: n.singular.to_string(),
            namespaced: n.namespaced,
            short_names: n.short_names,
            categories: n.categories,
            subresources: n.subresources,
            storage_prefix,
            schema_name: format!("{}.{}.{}", reverse_domain(n.group), n.version, n.kind),
            roundtrip: Ok,
            add_schema: add_schema::<serde_json::Map<String, Value>>,
            patch_schema: crate::patch::PatchSchema::unknown,
            custom: true,
        }
    }
}

/// "stable.example.com" → "com.example.stable", as OpenAPI names custom kinds.
fn reverse_domain(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: Value,
) -> Result<Value, DecodeError> {
    let typed: T = serde_json::from_value(v)?;
    serde_json::to_value(typed)
}

fn add_schema<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    generator.subschema_for::<T>()
}

macro_rules! resource {
    ($ty:ty, $storage:expr, [$($short:expr),*], [$($cat:expr),*], [$($sub:expr),*]) => {{
        use k8s_openapi::{Resource, ListableResource};
        ResourceInfo {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            list_kind: <$ty as ListableResource>::LIST_KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: <$ty as Resource>::KIND.to_ascii_lowercase(),
            namespaced: is_namespaced::<<$ty as Resource>::Scope>(),
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            storage_prefix: $storage,
            schema_name: <$ty as schemars::JsonSchema>::schema_name().into_owned(),
            roundtrip: roundtrip::<$ty>,
            add_schema: add_schema::<$ty>,
            patch_schema: crate::patch::patch_schema_for::<$ty>,
            custom: false,
        }
    }};
}

trait ScopeFlag {
    const NAMESPACED: bool;
}
impl ScopeFlag for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl ScopeFlag for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}
fn is_namespaced<S: ScopeFlag>() -> bool {
    S::NAMESPACED
}

/// All resources skiff serves.
pub struct Registry {
    resources: Vec<ResourceInfo>,
    by_path: HashMap<(String, String, String), usize>,
    by_kind: HashMap<(String, String), usize>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::build);

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    fn build() -> Registry {
        let resources = vec![
            resource!(
                core::Namespace,
                "namespaces",
                ["ns"],
                [],
                ["status", "finalize"]
            ),
            resource!(
                core::Pod,
                "pods",
                ["po"],
                ["all"],
                [
                    "status",
                    "binding",
                    "eviction",
                    "log",
                    "exec",
                    "attach",
                    "portforward",
                    "proxy",
                    "ephemeralcontainers"
                ]
            ),
            resource!(core::Node, "minions", ["no"], [], ["status", "proxy"]),
            resource!(
                core::Service,
                "services/specs",
                ["svc"],
                ["all"],
                ["status", "proxy"]
            ),
            resource!(core::Endpoints, "services/endpoints", ["ep"], [], []),
            resource!(core::ConfigMap, "configmaps", ["cm"], [], []),
            resource!(core::Secret, "secrets", [], [], []),
            resource!(
                core::ServiceAccount,
                "serviceaccounts",
                ["sa"],
                [],
                ["token"]
            ),
            resource!(core::Event, "events", ["ev"], [], []),
            resource!(core::LimitRange, "limitranges", ["limits"], [], []),
            resource!(
                core::ResourceQuota,
                "resourcequotas",
                ["quota"],
                [],
                ["status"]
            ),
            resource!(
                core::PersistentVolume,
                "persistentvolumes",
                ["pv"],
                [],
                ["status"]
            ),
            resource!(
                core::PersistentVolumeClaim,
                "persistentvolumeclaims",
                ["pvc"],
                [],
                ["status"]
            ),
            resource!(
                core::ReplicationController,
                "controllers",
                ["rc"],
                ["all"],
                ["status", "scale"]
            ),
            resource!(core::PodTemplate, "podtemplates", [], [], []),
            resource!(
                apps::Deployment,
                "deployments",
                ["deploy"],
                ["all"],
                ["status", "scale"]
            ),
            resource!(
                apps::ReplicaSet,
                "replicasets",
                ["rs"],
                ["all"],
                ["status", "scale"]
            ),
            resource!(
                apps::StatefulSet,
                "statefulsets",
                ["sts"],
                ["all"],
                ["status", "scale"]
            ),
            resource!(apps::DaemonSet, "daemonsets", ["ds"], ["all"], ["status"]),
            resource!(apps::ControllerRevision, "controllerrevisions", [], [], []),
            resource!(batch::Job, "jobs", [], ["all"], ["status"]),
            resource!(batch::CronJob, "cronjobs", ["cj"], ["all"], ["status"]),
            resource!(coordination::Lease, "leases", [], [], []),
            resource!(discovery::EndpointSlice, "endpointslices", [], [], []),
            resource!(networking::Ingress, "ingress", ["ing"], [], ["status"]),
            resource!(networking::IngressClass, "ingressclasses", [], [], []),
            resource!(
                networking::NetworkPolicy,
                "networkpolicies",
                ["netpol"],
                [],
                []
            ),
            resource!(
                policy::PodDisruptionBudget,
                "poddisruptionbudgets",
                ["pdb"],
                [],
                ["status"]
            ),
            resource!(
                autoscaling::HorizontalPodAutoscaler,
                "horizontalpodautoscalers",
                ["hpa"],
                ["all"],
                ["status"]
            ),
            resource!(rbac::Role, "roles", [], [], []),
            resource!(rbac::ClusterRole, "clusterroles", [], [], []),
            resource!(rbac::RoleBinding, "rolebindings", [], [], []),
            resource!(rbac::ClusterRoleBinding, "clusterrolebindings", [], [], []),
            resource!(scheduling::PriorityClass, "priorityclasses", ["pc"], [], []),
            resource!(storage::StorageClass, "storageclasses", ["sc"], [], []),
            resource!(storage::CSIDriver, "csidrivers", [], [], []),
            resource!(storage::CSINode, "csinodes", [], [], []),
            resource!(
                storage::CSIStorageCapacity,
                "csistoragecapacities",
                [],
                [],
                []
            ),
            resource!(
                storage::VolumeAttachment,
                "volumeattachments",
                [],
                [],
                ["status"]
            ),
            resource!(events::Event, "events.k8s.io", ["ev"], [], []),
            resource!(node::RuntimeClass, "runtimeclasses", [], [], []),
            resource!(
                certificates::CertificateSigningRequest,
                "certificatesigningrequests",
                ["csr"],
                [],
                ["status", "approval"]
            ),
            resource!(
                admissionregistration::MutatingWebhookConfiguration,
                "mutatingwebhookconfigurations",
                [],
                ["api-extensions"],
                []
            ),
            resource!(
                admissionregistration::ValidatingWebhookConfiguration,
                "validatingwebhookconfigurations",
                [],
                ["api-extensions"],
                []
            ),
            resource!(
                admissionregistration::ValidatingAdmissionPolicy,
                "validatingadmissionpolicies",
                [],
                ["api-extensions"],
                ["status"]
            ),
            resource!(
                admissionregistration::ValidatingAdmissionPolicyBinding,
                "validatingadmissionpolicybindings",
                [],
                ["api-extensions"],
                []
            ),
            resource!(
                apiextensions::CustomResourceDefinition,
                "apiextensions.k8s.io/customresourcedefinitions",
                ["crd", "crds"],
                ["api-extensions"],
                ["status"]
            ),
        ];
        let mut by_path = HashMap::new();
        let mut by_kind = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            by_path.insert(
                (
                    r.group.to_string(),
                    r.version.to_string(),
                    r.plural.to_string(),
                ),
                i,
            );
            by_kind
                .entry((r.api_version(), r.kind.to_string()))
                .or_insert(i);
        }
        Registry {
            resources,
            by_path,
            by_kind,
        }
    }

    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resource served at /api(s)/{group}/{version}/{plural}.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .map(|&i| &self.resources[i])
    }

    /// The resource for an apiVersion ("apps/v1") and kind.
    pub fn lookup_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.by_kind
            .get(&(api_version.to_string(), kind.to_string()))
            .map(|&i| &self.resources[i])
    }

    /// The served groups in discovery order ("" first), each with its versions.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version);
                    }
                }
                None => out.push((r.group, vec![r.version])),
            }
        }
        out
    }

    /// The resources of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_namespaced_and_nodes_are_not() {
        let r = registry();
        let pods = r.lookup("", "v1", "pods").unwrap();
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.list_kind, "PodList");
        assert_eq!(pods.key(Some("default"), "p"), "/registry/pods/default/p");
        let nodes = r.lookup("", "v1", "nodes").unwrap();
        assert!(!nodes.namespaced);
        assert_eq!(nodes.key(None, "n1"), "/registry/minions/n1");
        let deploy = r.lookup_kind("apps/v1", "Deployment").unwrap();
        assert_eq!(deploy.plural, "deployments");
        assert_eq!(deploy.schema_name, "io.k8s.api.apps.v1.Deployment");
    }

    #[test]
    fn storage_prefixes_do_not_nest() {
        // A prefix that is a prefix of another would leak objects between
        // resources in range reads.
        let all = registry().all();
        for a in all {
            for b in all {
                if !std::ptr::eq(a, b) {
                    assert!(
                        !b.key_prefix().starts_with(&a.key_prefix()),
                        "{} nests in {}",
                        b.plural,
                        a.plural
                    );
                }
            }
        }
    }

    #[test]
    fn roundtrip_drops_unknown_fields_and_rejects_bad_types() {
        let pods = registry().lookup("", "v1", "pods").unwrap();
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "bogus": 1,
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let out = (pods.roundtrip)(v).unwrap();
        assert!(out.get("bogus").is_none());
        let bad = serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": "nope"}});
        assert!((pods.roundtrip)(bad).is_err());
    }
}
