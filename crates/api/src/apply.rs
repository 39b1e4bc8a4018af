//! Server-side apply and field ownership (`metadata.managedFields`), after
//! kube-apiserver's field manager and kubernetes-sigs/structured-merge-diff.
//!
//! * [`apply`] handles `PATCH` with `application/apply-patch+yaml`: merges the
//!   applied configuration into the live object, removes fields the manager
//!   applied before but no longer applies (unless someone else owns them),
//!   detects conflicts with other managers and records the manager's fields
//!   with operation `Apply`.
//! * [`record_update`] (and [`record_update_subresource`]) records the fields
//!   an ordinary create/update/patch changed as owned by its manager with
//!   operation `Update`, taking them away from every other manager.
//!
//! Objects are plain `serde_json::Value`s. There is no OpenAPI schema here:
//! JSON objects are treated as structs (granular), and lists are associative,
//! sets or atomic according to a small built-in table of Kubernetes list
//! types ([`list_type`]); a list not in the table is atomic.
//!
//! Field sets are serialised exactly as Kubernetes does (`FieldsV1`): `f:` for
//! fields, `k:{...}` for associative list items (JSON of the key fields),
//! `v:` for set values, `i:` for indices, and `.` for "the node itself" when it
//! has children too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde_json::{Map, Value};

/// The manager that owns every field of an object that had no managed fields
/// when it was first applied to.
pub const BEFORE_FIRST_APPLY_MANAGER: &str = "before-first-apply";
/// The manager the oldest `Update` entries are merged into past
/// [`MAX_UPDATE_MANAGERS`].
pub const ANCIENT_CHANGES_MANAGER: &str = "ancient-changes";
/// How many `Update` entries an object keeps before the oldest are merged.
pub const MAX_UPDATE_MANAGERS: usize = 10;
/// `StatusCause.reason` of an apply conflict.
pub const FIELD_MANAGER_CONFLICT_REASON: &str = "FieldManagerConflict";

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// The operation of a `managedFields` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One field owned by another manager that an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager's name.
    pub manager: String,
    /// The other manager's operation.
    pub operation: Operation,
    /// The other manager's apiVersion (shown for `Update` managers).
    pub api_version: String,
    /// The other manager's subresource ("" for the main resource).
    pub subresource: String,
    /// The field path in structured-merge-diff notation, e.g.
    /// `.spec.replicas` or `.spec.containers[name="web"].image`.
    pub field: String,
}

impl ApplyConflict {
    /// The manager as Kubernetes prints it: `"kubectl"`, or
    /// `"kubectl-client-side-apply" using apps/v1` for an `Update` manager.
    pub fn manager_description(&self) -> String {
        let mut s = quote(&self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {}", quote(&self.subresource));
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    /// The field path, as the `field` of the StatusCause (`.spec.replicas`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The StatusCause message: `conflict with "kubectl" using apps/v1`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }

    /// The StatusCause Kubernetes returns for this conflict.
    pub fn to_status_cause(&self) -> StatusCause {
        StatusCause {
            field: Some(self.field.clone()),
            message: Some(self.cause_message()),
            reason: Some(FIELD_MANAGER_CONFLICT_REASON.to_string()),
        }
    }
}

impl fmt::Display for ApplyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conflict with {}: {}",
            self.manager_description(),
            self.field
        )
    }
}

/// Why an apply failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (HTTP 409 Conflict).
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<ApplyConflict>),
    /// The applied configuration cannot be applied (HTTP 422 Invalid).
    #[error("{0}")]
    Invalid(String),
}

impl ApplyError {
    /// The Kubernetes message, e.g. `Apply failed with 1 conflict: conflict
    /// with "kubectl-client-side-apply" using apps/v1: .spec.replicas`.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The conflicts (empty for `Invalid`).
    pub fn conflicts(&self) -> &[ApplyConflict] {
        match self {
            ApplyError::Conflict(c) => c,
            ApplyError::Invalid(_) => &[],
        }
    }

    /// One StatusCause per conflict (`reason: FieldManagerConflict`,
    /// `field: .spec.replicas`, `message: conflict with "m" using v1`).
    pub fn causes(&self) -> Vec<StatusCause> {
        self.conflicts()
            .iter()
            .map(ApplyConflict::to_status_cause)
            .collect()
    }

    /// The HTTP status code: 409 for conflicts, 422 for invalid input.
    pub fn code(&self) -> u16 {
        match self {
            ApplyError::Conflict(_) => 409,
            ApplyError::Invalid(_) => 422,
        }
    }

    /// The Status reason: `Conflict` or `Invalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Conflict(_) => "Conflict",
            ApplyError::Invalid(_) => "Invalid",
        }
    }

    /// The whole failure Status, as kube-apiserver returns it.
    pub fn to_status(&self) -> Status {
        let causes = self.causes();
        Status {
            code: Some(i32::from(self.code())),
            details: (!causes.is_empty()).then(|| StatusDetails {
                causes: Some(causes),
                ..Default::default()
            }),
            message: Some(self.message()),
            reason: Some(self.reason().to_string()),
            status: Some("Failure".to_string()),
            ..Default::default()
        }
    }
}

