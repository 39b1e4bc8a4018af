//! CustomResourceDefinitions (apiextensions.k8s.io/v1): what
//! kube-apiserver's apiextensions-apiserver does, inside skiff's server.
//!
//! - [`Resources`] is the server's catalog of what it serves: the built-in
//!   registry, then the custom resources of every definition whose names
//!   are accepted. It is rebuilt from the watch cache whenever a definition
//!   changes (definitions are few; a rebuild is linear in their number),
//!   so a resource is served as soon as its definition is stored.
//! - A definition's [`Served`] version carries its schema (pruning,
//!   defaulting, validation by `skiff_api::structural`) and its printer
//!   columns.
//! - A controller keeps each definition's status as Kubernetes does
//!   (acceptedNames, NamesAccepted, Established, storedVersions) and, when
//!   a definition is deleted, deletes its objects before letting it go (the
//!   `customresourcecleanup.apiextensions.k8s.io` finalizer).
//!
//! A served resource's names are interned: `ResourceInfo` is `&'static`
//! throughout the server, so each distinct set of names a definition ever
//! had is allocated once for the life of the process (bounded by the
//! definitions' renames, not by requests). Schemas and columns are not
//! interned: they are replaced with the catalog.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, Weak};

use serde_json::{Value, json};
use skiff_api::registry::{CustomNames, ResourceInfo, registry};
use skiff_api::validation::FieldError;
use skiff_api::value::strings;
use tokio::sync::mpsc;

use crate::cache::set_resource_version;
use crate::state::ApiServer;
use crate::status::{ApiError, Cause};

pub const GROUP: &str = "apiextensions.k8s.io";
pub const KIND: &str = "CustomResourceDefinition";
/// The finalizer that holds a deleted definition until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Whether `info` is the CustomResourceDefinition resource itself.
pub fn is_definition(info: &ResourceInfo) -> bool {
    (info.group, info.kind) == (GROUP, KIND)
}

/// One served version of a custom resource.
#[derive(Debug)]
pub struct Served {
    pub info: &'static ResourceInfo,
    /// The definition's name ("crontabs.stable.example.com").
    pub definition: String,
    /// The version objects are stored in.
    pub storage_version: &'static str,
    /// The version's `openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// additionalPrinterColumns (or the default Age column).
    pub columns: Vec<Column>,
    /// The definition is being deleted: no new objects.
    pub terminating: bool,
    /// The scale subresource's paths, when the version has one.
    pub scale: Option<ScalePaths>,
    /// The schema sets defaults (applied on read too).
    pub has_defaults: bool,
    /// `selectableFields` as field-selector keys ("spec.color").
    pub selectable_fields: Vec<String>,
    /// The schema's CEL rules (`x-kubernetes-validations`), compiled once.
    pub rules: Option<skiff_api::cel::Rules>,
}

/// `subresources.scale` of a version: where replicas and the selector live.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    /// ".spec.replicas"
    pub spec_replicas: String,
    /// ".status.replicas"
    pub status_replicas: String,
    /// ".status.selector" (a label selector in string form), if any.
    pub label_selector: Option<String>,
}

/// The segments of a simple JSON path (".spec.replicas").
fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('.').split('.').collect()
}

fn at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path).iter().try_fold(obj, |v, s| v.get(*s))
}

impl Served {
    /// The autoscaling/v1 Scale of a custom resource (replicas absent: 0).
    pub fn scale_of(&self, obj: &Value) -> Option<Value> {
        let paths = self.scale.as_ref()?;
        let int = |p: &str| at_path(obj, p).and_then(Value::as_i64).unwrap_or(0);
        let selector = paths
            .label_selector
            .as_deref()
            .and_then(|p| at_path(obj, p))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some(crate::admission::scale(
            obj,
            int(&paths.spec_replicas),
            int(&paths.status_replicas),
            selector,
        ))
    }

    /// Set the replicas a Scale asks for at the definition's spec path.
    pub fn set_replicas(&self, obj: &mut Value, replicas: i64) -> Result<(), ApiError> {
        let paths = self
            .scale
            .as_ref()
            .ok_or_else(|| ApiError::not_found(self.info.group, self.info.plural, "scale"))?;
        let segs = segments(&paths.spec_replicas);
        let Some((last, parents)) = segs.split_last() else {
            return Err(ApiError::internal("empty specReplicasPath"));
        };
        let mut cur = obj;
        for s in parents {
            if !cur.get(*s).is_some_and(Value::is_object) {
                cur[*s] = json!({});
            }
            cur = &mut cur[*s];
        }
        cur[*last] = json!(replicas);
        Ok(())
    }
}

