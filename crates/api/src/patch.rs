//! The three Kubernetes patch types over [`serde_json::Value`], applied the
//! way kube-apiserver applies them:
//!
//! * [`json_patch()`]: RFC 6902 (`application/json-patch+json`);
//! * [`merge_patch`]: RFC 7386 (`application/merge-patch+json`), with the
//!   null pruning of evanphx/json-patch that kube-apiserver uses;
//! * [`strategic_merge_patch`]: Kubernetes strategic merge patch
//!   (`application/strategic-merge-patch+json`), a port of the apply half of
//!   `k8s.io/apimachinery/pkg/util/strategicpatch` (server side, i.e.
//!   `MergeParallelList` and `IgnoreUnmatchedNulls` both on).
//!
//! # Strategic merge patch and [`PatchSchema`]
//!
//! A strategic merge patch needs to know, for every field, whether a list is
//! merged (and by which key) or replaced. That knowledge lives in a
//! [`PatchSchema`]: the field graph of a kind (walked from the k8s-openapi
//! schemars schema of its root type, following `$ref`s) annotated with the
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` values of
//! the Kubernetes OpenAPI spec (the [`PATCH_STRATEGIES`] table, keyed by
//! definition name and field).
//!
//! Getting one for a kind:
//!
//! ```
//! use k8s_openapi::api::apps::v1::Deployment;
//! use skiff_api::patch::{patch_schema_for, strategic_merge_patch};
//! use serde_json::json;
//!
//! // Built on first use, then cached process-wide (keyed by the type's schema
//! // id); every later call is a map lookup plus an `Arc` clone.
//! let schema = patch_schema_for::<Deployment>();
//! let live = json!({"spec": {"template": {"spec": {"containers": [
//!     {"name": "app", "image": "app:v1"}, {"name": "sidecar", "image": "proxy:v1"}]}}}});
//! let patch = json!({"spec": {"template": {"spec": {"containers": [
//!     {"name": "app", "image": "app:v2"}]}}}});
//! let out = strategic_merge_patch(&live, &patch, &schema).unwrap();
//! assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["image"], "proxy:v1");
//! ```
//!
//! Callers that only know a kind at run time can hold their own
//! `LazyLock<HashMap<..., PatchSchema>>` filled with
//! [`PatchSchema::for_type`], or call [`patch_schema_for`] from a function
//! pointer stored per kind. Types the schema does not describe (custom
//! resources) use [`PatchSchema::unknown`]: maps merge recursively and lists
//! are replaced, which is merge-patch semantics plus the `$patch`,
//! `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList`
//! directives.
//!
//! # Fidelity
//!
//! The merge follows the Go code step by step, including the order of merged
//! lists (`$setElementOrder` first, then the patch's order, then the live
//! order, interleaved as `mergeSortedSlice` does) and the effect Go's
//! in-place slice edits have on that order when one patch both deletes and
//! adds items. Deliberate differences:
//!
//! * values the patch introduces without merging them (a new field, a new
//!   list item, the content of `$patch: replace`, a replaced list) are
//!   cleaned the way Go cleans new fields everywhere: nulls are dropped, maps
//!   holding `$patch` are dropped, and the parallel-list keys
//!   (`$setElementOrder/…`, `$deleteFromPrimitiveList/…`, `$retainKeys`) are
//!   removed instead of being left for the typed decoder to reject;
//! * `$patch: merge` is accepted as a no-op (Go rejects it);
//! * an empty list paired with an empty `$setElementOrder` is not an error;
//! * a field the schema does not know merges like an unknown type (Go fails
//!   when both sides hold a map or a list for a field its struct lacks).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

const DIRECTIVE_MARKER: &str = "$patch";
const DELETE_DIRECTIVE: &str = "delete";
const REPLACE_DIRECTIVE: &str = "replace";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch is not a valid document of its patch type.
    #[error("invalid patch document: {0}")]
    InvalidPatch(String),
    /// The object being patched is not a JSON object.
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    /// A JSON patch `test` operation did not match.
    #[error("test operation failed at path {path:?}")]
    TestFailed { path: String },
    /// A JSON patch operation refers to a location that does not exist.
    #[error("path not found: {path:?}")]
    PathNotFound { path: String },
    /// A map of a merged list lacks the list's merge key.
    #[error("map {map} does not contain declared merge key {key:?}")]
    MissingMergeKey { key: String, map: String },
    /// A list of maps must be merged but its field declares no merge key.
    #[error("cannot merge lists of maps without a merge key")]
    NoMergeKey,
    /// `$patch` holds something other than `replace`, `merge` or `delete`.
    #[error("unknown patch type {directive} in {map}")]
    UnknownPatchType { directive: String, map: String },
    /// A list holds lists.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// The items of a merged list (original and patch together) differ in type.
    #[error("list element types are not identical")]
    MixedListTypes,
    /// A value does not have the type the patch requires there.
    #[error("expected {expected}, but received {found}")]
    TypeMismatch {
        expected: &'static str,
        found: &'static str,
    },
    /// `$retainKeys` is malformed or does not cover the patch.
    #[error("invalid patch format of $retainKeys: {0}")]
    InvalidRetainKeys(String),
    /// A `$setElementOrder/<field>` directive is malformed or contradicts the patch list.
    #[error("invalid patch format of $setElementOrder list: {0}")]
    InvalidSetElementOrder(String),
    /// A `$deleteFromPrimitiveList/<field>` directive is malformed.
    #[error("invalid patch format of $deleteFromPrimitiveList: {0}")]
    InvalidDeleteFromPrimitiveList(String),
    /// A JSON patch with more operations than kube-apiserver allows.
    #[error(
        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {0}"
    )]
    TooManyOperations(usize),
    /// JSON patch `copy` operations that together copy too much
    /// (evanphx/json-patch's AccumulatedCopySizeLimit).
    #[error(
        "Unable to complete the copy, the accumulated size increase of copy is {size}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}"
    )]
    CopyTooLarge { size: usize },
}

/// kube-apiserver's maxJSONPatchOperations.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// kube-apiserver's JSONPatchMaxCopyBytes (its request body limit, 3 MiB).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// The size of `v` as compact JSON, without building it (an upper bound
/// for strings with escapes is not needed: each byte counts once).
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => s.len().saturating_add(2),
        Value::Array(a) => a.iter().fold(a.len().saturating_add(1), |acc, x| {
            acc.saturating_add(json_size(x))
        }),
        Value::Object(o) => o.iter().fold(
            o.len().saturating_mul(2).saturating_add(1),
            |acc, (k, x)| {
                acc.saturating_add(k.len().saturating_add(2))
                    .saturating_add(json_size(x))
            },
        ),
    }
}

type Result<T> = std::result::Result<T, PatchError>;

// ---------------------------------------------------------------------------
// JSON patch and merge patch
// ---------------------------------------------------------------------------

/// Applies an RFC 6902 JSON patch (an array of operations) to `doc`.
///
/// The operations are applied in order to a copy of `doc`; on error nothing
/// is returned but the error.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value> {
    if !patch.is_array() {
        return Err(PatchError::InvalidPatch(format!(
            "a json patch must be a list of operations, not {}",
            type_name(patch)
        )));
    }
    if let Some(ops) = patch.as_array()
        && ops.len() > MAX_JSON_PATCH_OPERATIONS
    {
        return Err(PatchError::TooManyOperations(ops.len()));
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::InvalidPatch(e.to_string()))?;
    let mut out = doc.clone();
    // One operation at a time, so that what `copy` operations add is
    // counted before it is made (a copy of the whole document doubles it).
    let mut copied = 0usize;
    for (i, op) in ops.0.into_iter().enumerate() {
        if let json_patch::PatchOperation::Copy(c) = &op
            && let Some(from) = out.pointer(c.from.as_str())
        {
            copied = copied.saturating_add(json_size(from));
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(PatchError::CopyTooLarge { size: copied });
            }
        }
        // `out` is our own copy, so the undo log of `json_patch::patch` is not needed.
        json_patch::patch_unsafe(&mut out, &[op]).map_err(|e| {
            let path = e.path.to_string();
            match e.kind {
                json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed { path },
                json_patch::PatchErrorKind::InvalidPointer => PatchError::PathNotFound { path },
                json_patch::PatchErrorKind::InvalidFromPointer => PatchError::PathNotFound {
                    path: format!("from of operation {i}"),
                },
                _ => PatchError::InvalidPatch(e.to_string()),
            }
        })?;
    }
    Ok(out)
}

/// Applies an RFC 7386 JSON merge patch to `doc`.
///
/// The patch must be a JSON object (the result is stored as an object).
/// Like evanphx/json-patch (kube-apiserver's implementation), nulls inside
/// values that are added rather than merged are pruned, also inside maps
/// held by lists.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::InvalidPatch(format!(
            "a merge patch must be a JSON object, not {}",
            type_name(patch)
        )));
    };
    let mut out = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_docs(&mut out, patch);
    Ok(Value::Object(out))
}

fn merge_docs(doc: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            doc.remove(k);
            continue;
        }
        match doc.get_mut(k) {
            Some(cur) if !cur.is_null() => match (cur, v) {
                (Value::Object(c), Value::Object(p)) => merge_docs(c, p),
                // The current value is a map, the patch is not: taken as is.
                (cur @ Value::Object(_), v) => *cur = v.clone(),
                (cur, v) => {
                    let mut v = v.clone();
                    prune_nulls(&mut v);
                    *cur = v;
                }
            },
            _ => {
                let mut v = v.clone();
                prune_nulls(&mut v);
                doc.insert(k.clone(), v);
            }
        }
    }
}

fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(prune_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Patch schema
// ---------------------------------------------------------------------------

/// A field's `x-kubernetes-patch-strategy`, parsed: any of `merge`,
/// `replace` and `retainKeys` (`"merge,retainKeys"` sets two flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PatchStrategy {
    /// Lists: merge items by the merge key (or as a set, for primitives).
    pub merge: bool,
    /// Maps: replace the whole map instead of merging it.
    pub replace: bool,
    /// Clients send `$retainKeys` for this field (the server honours
    /// `$retainKeys` wherever it appears).
    pub retain_keys: bool,
}

impl PatchStrategy {
    /// No strategy: maps merge, lists are replaced.
    pub const NONE: PatchStrategy = PatchStrategy {
        merge: false,
        replace: false,
        retain_keys: false,
    };
    /// `merge`.
    pub const MERGE: PatchStrategy = PatchStrategy {
        merge: true,
        replace: false,
        retain_keys: false,
    };

    /// Parses a comma-separated `x-kubernetes-patch-strategy` value;
    /// unknown words are ignored.
    pub fn parse(s: &str) -> PatchStrategy {
        let mut out = PatchStrategy::NONE;
        for word in s.split(',').map(str::trim) {
            match word {
                "merge" => out.merge = true,
                "replace" => out.replace = true,
                "retainKeys" => out.retain_keys = true,
                _ => {}
            }
        }
        out
    }
}

impl fmt::Display for PatchStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (self.merge, "merge"),
            (self.replace, "replace"),
            (self.retain_keys, "retainKeys"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        f.write_str(&words.join(","))
    }
}

/// `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` of the
/// Kubernetes v1.33 OpenAPI spec, keyed by (definition name, field). Every
/// field not listed has no strategy (maps merge, lists are replaced).
pub const PATCH_STRATEGIES: &StrategyTable = &[
    // meta/v1
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    // core/v1: containers
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    // core/v1: pods
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        "merge",
        Some("name"),
    ),
    // core/v1: other kinds
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // apps/v1
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // batch, autoscaling, policy
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    // admissionregistration, storage, networking, resource
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
        "webhooks",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
        "webhooks",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.storage.v1.CSINodeSpec",
        "drivers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.networking.v1.ServiceCIDRStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.networking.v1beta1.ServiceCIDRStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.resource.v1alpha3.ResourceClaimStatus",
        "reservedFor",
        "merge",
        Some("uid"),
    ),
    (
        "io.k8s.api.resource.v1beta1.ResourceClaimStatus",
        "reservedFor",
        "merge",
        Some("uid"),
    ),
    (
        "io.k8s.api.resource.v1beta2.ResourceClaimStatus",
        "reservedFor",
        "merge",
        Some("uid"),
    ),
];

/// Rows of a patch strategy table: (definition name, field,
/// `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`).
type StrategyTable = [(
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
)];

fn table_lookup(
    table: &StrategyTable,
    type_name: &str,
    field: &str,
) -> Option<(PatchStrategy, Option<&'static str>)> {
    table
        .iter()
        .find(|(t, f, _, _)| *t == type_name && *f == field)
        .map(|(_, _, s, k)| (PatchStrategy::parse(s), *k))
}

type NodeId = usize;
const UNKNOWN: NodeId = 0;
const SCALAR: NodeId = 1;

#[derive(Debug)]
enum Node {
    /// No usable schema (custom resources, free-form JSON, quantities).
    Unknown,
    Scalar,
    Struct {
        name: Option<String>,
        fields: HashMap<String, Field>,
    },
    Map {
        values: NodeId,
    },
    List {
        items: NodeId,
    },
}

#[derive(Debug, Clone, Copy)]
struct Field {
    node: NodeId,
    strategy: PatchStrategy,
    merge_key: Option<&'static str>,
}

#[derive(Debug)]
struct Graph {
    nodes: Vec<Node>,
    by_name: HashMap<String, NodeId>,
}

impl Graph {
    fn base() -> Graph {
        Graph {
            nodes: vec![Node::Unknown, Node::Scalar],
            by_name: HashMap::new(),
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&Node::Unknown)
    }
}

/// What a value holds, as far as the schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// An object with declared fields (a named definition).
    Struct,
    /// A map with arbitrary keys (`additionalProperties`).
    Map,
    List,
    Scalar,
    /// No schema: merged like a map when both sides are maps, else replaced.
    Unknown,
}

/// Patch metadata of one field, as [`PatchSchema::field`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPatchMeta {
    /// `x-kubernetes-patch-strategy`.
    pub strategy: PatchStrategy,
    /// `x-kubernetes-patch-merge-key`.
    pub merge_key: Option<&'static str>,
    /// What the field holds.
    pub kind: ValueKind,
    /// Definition name of the field's value, of its list items or of its map
    /// values, when that is a named type.
    pub element_type: Option<String>,
}

/// The patch strategies of a kind's fields: a handle on one type of the
/// kind's field graph (cheap to clone: an `Arc` and an index).
///
/// Get one with [`patch_schema_for`] (cached), [`PatchSchema::for_type`]
/// (built every time) or [`PatchSchema::unknown`] (no schema).
#[derive(Debug, Clone)]
pub struct PatchSchema {
    graph: Arc<Graph>,
    node: NodeId,
}

impl PatchSchema {
    /// A schema that knows nothing: maps merge, lists are replaced.
    pub fn unknown() -> PatchSchema {
        static UNKNOWN_GRAPH: LazyLock<Arc<Graph>> = LazyLock::new(|| Arc::new(Graph::base()));
        PatchSchema {
            graph: Arc::clone(&UNKNOWN_GRAPH),
            node: UNKNOWN,
        }
    }

    /// Builds the schema of `T` from its schemars schema (k8s-openapi types
    /// carry the Kubernetes OpenAPI schema) and [`PATCH_STRATEGIES`].
    /// Not cached: prefer [`patch_schema_for`].
    pub fn for_type<T: JsonSchema>() -> PatchSchema {
        let mut generator = SchemaGenerator::default();
        let root = generator.subschema_for::<T>();
        let defs = generator.take_definitions(false);
        PatchSchema::from_definitions(&defs, root.as_value(), PATCH_STRATEGIES)
    }

    /// Builds a schema from JSON schema definitions (by name), the root
    /// schema (usually a `$ref` into them) and a strategy table.
    fn from_definitions(
        defs: &Map<String, Value>,
        root: &Value,
        table: &StrategyTable,
    ) -> PatchSchema {
        let mut builder = Builder {
            defs,
            table,
            graph: Graph::base(),
        };
        let node = builder.node_for(root);
        PatchSchema {
            graph: Arc::new(builder.graph),
            node,
        }
    }

    /// Whether this handle points at a schema-less value.
    pub fn is_unknown(&self) -> bool {
        matches!(self.graph.node(self.node), Node::Unknown)
    }

    /// The definition name of the type this handle points at, e.g.
    /// `io.k8s.api.core.v1.PodSpec`.
    pub fn type_name(&self) -> Option<&str> {
        match self.graph.node(self.node) {
            Node::Struct { name, .. } => name.as_deref(),
            _ => None,
        }
    }

    /// Patch metadata of `field` of the type this handle points at; `None`
    /// when the type declares no such field.
    pub fn field(&self, field: &str) -> Option<FieldPatchMeta> {
        match self.graph.node(self.node) {
            Node::Struct { fields, .. } => fields.get(field).map(|f| self.meta(f)),
            Node::Map { values } => Some(self.meta(&Field {
                node: *values,
                strategy: PatchStrategy::NONE,
                merge_key: None,
            })),
            _ => None,
        }
    }

    /// Patch metadata of `field` of the type named `type_name` (a definition
    /// name such as `io.k8s.api.core.v1.Container`) anywhere in this kind.
    pub fn lookup(&self, type_name: &str, field: &str) -> Option<FieldPatchMeta> {
        let node = *self.graph.by_name.get(type_name)?;
        PatchSchema {
            graph: Arc::clone(&self.graph),
            node,
        }
        .field(field)
    }

    /// The schema of the value of `field` (of list fields: the list).
    pub fn child(&self, field: &str) -> PatchSchema {
        let node = self.cursor().field(field).0.node;
        PatchSchema {
            graph: Arc::clone(&self.graph),
            node,
        }
    }

    /// The schema of the items, when this handle points at a list.
    pub fn items(&self) -> PatchSchema {
        let node = self.cursor().items().node;
        PatchSchema {
            graph: Arc::clone(&self.graph),
            node,
        }
    }

    fn cursor(&self) -> Cursor<'_> {
        Cursor {
            graph: &self.graph,
            node: self.node,
        }
    }

    fn meta(&self, f: &Field) -> FieldPatchMeta {
        let named = |id: NodeId| match self.graph.node(id) {
            Node::Struct { name, .. } => name.clone(),
            _ => None,
        };
        let (kind, element_type) = match self.graph.node(f.node) {
            Node::Unknown => (ValueKind::Unknown, None),
            Node::Scalar => (ValueKind::Scalar, None),
            Node::Struct { name, .. } => (ValueKind::Struct, name.clone()),
            Node::Map { values } => (ValueKind::Map, named(*values)),
            Node::List { items } => (ValueKind::List, named(*items)),
        };
        FieldPatchMeta {
            strategy: f.strategy,
            merge_key: f.merge_key,
            kind,
            element_type,
        }
    }
}

/// The [`PatchSchema`] of `T` (e.g. `k8s_openapi::api::core::v1::Pod`),
/// built on first use and cached for the life of the process, keyed by
/// `T::schema_id()`. Later calls cost a mutex-guarded map lookup and an
/// `Arc` clone.
pub fn patch_schema_for<T: JsonSchema>() -> PatchSchema {
    static CACHE: LazyLock<Mutex<HashMap<String, PatchSchema>>> = LazyLock::new(Default::default);
    let id = T::schema_id().into_owned();
    if let Some(found) = CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return found.clone();
    }
    // Built outside the lock; a concurrent first use may build twice, and
    // the first insert wins.
    let built = PatchSchema::for_type::<T>();
    CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id)
        .or_insert(built)
        .clone()
}