fn conflict_message(conflicts: &[ApplyConflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: {only}");
    }
    // Group by manager, managers sorted (the conflicts are already sorted by
    // manager; keep the first-appearance order of that sort).
    let mut order: Vec<String> = Vec::new();
    let mut by_manager: HashMap<String, Vec<&str>> = HashMap::new();
    for c in conflicts {
        let m = c.manager_description();
        if !by_manager.contains_key(&m) {
            order.push(m.clone());
        }
        by_manager.entry(m).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for m in &order {
        lines.push(format!("conflicts with {m}:"));
        for f in by_manager.get(m).map(Vec::as_slice).unwrap_or_default() {
            lines.push(format!("- {f}"));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Server-side apply of `applied` (the parsed apply patch) onto `live` (None
/// when the object does not exist yet) by field manager `manager`, at time
/// `now` (RFC 3339). Returns the new object, with `metadata.managedFields`
/// updated; the caller still sets resourceVersion, uid, timestamps etc.
///
/// System metadata in `applied` (resourceVersion, uid, creationTimestamp,
/// generation, selfLink, deletion fields) is not merged and never owned;
/// a non-empty `metadata.managedFields` in `applied` is rejected, as
/// Kubernetes does.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let Some(applied_map) = applied.as_object() else {
        return Err(ApplyError::Invalid(
            "the apply patch must be a JSON object".to_string(),
        ));
    };
    if manager.is_empty() {
        return Err(ApplyError::Invalid(
            "fieldManager is required for apply requests".to_string(),
        ));
    }
    if let Some(mf) = applied_map
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        && !(mf.is_null() || mf.as_array().is_some_and(Vec::is_empty))
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".to_string(),
        ));
    }
    if let Some(l) = live
        && !l.is_object()
    {
        return Err(ApplyError::Invalid(
            "the live object is not a JSON object".to_string(),
        ));
    }

    let kind = str_field(applied, "kind")
        .or_else(|| live.and_then(|l| str_field(l, "kind")))
        .unwrap_or_default();
    let api_version = str_field(applied, "apiVersion")
        .or_else(|| live.and_then(|l| str_field(l, "apiVersion")))
        .unwrap_or_default();

    let config = strip_system_metadata(applied);
    let live_obj = match live {
        Some(l) => without_managed_fields(l),
        None => Value::Object(Map::new()),
    };

    let mut managers = match live {
        Some(l) => decode_managed_fields(managed_fields_of(l)).unwrap_or_default(),
        None => Vec::new(),
    };
    if live.is_some() && managers.is_empty() {
        // The object predates field tracking: everything in it is owned by
        // "before-first-apply", as if it had been created by an Update.
        let seed = empty_seed(&live_obj);
        let cmp = compare(kind, &seed, &live_obj);
        let mut set = cmp.added;
        set.union_with(&cmp.modified);
        let set = strip_ignored(&set.difference(&cmp.removed));
        if !set.is_empty() {
            managers.push(ManagerEntry {
                manager: BEFORE_FIRST_APPLY_MANAGER.to_string(),
                operation: Operation::Update,
                api_version: str_field(&live_obj, "apiVersion")
                    .unwrap_or_default()
                    .to_string(),
                subresource: String::new(),
                time: Some(now.to_string()),
                set,
            });
        }
    }

    let config_set = field_set(kind, &config, true).map_err(|e| {
        let gvk = format!("{api_version}, Kind={kind}");
        ApplyError::Invalid(format!("failed to create typed patch object ({gvk}): {e}"))
    })?;
    let config_set = strip_ignored(&config_set);

    let merged = Ctx::new(kind).merge(&live_obj, &config);

    let applier = match find_manager(&managers, manager, Operation::Apply, "", "") {
        Some(i) => i,
        None => {
            managers.push(ManagerEntry {
                manager: manager.to_string(),
                operation: Operation::Apply,
                api_version: api_version.to_string(),
                subresource: String::new(),
                time: None,
                set: FieldSet::default(),
            });
            managers.len() - 1
        }
    };
    let last_set = std::mem::replace(&mut managers[applier].set, config_set);
    managers[applier].api_version = api_version.to_string();

    let new_obj = prune(kind, merged, &managers, &last_set);

    // Conflicts and removals against every other manager.
    let cmp = compare(kind, &live_obj, &new_obj);
    let mut changed = cmp.added.clone();
    changed.union_with(&cmp.modified);
    let mut conflicts: Vec<(usize, FieldSet)> = Vec::new();
    for (i, m) in managers.iter().enumerate() {
        if i == applier {
            continue;
        }
        let c = m.set.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !force && !conflicts.is_empty() {
        let mut out = Vec::new();
        let mut sorted: Vec<&(usize, FieldSet)> = conflicts.iter().collect();
        sorted.sort_by(|a, b| managers[a.0].identity_cmp(&managers[b.0]));
        for (i, set) in sorted {
            let m = &managers[*i];
            for path in set.paths() {
                out.push(ApplyConflict {
                    manager: m.manager.clone(),
                    operation: m.operation,
                    api_version: m.api_version.clone(),
                    subresource: m.subresource.clone(),
                    field: display_path(&path),
                });
            }
        }
        return Err(ApplyError::Conflict(out));
    }
    for (i, c) in &conflicts {
        managers[*i].set = managers[*i].set.difference(c);
    }
    if !cmp.removed.is_empty() {
        for (i, m) in managers.iter_mut().enumerate() {
            if i != applier {
                m.set = m.set.difference(&cmp.removed);
            }
        }
    }

    // Explicit nulls clear their fields (as decoding into the typed object does).
    let mut new_obj = remove_items(kind, new_obj, &null_paths(kind, &config));
    let changed_object = new_obj != live_obj;
    if changed_object || managers[applier].time.is_none() {
        managers[applier].time = Some(now.to_string());
    }
    managers.retain(|m| !m.set.is_empty());
    cap_update_managers(&mut managers);
    set_managed_fields(&mut new_obj, &managers);
    Ok(new_obj)
}

/// Records the fields an ordinary create (`old` = None), update or patch
/// changed as owned by `manager` with operation `Update`, removing them from
/// every other manager; fields removed from the object are removed from all
/// managers. Returns `new` with `metadata.managedFields` updated.
///
/// As kube-apiserver does, managedFields sent in `new` replace the stored
/// ones when non-empty (a single empty entry `[{}]` resets them); otherwise
/// the ones of `old` are kept.
pub fn record_update(old: Option<&Value>, new: &Value, manager: &str, now: &str) -> Value {
    record_update_subresource(old, new, manager, "", now)
}

/// [`record_update`] for a request to a subresource ("status", "scale", ...):
/// the entry carries `subresource`, and managedFields in `new` are ignored.
pub fn record_update_subresource(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Value {
    if !new.is_object() {
        return new.clone();
    }
    let kind = str_field(new, "kind")
        .or_else(|| old.and_then(|o| str_field(o, "kind")))
        .unwrap_or_default();
    let api_version = str_field(new, "apiVersion")
        .or_else(|| old.and_then(|o| str_field(o, "apiVersion")))
        .unwrap_or_default();

    let old_managed = || {
        old.and_then(|o| decode_managed_fields(managed_fields_of(o)).ok())
            .unwrap_or_default()
    };
    let new_mf = managed_fields_of(new);
    let mut managers = if !subresource.is_empty() {
        old_managed()
    } else if is_reset_managed_fields(new_mf) {
        Vec::new()
    } else {
        match decode_managed_fields(new_mf) {
            Ok(m) if !m.is_empty() => m,
            _ => old_managed(),
        }
    };

    let mut new_obj = without_managed_fields(new);
    let old_obj = match old {
        Some(o) if o.is_object() => without_managed_fields(o),
        _ => empty_seed(&new_obj),
    };

    let cmp = compare(kind, &old_obj, &new_obj);
    let mut changed = cmp.added;
    changed.union_with(&cmp.modified);
    for m in managers.iter_mut() {
        m.set = m.set.difference(&changed).difference(&cmp.removed);
    }
    let current = strip_ignored(&changed.difference(&cmp.removed));
    if !current.is_empty() {
        match find_manager(
            &managers,
            manager,
            Operation::Update,
            api_version,
            subresource,
        ) {
            Some(i) => {
                managers[i].set.union_with(&current);
                managers[i].time = Some(now.to_string());
            }
            None => managers.push(ManagerEntry {
                manager: manager.to_string(),
                operation: Operation::Update,
                api_version: api_version.to_string(),
                subresource: subresource.to_string(),
                time: Some(now.to_string()),
                set: current,
            }),
        }
    }
    managers.retain(|m| !m.set.is_empty());
    cap_update_managers(&mut managers);
    set_managed_fields(&mut new_obj, &managers);
    new_obj
}

// ---------------------------------------------------------------------------
// List types (the built-in "schema")
// ---------------------------------------------------------------------------

/// One key field of an associative list, with its default value (a key field
/// missing from an item takes its default, as in structured-merge-diff).
#[derive(Debug, PartialEq, Eq)]
pub struct KeyField {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

/// How a list is merged and owned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars, items owned one by one (`v:`).
    Set,
    /// An associative list keyed by the given fields (`k:`).
    Map(&'static [KeyField]),
}

const fn key(name: &'static str) -> KeyField {
    KeyField {
        name,
        default: None,
    }
}

static BY_NAME: &[KeyField] = &[key("name")];
static BY_UID: &[KeyField] = &[key("uid")];
static BY_IP: &[KeyField] = &[key("ip")];
static BY_TYPE: &[KeyField] = &[key("type")];
static BY_MOUNT_PATH: &[KeyField] = &[key("mountPath")];
static BY_DEVICE_PATH: &[KeyField] = &[key("devicePath")];
static CONTAINER_PORT: &[KeyField] = &[
    key("containerPort"),
    KeyField {
        name: "protocol",
        default: Some("TCP"),
    },
];
static SERVICE_PORT: &[KeyField] = &[
    key("port"),
    KeyField {
        name: "protocol",
        default: Some("TCP"),
    },
];
static TOPOLOGY_SPREAD: &[KeyField] = &[key("topologyKey"), key("whenUnsatisfiable")];

/// Kinds whose `status.conditions` is a map keyed by `type`.
static CONDITION_MAP_KINDS: &[&str] = &[
    "Pod",
    "Node",
    "Namespace",
    "PersistentVolumeClaim",
    "Service",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ReplicationController",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "CustomResourceDefinition",
    "APIService",
];

/// The list type of the list at `fields` (the field names from the root of an
/// object of kind `kind`, list items skipped), after the
/// `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` of the
/// Kubernetes types. Lists not in the table are atomic.
pub fn list_type(kind: &str, fields: &[String]) -> ListType {
    let n = fields.len();
    let Some(last) = fields.last().map(String::as_str) else {
        return ListType::Atomic;
    };
    let parent = if n >= 2 { fields[n - 2].as_str() } else { "" };
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    let is =
        |path: &[&str]| fields.len() == path.len() && fields.iter().zip(path).all(|(a, b)| a == b);
    match last {
        "ownerReferences" if parent == "metadata" => ListType::Map(BY_UID),
        "finalizers" if parent == "metadata" => ListType::Set,
        "containers" | "initContainers" | "ephemeralContainers" if parent == "spec" => {
            ListType::Map(BY_NAME)
        }
        "ports" if in_container => ListType::Map(CONTAINER_PORT),
        "env" if in_container => ListType::Map(BY_NAME),
        "volumeMounts" if in_container => ListType::Map(BY_MOUNT_PATH),
        "volumeDevices" if in_container => ListType::Map(BY_DEVICE_PATH),
        "claims" if parent == "resources" => ListType::Map(BY_NAME),
        "ports" if kind == "Service" && is(&["spec", "ports"]) => ListType::Map(SERVICE_PORT),
        "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"
            if parent == "spec" =>
        {
            ListType::Map(BY_NAME)
        }
        "hostAliases" if parent == "spec" => ListType::Map(BY_IP),
        "topologySpreadConstraints" if parent == "spec" => ListType::Map(TOPOLOGY_SPREAD),
        "conditions" if is(&["status", "conditions"]) && CONDITION_MAP_KINDS.contains(&kind) => {
            ListType::Map(BY_TYPE)
        }
        "addresses" if kind == "Node" && is(&["status", "addresses"]) => ListType::Map(BY_TYPE),
        "podCIDRs" if kind == "Node" && is(&["spec", "podCIDRs"]) => ListType::Set,
        "podIPs" | "hostIPs" if kind == "Pod" && parent == "status" && n == 2 => {
            ListType::Map(BY_IP)
        }
        "secrets" | "imagePullSecrets" if kind == "ServiceAccount" && n == 1 => {
            ListType::Map(BY_NAME)
        }
        "versions" if kind == "CustomResourceDefinition" && is(&["spec", "versions"]) => {
            ListType::Map(BY_NAME)
        }
        "webhooks"
            if n == 1
                && matches!(
                    kind,
                    "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
                ) =>
        {
            ListType::Map(BY_NAME)
        }
        _ => ListType::Atomic,
    }
}

// ---------------------------------------------------------------------------
// Paths and field sets
// ---------------------------------------------------------------------------

/// One step of a field path. Keys and values hold canonical JSON (object keys
/// sorted, compact), so equal keys compare equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Pe {
    Field(String),
    Key(String),
    Value(String),
    Index(usize),
}

impl Pe {
    fn encode(&self) -> String {
        match self {
            Pe::Field(n) => format!("f:{n}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Pe> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Pe::Field(rest.to_string())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                v.is_object().then(|| Pe::Key(canonical(&v)))
            }
            "v:" => serde_json::from_str::<Value>(rest)
                .ok()
                .map(|v| Pe::Value(canonical(&v))),
            "i:" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }
}

impl fmt::Display for Pe {
    /// structured-merge-diff's notation: `.name`, `[name="web"]`, `[=value]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pe::Field(n) => write!(f, ".{n}"),
            Pe::Key(k) => match serde_json::from_str::<Value>(k) {
                Ok(Value::Object(m)) => {
                    let parts: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", value_string(v)))
                        .collect();
                    write!(f, "[{}]", parts.join(","))
                }
                _ => write!(f, "[{k}]"),
            },
            Pe::Value(v) => match serde_json::from_str::<Value>(v) {
                Ok(v) => write!(f, "[={}]", value_string(&v)),
                Err(_) => write!(f, "[={v}]"),
            },
            Pe::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn display_path(path: &[Pe]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// structured-merge-diff's `value.ToString`: strings quoted, the rest plain.
fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(value_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => {
            format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{k}={}", value_string(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        other => other.to_string(),
    }
}

/// Go's `%q` for the strings we print (JSON string quoting is the same for
/// printable text).
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Compact JSON with object keys sorted.
fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&quote(k));
                out.push(':');
                if let Some(val) = m.get(k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A set of field paths as a tree: `members` are paths ending at this node,
/// `children` the subtrees (never empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FieldSet {
    members: BTreeSet<Pe>,
    children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn union_with(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            self.children.entry(pe.clone()).or_default().union_with(c);
        }
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// Paths of `self` not in `other` (a member of `other` does not remove
    /// the children of the same node: structured-merge-diff's Difference).
    fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            match other.children.get(pe) {
                Some(oc) => {
                    let d = c.difference(oc);
                    if !d.is_empty() {
                        children.insert(pe.clone(), d);
                    }
                }
                None => {
                    children.insert(pe.clone(), c.clone());
                }
            }
        }
        FieldSet { members, children }
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if let Some(oc) = other.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Makes every named field with children a member too (there is no
    /// schema: every object field is a named struct field).
    fn ensure_named_fields(&self) -> FieldSet {
        let mut members = self.members.clone();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if matches!(pe, Pe::Field(_)) {
                members.insert(pe.clone());
            }
            children.insert(pe.clone(), c.ensure_named_fields());
        }
        FieldSet { members, children }
    }

    /// Every member path: this node's members first, then the children's.
    fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set.
    fn to_fields_v1(&self) -> Value {
        let mut obj = Map::new();
        for m in &self.members {
            if !self.children.contains_key(m) {
                obj.insert(m.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            let mut child = c.to_fields_v1();
            if self.members.contains(pe)
                && let Value::Object(m) = &mut child
            {
                m.insert(".".to_string(), Value::Object(Map::new()));
            }
            obj.insert(pe.encode(), child);
        }
        Value::Object(obj)
    }

    fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(obj) = v else {
            return Err("fieldsV1 must be an object".to_string());
        };
        let mut set = FieldSet::default();
        for (k, child) in obj {
            if k == "." {
                continue;
            }
            let pe = Pe::decode(k).ok_or_else(|| format!("invalid fieldsV1 path element {k:?}"))?;
            let Value::Object(child_obj) = child else {
                return Err(format!("fieldsV1 entry {k:?} must be an object"));
            };
            let sub = FieldSet::from_fields_v1(child)?;
            if child_obj.is_empty() || child_obj.contains_key(".") {
                set.members.insert(pe.clone());
            }
            if !sub.is_empty() {
                set.children.entry(pe).or_default().union_with(&sub);
            }
        }
        Ok(set)
    }
}

/// Fields Kubernetes never records as owned (its strip-meta manager).
fn strip_ignored(set: &FieldSet) -> FieldSet {
    let mut ignored = FieldSet::default();
    ignored.insert(&[Pe::Field("apiVersion".into())]);
    ignored.insert(&[Pe::Field("kind".into())]);
    ignored.insert(&[Pe::Field("metadata".into())]);
    for f in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        ignored.insert(&[Pe::Field("metadata".into()), Pe::Field(f.into())]);
    }
    set.difference(&ignored)
}

// ---------------------------------------------------------------------------
// Walks over values
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum ItemKeyError {
    NotObject,
    MissingKey(&'static str),
}

impl fmt::Display for ItemKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemKeyError::NotObject => write!(f, "expected an object in an associative list"),
            ItemKeyError::MissingKey(k) => write!(
                f,
                "associative list with keys has an element that omits key field {} (and doesn't have default value)",
                quote(k)
            ),
        }
    }
}

/// The path element of a list item (`k:` or `v:`).
fn item_pe(item: &Value, lt: ListType) -> Result<Pe, ItemKeyError> {
    match lt {
        ListType::Map(keys) => {
            let Value::Object(obj) = item else {
                return Err(ItemKeyError::NotObject);
            };
            let mut key_obj = Map::new();
            for k in keys {
                match obj.get(k.name) {
                    Some(v) if !v.is_null() => {
                        key_obj.insert(k.name.to_string(), v.clone());
                    }
                    _ => match k.default {
                        Some(d) => {
                            key_obj.insert(k.name.to_string(), Value::String(d.to_string()));
                        }
                        None => return Err(ItemKeyError::MissingKey(k.name)),
                    },
                }
            }
            Ok(Pe::Key(canonical(&Value::Object(key_obj))))
        }
        ListType::Set | ListType::Atomic => Ok(Pe::Value(canonical(item))),
    }
}

#[derive(Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

/// Walk state: the object's kind, the field names from the root (for list
/// types) and the full path (for field sets and errors).
struct Ctx<'k> {
    kind: &'k str,
    fields: Vec<String>,
    path: Vec<Pe>,
}