/// An additionalPrinterColumn.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

#[derive(Default)]
struct Catalog {
    by_path: HashMap<(String, String, String), Arc<Served>>,
    by_kind: HashMap<(String, String), Arc<Served>>,
    /// Custom groups in order of first definition, each with its versions
    /// in Kubernetes' version priority order.
    groups: Vec<(&'static str, Vec<&'static str>)>,
    /// Names accepted per definition (None: a conflict, with its message).
    accepted: HashMap<String, Result<Value, String>>,
}

/// The resources the server serves: built-in and custom.
pub struct Resources {
    catalog: RwLock<Arc<Catalog>>,
    /// Counts catalog changes (documents built from it are cached by it).
    generation: AtomicU64,
    definitions: Mutex<BTreeMap<String, Value>>,
    wake: mpsc::UnboundedSender<String>,
    woken: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for Resources {
    fn default() -> Self {
        let (wake, woken) = mpsc::unbounded_channel();
        Resources {
            catalog: RwLock::default(),
            generation: AtomicU64::new(0),
            definitions: Mutex::default(),
            wake,
            woken: Mutex::new(Some(woken)),
        }
    }
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resources")
    }
}

impl Resources {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The resource at /api(s)/{group}/{version}/{plural}: built-in first.
    pub fn lookup(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<&'static ResourceInfo> {
        registry().lookup(group, version, plural).or_else(|| {
            self.catalog()
                .by_path
                .get(&(group.to_string(), version.to_string(), plural.to_string()))
                .map(|s| s.info)
        })
    }

    /// The resource of an apiVersion and kind: built-in first.
    pub fn lookup_kind(&self, api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
        registry().lookup_kind(api_version, kind).or_else(|| {
            self.catalog()
                .by_kind
                .get(&(api_version.to_string(), kind.to_string()))
                .map(|s| s.info)
        })
    }

    /// What a custom resource's definition says of it (None for built-ins
    /// and for a definition gone meanwhile).
    pub fn custom(&self, info: &ResourceInfo) -> Option<Arc<Served>> {
        if !info.custom {
            return None;
        }
        self.catalog()
            .by_path
            .get(&(
                info.group.to_string(),
                info.version.to_string(),
                info.plural.to_string(),
            ))
            .cloned()
    }

    /// Which catalog this is: changes whenever a definition does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every served custom resource version, ordered by group, version, plural.
    pub fn all_custom(&self) -> Vec<Arc<Served>> {
        let mut all: Vec<Arc<Served>> = self.catalog().by_path.values().cloned().collect();
        all.sort_by_key(|s| (s.info.group, s.info.version, s.info.plural));
        all
    }

    /// The served groups ("" first), built-in then custom, with versions.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out = registry().groups();
        out.extend(self.catalog().groups.iter().cloned());
        out
    }

    /// The resources of one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&'static ResourceInfo> {
        let mut out: Vec<&'static ResourceInfo> = registry()
            .all()
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect();
        let catalog = self.catalog();
        let mut custom: Vec<&'static ResourceInfo> = catalog
            .by_path
            .values()
            .filter(|s| s.info.group == group && s.info.version == version)
            .map(|s| s.info)
            .collect();
        custom.sort_by_key(|i| i.plural);
        out.extend(custom);
        out
    }

    /// A definition was stored (Some) or deleted (None).
    fn apply(&self, name: &str, definition: Option<&Value>) {
        let rebuilt = {
            let mut defs = self
                .definitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match definition {
                Some(d) => defs.insert(name.to_string(), d.clone()),
                None => defs.remove(name),
            };
            build(&defs)
        };
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rebuilt);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.wake.send(name.to_string());
    }

    /// The names accepted for a definition, or why they are not.
    fn accepted(&self, name: &str) -> Option<Result<Value, String>> {
        self.catalog().accepted.get(name).cloned()
    }
}

fn intern(s: &str) -> &'static str {
    static STRINGS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut set = STRINGS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