struct Builder<'a> {
    defs: &'a Map<String, Value>,
    table: &'a StrategyTable,
    graph: Graph,
}

impl Builder<'_> {
    fn push(&mut self, node: Node) -> NodeId {
        self.graph.nodes.push(node);
        self.graph.nodes.len() - 1
    }

    fn node_for(&mut self, schema: &Value) -> NodeId {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            return self.node_for_ref(r);
        }
        if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return self.node_for(only);
        }
        match self.build(schema, None) {
            Node::Unknown => UNKNOWN,
            Node::Scalar => SCALAR,
            node => self.push(node),
        }
    }

    fn node_for_ref(&mut self, reference: &str) -> NodeId {
        let Some(name) = ref_name(reference) else {
            return UNKNOWN;
        };
        if let Some(&id) = self.graph.by_name.get(&name) {
            return id;
        }
        let defs = self.defs;
        let Some(def) = defs.get(&name) else {
            return UNKNOWN;
        };
        // Registered before its fields are walked, so recursive types end.
        let id = self.push(Node::Unknown);
        self.graph.by_name.insert(name.clone(), id);
        let node = self.build(def, Some(&name));
        if let Some(slot) = self.graph.nodes.get_mut(id) {
            *slot = node;
        }
        id
    }

    fn build(&mut self, schema: &Value, name: Option<&str>) -> Node {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let mut fields = HashMap::with_capacity(props.len());
            for (field, field_schema) in props {
                let node = self.node_for(field_schema);
                let (strategy, merge_key) = name
                    .and_then(|n| table_lookup(self.table, n, field))
                    .unwrap_or((PatchStrategy::NONE, None));
                fields.insert(
                    field.clone(),
                    Field {
                        node,
                        strategy,
                        merge_key,
                    },
                );
            }
            return Node::Struct {
                name: name.map(str::to_owned),
                fields,
            };
        }
        let ty = schema.get("type").and_then(Value::as_str);
        if ty == Some("array") || schema.get("items").is_some() {
            let items = match schema.get("items") {
                Some(items) => self.node_for(items),
                None => UNKNOWN,
            };
            return Node::List { items };
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            let values = self.node_for(values);
            return Node::Map { values };
        }
        match ty {
            Some("string" | "integer" | "number" | "boolean") => Node::Scalar,
            _ => Node::Unknown,
        }
    }
}

/// The definition name a `$ref` points at (`#/$defs/<name>`, JSON-pointer
/// and percent encoded).
fn ref_name(reference: &str) -> Option<String> {
    let (_, last) = reference.rsplit_once('/')?;
    let pointer_decoded = last.replace("~1", "/").replace("~0", "~");
    let bytes = pointer_decoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| pointer_decoded.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A borrowed position in a [`Graph`].
#[derive(Clone, Copy)]
struct Cursor<'g> {
    graph: &'g Graph,
    node: NodeId,
}

impl<'g> Cursor<'g> {
    fn at(self, node: NodeId) -> Cursor<'g> {
        Cursor {
            graph: self.graph,
            node,
        }
    }

    /// The schema of `key`'s value with the field's strategy and merge key.
    fn field(self, key: &str) -> (Cursor<'g>, PatchStrategy, Option<&'static str>) {
        match self.graph.node(self.node) {
            Node::Struct { fields, .. } => match fields.get(key) {
                Some(f) => (self.at(f.node), f.strategy, f.merge_key),
                None => (self.at(UNKNOWN), PatchStrategy::NONE, None),
            },
            Node::Map { values } => (self.at(*values), PatchStrategy::NONE, None),
            _ => (self.at(UNKNOWN), PatchStrategy::NONE, None),
        }
    }

    fn items(self) -> Cursor<'g> {
        match self.graph.node(self.node) {
            Node::List { items } => self.at(*items),
            _ => self.at(UNKNOWN),
        }
    }
}

// ---------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------

/// Applies a Kubernetes strategic merge patch to `doc`, whose type is
/// described by `schema` (see [`patch_schema_for`]).
///
/// Lists whose field has patch strategy `merge` are merged by their merge
/// key (lists of primitives as sets), every other list is replaced, maps
/// merge recursively and `null` deletes. The directives `$patch`
/// (`replace`, `delete`, in maps and list items), `$retainKeys`,
/// `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` are
/// honoured, and merged lists are ordered as kube-apiserver orders them:
/// `$setElementOrder` first, then the patch's order, then the live order.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, schema: &PatchSchema) -> Result<Value> {
    let Value::Object(original) = doc else {
        return Err(PatchError::InvalidDocument(format!(
            "expected a JSON object, not {}",
            type_name(doc)
        )));
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::InvalidPatch(format!(
            "a strategic merge patch must be a JSON object, not {}",
            type_name(patch)
        )));
    };
    merge_map(original.clone(), patch.clone(), schema.cursor()).map(Value::Object)
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Cursor<'_>,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        match directive.as_str() {
            Some(REPLACE_DIRECTIVE) => {
                patch.remove(DIRECTIVE_MARKER);
                return Ok(clean_map(patch));
            }
            Some(DELETE_DIRECTIVE) => return Ok(Map::new()),
            Some(MERGE_DIRECTIVE) => {
                patch.remove(DIRECTIVE_MARKER);
            }
            _ => return Err(unknown_patch_type(directive, &patch)),
        }
    }

    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, schema)?;

    for (k, patch_v) in patch {
        let (key, is_delete_list) = if k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            let key = extract_key(&k, DELETE_FROM_PRIMITIVE_LIST_PREFIX).ok_or_else(|| {
                PatchError::InvalidDeleteFromPrimitiveList(format!("bad key {k:?}"))
            })?;
            (key.to_owned(), true)
        } else {
            (k, false)
        };

        // Null deletes; a null for an absent key is dropped.
        if patch_v.is_null() {
            original.remove(&key);
            continue;
        }

        let Some(orig_v) = original.remove(&key) else {
            if !is_delete_list && let Some(v) = clean_value(patch_v) {
                original.insert(key, v);
            }
            continue;
        };

        let merged = match (orig_v, patch_v) {
            (Value::Object(o), Value::Object(p)) => {
                let (child, strategy, _) = schema.field(&key);
                if strategy.replace {
                    Some(Value::Object(clean_map(p)))
                } else {
                    Some(Value::Object(merge_map(o, p, child)?))
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                let (child, strategy, merge_key) = schema.field(&key);
                let merged =
                    merge_list_field(o, p, child.items(), strategy, merge_key, is_delete_list)?;
                Some(Value::Array(merged.list))
            }
            (o, p) => {
                if same_type(&o, &p) || !is_delete_list {
                    clean_value(p)
                } else {
                    Some(o)
                }
            }
        };
        if let Some(v) = merged {
            original.insert(key, v);
        }
    }
    Ok(original)
}

/// A merged list, with Go's view of the original list afterwards.
///
/// Go merges lists in place: deleting an item shifts the backing array of
/// the original slice left and appending fills the freed tail, so the
/// original slice that `$setElementOrder` handling later uses as the live
/// order sees those writes. `go_view` reproduces that view (`None`: the
/// original was not touched), which keeps item order identical to
/// kube-apiserver's when a patch both deletes and adds items.
struct MergedList {
    list: Vec<Value>,
    go_view: Option<Vec<Value>>,
}

/// `mergeSliceHandler`: merged lists are merged, the others replaced.
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Cursor<'_>,
    strategy: PatchStrategy,
    merge_key: Option<&str>,
    is_delete_list: bool,
) -> Result<MergedList> {
    if strategy.merge || is_delete_list {
        merge_list(original, patch, items, merge_key, is_delete_list)
    } else {
        Ok(MergedList {
            list: clean_list(patch),
            go_view: None,
        })
    }
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Cursor<'_>,
    merge_key: Option<&str>,
    is_delete_list: bool,
) -> Result<MergedList> {
    if original.is_empty() && patch.is_empty() {
        return Ok(MergedList {
            list: original,
            go_view: None,
        });
    }
    let kind = element_kind(&[&original, &patch])?;

    if kind != Some(ElemKind::Object) {
        if is_delete_list {
            return Ok(MergedList {
                list: delete_from_list(original, &patch),
                go_view: None,
            });
        }
        let server_order = original.clone();
        let mut merged = original;
        for v in &patch {
            if !merged.iter().any(|m| json_eq(m, v)) {
                merged.push(v.clone());
            }
        }
        dedup(&mut merged);
        let (patch_items, server_only) = match merge_key {
            None => partition_primitives(merged, &patch),
            Some(mk) => partition_maps(merged, &patch, mk)?,
        };
        let list = normalize_element_order(patch_items, server_only, &patch, &server_order, None)?;
        return Ok(MergedList {
            list,
            go_view: None,
        });
    }

    let mk = merge_key.ok_or(PatchError::NoMergeKey)?;
    // `view` is Go's backing array of the original slice, `live` its length.
    let mut view = original;
    let mut live = view.len();
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(mut m) = item else {
            return Err(PatchError::TypeMismatch {
                expected: "a map",
                found: type_name(&item),
            });
        };
        let Some(directive) = m.get(DIRECTIVE_MARKER) else {
            plain.push(Value::Object(m));
            continue;
        };
        match directive.as_str() {
            Some(DELETE_DIRECTIVE) => {
                let Some(target) = m.get(mk) else {
                    return Err(missing_merge_key(&m, mk));
                };
                while let Some(k) = find_by_merge_key(&view[..live], mk, target)? {
                    for i in k + 1..live {
                        view[i - 1] = view[i].clone();
                    }
                    live -= 1;
                }
            }
            Some(REPLACE_DIRECTIVE) => replace = true,
            Some(MERGE_DIRECTIVE) => {
                m.remove(DIRECTIVE_MARKER);
                if !m.is_empty() {
                    plain.push(Value::Object(m));
                }
            }
            _ => return Err(unknown_patch_type(directive, &m)),
        }
    }
    if replace {
        let replaced = clean_list(plain);
        validate_merge_key_in_list(mk, &replaced)?;
        return Ok(MergedList {
            list: replaced,
            go_view: Some(view),
        });
    }

    let original: Vec<Value> = view[..live].to_vec();
    let patch_order = plain.clone();
    let merged = merge_list_items(original.clone(), plain, mk, items)?;
    // Appended items land in the backing array while it has room.
    for (i, item) in merged.iter().enumerate().skip(live) {
        match view.get_mut(i) {
            Some(slot) => *slot = item.clone(),
            None => break,
        }
    }
    let (patch_items, server_only) = partition_maps(merged, &patch_order, mk)?;
    let list =
        normalize_element_order(patch_items, server_only, &patch_order, &original, Some(mk))?;
    Ok(MergedList {
        list,
        go_view: Some(view),
    })
}