impl<'k> Ctx<'k> {
    fn new(kind: &'k str) -> Self {
        Ctx {
            kind,
            fields: Vec::new(),
            path: Vec::new(),
        }
    }

    fn list_type(&self) -> ListType {
        list_type(self.kind, &self.fields)
    }

    fn push_field(&mut self, name: &str) {
        self.fields.push(name.to_string());
        self.path.push(Pe::Field(name.to_string()));
    }

    fn pop_field(&mut self) {
        self.fields.pop();
        self.path.pop();
    }

    // --- field sets -------------------------------------------------------

    fn fs_object(&mut self, m: &Map<String, Value>, strict: bool) -> Result<FieldSet, String> {
        let mut node = FieldSet::default();
        for (k, v) in m {
            self.push_field(k);
            let r = self.fs_value(v, strict);
            self.pop_field();
            match r? {
                None => {
                    node.members.insert(Pe::Field(k.clone()));
                }
                Some(c) => {
                    if !c.is_empty() {
                        node.children.insert(Pe::Field(k.clone()), c);
                    }
                }
            }
        }
        Ok(node)
    }

    /// None: the value is a leaf (owned as a whole); Some: its children.
    fn fs_value(&mut self, v: &Value, strict: bool) -> Result<Option<FieldSet>, String> {
        match v {
            Value::Object(m) if m.is_empty() => Ok(None),
            Value::Object(m) => self.fs_object(m, strict).map(Some),
            Value::Array(items) => match self.list_type() {
                ListType::Atomic => Ok(None),
                lt => self.fs_list(items, lt, strict).map(Some),
            },
            _ => Ok(None),
        }
    }