fn intern_list(items: &[String]) -> &'static [&'static str] {
    static LISTS: LazyLock<Mutex<HashMap<Vec<String>, &'static [&'static str]>>> =
        LazyLock::new(Default::default);
    let mut lists = LISTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = lists.get(items) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(
        items
            .iter()
            .map(|s| intern(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    lists.insert(items.to_vec(), leaked);
    leaked
}

fn intern_info(names: CustomNames) -> &'static ResourceInfo {
    static INFOS: LazyLock<Mutex<HashMap<CustomNames, &'static ResourceInfo>>> =
        LazyLock::new(Default::default);
    let mut infos = INFOS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = infos.get(&names) {
        return found;
    }
    let storage = intern(&format!("{}/{}", names.group, names.plural));
    let leaked: &'static ResourceInfo = Box::leak(Box::new(ResourceInfo::custom(&names, storage)));
    infos.insert(names, leaked);
    leaked
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or_default()
}

/// Kubernetes' version priority: GA before beta before alpha, higher
/// numbers first, then other names alphabetically.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (u8, u64, u64, String) {
        let parsed = (|| {
            let rest = v.strip_prefix('v')?;
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let major: u64 = rest.get(..digits)?.parse().ok()?;
            let tail = rest.get(digits..)?;
            if tail.is_empty() {
                return Some((0, major, 0));
            }
            let (rank, num) = if let Some(n) = tail.strip_prefix("beta") {
                (1, n)
            } else {
                (2, tail.strip_prefix("alpha")?)
            };
            let minor: u64 = num.parse().ok()?;
            Some((rank, major, minor))
        })();
        match parsed {
            Some((rank, major, minor)) => (rank, u64::MAX - major, u64::MAX - minor, String::new()),
            None => (3, 0, 0, v.to_string()),
        }
    }
    key(a).cmp(&key(b))
}

/// The default printer column of a definition without any.
fn age_column() -> Column {
    Column {
        name: "Age".into(),
        type_: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }
}

fn columns_of(version: &Value) -> Vec<Column> {
    let Some(cols) = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
    else {
        return vec![age_column()];
    };
    cols.iter()
        .map(|c| Column {
            name: str_at(c, "/name").to_string(),
            type_: str_at(c, "/type").to_string(),
            format: str_at(c, "/format").to_string(),
            description: str_at(c, "/description").to_string(),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: str_at(c, "/jsonPath").to_string(),
        })
        .collect()
}

/// The catalog of every definition whose names do not clash with a
/// built-in resource or an older definition.
fn build(defs: &BTreeMap<String, Value>) -> Catalog {
    let mut catalog = Catalog::default();
    // Names once accepted stay with their definition (as the naming
    // controller checks against the others' acceptedNames); then older
    // definitions first, then by name for a stable order.
    let accepted_before = |d: &Value| {
        d.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True")
            })
    };
    let mut ordered: Vec<(&String, &Value)> = defs.iter().collect();
    ordered.sort_by(|(an, a), (bn, b)| {
        accepted_before(b)
            .cmp(&accepted_before(a))
            .then(
                str_at(a, "/metadata/creationTimestamp")
                    .cmp(str_at(b, "/metadata/creationTimestamp")),
            )
            .then(an.cmp(bn))
    });
    let mut taken: HashMap<(String, String), String> = HashMap::new();
    for (name, def) in ordered {
        let group = str_at(def, "/spec/group");
        let names = defaulted_names(def);
        let plural = str_at(&names, "/plural");
        let kind = str_at(&names, "/kind");
        let conflict = [plural.to_string(), kind.to_string()]
            .into_iter()
            .chain(strings(names.get("shortNames")))
            .chain(std::iter::once(str_at(&names, "/singular").to_string()))
            .find(|n| {
                taken
                    .get(&(group.to_string(), n.clone()))
                    .is_some_and(|owner| owner != name)
            });
        let builtin = registry()
            .all()
            .iter()
            .any(|r| r.group == group && (r.plural == plural || r.kind == kind));
        if let Some(n) = conflict {
            catalog
                .accepted
                .insert(name.clone(), Err(format!("\"{n}\" is already in use")));
            continue;
        }
        if builtin {
            catalog.accepted.insert(
                name.clone(),
                Err(format!(
                    "\"{plural}\" is already in use by a built-in resource"
                )),
            );
            continue;
        }
        for n in [plural, kind, str_at(&names, "/singular")]
            .into_iter()
            .map(str::to_string)
            .chain(strings(names.get("shortNames")))
        {
            taken.insert((group.to_string(), n), name.clone());
        }
        catalog.accepted.insert(name.clone(), Ok(names.clone()));
        let versions = def
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let storage_version = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .map(|v| intern(str_at(v, "/name")))
            .unwrap_or_default();
        let terminating = def
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        let namespaced = str_at(def, "/spec/scope") != "Cluster";
        let mut served_versions: Vec<&'static str> = Vec::new();
        for v in &versions {
            if v.get("served").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let version = intern(str_at(v, "/name"));
            let mut subresources: Vec<String> = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push("status".into());
            }
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: str_at(s, "/specReplicasPath").to_string(),
                status_replicas: str_at(s, "/statusReplicasPath").to_string(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
            if scale.is_some() {
                subresources.push("scale".into());
            }
            let info = intern_info(CustomNames {
                group: intern(group),
                version,
                kind: intern(kind),
                list_kind: intern(str_at(&names, "/listKind")),
                plural: intern(plural),
                singular: intern(str_at(&names, "/singular")),
                namespaced,
                short_names: intern_list(&strings(names.get("shortNames"))),
                categories: intern_list(&strings(names.get("categories"))),
                subresources: intern_list(&subresources),
            });
            let served = Arc::new(Served {
                info,
                definition: name.clone(),
                storage_version,
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                columns: columns_of(v),
                terminating,
                scale,
                has_defaults: v
                    .pointer("/schema/openAPIV3Schema")
                    .is_some_and(sets_defaults),
                selectable_fields: v
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect(),
                rules: v
                    .pointer("/schema/openAPIV3Schema")
                    .and_then(skiff_api::cel::Rules::compile),
            });
            catalog.by_path.insert(
                (group.to_string(), version.to_string(), plural.to_string()),
                served.clone(),
            );
            catalog
                .by_kind
                .insert((info.api_version(), kind.to_string()), served);
            served_versions.push(version);
        }
        if served_versions.is_empty() {
            continue;
        }
        let group: &'static str = intern(group);
        match catalog.groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, vs)) => {
                for v in served_versions {
                    if !vs.contains(&v) {
                        vs.push(v);
                    }
                }
                vs.sort_by(|a, b| version_order(a, b));
            }
            None => {
                served_versions.sort_by(|a, b| version_order(a, b));
                catalog.groups.push((group, served_versions));
            }
        }
    }
    catalog
}