/// Index of the first map of `list` whose `mk` equals `value`.
fn find_by_merge_key(list: &[Value], mk: &str, value: &Value) -> Result<Option<usize>> {
    for (i, o) in list.iter().enumerate() {
        let Value::Object(om) = o else {
            return Err(PatchError::TypeMismatch {
                expected: "a map",
                found: type_name(o),
            });
        };
        if om.get(mk).is_some_and(|v| json_eq(v, value)) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Merges each patch item into the original item with the same merge key
/// value, or appends it.
fn merge_list_items(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    mk: &str,
    items: Cursor<'_>,
) -> Result<Vec<Value>> {
    for item in patch {
        let Value::Object(p) = item else {
            return Err(PatchError::TypeMismatch {
                expected: "a map",
                found: type_name(&item),
            });
        };
        let Some(key_value) = p.get(mk) else {
            return Err(missing_merge_key(&p, mk));
        };
        let found = find_by_merge_key(&original, mk, key_value)?;
        match found.and_then(|i| original.get_mut(i)) {
            Some(slot) => {
                let o = match std::mem::take(slot) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                *slot = Value::Object(merge_map(o, p, items)?);
            }
            None => {
                if let Some(v) = clean_value(Value::Object(p)) {
                    original.push(v);
                }
            }
        }
    }
    Ok(original)
}

/// Applies `$retainKeys`: drops the original keys it does not list, after
/// checking that the patch sets no key outside it.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::InvalidRetainKeys(format!(
            "expected a list, not {}",
            type_name(&retain)
        )));
    };
    let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || k.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !listed(k) {
            return Err(PatchError::InvalidRetainKeys(format!(
                "patch content doesn't match retainKeys list: {k:?} is not retained"
            )));
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Processes the `$setElementOrder/<field>` directives of one map: merges
/// the field's patch list (if any) into the original list and orders the
/// result by the directive, then by the live order. The merged fields are
/// removed from `patch`.
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Cursor<'_>,
) -> Result<()> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for directive in directives {
        let Some(order) = patch.remove(&directive) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(PatchError::InvalidSetElementOrder(format!(
                "{directive} must be a list, not {}",
                type_name(&order)
            )));
        };
        let field = extract_key(&directive, SET_ELEMENT_ORDER_PREFIX)
            .ok_or_else(|| PatchError::InvalidSetElementOrder(format!("bad key {directive:?}")))?
            .to_owned();
        let original_list = match original.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(PatchError::TypeMismatch {
                    expected: "a list",
                    found: type_name(other),
                });
            }
        };
        let patch_list = match patch.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(PatchError::TypeMismatch {
                    expected: "a list",
                    found: type_name(other),
                });
            }
        };
        let (child, strategy, merge_key) = schema.field(&field);
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or(&[]),
            &order,
            merge_key,
        )?;

        let kind = element_kind(&[
            original_list.as_deref().unwrap_or(&[]),
            patch_list.as_deref().unwrap_or(&[]),
        ])?;
        let mut server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list) {
            (Some(o), None) => o,
            (None, Some(p)) => clean_list(p),
            (Some(o), Some(p)) => {
                let merged = merge_list_field(o, p, child.items(), strategy, merge_key, false)?;
                if let Some(view) = merged.go_view {
                    server_order = view;
                }
                merged.list
            }
            (None, None) => continue,
        };
        patch.remove(&field);
        if kind.is_none() {
            original.insert(field, Value::Array(merged));
            continue;
        }
        let (patch_items, server_only) = match merge_key {
            None => partition_primitives(merged, &order),
            Some(mk) => partition_maps(merged, &order, mk)?,
        };
        let key = if kind == Some(ElemKind::Object) {
            merge_key
        } else {
            None
        };
        let both = normalize_element_order(patch_items, server_only, &order, &server_order, key)?;
        original.insert(field, Value::Array(both));
    }
    Ok(())
}

/// Checks that the (non-deleting) items of a patch list appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_patch_with_set_order_list(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<()> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let mut plain: Vec<&Value> = Vec::with_capacity(patch.len());
    for item in patch {
        if merge_key.is_some() {
            let Value::Object(m) = item else {
                return Err(PatchError::TypeMismatch {
                    expected: "a map",
                    found: type_name(item),
                });
            };
            if m.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some(DELETE_DIRECTIVE) {
                continue;
            }
        }
        plain.push(item);
    }
    let (mut pi, mut si) = (0, 0);
    while let (Some(p), Some(o)) = (plain.get(pi), order.get(si)) {
        if has_directive(p) {
            pi += 1;
            continue;
        }
        if merge_key_value_equal(p, o, merge_key)? {
            pi += 1;
        }
        si += 1;
    }
    if pi < plain.len() && si >= order.len() {
        return Err(PatchError::InvalidSetElementOrder(format!(
            "the order in patch list {} doesn't match the $setElementOrder list {}",
            Value::Array(patch.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool> {
    let Some(mk) = merge_key else {
        return Ok(json_eq(left, right));
    };
    let (Value::Object(l), Value::Object(r)) = (left, right) else {
        let bad = if left.is_object() { right } else { left };
        return Err(PatchError::TypeMismatch {
            expected: "a map",
            found: type_name(bad),
        });
    };
    let lv = l.get(mk).ok_or_else(|| missing_merge_key(l, mk))?;
    let rv = r.get(mk).ok_or_else(|| missing_merge_key(r, mk))?;
    Ok(json_eq(lv, rv))
}

/// Orders the items of a merged list: the patch items by `patch_order`, the
/// server-only items by `server_order`, then interleaves them keeping the
/// live order where both sides know it (`normalizeElementOrder`).
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>> {
    let patch_items = normalize_list_order(patch_items, patch_order, merge_key)?;
    let server_only = normalize_list_order(server_only, server_order, merge_key)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        merge_key,
    ))
}

fn normalize_list_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>> {
    let (mut items, to_delete) = match merge_key {
        Some(mk) => {
            validate_merge_key_in_list(mk, &items)?;
            validate_merge_key_in_list(mk, order)?;
            items.into_iter().partition::<Vec<Value>, _>(|v| {
                v.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some(DELETE_DIRECTIVE)
            })
        }
        None => (items, Vec::new()),
    };
    items.sort_by_cached_key(|v| index_of(order, v, merge_key).unwrap_or(usize::MAX));
    items.extend(to_delete);
    Ok(items)
}

/// Inserts the server-only items (`left`) among the patch items (`right`):
/// a left item goes first only when both are in `server_order` and it comes
/// earlier there (`mergeSortedSlice`).
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        let left_first = matches!(
            (index_of(server_order, l, merge_key), index_of(server_order, r, merge_key)),
            (Some(li), Some(ri)) if li < ri
        );
        let next = if left_first {
            left.next()
        } else {
            right.next()
        };
        out.extend(next);
    }
    out.extend(left);
    out.extend(right);
    out
}

fn index_of(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    let identity = |v: &'_ Value| -> Option<Value> {
        match merge_key {
            Some(mk) => v.get(mk).cloned(),
            None => Some(v.clone()),
        }
    };
    let wanted = identity(item);
    list.iter().position(|v| match (identity(v), &wanted) {
        (Some(a), Some(b)) => json_eq(&a, b),
        (None, None) => true,
        _ => false,
    })
}

fn validate_merge_key_in_list(mk: &str, list: &[Value]) -> Result<()> {
    for item in list {
        let Value::Object(m) = item else {
            return Err(PatchError::TypeMismatch {
                expected: "a map",
                found: type_name(item),
            });
        };
        if !m.contains_key(mk) {
            return Err(missing_merge_key(m, mk));
        }
    }
    Ok(())
}

/// Splits `merged` into the items present in `by` (by value) and the others.
fn partition_primitives(merged: Vec<Value>, by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| by.iter().any(|b| json_eq(b, v)))
}

/// Splits `merged` into the items whose merge key value appears in `by` and
/// the others.
fn partition_maps(merged: Vec<Value>, by: &[Value], mk: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    for b in by {
        if !b.is_object() {
            return Err(PatchError::TypeMismatch {
                expected: "a map",
                found: type_name(b),
            });
        }
    }
    let mut in_by = Vec::new();
    let mut others = Vec::new();
    for item in merged {
        let Value::Object(m) = &item else {
            return Err(PatchError::TypeMismatch {
                expected: "a map",
                found: type_name(&item),
            });
        };
        let Some(key_value) = m.get(mk) else {
            return Err(missing_merge_key(m, mk));
        };
        if by
            .iter()
            .any(|b| b.get(mk).is_some_and(|v| json_eq(v, key_value)))
        {
            in_by.push(item);
        } else {
            others.push(item);
        }
    }
    Ok((in_by, others))
}

fn delete_from_list(mut current: Vec<Value>, to_delete: &[Value]) -> Vec<Value> {
    current.retain(|v| !to_delete.iter().any(|d| json_eq(d, v)));
    current
}