    fn fs_list(&mut self, items: &[Value], lt: ListType, strict: bool) -> Result<FieldSet, String> {
        let mut node = FieldSet::default();
        for (i, item) in items.iter().enumerate() {
            let pe = match item_pe(item, lt) {
                Ok(pe) => pe,
                Err(e) if strict => {
                    return Err(format!("{}[{i}]: {e}", display_path(&self.path)));
                }
                Err(_) => continue,
            };
            if strict && node.members.contains(&pe) {
                return Err(format!(
                    "{}: duplicate entries for key {pe}",
                    display_path(&self.path)
                ));
            }
            if let (ListType::Map(_), Value::Object(m)) = (lt, item) {
                self.path.push(pe.clone());
                let sub = self.fs_object(m, strict);
                self.path.pop();
                let sub = sub?;
                if !sub.is_empty() {
                    node.children
                        .entry(pe.clone())
                        .or_default()
                        .union_with(&sub);
                }
            }
            node.members.insert(pe);
        }
        Ok(node)
    }

    // --- compare ----------------------------------------------------------

    fn compare(&mut self, l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        if l.is_none() && r.is_none() {
            return;
        }
        // A null is an empty map or list to its counterpart (structured-merge-diff).
        let obj_or_none = |v: Option<&Value>| v.is_none_or(|v| v.is_object() || v.is_null());
        let arr_or_none = |v: Option<&Value>| v.is_none_or(|v| v.is_array() || v.is_null());
        if obj_or_none(l) && obj_or_none(r) {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            if lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty) {
                self.leaf(l, r, out);
                return;
            }
            if let Some(lm) = lm {
                for (k, lv) in lm {
                    self.push_field(k);
                    self.compare(Some(lv), rm.and_then(|m| m.get(k)), out);
                    self.pop_field();
                }
            }
            if let Some(rm) = rm {
                for (k, rv) in rm {
                    if lm.is_some_and(|m| m.contains_key(k)) {
                        continue;
                    }
                    self.push_field(k);
                    self.compare(None, Some(rv), out);
                    self.pop_field();
                }
            }
            self.mark_added_removed(l, r, out);
        } else if arr_or_none(l) && arr_or_none(r) {
            let la = l
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ra = r
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let lt = self.list_type();
            if lt == ListType::Atomic || (la.is_empty() && ra.is_empty()) {
                self.leaf(l, r, out);
                return;
            }
            let lidx = index_items(la, lt);
            let ridx = index_items(ra, lt);
            let lmap: HashMap<&Pe, &Value> = lidx.iter().map(|(pe, v)| (pe, *v)).collect();
            let rmap: HashMap<&Pe, &Value> = ridx.iter().map(|(pe, v)| (pe, *v)).collect();
            for (pe, lv) in &lidx {
                self.path.push(pe.clone());
                self.compare(Some(lv), rmap.get(pe).copied(), out);
                self.path.pop();
            }
            for (pe, rv) in &ridx {
                if lmap.contains_key(pe) {
                    continue;
                }
                self.path.push(pe.clone());
                self.compare(None, Some(rv), out);
                self.path.pop();
            }
            self.mark_added_removed(l, r, out);
        } else {
            self.leaf(l, r, out);
        }
    }

    fn leaf(&self, l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        match (l, r) {
            (None, Some(_)) => out.added.insert(&self.path),
            (Some(_), None) => out.removed.insert(&self.path),
            (Some(a), Some(b)) if a != b => out.modified.insert(&self.path),
            _ => {}
        }
    }

    fn mark_added_removed(&self, l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        if l.is_none() {
            out.added.insert(&self.path);
        } else if r.is_none() {
            out.removed.insert(&self.path);
        }
    }

    // --- merge ------------------------------------------------------------

    /// `l` with `r` applied on top (structured merge).
    fn merge(&mut self, l: &Value, r: &Value) -> Value {
        match (l, r) {
            (Value::Object(lm), Value::Object(rm)) => {
                let mut out = Map::new();
                for (k, lv) in lm {
                    if !rm.contains_key(k) {
                        out.insert(k.clone(), lv.clone());
                    }
                }
                for (k, rv) in rm {
                    // An explicit null stays for now (it is owned, and
                    // conflicts like any change); apply() drops it at the end.
                    let nv = match lm.get(k) {
                        Some(lv) => {
                            self.push_field(k);
                            let nv = self.merge(lv, rv);
                            self.pop_field();
                            nv
                        }
                        None => rv.clone(),
                    };
                    out.insert(k.clone(), nv);
                }
                Value::Object(out)
            }
            (Value::Array(la), Value::Array(ra)) => match self.list_type() {
                ListType::Atomic => r.clone(),
                lt => Value::Array(self.merge_list(la, ra, lt)),
            },
            _ => r.clone(),
        }
    }

    /// Merges two granular lists, keeping the applied order for shared items
    /// and live-only items near their neighbours (structured-merge-diff's
    /// algorithm).
    fn merge_list(&mut self, la: &[Value], ra: &[Value], lt: ListType) -> Vec<Value> {
        let lpes: Vec<Option<Pe>> = la.iter().map(|v| item_pe(v, lt).ok()).collect();
        let rpes: Vec<Option<Pe>> = ra.iter().map(|v| item_pe(v, lt).ok()).collect();
        let mut observed_l: HashMap<&Pe, usize> = HashMap::new();
        for (i, pe) in lpes.iter().enumerate() {
            if let Some(pe) = pe {
                observed_l.entry(pe).or_insert(i);
            }
        }
        let observed_r: HashSet<&Pe> = rpes.iter().flatten().collect();
        let mut shared = rpes
            .iter()
            .flatten()
            .filter(|pe| observed_l.contains_key(pe))
            .collect::<Vec<_>>()
            .into_iter();
        let mut next_shared: Option<&Pe> = shared.next();
        let mut merged_r: HashSet<&Pe> = HashSet::new();
        let mut out = Vec::with_capacity(la.len().max(ra.len()));
        let (ll, rl) = (la.len(), ra.len());
        let (mut li, mut ri) = (0, 0);
        while li < ll || ri < rl {
            if li < ll && ri < rl {
                if let (Some(lpe), Some(rpe)) = (&lpes[li], &rpes[ri])
                    && lpe == rpe
                {
                    merged_r.insert(rpe);
                    out.push(self.merge_item(&la[li], &ra[ri], lt));
                    li += 1;
                    ri += 1;
                    next_shared = shared.next();
                    continue;
                }
                if let Some(lpe) = &lpes[li]
                    && observed_r.contains(lpe)
                    && next_shared.is_some_and(|n| n != lpe)
                {
                    li += 1;
                    continue;
                }
            }
            if li < ll {
                match &lpes[li] {
                    Some(lpe) if observed_r.contains(lpe) => {
                        if merged_r.contains(lpe) {
                            li += 1;
                            continue;
                        }
                    }
                    _ => {
                        out.push(la[li].clone());
                        li += 1;
                        continue;
                    }
                }
            }
            if ri < rl {
                match &rpes[ri] {
                    Some(rpe) => {
                        merged_r.insert(rpe);
                        let item = match observed_l.get(rpe) {
                            Some(&i) => self.merge_item(&la[i], &ra[ri], lt),
                            None => ra[ri].clone(),
                        };
                        out.push(item);
                        if next_shared == Some(rpe) {
                            next_shared = shared.next();
                        }
                    }
                    None => out.push(ra[ri].clone()),
                }
                ri += 1;
            } else {
                // Only reachable when the live item is shared but was
                // already merged: skip it.
                li += 1;
            }
        }
        out
    }

    fn merge_item(&mut self, l: &Value, r: &Value, lt: ListType) -> Value {
        match lt {
            ListType::Map(_) => self.merge(l, r),
            _ => r.clone(),
        }
    }

    // --- removal ----------------------------------------------------------

    fn null_paths(&mut self, v: &Value, out: &mut FieldSet) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    self.push_field(k);
                    if c.is_null() {
                        out.insert(&self.path);
                    } else {
                        self.null_paths(c, out);
                    }
                    self.pop_field();
                }
            }
            Value::Array(items) => {
                let lt = self.list_type();
                if let ListType::Map(_) = lt {
                    for item in items {
                        if let Ok(pe) = item_pe(item, lt) {
                            self.path.push(pe);
                            self.null_paths(item, out);
                            self.path.pop();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Removes from `v` every member path of `set` (with its subtree).
    fn remove_items(&mut self, v: &mut Value, set: &FieldSet) {
        match v {
            Value::Object(m) => {
                for pe in &set.members {
                    if let Pe::Field(k) = pe {
                        m.remove(k);
                    }
                }
                for (pe, c) in &set.children {
                    if set.members.contains(pe) {
                        continue;
                    }
                    if let Pe::Field(k) = pe
                        && let Some(child) = m.get_mut(k)
                    {
                        self.fields.push(k.clone());
                        self.remove_items(child, c);
                        self.fields.pop();
                    }
                }
            }
            Value::Array(items) => {
                let lt = self.list_type();
                if lt == ListType::Atomic {
                    return;
                }
                let old = std::mem::take(items);
                for mut item in old {
                    if let Ok(pe) = item_pe(&item, lt) {
                        if set.members.contains(&pe) {
                            continue;
                        }
                        if let Some(c) = set.children.get(&pe) {
                            self.remove_items(&mut item, c);
                        }
                    }
                    items.push(item);
                }
            }
            _ => {}
        }
    }
}

/// The items of a granular list with their path elements (first of
/// duplicates wins; items without a valid key are skipped).
fn index_items(items: &[Value], lt: ListType) -> Vec<(Pe, &Value)> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Ok(pe) = item_pe(item, lt)
            && seen.insert(pe.clone())
        {
            out.push((pe, item));
        }
    }
    out
}

/// The paths where the applied configuration holds an explicit null (outside
/// atomic lists): owned by the applier, but removed from the object.
fn null_paths(kind: &str, v: &Value) -> FieldSet {
    let mut out = FieldSet::default();
    Ctx::new(kind).null_paths(v, &mut out);
    out
}

fn field_set(kind: &str, v: &Value, strict: bool) -> Result<FieldSet, String> {
    match v {
        Value::Object(m) => Ctx::new(kind).fs_object(m, strict),
        _ => Ok(FieldSet::default()),
    }
}

fn lenient_field_set(kind: &str, v: &Value) -> FieldSet {
    field_set(kind, v, false).unwrap_or_default()
}

fn compare(kind: &str, old: &Value, new: &Value) -> Comparison {
    let mut out = Comparison::default();
    Ctx::new(kind).compare(Some(old), Some(new), &mut out);
    out
}

fn remove_items(kind: &str, mut v: Value, set: &FieldSet) -> Value {
    if !set.is_empty() {
        Ctx::new(kind).remove_items(&mut v, set);
    }
    v
}

/// Removes from `merged` what the applier owned last time (`last`) and owns
/// no more, unless some manager (the applier's new set included) owns it.
fn prune(kind: &str, merged: Value, managers: &[ManagerEntry], last: &FieldSet) -> Value {
    if last.is_empty() {
        return merged;
    }
    let last = last.ensure_named_fields();
    let pruned = remove_items(kind, merged.clone(), &last);

    // Add back what any manager owns.
    let mut managed = FieldSet::default();
    for m in managers {
        managed.union_with(&m.set);
    }
    let merged_set = lenient_field_set(kind, &merged).ensure_named_fields();
    let pruned_set = lenient_field_set(kind, &pruned).ensure_named_fields();
    let remove = merged_set.difference(&pruned_set.union(&managed.ensure_named_fields()));
    let pruned = remove_items(kind, merged.clone(), &remove);

    // Only remove what the applier owned last time.
    let pruned_set = lenient_field_set(kind, &pruned).ensure_named_fields();
    let remove = merged_set.difference(&pruned_set).intersection(&last);
    remove_items(kind, merged, &remove)
}

// ---------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ManagerEntry {
    manager: String,
    operation: Operation,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: FieldSet,
}