/// spec.names with Kubernetes' defaults (singular, listKind).
fn defaulted_names(def: &Value) -> Value {
    let mut names = def
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let kind = str_at(&names, "/kind").to_string();
    if str_at(&names, "/singular").is_empty() {
        names["singular"] = json!(kind.to_ascii_lowercase());
    }
    if str_at(&names, "/listKind").is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    names
}

/// Defaults of a definition, as apiextensions' SetDefaults.
pub fn apply_defaults(def: &mut Value) {
    let names = defaulted_names(def);
    if let Some(spec) = def.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("names".into(), names);
        if !spec.contains_key("conversion") {
            spec.insert("conversion".into(), json!({"strategy": "None"}));
        }
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// Validation of a definition (apiextensions' ValidateCustomResourceDefinition,
/// the rules skiff enforces).
pub fn validate_definition(def: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let group = str_at(def, "/spec/group");
    let names = def.pointer("/spec/names").cloned().unwrap_or_default();
    let plural = str_at(&names, "/plural");
    let kind = str_at(&names, "/kind");
    let name = str_at(def, "/metadata/name");
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !dns_subdomain(group) {
        errs.push(FieldError::invalid(
            "spec.group",
            &json!(group),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    match str_at(def, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => errs.push(FieldError::required("spec.scope", "")),
        s => errs.push(FieldError::not_supported(
            "spec.scope",
            &json!(s),
            &["Cluster", "Namespaced"],
        )),
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    } else if !dns_label(plural) {
        errs.push(FieldError::invalid(
            "spec.names.plural",
            &json!(plural),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    let singular = str_at(&names, "/singular");
    if !singular.is_empty() && !dns_label(singular) {
        errs.push(FieldError::invalid(
            "spec.names.singular",
            &json!(singular),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    } else if kind.contains(|c: char| !c.is_ascii_alphanumeric()) {
        errs.push(FieldError::invalid(
            "spec.names.kind",
            &json!(kind),
            "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    }
    for (i, s) in strings(names.get("shortNames")).iter().enumerate() {
        if !dns_label(s) {
            errs.push(FieldError::invalid(
                format!("spec.names.shortNames[{i}]"),
                &json!(s),
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
    }
    let versions = def
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            &json!(null),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.is_empty()
        && !versions
            .iter()
            .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        errs.push(FieldError::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have at least one version marked as served",
        ));
    }
    let mut seen = HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let vname = str_at(v, "/name");
        if !dns_label(vname) {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                &json!(vname),
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
        if !seen.insert(vname.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), &json!(vname)));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => errs.push(FieldError::required(
                format!("{path}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(schema) => errs.extend(skiff_api::structural::check_structural(
                schema,
                &format!("{path}.schema.openAPIV3Schema"),
            )),
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            let spath = format!("{path}.subresources.scale");
            for (field, prefix, required) in [
                ("specReplicasPath", ".spec.", true),
                ("statusReplicasPath", ".status.", true),
                ("labelSelectorPath", ".status.", false),
            ] {
                match scale.get(field).and_then(Value::as_str) {
                    None | Some("") if required => {
                        errs.push(FieldError::required(format!("{spath}.{field}"), ""));
                    }
                    None | Some("") => {}
                    Some(p)
                        if !p.starts_with(prefix)
                            || p.len() == prefix.len()
                            || p.contains(['[', ']', '*', '?', '@']) =>
                    {
                        errs.push(FieldError::invalid(
                            format!("{spath}.{field}"),
                            &json!(p),
                            &format!(
                                "should be a json path under {}",
                                prefix.trim_end_matches('.')
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            for (j, c) in cols.iter().enumerate() {
                let cpath = format!("{path}.additionalPrinterColumns[{j}]");
                if str_at(c, "/name").is_empty() {
                    errs.push(FieldError::required(format!("{cpath}.name"), ""));
                }
                let ty = str_at(c, "/type");
                if !["integer", "number", "string", "boolean", "date"].contains(&ty) {
                    errs.push(FieldError::not_supported(
                        format!("{cpath}.type"),
                        &json!(ty),
                        &["boolean", "date", "integer", "number", "string"],
                    ));
                }
                if str_at(c, "/jsonPath").is_empty() {
                    errs.push(FieldError::required(format!("{cpath}.jsonPath"), ""));
                }
            }
        }
    }
    if let Some(old) = old {
        let old_scope = str_at(old, "/spec/scope");
        if !old_scope.is_empty() && old_scope != str_at(def, "/spec/scope") {
            errs.push(FieldError::invalid(
                "spec.scope",
                &json!(str_at(def, "/spec/scope")),
                "field is immutable",
            ));
        }
        if str_at(old, "/spec/group") != group {
            errs.push(FieldError::invalid(
                "spec.group",
                &json!(group),
                "field is immutable",
            ));
        }
    }
    errs.extend(skiff_api::cel::check_definition(def));
    errs
}

/// On the first delete of a definition: the cleanup finalizer and the
/// Terminating condition (apiextensions' REST.Delete).
pub fn prepare_delete(old: &Value, finalizers: &mut Vec<Value>, new: &mut Value) {
    if old
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return;
    }
    if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        finalizers.push(json!(CLEANUP_FINALIZER));
    }
    set_condition(
        new,
        "Terminating",
        "True",
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
    );
}

fn set_condition(def: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    if !def.get("status").is_some_and(Value::is_object) {
        def["status"] = json!({});
    }
    let conditions = def["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conditions)) = conditions else {
        return;
    };
    let now = crate::handlers::now_rfc3339();
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
    {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(status) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conditions.push(json!({
            "type": ty, "status": status, "lastTransitionTime": now,
            "reason": reason, "message": message,
        })),
    }
}

fn sets_defaults(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.contains_key("default") || m.values().any(sets_defaults),
        Value::Array(a) => a.iter().any(sets_defaults),
        _ => false,
    }
}

/// A stored custom resource as a reader of `served` sees it: in the
/// version asked for, with the schema's defaults (as kube-apiserver
/// defaults objects read from storage, so a default added to a definition
/// shows on objects stored before).
pub fn on_read<'a>(served: Option<&Served>, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
    let Some(served) = served else {
        return std::borrow::Cow::Borrowed(obj);
    };
    let converted = in_version(obj, &served.info.api_version());
    match (&served.schema, served.has_defaults) {
        (Some(schema), true) => {
            let mut v = converted.into_owned();
            skiff_api::structural::apply_defaults(&mut v, schema);
            if v == *obj {
                std::borrow::Cow::Borrowed(obj)
            } else {
                std::borrow::Cow::Owned(v)
            }
        }
        _ => converted,
    }
}

/// A custom resource as version `api_version` shows it: conversion
/// strategy None changes only apiVersion (objects are stored in the
/// storage version and served in any served one).
pub fn in_version<'a>(obj: &'a Value, api_version: &str) -> std::borrow::Cow<'a, Value> {
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            let mut converted = obj.clone();
            converted["apiVersion"] = json!(api_version);
            std::borrow::Cow::Owned(converted)
        }
        _ => std::borrow::Cow::Borrowed(obj),
    }
}

/// Decoding of a custom resource: pruning (the dropped paths are returned
/// for fieldValidation), typed ObjectMeta, defaults.
pub fn decode(served: &Served, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let dropped = match &served.schema {
        Some(schema) => skiff_api::structural::prune(obj, schema),
        None => Vec::new(),
    };
    if let Some(meta) = obj.get_mut("metadata") {
        let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_json::from_value(meta.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "error decoding {}: metadata: {e}",
                    served.info.kind
                ))
            })?;
        *meta = serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    if let Some(schema) = &served.schema {
        skiff_api::structural::apply_defaults(obj, schema);
    }
    Ok(dropped)
}

/// Schema validation of a custom resource, and its CEL rules (`old`: the
/// stored object on an update, for transition rules).
pub fn validate(served: &Served, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match &served.schema {
        Some(schema) => {
            skiff_api::structural::validate_with_rules(obj, old, schema, served.rules.as_ref())
        }
        None => Vec::new(),
    }
}

/// The Table column definitions of a custom resource: Name, then its
/// printer columns.
pub fn column_definitions(served: &Served) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0,
    })];
    defs.extend(served.columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format,
               "description": c.description, "priority": c.priority})
    }));
    Value::Array(defs)
}