fn dedup(list: &mut Vec<Value>) {
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for v in list.drain(..) {
        if !out.iter().any(|o| json_eq(o, &v)) {
            out.push(v);
        }
    }
    *list = out;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Null,
    Bool,
    Number,
    String,
    Object,
}

/// The common type of the items of `lists`; `None` when they are all empty.
fn element_kind(lists: &[&[Value]]) -> Result<Option<ElemKind>> {
    let mut kind = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        let k = match v {
            Value::Null => ElemKind::Null,
            Value::Bool(_) => ElemKind::Bool,
            Value::Number(_) => ElemKind::Number,
            Value::String(_) => ElemKind::String,
            Value::Object(_) => ElemKind::Object,
            Value::Array(_) => return Err(PatchError::ListOfLists),
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => return Err(PatchError::MixedListTypes),
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Cleans a value the patch introduces without merging: drops nulls in
/// maps, maps carrying `$patch`, and parallel-list directive keys. `None`
/// when the value itself is a `$patch` map.
fn clean_value(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get(DIRECTIVE_MARKER).is_some_and(|d| !d.is_null()) {
                return None;
            }
            Some(Value::Object(clean_map(m)))
        }
        Value::Array(a) => Some(Value::Array(clean_list(a))),
        other => Some(other),
    }
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| clean_value(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(a: Vec<Value>) -> Vec<Value> {
    a.into_iter().filter_map(clean_value).collect()
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE_MARKER
        || k == RETAIN_KEYS_DIRECTIVE
        || k.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

fn has_directive(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.contains_key(DIRECTIVE_MARKER))
}

/// `"$setElementOrder/containers"` → `"containers"`.
fn extract_key<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    let (head, field) = key.split_once('/')?;
    (head == prefix && !field.is_empty()).then_some(field)
}

/// Equality of JSON values where numbers compare by value (`1` == `1.0`),
/// as Go compares the decoded values.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        _ => a == b,
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn missing_merge_key(m: &Map<String, Value>, mk: &str) -> PatchError {
    PatchError::MissingMergeKey {
        key: mk.to_owned(),
        map: Value::Object(m.clone()).to_string(),
    }
}

fn unknown_patch_type(directive: &Value, m: &Map<String, Value>) -> PatchError {
    let directive = match directive {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    PatchError::UnknownPatchType {
        directive,
        map: Value::Object(m.clone()).to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
    use k8s_openapi::api::core::v1::{
        ComponentStatus, Namespace, Node, PersistentVolumeClaim, Pod, ReplicationController,
        Service, ServiceAccount,
    };
    use serde_json::json;

    use super::*;

    struct Case {
        name: &'static str,
        original: Value,
        patch: Value,
        expected: Value,
    }

    fn run(schema: &PatchSchema, cases: Vec<Case>) {
        for c in cases {
            let got = strategic_merge_patch(&c.original, &c.patch, schema)
                .unwrap_or_else(|e| panic!("case {:?}: unexpected error {e}", c.name));
            assert_eq!(got, c.expected, "case {:?}", c.name);
        }
    }

    fn pod_spec(spec: Value) -> Value {
        json!({ "spec": spec })
    }

    #[test]
    fn patch_smp_pod_lists() {
        let cases = vec![
            Case {
                name: "container merged by name",
                original: pod_spec(json!({"containers": [
                    {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]})),
                patch: pod_spec(json!({"containers": [{"name": "b", "image": "b:2"}]})),
                expected: pod_spec(json!({"containers": [
                    {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]})),
            },
            Case {
                name: "new container without $setElementOrder goes before server-only items",
                original: pod_spec(json!({"containers": [{"name": "a", "image": "a:1"}]})),
                patch: pod_spec(json!({"containers": [{"name": "c", "image": "c:1"}]})),
                expected: pod_spec(json!({"containers": [
                    {"name": "c", "image": "c:1"}, {"name": "a", "image": "a:1"}]})),
            },
            Case {
                name: "patch order, then live order",
                original: pod_spec(json!({"containers": [
                    {"name": "1"}, {"name": "2"}, {"name": "3"}]})),
                patch: pod_spec(
                    json!({"containers": [{"name": "2", "image": "x"}, {"name": "4"}]}),
                ),
                expected: pod_spec(json!({"containers": [
                    {"name": "1"}, {"name": "2", "image": "x"}, {"name": "4"}, {"name": "3"}]})),
            },
            Case {
                name: "env merged by name",
                original: pod_spec(json!({"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]})),
                patch: pod_spec(json!({"containers": [{"name": "a", "env": [
                    {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]})),
                expected: pod_spec(json!({"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                    {"name": "C", "value": "4"}]}]})),
            },
            Case {
                name: "container ports merged by containerPort",
                original: pod_spec(json!({"containers": [{"name": "a", "ports": [
                    {"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}]}]})),
                patch: pod_spec(json!({"containers": [{"name": "a", "ports": [
                    {"containerPort": 80, "protocol": "TCP"}]}]})),
                expected: pod_spec(json!({"containers": [{"name": "a", "ports": [
                    {"containerPort": 80, "name": "http", "protocol": "TCP"},
                    {"containerPort": 443, "name": "https"}]}]})),
            },
            Case {
                name: "volumeMounts merged by mountPath",
                original: pod_spec(json!({"containers": [{"name": "a", "volumeMounts": [
                    {"mountPath": "/a", "name": "va"}, {"mountPath": "/b", "name": "vb"}]}]})),
                patch: pod_spec(json!({"containers": [{"name": "a", "volumeMounts": [
                    {"mountPath": "/b", "readOnly": true}]}]})),
                expected: pod_spec(json!({"containers": [{"name": "a", "volumeMounts": [
                    {"mountPath": "/a", "name": "va"},
                    {"mountPath": "/b", "name": "vb", "readOnly": true}]}]})),
            },
            Case {
                name: "$patch: delete removes a container",
                original: pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
                patch: pod_spec(json!({"containers": [{"name": "b", "$patch": "delete"}]})),
                expected: pod_spec(json!({"containers": [{"name": "a"}]})),
            },
            Case {
                name: "$patch: delete of an env var next to an update",
                original: pod_spec(json!({"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]})),
                patch: pod_spec(json!({"containers": [{"name": "a", "env": [
                    {"name": "A", "$patch": "delete"}, {"name": "B", "value": "5"}]}]})),
                expected: pod_spec(json!({"containers": [{"name": "a", "env": [
                    {"name": "B", "value": "5"}]}]})),
            },
            Case {
                name: "$patch: replace on a merged list",
                original: pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
                patch: pod_spec(
                    json!({"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}),
                ),
                expected: pod_spec(json!({"containers": [{"name": "z", "image": "z"}]})),
            },
            Case {
                name: "$patch: replace on a map",
                original: pod_spec(json!({"nodeSelector": {"a": "1", "b": "2"}})),
                patch: pod_spec(json!({"nodeSelector": {"$patch": "replace", "c": "3"}})),
                expected: pod_spec(json!({"nodeSelector": {"c": "3"}})),
            },
            Case {
                name: "$patch: delete on a map",
                original: pod_spec(json!({"securityContext": {"runAsUser": 1}, "hostname": "h"})),
                patch: pod_spec(json!({"securityContext": {"$patch": "delete"}})),
                expected: pod_spec(json!({"securityContext": {}, "hostname": "h"})),
            },
            Case {
                name: "$patch: merge is a no-op directive",
                original: pod_spec(json!({"nodeSelector": {"a": "1"}})),
                patch: pod_spec(json!({"nodeSelector": {"$patch": "merge", "b": "2"}})),
                expected: pod_spec(json!({"nodeSelector": {"a": "1", "b": "2"}})),
            },
            Case {
                name: "$setElementOrder reorders without content",
                original: pod_spec(
                    json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
                ),
                patch: pod_spec(json!({"$setElementOrder/containers": [
                    {"name": "c"}, {"name": "a"}, {"name": "b"}]})),
                expected: pod_spec(
                    json!({"containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}),
                ),
            },
            Case {
                name: "$setElementOrder places a new container",
                original: pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
                patch: pod_spec(json!({
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "x"}, {"name": "b"}],
                    "containers": [{"name": "x", "image": "x:1"}]})),
                expected: pod_spec(json!({"containers": [
                    {"name": "a"}, {"name": "x", "image": "x:1"}, {"name": "b"}]})),
            },
            Case {
                // Go's mergeSortedSlice puts a server-only item before a patch
                // item that comes later in the live list.
                name: "$setElementOrder interleaves server-only items by live order",
                original: pod_spec(
                    json!({"containers": [{"name": "a"}, {"name": "s"}, {"name": "b"}]}),
                ),
                patch: pod_spec(json!({
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "b", "image": "b:2"}]})),
                expected: pod_spec(json!({"containers": [
                    {"name": "s"}, {"name": "b", "image": "b:2"}, {"name": "a"}]})),
            },
            Case {
                name: "$retainKeys switches a volume source",
                original: pod_spec(
                    json!({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}),
                ),
                patch: pod_spec(json!({"volumes": [{
                    "name": "v", "hostPath": {"path": "/tmp"}, "$retainKeys": ["hostPath", "name"]}]})),
                expected: pod_spec(json!({"volumes": [
                    {"name": "v", "hostPath": {"path": "/tmp"}}, {"name": "w", "emptyDir": {}}]})),
            },
            Case {
                name: "tolerations are atomic",
                original: pod_spec(json!({"tolerations": [{"key": "a"}, {"key": "b"}]})),
                patch: pod_spec(json!({"tolerations": [{"key": "c"}]})),
                expected: pod_spec(json!({"tolerations": [{"key": "c"}]})),
            },
            Case {
                name: "container args are atomic",
                original: pod_spec(json!({"containers": [{"name": "a", "args": ["x", "y"]}]})),
                patch: pod_spec(json!({"containers": [{"name": "a", "args": ["z"]}]})),
                expected: pod_spec(json!({"containers": [{"name": "a", "args": ["z"]}]})),
            },
            Case {
                name: "imagePullSecrets by name, hostAliases by ip, topologySpreadConstraints by topologyKey",
                original: pod_spec(json!({
                    "imagePullSecrets": [{"name": "s1"}],
                    "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["a"]}],
                    "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}]})),
                patch: pod_spec(json!({
                    "imagePullSecrets": [{"name": "s2"}],
                    "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["b"]}],
                    "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]})),
                expected: pod_spec(json!({
                    "imagePullSecrets": [{"name": "s2"}, {"name": "s1"}],
                    "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["b"]}],
                    "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]})),
            },
            Case {
                name: "null deletes a field, absent null is dropped",
                original: pod_spec(json!({"nodeName": "n", "hostname": "h"})),
                patch: pod_spec(json!({"nodeName": null, "subdomain": null})),
                expected: pod_spec(json!({"hostname": "h"})),
            },
            Case {
                name: "new values are cleaned of nulls and directives",
                original: pod_spec(json!({})),
                patch: pod_spec(json!({"affinity": {"nodeAffinity": null, "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone", "x": null}],
                    "$setElementOrder/requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}},
                    "dnsConfig": {"$patch": "replace", "nameservers": ["1.1.1.1"]}})),
                expected: pod_spec(json!({"affinity": {"podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}}})),
            },
        ];
        run(&patch_schema_for::<Pod>(), cases);
    }

    #[test]
    fn patch_smp_metadata_and_status() {
        let cases = vec![
            Case {
                name: "null deletes a label",
                original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                patch: json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
                expected: json!({"metadata": {"labels": {"b": "2", "c": "3"}}}),
            },
            Case {
                name: "finalizers merge as a set",
                original: json!({"metadata": {"finalizers": ["a", "b"]}}),
                patch: json!({"metadata": {"finalizers": ["c", "a"]}}),
                expected: json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
            },
            Case {
                name: "$deleteFromPrimitiveList/finalizers",
                original: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
                patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
                expected: json!({"metadata": {"finalizers": ["a", "c"]}}),
            },
            Case {
                name: "kubectl-style finalizers: order, addition and deletion",
                original: json!({"metadata": {"finalizers": ["a", "b"]}}),
                patch: json!({"metadata": {
                    "$setElementOrder/finalizers": ["a", "c"],
                    "finalizers": ["c"],
                    "$deleteFromPrimitiveList/finalizers": ["b"]}}),
                expected: json!({"metadata": {"finalizers": ["a", "c"]}}),
            },
            Case {
                name: "$deleteFromPrimitiveList of an absent list is ignored",
                original: json!({"metadata": {"name": "x"}}),
                patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
                expected: json!({"metadata": {"name": "x"}}),
            },
            Case {
                name: "ownerReferences merged by uid",
                original: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "name": "x"}, {"uid": "2", "name": "y"}]}}),
                patch: json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "z"}]}}),
                expected: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "name": "x"}, {"uid": "2", "name": "z"}]}}),
            },
            Case {
                name: "pod conditions merged by type",
                original: json!({"status": {"conditions": [
                    {"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}}),
                patch: json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                expected: json!({"status": {"conditions": [
                    {"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]}}),
            },
            Case {
                name: "containerStatuses are atomic",
                original: json!({"status": {"containerStatuses": [{"name": "a"}, {"name": "b"}]}}),
                patch: json!({"status": {"containerStatuses": [{"name": "b", "ready": true}]}}),
                expected: json!({"status": {"containerStatuses": [{"name": "b", "ready": true}]}}),
            },
            Case {
                name: "top-level $patch: delete empties the object",
                original: json!({"metadata": {"name": "x"}}),
                patch: json!({"$patch": "delete"}),
                expected: json!({}),
            },
        ];
        run(&patch_schema_for::<Pod>(), cases);
    }

    #[test]
    fn patch_smp_other_kinds() {
        run(
            &patch_schema_for::<Service>(),
            vec![Case {
                name: "service ports merged by port",
                original: json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}],
                "selector": {"app": "a", "tier": "web"}}}),
                patch: json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"tier": null}}}),
                expected: json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}],
                "selector": {"app": "a"}}}),
            }],
        );
        run(
            &patch_schema_for::<Node>(),
            vec![Case {
                name: "node podCIDRs as a set, addresses by type, taints atomic",
                original: json!({"spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
                "status": {"addresses": [{"type": "InternalIP", "address": "1.1.1.1"}, {"type": "Hostname", "address": "n"}]}}),
                patch: json!({"spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "b", "effect": "NoExecute"}]},
                "status": {"addresses": [{"type": "InternalIP", "address": "2.2.2.2"}]}}),
                expected: json!({"spec": {"podCIDRs": ["fd00::/64", "10.0.0.0/24"], "taints": [{"key": "b", "effect": "NoExecute"}]},
                "status": {"addresses": [{"type": "InternalIP", "address": "2.2.2.2"}, {"type": "Hostname", "address": "n"}]}}),
            }],
        );
        run(
            &PatchSchema::unknown(),
            vec![
                Case {
                    name: "unknown types: maps merge, lists replace",
                    original: json!({"spec": {"items": [{"name": "a"}, {"name": "b"}], "m": {"x": 1, "y": 2}}}),
                    patch: json!({"spec": {"items": [{"name": "b"}], "m": {"x": null, "z": 3}}}),
                    expected: json!({"spec": {"items": [{"name": "b"}], "m": {"y": 2, "z": 3}}}),
                },
                Case {
                    name: "unknown types still honour $patch and $retainKeys",
                    original: json!({"spec": {"a": {"b": 1}, "c": {"d": 1, "e": 2}}}),
                    patch: json!({"spec": {"a": {"$patch": "replace", "f": 1}, "c": {"$retainKeys": ["d"], "d": 5}}}),
                    expected: json!({"spec": {"a": {"f": 1}, "c": {"d": 5}}}),
                },
            ],
        );
    }

    #[test]
    fn patch_smp_kubectl_apply_deployment() {
        let live = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "app", "image": "app:v1", "env": [{"name": "A", "value": "1"}],
                         "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                         "imagePullPolicy": "IfNotPresent"},
                        {"name": "sidecar", "image": "proxy:v1", "imagePullPolicy": "IfNotPresent"}
                    ]}
                }
            },
            "status": {"replicas": 2}
        });
        // What `kubectl apply` sends after the manifest changed app's image and
        // added the env var B.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                    "env": [{"name": "B", "value": "2"}],
                    "image": "app:v2",
                    "name": "app"
                }]
            }}}
        });
        let mut expected = live.clone();
        expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{...}");
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:v2");
        expected["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
        run(
            &patch_schema_for::<Deployment>(),
            vec![Case {
                name: "kubectl apply: one image changed, one env var added",
                original: live.clone(),
                patch,
                expected,
            }],
        );

        // Switching the strategy to Recreate: kubectl sends $retainKeys.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        let out = strategic_merge_patch(&live, &patch, &patch_schema_for::<Deployment>()).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        // Removing the sidecar as kubectl apply does it.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]}}}});
        let out = strategic_merge_patch(&live, &patch, &patch_schema_for::<Deployment>()).unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app"]);
    }

    #[test]
    fn patch_smp_errors() {
        let pod = patch_schema_for::<Pod>();
        let original = pod_spec(json!({"containers": [{"name": "a"}], "nodeSelector": {"a": "1"}}));
        type Check = fn(&PatchError) -> bool;
        let cases: Vec<(&str, Value, Check)> = vec![
            (
                "missing merge key",
                pod_spec(json!({"containers": [{"image": "x"}]})),
                |e| matches!(e, PatchError::MissingMergeKey { key, .. } if key == "name"),
            ),
            (
                "unknown $patch in a map",
                pod_spec(json!({"nodeSelector": {"$patch": "explode"}})),
                |e| matches!(e, PatchError::UnknownPatchType { directive, .. } if directive == "explode"),
            ),
            (
                "unknown $patch in a list item",
                pod_spec(json!({"containers": [{"name": "a", "$patch": "explode"}]})),
                |e| matches!(e, PatchError::UnknownPatchType { .. }),
            ),
            (
                "$patch: delete without merge key",
                pod_spec(json!({"containers": [{"$patch": "delete"}]})),
                |e| matches!(e, PatchError::MissingMergeKey { .. }),
            ),
            (
                "$retainKeys not covering the patch",
                pod_spec(json!({"nodeSelector": {"$retainKeys": ["a"], "b": "2"}})),
                |e| matches!(e, PatchError::InvalidRetainKeys(_)),
            ),
            (
                "$retainKeys not a list",
                pod_spec(json!({"nodeSelector": {"$retainKeys": "a"}})),
                |e| matches!(e, PatchError::InvalidRetainKeys(_)),
            ),
            (
                "$setElementOrder not matching the patch list",
                pod_spec(json!({
                "$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b"}]})),
                |e| matches!(e, PatchError::InvalidSetElementOrder(_)),
            ),
            (
                "$setElementOrder not a list",
                pod_spec(json!({"$setElementOrder/containers": {"name": "a"}})),
                |e| matches!(e, PatchError::InvalidSetElementOrder(_)),
            ),
            (
                "$setElementOrder without a field",
                pod_spec(json!({"$setElementOrder": []})),
                |e| matches!(e, PatchError::InvalidSetElementOrder(_)),
            ),
            (
                "$deleteFromPrimitiveList without a field",
                json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
                |e| matches!(e, PatchError::InvalidDeleteFromPrimitiveList(_)),
            ),
            (
                "mixed list item types",
                json!({"metadata": {"finalizers": [1]}}),
                |e| matches!(e, PatchError::MixedListTypes),
            ),
            (
                "lists of lists",
                json!({"metadata": {"finalizers": [["a"]]}}),
                |e| matches!(e, PatchError::ListOfLists),
            ),
            ("patch is not an object", json!(["a"]), |e| {
                matches!(e, PatchError::InvalidPatch(_))
            }),
        ];
        let mut original = original;
        original["metadata"] = json!({"finalizers": ["x"]});
        for (name, patch, check) in cases {
            let err = strategic_merge_patch(&original, &patch, &pod).unwrap_err();
            assert!(check(&err), "case {name:?}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
        let err = strategic_merge_patch(&json!("x"), &json!({}), &pod).unwrap_err();
        assert!(matches!(err, PatchError::InvalidDocument(_)), "{err:?}");
    }

    #[test]
    fn patch_json_patch() {
        let doc =
            json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"list": [1, 2]}});
        let ok = json_patch(
            &doc,
            &json!([
                {"op": "test", "path": "/metadata/name", "value": "x"},
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/spec/list/0", "value": 9},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "copy", "from": "/metadata/name", "path": "/spec/name"},
                {"op": "move", "from": "/spec/name", "path": "/spec/moved"}
            ]),
        )
        .unwrap();
        assert_eq!(
            ok,
            json!({"metadata": {"name": "x", "labels": {"b": "2"}},
            "spec": {"list": [9, 2, 3], "moved": "x"}})
        );

        let err = json_patch(
            &doc,
            &json!([{"op": "test", "path": "/metadata/name", "value": "y"}]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::TestFailed {
                path: "/metadata/name".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "test operation failed at path \"/metadata/name\""
        );

        let err = json_patch(
            &doc,
            &json!([{"op": "remove", "path": "/metadata/missing"}]),
        )
        .unwrap_err();
        assert!(
            matches!(err, PatchError::PathNotFound { ref path } if path == "/metadata/missing"),
            "{err:?}"
        );
        let err = json_patch(
            &doc,
            &json!([{"op": "add", "path": "/nope/deeper", "value": 1}]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::PathNotFound { .. }), "{err:?}");
        let err = json_patch(&doc, &json!([{"op": "explode", "path": "/a"}])).unwrap_err();
        assert!(matches!(err, PatchError::InvalidPatch(_)), "{err:?}");
        let err = json_patch(&doc, &json!({"op": "add"})).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid patch document: "),
            "{err}"
        );
        // A failed operation leaves the input untouched (it is borrowed) and
        // applies nothing.
        assert_eq!(doc["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn patch_merge_patch() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
            (
                json!({}),
                json!({"a": [{"x": null, "y": 1}, null]}),
                json!({"a": [{"y": 1}, null]}),
            ),
            (
                json!({"a": {"b": 1}}),
                json!({"a": [{"x": null}]}),
                json!({"a": [{"x": null}]}),
            ),
            (
                json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}}),
                json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}}),
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3}}),
            ),
        ];
        for (doc, patch, expected) in cases {
            assert_eq!(
                merge_patch(&doc, &patch).unwrap(),
                expected,
                "{doc} + {patch}"
            );
        }
        let err = merge_patch(&json!({}), &json!(["a"])).unwrap_err();
        assert!(matches!(err, PatchError::InvalidPatch(_)), "{err:?}");
    }

    #[test]
    fn patch_schema_lookups() {
        let pod = patch_schema_for::<Pod>();
        assert_eq!(pod.type_name(), Some("io.k8s.api.core.v1.Pod"));
        assert!(!pod.is_unknown());

        let ports = pod.lookup("io.k8s.api.core.v1.Container", "ports").unwrap();
        assert_eq!(ports.strategy, PatchStrategy::MERGE);
        assert_eq!(ports.merge_key, Some("containerPort"));
        assert_eq!(ports.kind, ValueKind::List);
        assert_eq!(
            ports.element_type.as_deref(),
            Some("io.k8s.api.core.v1.ContainerPort")
        );

        let spec = pod.child("spec");
        assert_eq!(spec.type_name(), Some("io.k8s.api.core.v1.PodSpec"));
        let volumes = spec.field("volumes").unwrap();
        assert_eq!(volumes.strategy.to_string(), "merge,retainKeys");
        assert_eq!(volumes.merge_key, Some("name"));
        let tolerations = spec.field("tolerations").unwrap();
        assert_eq!(tolerations.strategy, PatchStrategy::NONE);
        assert_eq!(tolerations.merge_key, None);
        assert_eq!(
            spec.child("containers").items().type_name(),
            Some("io.k8s.api.core.v1.Container")
        );
        assert!(spec.field("noSuchField").is_none());

        let finalizers = pod
            .lookup(
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "finalizers",
            )
            .unwrap();
        assert_eq!(
            (finalizers.strategy, finalizers.merge_key, finalizers.kind),
            (PatchStrategy::MERGE, None, ValueKind::List)
        );
        let labels = pod.child("metadata").field("labels").unwrap();
        assert_eq!(labels.kind, ValueKind::Map);
        assert!(
            pod.lookup("io.k8s.api.apps.v1.DeploymentSpec", "strategy")
                .is_none()
        );

        let deploy = patch_schema_for::<Deployment>();
        let strategy = deploy
            .lookup("io.k8s.api.apps.v1.DeploymentSpec", "strategy")
            .unwrap();
        assert_eq!(
            strategy.strategy,
            PatchStrategy {
                retain_keys: true,
                ..PatchStrategy::NONE
            }
        );
        assert_eq!(strategy.kind, ValueKind::Struct);
        let env = deploy
            .child("spec")
            .child("template")
            .child("spec")
            .child("containers")
            .items()
            .field("env")
            .unwrap();
        assert_eq!(
            (env.strategy, env.merge_key),
            (PatchStrategy::MERGE, Some("name"))
        );

        let svc_ports = patch_schema_for::<Service>()
            .lookup("io.k8s.api.core.v1.ServiceSpec", "ports")
            .unwrap();
        assert_eq!(svc_ports.merge_key, Some("port"));

        assert!(PatchSchema::unknown().is_unknown());
        assert!(PatchSchema::unknown().field("x").is_none());
        assert_eq!(
            PatchStrategy::parse("merge, retainKeys"),
            PatchStrategy {
                merge: true,
                replace: false,
                retain_keys: true
            }
        );
    }

    #[test]
    fn patch_schema_cached() {
        let a = patch_schema_for::<Pod>();
        let b = patch_schema_for::<Pod>();
        assert!(Arc::ptr_eq(&a.graph, &b.graph));
        let c = patch_schema_for::<Service>();
        assert!(!Arc::ptr_eq(&a.graph, &c.graph));
    }

    /// A schema shaped like the `mergeItem` type of Kubernetes'
    /// strategicpatch tests.
    fn merge_item_schema() -> PatchSchema {
        const TABLE: &StrategyTable = &[
            ("MergeItem", "mergingList", "merge", Some("name")),
            ("MergeItem", "mergingIntList", "merge", None),
            ("MergeItem", "mergeItemPtr", "merge", Some("name")),
            ("MergeItem", "replacingItem", "replace", None),
            ("MergeItem", "retainKeysMap", "retainKeys", None),
            (
                "MergeItem",
                "retainKeysMergingList",
                "merge,retainKeys",
                Some("name"),
            ),
            ("RetainKeysMergeItem", "mergingIntList", "merge", None),
            ("RetainKeysMergeItem", "mergingList", "merge", Some("name")),
        ];
        let item_list = json!({"type": "array", "items": {"$ref": "#/$defs/MergeItem"}});
        let int_list = json!({"type": "array", "items": {"type": "integer"}});
        let string = json!({"type": "string"});
        let simple_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        let defs = json!({
            "MergeItem": {"type": "object", "properties": {
                "name": string, "value": string, "other": string,
                "mergingList": item_list, "nonMergingList": item_list,
                "mergingIntList": int_list, "nonMergingIntList": int_list,
                "mergeItemPtr": item_list, "simpleMap": simple_map,
                "replacingItem": {"type": "object"},
                "retainKeysMap": {"$ref": "#/$defs/RetainKeysMergeItem"},
                "retainKeysMergingList": item_list,
            }},
            "RetainKeysMergeItem": {"type": "object", "properties": {
                "name": string, "value": string, "other": string, "simpleMap": simple_map,
                "mergingIntList": int_list, "mergingList": item_list, "nonMergingList": item_list,
            }},
        });
        let Value::Object(defs) = defs else {
            unreachable!()
        };
        PatchSchema::from_definitions(&defs, &json!({"$ref": "#/$defs/MergeItem"}), TABLE)
    }

    /// Scenarios of Kubernetes' strategicpatch tests (live object, patch as
    /// kubectl computes it, expected result), including the exact order of
    /// merged lists.
    #[test]
    fn patch_smp_kubernetes_scenarios() {
        let cases = vec![
            Case {
                name: "$setElementOrder naming an item the patch does not carry",
                original: json!({"name": "hi", "mergingList": [{"name": "hello2"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": "hello"}, {"name": "doesntexist"}],
                    "mergingList": [{"name": "hello"}]}),
                expected: json!({"name": "hi", "mergingList": [{"name": "hello"}, {"name": "hello2"}]}),
            },
            Case {
                name: "delete every duplicate of a scalar",
                original: json!({"mergingIntList": [1, 2, 3, 3, 4]}),
                patch: json!({"$setElementOrder/mergingIntList": [1, 2],
                    "$deleteFromPrimitiveList/mergingIntList": [3]}),
                expected: json!({"mergingIntList": [1, 2, 4]}),
            },
            Case {
                name: "new items placed by $setElementOrder",
                original: json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": "2", "other": "b"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
                    "mergingList": [{"name": 4, "value": "4"}, {"name": 3, "value": "3"}]}),
                expected: json!({"mergingList": [{"name": 4, "value": "4"}, {"name": 1, "other": "a"},
                    {"name": 2, "value": "2", "other": "b"}, {"name": 3, "value": "3"}]}),
            },
            Case {
                name: "server-only item kept after patch items",
                original: json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 3, "value": "2", "other": "b"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                    "mergingList": [{"name": 1, "value": "1"}, {"name": 2, "value": "2"}]}),
                expected: json!({"mergingList": [{"name": 1, "value": "1", "other": "a"}, {"name": 2, "value": "2"},
                    {"name": 3, "value": "2", "other": "b"}]}),
            },
            Case {
                name: "deleting a missing item",
                original: json!({"mergingList": [{"name": 3, "other": "a"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 2}],
                    "mergingList": [{"name": 2}, {"name": 1, "$patch": "delete"}]}),
                expected: json!({"mergingList": [{"name": 2}, {"name": 3, "other": "a"}]}),
            },
            Case {
                name: "add and delete with a server-only item after them",
                original: json!({"mergingList": [{"name": 1}, {"name": 2, "other": "b"}, {"name": 4, "other": "c"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                    "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]}),
                expected: json!({"mergingList": [{"name": 2, "other": "b"}, {"name": 4, "other": "c"}, {"name": 3}]}),
            },
            Case {
                name: "add and delete with a server-only item before them",
                original: json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "other": "c"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                    "mergingList": [{"name": 2}, {"name": 3}, {"name": 1, "$patch": "delete"}]}),
                expected: json!({"mergingList": [{"name": 4, "other": "c"}, {"name": 2}, {"name": 3}]}),
            },
            Case {
                name: "non-merging list nested in a merging list is replaced",
                original: json!({"mergingList": [
                    {"name": 1, "other": "a", "nonMergingList": [{"name": 1}, {"name": 2, "value": "2"}]},
                    {"name": 2, "other": "b"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                    "mergingList": [{"name": 1, "nonMergingList": [{"name": 1, "value": "1"}]}]}),
                expected: json!({"mergingList": [
                    {"name": 1, "other": "a", "nonMergingList": [{"name": 1, "value": "1"}]},
                    {"name": 2, "other": "b"}]}),
            },
            Case {
                name: "nested merging list ordered by its own $setElementOrder",
                original: json!({"mergingList": [
                    {"name": 1, "other": "a", "mergingList": [{"name": 2, "value": "2", "other": "d"}]},
                    {"name": 2, "other": "b"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                    "mergingList": [{"name": 1, "$setElementOrder/mergingList": [{"name": 2}, {"name": 1}],
                        "mergingList": [{"name": 1, "value": "1"}]}]}),
                expected: json!({"mergingList": [
                    {"name": 1, "other": "a", "mergingList": [
                        {"name": 2, "value": "2", "other": "d"}, {"name": 1, "value": "1"}]},
                    {"name": 2, "other": "b"}]}),
            },
            Case {
                name: "primitive added with a server-only primitive in between",
                original: json!({"mergingIntList": [1, 4, 2]}),
                patch: json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
                expected: json!({"mergingIntList": [3, 1, 4, 2]}),
            },
            Case {
                name: "reorder with server-only items in the middle",
                original: json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": "2"}, {"name": 7},
                    {"name": 9}, {"name": 8}, {"name": 3, "value": "3"}, {"name": 4, "value": "4"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]}),
                expected: json!({"mergingList": [{"name": 2, "value": "2"}, {"name": 1, "other": "a"}, {"name": 7},
                    {"name": 9}, {"name": 8}, {"name": 4, "value": "4"}, {"name": 3, "value": "3"}]}),
            },
            Case {
                name: "reorder an int list with a server-only item",
                original: json!({"mergingIntList": [1, 2, 9, 3, 4]}),
                patch: json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3]}),
                expected: json!({"mergingIntList": [2, 1, 9, 4, 3]}),
            },
            Case {
                name: "add and delete an item and reorder",
                original: json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": "2", "other": "b"},
                    {"name": 3, "value": "3"}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
                    "mergingList": [{"name": 4, "value": "4"}, {"name": 3, "$patch": "delete"}]}),
                expected: json!({"mergingList": [{"name": 4, "value": "4"}, {"name": 2, "value": "2", "other": "b"},
                    {"name": 1, "other": "a"}]}),
            },
            Case {
                name: "$setElementOrder with duplicate merge keys",
                original: json!({"mergingList": [{"name": 1}, {"name": 2, "value": "dup1"}, {"name": 3},
                    {"name": 2, "value": "dup2"}, {"name": 4}]}),
                patch: json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}, {"name": 2}]}),
                expected: json!({"mergingList": [{"name": 2, "value": "dup1"}, {"name": 2, "value": "dup2"},
                    {"name": 1}, {"name": 4}, {"name": 3}]}),
            },
            Case {
                name: "$retainKeys clears a defaulted union member",
                original: json!({"retainKeysMap": {"name": "type1", "value": "foo"}}),
                patch: json!({"retainKeysMap": {"$retainKeys": ["name", "other"], "name": "type2", "other": "bar"}}),
                expected: json!({"retainKeysMap": {"name": "type2", "other": "bar"}}),
            },
            Case {
                name: "$retainKeys with a nested int list addition and deletion",
                original: json!({"retainKeysMap": {"name": "foo", "mergingIntList": [1, 2, 3, 4]}}),
                patch: json!({"retainKeysMap": {"$retainKeys": ["mergingIntList", "name"], "mergingIntList": [5],
                    "$deleteFromPrimitiveList/mergingIntList": [2], "$setElementOrder/mergingIntList": [1, 3, 5]}}),
                expected: json!({"retainKeysMap": {"name": "foo", "mergingIntList": [1, 3, 5, 4]}}),
            },
            Case {
                name: "$retainKeys with a nested merging list deletion",
                original: json!({"retainKeysMap": {"name": "foo", "mergingList": [{"name": "a"}, {"name": "b"}, {"name": "x"}]}}),
                patch: json!({"retainKeysMap": {"$retainKeys": ["mergingList", "name"],
                    "$setElementOrder/mergingList": [{"name": "a"}],
                    "mergingList": [{"name": "b", "$patch": "delete"}]}}),
                expected: json!({"retainKeysMap": {"name": "foo", "mergingList": [{"name": "a"}, {"name": "x"}]}}),
            },
            Case {
                name: "$retainKeys and null drop a nested list",
                original: json!({"retainKeysMap": {"name": "foo", "nonMergingList": [{"name": "a"}], "other": "x"}}),
                patch: json!({"retainKeysMap": {"$retainKeys": ["name", "value"], "value": "bar", "nonMergingList": null}}),
                expected: json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
            },
            Case {
                name: "patch strategy replace on a map",
                original: json!({"replacingItem": {"Some": "Generic", "Yaml": "Inside"}, "simpleMap": {"a": "1"}}),
                patch: json!({"replacingItem": {"Newly": "Modified"}, "simpleMap": {"b": "2"}}),
                expected: json!({"replacingItem": {"Newly": "Modified"}, "simpleMap": {"a": "1", "b": "2"}}),
            },
        ];
        run(&merge_item_schema(), cases);
    }

    /// Every table entry names an existing definition and field.
    #[test]
    fn patch_strategy_table_matches_schemas() {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
        use k8s_openapi::api::batch::v1::{CronJob, Job};
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use k8s_openapi::api::storage::v1::CSINode;

        let schemas = [
            PatchSchema::for_type::<Pod>(),
            PatchSchema::for_type::<Service>(),
            PatchSchema::for_type::<Node>(),
            PatchSchema::for_type::<Namespace>(),
            PatchSchema::for_type::<PersistentVolumeClaim>(),
            PatchSchema::for_type::<ReplicationController>(),
            PatchSchema::for_type::<ComponentStatus>(),
            PatchSchema::for_type::<ServiceAccount>(),
            PatchSchema::for_type::<Deployment>(),
            PatchSchema::for_type::<ReplicaSet>(),
            PatchSchema::for_type::<StatefulSet>(),
            PatchSchema::for_type::<DaemonSet>(),
            PatchSchema::for_type::<Job>(),
            PatchSchema::for_type::<CronJob>(),
            PatchSchema::for_type::<HorizontalPodAutoscaler>(),
            PatchSchema::for_type::<PodDisruptionBudget>(),
            PatchSchema::for_type::<MutatingWebhookConfiguration>(),
            PatchSchema::for_type::<ValidatingWebhookConfiguration>(),
            PatchSchema::for_type::<CSINode>(),
            PatchSchema::for_type::<k8s_openapi::api::networking::v1::ServiceCIDR>(),
            PatchSchema::for_type::<k8s_openapi::api::networking::v1beta1::ServiceCIDR>(),
            PatchSchema::for_type::<k8s_openapi::api::resource::v1alpha3::ResourceClaim>(),
            PatchSchema::for_type::<k8s_openapi::api::resource::v1beta1::ResourceClaim>(),
            PatchSchema::for_type::<k8s_openapi::api::resource::v1beta2::ResourceClaim>(),
        ];
        for (type_name, field, strategy, merge_key) in PATCH_STRATEGIES {
            let found: Vec<FieldPatchMeta> = schemas
                .iter()
                .filter_map(|s| s.lookup(type_name, field))
                .collect();
            assert!(
                !found.is_empty(),
                "{type_name}.{field} not found in any schema"
            );
            for meta in found {
                assert_eq!(
                    meta.strategy,
                    PatchStrategy::parse(strategy),
                    "{type_name}.{field}"
                );
                assert_eq!(meta.merge_key, *merge_key, "{type_name}.{field}");
                if meta.strategy.merge {
                    assert_eq!(meta.kind, ValueKind::List, "{type_name}.{field}");
                }
            }
        }
        // The pod template inside every workload kind has the pod merge keys.
        for s in &schemas[8..14] {
            let containers = s
                .lookup("io.k8s.api.core.v1.PodSpec", "containers")
                .unwrap();
            assert_eq!(containers.merge_key, Some("name"));
        }
    }
}