impl ManagerEntry {
    /// Kubernetes' manager identity: the apiVersion counts for `Update` only.
    fn is(
        &self,
        manager: &str,
        operation: Operation,
        api_version: &str,
        subresource: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    fn identity_cmp(&self, other: &ManagerEntry) -> std::cmp::Ordering {
        let key = |e: &ManagerEntry| {
            let v = if e.operation == Operation::Update {
                e.api_version.clone()
            } else {
                String::new()
            };
            (e.manager.clone(), e.operation, v, e.subresource.clone())
        };
        key(self).cmp(&key(other))
    }

    fn time_seconds(&self) -> i64 {
        self.time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .unwrap_or(0)
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        if !self.api_version.is_empty() {
            m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert(
            "operation".into(),
            Value::String(self.operation.as_str().into()),
        );
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        Value::Object(m)
    }
}

fn find_manager(
    managers: &[ManagerEntry],
    manager: &str,
    operation: Operation,
    api_version: &str,
    subresource: &str,
) -> Option<usize> {
    managers
        .iter()
        .position(|m| m.is(manager, operation, api_version, subresource))
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

fn managed_fields_of(v: &Value) -> Option<&Value> {
    v.get("metadata").and_then(|m| m.get("managedFields"))
}

/// `[{}]`: a request asking to reset the managed fields.
fn is_reset_managed_fields(mf: Option<&Value>) -> bool {
    match mf.and_then(Value::as_array).map(Vec::as_slice) {
        Some([only]) => only.as_object().is_some_and(|o| {
            o.values().all(|v| match v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Object(m) => m.is_empty(),
                _ => false,
            })
        }),
        _ => false,
    }
}

fn decode_managed_fields(mf: Option<&Value>) -> Result<Vec<ManagerEntry>, String> {
    let entries = match mf {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("managedFields must be a list".to_string()),
    };
    let mut out: Vec<ManagerEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(obj) = e.as_object() else {
            return Err("managedFields entries must be objects".to_string());
        };
        let s = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let operation = match obj.get("operation").and_then(Value::as_str) {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            other => return Err(format!("invalid managedFields operation {other:?}")),
        };
        match obj.get("fieldsType").and_then(Value::as_str) {
            None | Some("FieldsV1") => {}
            Some(t) => return Err(format!("unsupported fieldsType {t:?}")),
        }
        let set = match obj.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(f) => FieldSet::from_fields_v1(f)?,
        };
        let entry = ManagerEntry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: obj.get("time").and_then(Value::as_str).map(str::to_string),
            set,
        };
        match out.iter_mut().find(|m| {
            m.is(
                &entry.manager,
                entry.operation,
                &entry.api_version,
                &entry.subresource,
            )
        }) {
            Some(existing) => existing.set.union_with(&entry.set),
            None => out.push(entry),
        }
    }
    Ok(out)
}