/// The Table cells of one custom resource.
pub fn row_cells(served: &Served, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    use jsonpath_rust::JsonPath;
    let mut cells = vec![json!(str_at(obj, "/metadata/name"))];
    for c in &served.columns {
        let path = if c.json_path.starts_with('.') {
            format!("${}", c.json_path)
        } else {
            format!("$.{}", c.json_path)
        };
        let found = obj
            .query(&path)
            .ok()
            .and_then(|r| r.first().copied().cloned());
        let cell = match (c.type_.as_str(), found) {
            (_, None) => Value::Null,
            ("date", Some(Value::String(s))) => match s.parse::<jiff::Timestamp>() {
                Ok(t) => json!(skiff_api::table::human_duration(now.duration_since(t))),
                Err(_) => json!("<invalid>"),
            },
            ("string", Some(Value::String(s))) => json!(s),
            ("string", Some(other)) => json!(match other {
                Value::Array(_) | Value::Object(_) => other.to_string(),
                v => v.to_string(),
            }),
            ("integer", Some(v)) if v.is_i64() || v.is_u64() => v,
            ("integer", Some(v)) => v
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map_or(Value::Null, |f| json!(f as i64)),
            ("number", Some(v)) if v.is_number() => v,
            ("boolean", Some(v)) if v.is_boolean() => v,
            _ => Value::Null,
        };
        cells.push(cell);
    }
    cells
}