/// Merges the oldest `Update` entries into per-version "ancient-changes"
/// entries while there are more than [`MAX_UPDATE_MANAGERS`].
fn cap_update_managers(managers: &mut Vec<ManagerEntry>) {
    let mut updaters: Vec<usize> = (0..managers.len())
        .filter(|&i| managers[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|&a, &b| {
        let (ma, mb) = (&managers[a], &managers[b]);
        ma.time_seconds()
            .cmp(&mb.time_seconds())
            .then_with(|| ma.identity_cmp(mb))
    });
    let mut length = updaters.len();
    let mut first_of_version: HashMap<String, usize> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for &i in &updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = managers[i].api_version.clone();
        let Some(&first) = first_of_version.get(&version) else {
            first_of_version.insert(version, i);
            continue;
        };
        let bucket = (0..managers.len()).find(|&j| {
            !removed.contains(&j)
                && managers[j].is(ANCIENT_CHANGES_MANAGER, Operation::Update, &version, "")
        });
        let bucket = match bucket {
            Some(b) => b,
            None => {
                // The first entry of this version becomes the bucket.
                managers[first].manager = ANCIENT_CHANGES_MANAGER.to_string();
                managers[first].subresource = String::new();
                first
            }
        };
        if bucket == i {
            continue;
        }
        let set = managers[i].set.clone();
        let time = managers[i].time.clone();
        managers[bucket].set.union_with(&set);
        managers[bucket].time = time;
        removed.insert(i);
        length -= 1;
    }
    let mut idx = 0;
    managers.retain(|_| {
        let keep = !removed.contains(&idx);
        idx += 1;
        keep
    });
}

/// Writes the entries into `metadata.managedFields`, sorted as Kubernetes
/// sorts them (operation, time, manager, apiVersion, subresource).
fn set_managed_fields(obj: &mut Value, managers: &[ManagerEntry]) {
    let Value::Object(root) = obj else {
        return;
    };
    let mut sorted: Vec<&ManagerEntry> = managers.iter().collect();
    sorted.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| a.time_seconds().cmp(&b.time_seconds()))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    if sorted.is_empty() {
        if let Some(Value::Object(meta)) = root.get_mut("metadata") {
            meta.remove("managedFields");
        }
        return;
    }
    let encoded = Value::Array(sorted.into_iter().map(ManagerEntry::encode).collect());
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert("managedFields".to_string(), encoded);
    }
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        meta.remove("managedFields");
    }
    v
}

/// The applied configuration without the metadata the server owns.
fn strip_system_metadata(applied: &Value) -> Value {
    let mut v = applied.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        for f in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(f);
        }
    }
    v
}