/// Follow definitions in the watch cache: the catalog first (before this
/// returns), then a controller task that keeps their status and deletes
/// the objects of deleted ones.
pub fn start(server: &Arc<ApiServer>) {
    let resources = server.clone();
    crate::cache::follow(&server.cache, PREFIX, move |ev| match ev {
        crate::cache::Followed::Put(o) => {
            let name = o.key.trim_start_matches(PREFIX);
            resources.resources.apply(name, Some(&o.value));
        }
        crate::cache::Followed::Delete(key) => {
            resources
                .resources
                .apply(key.trim_start_matches(PREFIX), None);
        }
    });
    let Some(mut woken) = server
        .resources
        .woken
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let weak: Weak<ApiServer> = Arc::downgrade(server);
    tokio::spawn(async move {
        while let Some(name) = woken.recv().await {
            let Some(server) = weak.upgrade() else { return };
            match reconcile(&server, &name).await {
                Ok(true) => {}
                Ok(false) => retry_later(&weak, name),
                Err(e) => {
                    tracing::warn!(definition = %name, error = %e.message, "custom resource definition");
                    retry_later(&weak, name);
                }
            }
        }
    });
}

fn retry_later(server: &Weak<ApiServer>, name: String) {
    let server = server.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Some(s) = server.upgrade() {
            let _ = s.resources.wake.send(name);
        }
    });
}