/// The "empty object" a create starts from: Kubernetes compares against a
/// new typed object, whose top-level structs (metadata, spec, status) exist.
fn empty_seed(obj: &Value) -> Value {
    let mut seed = Map::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if v.is_object() {
                seed.insert(k.clone(), Value::Object(Map::new()));
            }
        }
    }
    Value::Object(seed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2024-01-01T00:00:00Z";
    const T1: &str = "2024-01-01T00:01:00Z";

    /// A merge key holding a float is written into managedFields as text and
    /// read back: the number must come back bit for bit (serde_json's
    /// float_roundtrip; the fuzz target `apply/pod_like` found
    /// -5.6204940427900785e-226 read back one ulp off without it).
    #[test]
    fn floats_in_keys_read_back_exactly() {
        let key = json!([-5.620_494_042_790_078_5e-226]);
        let text = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), key);
        for f in [0.1, 1e-300, 123_456.789_012_345_67, f64::MIN_POSITIVE] {
            let text = serde_json::to_string(&json!(f)).unwrap();
            assert_eq!(
                serde_json::from_str::<f64>(&text).unwrap().to_bits(),
                f.to_bits()
            );
        }
    }
    const T2: &str = "2024-01-01T00:02:00Z";

    fn managed(obj: &Value) -> Vec<Value> {
        managed_fields_of(obj)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    fn entry(obj: &Value, manager: &str) -> Option<Value> {
        managed(obj).into_iter().find(|e| e["manager"] == manager)
    }

    fn fields_of(obj: &Value, manager: &str) -> Value {
        entry(obj, manager)
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or(Value::Null)
    }

    fn cm(labels: Value, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default", "labels": labels}, "data": data})
    }

    #[test]
    fn first_apply_creates_and_records_managed_fields() {
        let applied = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "labels": {"app": "web"},
                         "resourceVersion": "5", "uid": "u", "creationTimestamp": "x"},
            "data": {"a": "1"}
        });
        let out = apply(None, &applied, "kubectl", false, T0).unwrap();
        assert_eq!(
            out,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default", "labels": {"app": "web"},
                    "managedFields": [{
                        "apiVersion": "v1", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}},
                        "manager": "kubectl", "operation": "Apply", "time": T0
                    }]},
                "data": {"a": "1"}
            })
        );
    }

    #[test]
    fn reapply_removes_fields_no_longer_applied() {
        struct Case {
            name: &'static str,
            second: Value,
            want_labels: Option<Value>,
            want_data: Value,
            want_fields: Value,
        }
        let cases = [
            Case {
                name: "one label and one key dropped",
                second: cm(json!({"app": "web"}), json!({"a": "1"})),
                want_labels: Some(json!({"app": "web"})),
                want_data: json!({"a": "1"}),
                want_fields: json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}),
            },
            Case {
                name: "all labels dropped",
                second: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1", "b": "2"}}),
                want_labels: None,
                want_data: json!({"a": "1", "b": "2"}),
                want_fields: json!({"f:data": {"f:a": {}, "f:b": {}}}),
            },
            Case {
                name: "value changed",
                second: cm(
                    json!({"app": "web", "tier": "front"}),
                    json!({"a": "9", "b": "2"}),
                ),
                want_labels: Some(json!({"app": "web", "tier": "front"})),
                want_data: json!({"a": "9", "b": "2"}),
                want_fields: json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}}),
            },
        ];
        for c in cases {
            let first = cm(
                json!({"app": "web", "tier": "front"}),
                json!({"a": "1", "b": "2"}),
            );
            let live = apply(None, &first, "kubectl", false, T0).unwrap();
            let out = apply(Some(&live), &c.second, "kubectl", false, T1).unwrap();
            assert_eq!(
                out["metadata"].get("labels").cloned(),
                c.want_labels,
                "{}",
                c.name
            );
            assert_eq!(out["data"], c.want_data, "{}", c.name);
            assert_eq!(fields_of(&out, "kubectl"), c.want_fields, "{}", c.name);
            assert_eq!(managed(&out).len(), 1, "{}", c.name);
            assert_eq!(entry(&out, "kubectl").unwrap()["time"], T1, "{}", c.name);
        }
    }

    fn deployment(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}
                }
            }
        })
    }

    #[test]
    fn conflicts_with_other_managers() {
        let live = record_update(None, &deployment(1), "kubectl-client-side-apply", T0);
        let set_replicas = |n: i64| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"}, "spec": {"replicas": n}});

        // Different value, no force: conflict with the Kubernetes message.
        let err = apply(Some(&live), &set_replicas(3), "kubectl", false, T1).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.causes(),
            vec![StatusCause {
                field: Some(".spec.replicas".into()),
                message: Some("conflict with \"kubectl-client-side-apply\" using apps/v1".into()),
                reason: Some("FieldManagerConflict".into()),
            }]
        );
        let status = err.to_status();
        assert_eq!(status.code, Some(409));
        assert_eq!(status.reason.as_deref(), Some("Conflict"));

        // Same value: no conflict, shared ownership.
        let shared = apply(Some(&live), &set_replicas(1), "kubectl", false, T1).unwrap();
        assert_eq!(
            fields_of(&shared, "kubectl"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert!(
            fields_of(&shared, "kubectl-client-side-apply")["f:spec"]
                .get("f:replicas")
                .is_some()
        );

        // Force: the value changes and ownership moves.
        let forced = apply(Some(&live), &set_replicas(3), "kubectl", true, T1).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(
            fields_of(&forced, "kubectl"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        let csa = fields_of(&forced, "kubectl-client-side-apply");
        assert!(csa["f:spec"].get("f:replicas").is_none());
        assert!(csa["f:spec"].get("f:template").is_some());
        // Apply entries sort first.
        assert_eq!(managed(&forced)[0]["manager"], "kubectl");
        assert_eq!(managed(&forced)[1]["operation"], "Update");
    }

    #[test]
    fn explicit_null_clears_a_field() {
        let live = record_update(None, &deployment(1), "creator", T0);
        let null_replicas = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": null}});
        let err = apply(Some(&live), &null_replicas, "kubectl", false, T1).unwrap_err();
        assert_eq!(err.conflicts()[0].field(), ".spec.replicas");
        let out = apply(Some(&live), &null_replicas, "kubectl", true, T1).unwrap();
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(
            fields_of(&out, "kubectl"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert!(
            fields_of(&out, "creator")["f:spec"]
                .get("f:replicas")
                .is_none()
        );
    }

    #[test]
    fn conflict_messages() {
        let c = |manager: &str, operation: Operation, field: &str| ApplyConflict {
            manager: manager.into(),
            operation,
            api_version: "apps/v1".into(),
            subresource: String::new(),
            field: field.into(),
        };
        let cases = [
            (
                vec![c(
                    "kubectl-client-side-apply",
                    Operation::Update,
                    ".spec.replicas",
                )],
                "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
            ),
            (
                vec![c("helm", Operation::Apply, ".metadata.labels.app")],
                "Apply failed with 1 conflict: conflict with \"helm\": .metadata.labels.app",
            ),
            (
                vec![
                    c("a", Operation::Apply, ".spec.replicas"),
                    c("b", Operation::Update, ".spec.paused"),
                    c(
                        "b",
                        Operation::Update,
                        ".spec.template.spec.containers[name=\"web\"].image",
                    ),
                ],
                "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec.replicas\nconflicts with \"b\" using apps/v1:\n- .spec.paused\n- .spec.template.spec.containers[name=\"web\"].image",
            ),
        ];
        for (conflicts, want) in cases {
            assert_eq!(ApplyError::Conflict(conflicts).message(), want);
        }
        let sub = ApplyConflict {
            subresource: "status".into(),
            ..c("kubelet", Operation::Update, ".status.phase")
        };
        assert_eq!(
            sub.cause_message(),
            "conflict with \"kubelet\" with subresource \"status\" using apps/v1"
        );
    }

    #[test]
    fn multiple_conflicts_from_apply_are_sorted_by_manager() {
        let live = record_update(None, &deployment(1), "zeta", T0);
        let live = apply(Some(&live), &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"paused": false}}), "alpha", false, T1).unwrap();
        let mut changed = deployment(2);
        changed["spec"]["paused"] = json!(true);
        let err = apply(Some(&live), &changed, "kubectl", false, T2).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 2 conflicts: conflicts with \"alpha\":\n- .spec.paused\nconflicts with \"zeta\" using apps/v1:\n- .spec.replicas"
        );
        assert_eq!(err.conflicts().len(), 2);
    }

    #[test]
    fn apply_after_update_by_other_manager_keeps_both() {
        let live = apply(
            None,
            &cm(json!({"app": "web"}), json!({"a": "1"})),
            "kubectl",
            false,
            T0,
        )
        .unwrap();
        let mut edited = live.clone();
        edited["data"]["z"] = json!("26");
        let live = record_update(Some(&live), &edited, "kubectl-edit", T1);
        assert_eq!(
            fields_of(&live, "kubectl-edit"),
            json!({"f:data": {"f:z": {}}})
        );
        assert_eq!(entry(&live, "kubectl-edit").unwrap()["operation"], "Update");

        // Re-applying the same configuration keeps the edited field and both owners.
        let out = apply(
            Some(&live),
            &cm(json!({"app": "web"}), json!({"a": "1"})),
            "kubectl",
            false,
            T2,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "z": "26"}));
        assert_eq!(
            fields_of(&out, "kubectl"),
            json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
        );
        assert_eq!(
            fields_of(&out, "kubectl-edit"),
            json!({"f:data": {"f:z": {}}})
        );
        // Nothing changed: the applier's time is kept.
        assert_eq!(entry(&out, "kubectl").unwrap()["time"], T0);

        // A field the applier stops applying survives while another manager owns it.
        let mut edited = out.clone();
        edited["data"]["a"] = json!("2");
        let live = record_update(Some(&out), &edited, "kubectl-edit", T2);
        assert_eq!(
            fields_of(&live, "kubectl"),
            json!({"f:metadata": {"f:labels": {"f:app": {}}}})
        );
        let out = apply(
            Some(&live),
            &cm(json!({"app": "web"}), json!({"b": "3"})),
            "kubectl",
            false,
            T2,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "2", "b": "3", "z": "26"}));
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn associative_list_of_containers_with_two_managers() {
        let live = apply(
            None,
            &pod(json!([{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}])),
            "a",
            false,
            T0,
        )
        .unwrap();
        assert_eq!(
            fields_of(&live, "a"),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                ".": {}, "f:image": {}, "f:name": {},
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
            }}}})
        );

        let live = apply(
            Some(&live),
            &pod(json!([{"name": "sidecar", "image": "busybox"}])),
            "b",
            false,
            T1,
        )
        .unwrap();
        assert_eq!(
            live["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}, {"name": "sidecar", "image": "busybox"}])
        );
        assert_eq!(
            fields_of(&live, "b"),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );

        // b changing a's container conflicts on that field only.
        let err = apply(
            Some(&live),
            &pod(json!([{"name": "web", "image": "nginx:2"}, {"name": "sidecar", "image": "busybox"}])),
            "b",
            false,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.containers[name=\"web\"].image"
        );

        // a updates its container; b's stays.
        let live = apply(
            Some(&live),
            &pod(json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}])),
            "a",
            false,
            T2,
        )
        .unwrap();
        assert_eq!(live["spec"]["containers"][0]["image"], "nginx:2");
        assert_eq!(live["spec"]["containers"][1]["name"], "sidecar");

        // a drops its container: it goes away, b's stays.
        let live = apply(Some(&live), &pod(json!([])), "a", false, T2).unwrap();
        assert_eq!(
            live["spec"]["containers"],
            json!([{"name": "sidecar", "image": "busybox"}])
        );
        assert!(entry(&live, "a").is_none());
    }

    #[test]
    fn list_merge_orders() {
        struct Case {
            live: Value,
            applied: Value,
            want: Value,
        }
        let n = |names: &[&str]| Value::Array(names.iter().map(|n| json!({"name": n})).collect());
        let cases = [
            Case {
                live: n(&["a", "b"]),
                applied: n(&["c"]),
                want: n(&["a", "b", "c"]),
            },
            Case {
                live: n(&["a", "b", "c"]),
                applied: n(&["c", "a"]),
                want: n(&["b", "c", "a"]),
            },
            Case {
                live: n(&["x", "a", "y"]),
                applied: n(&["a", "b"]),
                want: n(&["x", "a", "y", "b"]),
            },
        ];
        for c in cases {
            let live = apply(None, &pod(c.live.clone()), "other", false, T0).unwrap();
            let out = apply(Some(&live), &pod(c.applied.clone()), "me", false, T1).unwrap();
            assert_eq!(
                out["spec"]["containers"], c.want,
                "live {} applied {}",
                c.live, c.applied
            );
        }
        // Sets (finalizers) and atomic lists (args).
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["a"]},
            "spec": {"containers": [{"name": "c", "args": ["1", "2"]}]}});
        let live = record_update(None, &live, "creator", T0);
        let applied = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["b"]}});
        let out = apply(Some(&live), &applied, "me", false, T1).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            fields_of(&out, "me"),
            json!({"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}})
        );
        let applied = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "args": ["3"]}]}});
        let out = apply(Some(&live), &applied, "me", true, T1).unwrap();
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
        assert_eq!(
            fields_of(&out, "me"),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:args": {}, "f:name": {}}}}})
        );
    }

    #[test]
    fn record_update_on_create_and_update() {
        let created = record_update(None, &deployment(1), "kubectl-create", T0);
        let e = entry(&created, "kubectl-create").unwrap();
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T0);
        assert_eq!(e["fieldsType"], "FieldsV1");
        let f = &e["fieldsV1"];
        assert_eq!(f["f:spec"]["f:replicas"], json!({}));
        assert!(
            f.get("f:metadata").is_none(),
            "name/namespace are not owned: {f}"
        );
        // A list that did not exist before is itself added ("."), as in Kubernetes.
        assert_eq!(
            f["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({".": {}, "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}})
        );

        // An update by another manager takes the changed field; removing a
        // field removes it from everyone.
        let mut next = created.clone();
        next["spec"]["replicas"] = json!(5);
        next["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        let updated = record_update(Some(&created), &next, "hpa", T1);
        assert_eq!(
            fields_of(&updated, "hpa"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        let creator = fields_of(&updated, "kubectl-create");
        assert!(creator["f:spec"].get("f:replicas").is_none());
        assert_eq!(
            creator["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({".": {}, "k:{\"name\":\"web\"}": {".": {}, "f:name": {}}})
        );

        // A no-op update changes nothing (time included).
        let again = record_update(Some(&updated), &updated, "hpa", T2);
        assert_eq!(again, updated);

        // Without managedFields in the request the stored ones are kept; [{}] resets.
        let mut stripped = updated.clone();
        stripped["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(
            managed(&record_update(Some(&updated), &stripped, "x", T2)),
            managed(&updated)
        );
        let mut reset = updated.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        assert!(managed_fields_of(&record_update(Some(&updated), &reset, "x", T2)).is_none());

        // Subresource updates are their own entries.
        let mut st = updated.clone();
        st["status"] = json!({"replicas": 5});
        let out =
            record_update_subresource(Some(&updated), &st, "kube-controller-manager", "status", T2);
        let e = entry(&out, "kube-controller-manager").unwrap();
        assert_eq!(e["subresource"], "status");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:status": {".": {}, "f:replicas": {}}})
        );
    }

    #[test]
    fn before_first_apply_owns_untracked_objects() {
        let live = deployment(1);
        let err = apply(Some(&live), &deployment(2), "kubectl", false, T1).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
        );
        let out = apply(Some(&live), &deployment(1), "kubectl", false, T1).unwrap();
        assert!(entry(&out, "before-first-apply").is_some());
        assert!(entry(&out, "kubectl").is_some());
    }

    #[test]
    fn invalid_configurations() {
        let cases = [
            (json!("nope"), "the apply patch must be a JSON object"),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "managedFields": [{"manager": "x"}]}}),
                "metadata.managedFields must be nil",
            ),
            (
                pod(json!([{"name": "a"}, {"name": "a"}])),
                "failed to create typed patch object (v1, Kind=Pod): .spec.containers: duplicate entries for key [name=\"a\"]",
            ),
            (
                pod(json!([{"image": "x"}])),
                "failed to create typed patch object (v1, Kind=Pod): .spec.containers[0]: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)",
            ),
        ];
        for (applied, want) in cases {
            let err = apply(None, &applied, "m", false, T0).unwrap_err();
            assert_eq!(err.message(), want);
            assert_eq!(err.code(), 422);
            assert!(err.causes().is_empty());
        }
        assert!(matches!(
            apply(None, &pod(json!([])), "", false, T0),
            Err(ApplyError::Invalid(_))
        ));
    }

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({
            "f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}}, "f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}, "f:list": {"i:0": {}}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        let paths: Vec<String> = set.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".metadata.finalizers",
                ".metadata.labels",
                ".metadata.finalizers[=\"x\"]",
                ".metadata.labels.app",
                ".spec.containers[name=\"web\"]",
                ".spec.containers[name=\"web\"].image",
                ".spec.list[0]",
            ]
        );
        // Keys are canonicalised.
        let set = FieldSet::from_fields_v1(
            &json!({"k:{\"protocol\":\"TCP\", \"containerPort\":80}": {}}),
        )
        .unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}})
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
    }

    #[test]
    fn update_managers_are_capped() {
        let mut live = record_update(
            None,
            &cm(json!({}), json!({})),
            "creator",
            "2024-01-01T00:00:00Z",
        );
        for i in 0..12 {
            let mut next = live.clone();
            next["data"][format!("k{i}")] = json!("v");
            live = record_update(
                Some(&live),
                &next,
                &format!("m{i:02}"),
                &format!("2024-01-01T01:{i:02}:00Z"),
            );
        }
        let entries = managed(&live);
        assert_eq!(entries.len(), MAX_UPDATE_MANAGERS);
        let ancient = entry(&live, ANCIENT_CHANGES_MANAGER).unwrap();
        assert!(ancient["fieldsV1"]["f:data"].get("f:k0").is_some());
        // Every field still has an owner.
        let owned: usize = entries
            .iter()
            .map(|e| e["fieldsV1"]["f:data"].as_object().map_or(0, Map::len))
            .sum();
        assert_eq!(owned, 12);
    }

    #[test]
    fn large_objects_do_not_blow_up() {
        let items: Vec<Value> = (0..3000)
            .map(|i| json!({"name": format!("e{i}"), "value": i.to_string()}))
            .collect();
        let obj = pod(json!([{"name": "c", "image": "i", "env": items}]));
        let created = record_update(None, &obj, "creator", T0);
        let mut next = created.clone();
        next["spec"]["containers"][0]["env"][1500]["value"] = json!("changed");
        let out = record_update(Some(&created), &next, "editor", T1);
        assert_eq!(
            fields_of(&out, "editor"),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {"f:env": {"k:{\"name\":\"e1500\"}": {"f:value": {}}}}}}})
        );
        let applied = apply(Some(&out), &obj, "applier", true, T2).unwrap();
        assert_eq!(
            applied["spec"]["containers"][0]["env"][1500]["value"],
            "1500"
        );
    }
}