/// Bring one definition's status (and, when it is deleted, its objects)
/// to what Kubernetes shows. Ok(false): not finished, try again later.
async fn reconcile(server: &Arc<ApiServer>, name: &str) -> Result<bool, ApiError> {
    let key = format!("{PREFIX}{name}");
    let store_err = |e| ApiError::from_store(e, GROUP, "customresourcedefinitions", name);
    let Some(kv) = server.store.get(&key).await.map_err(store_err)? else {
        return Ok(true);
    };
    let current: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored definition is corrupt: {e}")))?;
    let mut def = current.clone();
    let deleting = def
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let mut finished = true;
    if deleting {
        set_condition(
            &mut def,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
        let group = str_at(&def, "/spec/group").to_string();
        let plural = str_at(&def, "/spec/names/plural").to_string();
        let remaining = delete_objects(server, &format!("/registry/{group}/{plural}/")).await?;
        if remaining == 0 {
            set_condition(
                &mut def,
                "Terminating",
                "False",
                "InstanceDeletionCompleted",
                "removed all instances",
            );
            if let Some(f) = def
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|f| f != CLEANUP_FINALIZER);
            }
        } else {
            finished = false;
        }
    } else {
        match server.resources.accepted(name) {
            Some(Ok(names)) => {
                def["status"]["acceptedNames"] = names;
                set_condition(
                    &mut def,
                    "NamesAccepted",
                    "True",
                    "NoConflicts",
                    "no conflicts found",
                );
                set_condition(
                    &mut def,
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                );
            }
            Some(Err(message)) => {
                if def.pointer("/status/acceptedNames").is_none() {
                    def["status"]["acceptedNames"] = json!({"plural": "", "kind": ""});
                }
                set_condition(&mut def, "NamesAccepted", "False", "NameConflict", &message);
                set_condition(
                    &mut def,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
            // Not in the catalog yet: its event will wake us again.
            None => return Ok(true),
        }
        let storage = def
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .and_then(|vs| {
                vs.iter()
                    .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            })
            .map(|v| str_at(v, "/name").to_string());
        if let Some(storage) = storage {
            let mut stored = strings(def.pointer("/status/storedVersions"));
            if !stored.contains(&storage) {
                stored.push(storage);
            }
            def["status"]["storedVersions"] = json!(stored);
        }
    }
    if def == current {
        return Ok(finished);
    }
    let no_finalizers = def
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty());
    let result = if deleting && no_finalizers {
        server.store.delete(&key, kv.mod_revision).await.map(|_| ())
    } else {
        if let Some(m) = def.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let bytes = serde_json::to_vec(&def).map_err(|e| ApiError::internal(e.to_string()))?;
        server
            .store
            .update(&key, bytes, kv.mod_revision)
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(finished),
        // Changed meanwhile: its event wakes this again.
        Err(skiff_store::StoreError::Conflict { .. } | skiff_store::StoreError::NotFound(_)) => {
            Ok(true)
        }
        Err(e) => Err(store_err(e)),
    }
}

/// Delete every object under `prefix` as a DELETE would (objects with
/// finalizers are marked and stay until their finalizers are removed);
/// returns how many remain.
async fn delete_objects(server: &Arc<ApiServer>, prefix: &str) -> Result<usize, ApiError> {
    server.cache.sync().await?;
    let (objects, _, _) = server.cache.list(prefix, None, 0, |_| true);
    let mut remaining = 0;
    for o in objects {
        let finalizers = o
            .value
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let result = if !finalizers {
            server.store.delete(&o.key, o.revision).await.map(|_| ())
        } else if o
            .value
            .pointer("/metadata/deletionTimestamp")
            .is_none_or(Value::is_null)
        {
            remaining += 1;
            let mut v = o.value.clone();
            v["metadata"]["deletionTimestamp"] = json!(crate::handlers::now_rfc3339());
            v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            set_resource_version(&mut v, 0);
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let bytes = serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?;
            server
                .store
                .update(&o.key, bytes, o.revision)
                .await
                .map(|_| ())
        } else {
            remaining += 1;
            Ok(())
        };
        match result {
            Ok(()) => {}
            Err(
                skiff_store::StoreError::Conflict { .. } | skiff_store::StoreError::NotFound(_),
            ) => {
                remaining += 1;
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
    Ok(remaining)
}

/// The causes of a 422 from field errors.
pub fn causes(errs: &[FieldError]) -> Vec<Cause> {
    errs.iter()
        .map(|e| Cause {
            reason: e.reason().to_string(),
            message: e.message.clone(),
            field: e.field.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontab(name: &str, created: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {
                "group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"cronSpec": {"type": "string"}}}}}},
                     "subresources": {"status": {}},
                     "additionalPrinterColumns": [{"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}]}
                ]
            }
        })
    }

    #[test]
    fn catalog_serves_every_served_version_and_refuses_clashes() {
        let mut defs = BTreeMap::new();
        defs.insert(
            "crontabs.stable.example.com".to_string(),
            crontab("crontabs.stable.example.com", "2026-01-01T00:00:00Z"),
        );
        let mut clash = crontab("crontabs2.stable.example.com", "2026-01-02T00:00:00Z");
        clash["spec"]["names"]["plural"] = json!("crontabs2");
        defs.insert("crontabs2.stable.example.com".to_string(), clash);
        let c = build(&defs);
        let v1 = &c.by_path[&("stable.example.com".into(), "v1".into(), "crontabs".into())];
        assert_eq!(v1.info.kind, "CronTab");
        assert_eq!(v1.info.list_kind, "CronTabList");
        assert_eq!(v1.info.singular, "crontab");
        assert_eq!(v1.info.short_names, &["ct"]);
        assert!(v1.info.has_subresource("status"));
        assert!(v1.info.custom);
        assert_eq!(v1.storage_version, "v1");
        assert_eq!(
            v1.info.key(Some("ns"), "a"),
            "/registry/stable.example.com/crontabs/ns/a"
        );
        assert!(c.by_path.contains_key(&(
            "stable.example.com".into(),
            "v1beta1".into(),
            "crontabs".into()
        )));
        // The younger definition's kind is taken.
        assert_eq!(
            c.accepted["crontabs2.stable.example.com"],
            Err("\"CronTab\" is already in use".to_string())
        );
        assert_eq!(
            c.groups,
            vec![("stable.example.com", vec!["v1", "v1beta1"])]
        );
        // Interned: the same names give the same info.
        let again = build(&defs);
        assert!(std::ptr::eq(
            v1.info,
            again.by_path[&("stable.example.com".into(), "v1".into(), "crontabs".into())].info
        ));
    }

    #[test]
    fn version_priority() {
        let mut vs = vec![
            "v1alpha1", "foo", "v2", "v1beta2", "v1", "v1beta1", "v10", "bar",
        ];
        vs.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            vs,
            vec![
                "v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"
            ]
        );
    }

    #[test]
    fn definition_validation() {
        let good = crontab("crontabs.stable.example.com", "");
        assert!(
            validate_definition(&good, None).is_empty(),
            "{:?}",
            validate_definition(&good, None)
        );
        let mut bad = good.clone();
        bad["metadata"]["name"] = json!("other.stable.example.com");
        bad["spec"]["versions"][0]["storage"] = json!(true);
        let msgs: Vec<String> = validate_definition(&bad, None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("metadata.name: Invalid value")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("must have exactly one version marked as storage version")),
            "{msgs:?}"
        );
        let mut scope = good.clone();
        scope["spec"]["scope"] = json!("Cluster");
        assert_eq!(validate_definition(&scope, Some(&good)).len(), 1);
    }

    #[test]
    fn printer_cells() {
        let mut defs = BTreeMap::new();
        defs.insert(
            "crontabs.stable.example.com".to_string(),
            crontab("crontabs.stable.example.com", "2026-01-01T00:00:00Z"),
        );
        let c = build(&defs);
        let v1 = &c.by_path[&("stable.example.com".into(), "v1".into(), "crontabs".into())];
        let obj = json!({"metadata": {"name": "a"}, "spec": {"cronSpec": "* * * * */5"}});
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            row_cells(v1, &obj, now),
            vec![json!("a"), json!("* * * * */5")]
        );
        assert_eq!(column_definitions(v1)[1]["name"], "Spec");
        let beta = &c.by_path[&(
            "stable.example.com".into(),
            "v1beta1".into(),
            "crontabs".into(),
        )];
        let old = json!({"metadata": {"name": "b", "creationTimestamp": "2025-12-31T23:55:00Z"}});
        assert_eq!(row_cells(beta, &old, now), vec![json!("b"), json!("5m")]);
    }
}
