//! Label and field selectors, parsed from the query-string syntax kubectl
//! sends (`app=web,tier!=db,env in (a,b),!legacy`, `spec.nodeName=n1`).

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(want), Some(v)) => v == want,
            (Op::Eq(_), None) => false,
            (Op::NotEq(want), Some(v)) => v != want,
            (Op::NotEq(_), None) => true,
            (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Op::In(_), None) => false,
            (Op::NotIn(set), Some(v)) => !set.iter().any(|s| s == v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::NotExists, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Parse(format!("{whole}: expected a set in parentheses")))?;
    Ok(inner
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError::Parse(format!("{s}: empty requirement")));
            }
            reqs.push(parse_label_requirement(part)?);
        }
        Ok(LabelSelector { reqs })
    }

    /// From a metav1.LabelSelector object (matchLabels + matchExpressions).
    pub fn from_object(sel: &Value) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str().unwrap_or_default().to_string()),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::NotExists,
                    other => {
                        return Err(SelectorError::Parse(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                };
                reqs.push(Requirement { key, op });
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
    }

    /// Match against an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.reqs.is_empty() {
            return true;
        }
        // Direct lookups: `pointer` allocates per path segment, and this
        // runs once per object a LIST walks.
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.reqs
            .iter()
            .all(|r| r.matches(labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str)))
    }
}

fn parse_label_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement {
            key: key.trim().to_string(),
            op: Op::NotExists,
        });
    }
    for (sep, kind) in [("!=", 0), ("==", 1), ("=", 1)] {
        if let Some((k, v)) = part.split_once(sep) {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.is_empty() {
                return Err(SelectorError::Parse(format!("{part}: missing key")));
            }
            return Ok(Requirement {
                key: k,
                op: if kind == 0 { Op::NotEq(v) } else { Op::Eq(v) },
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim().to_string();
        let rest = words[1].trim();
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(Requirement {
                key,
                op: Op::NotIn(parse_set(r, part)?),
            });
        }
        if let Some(r) = rest.strip_prefix("in") {
            return Ok(Requirement {
                key,
                op: Op::In(parse_set(r, part)?),
            });
        }
        return Err(SelectorError::Parse(format!("{part}: unknown operator")));
    }
    for (sep, gt) in [(">", true), ("<", false)] {
        if let Some((k, v)) = part.split_once(sep) {
            let n = v
                .trim()
                .parse::<i64>()
                .map_err(|_| SelectorError::Parse(format!("{part}: not an integer")))?;
            return Ok(Requirement {
                key: k.trim().to_string(),
                op: if gt { Op::Gt(n) } else { Op::Lt(n) },
            });
        }
    }
    if part.contains(['(', ')', ' ']) {
        return Err(SelectorError::Parse(part.to_string()));
    }
    Ok(Requirement {
        key: part.to_string(),
        op: Op::Exists,
    })
}

/// A parsed field selector (`=`, `==`, `!=` only, as Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<FieldRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    req: Requirement,
    /// The value the field has when the object leaves it out: Kubernetes
    /// computes field sets from the object with defaults applied
    /// (`strconv.FormatBool(node.Spec.Unschedulable)` is "false" for a node
    /// without the field).
    default: &'static str,
}

/// One selectable field of a resource and its value when absent.
type Field = (&'static str, &'static str);

const NAME: Field = ("metadata.name", "");
const NAMESPACE: Field = ("metadata.namespace", "");

/// The fields a resource can be selected by, as kube-apiserver registers
/// them (pkg/registry/*/strategy.go `ToSelectableFields` and the field label
/// conversion functions): metadata.name and metadata.namespace for every
/// namespaced resource without its own set, metadata.name alone for
/// cluster-scoped ones.
fn selectable_fields(group: &str, kind: &str, namespaced: bool) -> &'static [Field] {
    match (group, kind) {
        ("", "Pod") => &[
            NAME,
            NAMESPACE,
            ("spec.nodeName", ""),
            ("spec.restartPolicy", ""),
            ("spec.schedulerName", ""),
            ("spec.serviceAccountName", ""),
            ("spec.hostNetwork", "false"),
            ("status.phase", ""),
            ("status.podIP", ""),
            ("status.nominatedNodeName", ""),
        ],
        ("", "Event") => &[
            NAME,
            NAMESPACE,
            ("involvedObject.kind", ""),
            ("involvedObject.namespace", ""),
            ("involvedObject.name", ""),
            ("involvedObject.uid", ""),
            ("involvedObject.apiVersion", ""),
            ("involvedObject.resourceVersion", ""),
            ("involvedObject.fieldPath", ""),
            ("reason", ""),
            ("reportingComponent", ""),
            ("source", ""),
            ("type", ""),
        ],
        ("events.k8s.io", "Event") => &[
            NAME,
            NAMESPACE,
            ("regarding.kind", ""),
            ("regarding.namespace", ""),
            ("regarding.name", ""),
            ("regarding.uid", ""),
            ("regarding.apiVersion", ""),
            ("regarding.resourceVersion", ""),
            ("regarding.fieldPath", ""),
            ("reason", ""),
            ("reportingController", ""),
            ("type", ""),
        ],
        ("", "Node") => &[NAME, ("spec.unschedulable", "false")],
        ("", "Namespace") => &[NAME, ("status.phase", "")],
        ("", "Secret") => &[NAME, NAMESPACE, ("type", "")],
        ("", "Service") => &[NAME, NAMESPACE, ("spec.clusterIP", ""), ("spec.type", "")],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            &[NAME, NAMESPACE, ("status.replicas", "0")]
        }
        ("batch", "Job") => &[NAME, NAMESPACE, ("status.successful", "0")],
        ("certificates.k8s.io", "CertificateSigningRequest") => &[NAME, ("spec.signerName", "")],
        _ if namespaced => &[NAME, NAMESPACE],
        _ => &[NAME],
    }
}

impl FieldSelector {
    /// Parses a field selector for a resource; a field the resource does not
    /// register fails with Kubernetes' `field label not supported` message.
    pub fn parse(
        s: &str,
        group: &str,
        kind: &str,
        namespaced: bool,
    ) -> Result<FieldSelector, SelectorError> {
        Self::parse_with(s, group, kind, namespaced, &[])
    }

    /// As [`FieldSelector::parse`], with more selectable fields (a custom
    /// resource's `selectableFields`, as "spec.color").
    pub fn parse_with(
        s: &str,
        group: &str,
        kind: &str,
        namespaced: bool,
        extra: &[String],
    ) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        let fields = selectable_fields(group, kind, namespaced);
        for part in s.split(',') {
            let part = part.trim();
            let (key, op) = if let Some((k, v)) = part.split_once("!=") {
                (k, Op::NotEq(v.to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k, Op::Eq(v.to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k, Op::Eq(v.to_string()))
            } else {
                return Err(SelectorError::Parse(format!(
                    "invalid field selector: {part}"
                )));
            };
            let key = key.trim();
            let default = match fields.iter().find(|(f, _)| *f == key) {
                Some(&(_, default)) => default,
                None if extra.iter().any(|f| f == key) => "",
                None => return Err(SelectorError::UnsupportedField(key.to_string())),
            };
            reqs.push(FieldRequirement {
                req: Requirement {
                    key: key.to_string(),
                    op,
                },
                default,
            });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The single name this selector pins, if any (`metadata.name=x`).
    pub fn name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find_map(|r| match (&r.req.key[..], &r.req.op) {
                ("metadata.name", Op::Eq(v)) => Some(v.as_str()),
                _ => None,
            })
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let mut value = field_value(obj, &r.req.key);
            // An Event's `source` is its reporting component when it has no
            // source (one written through events.k8s.io), as the event
            // strategy's field set computes it.
            if r.req.key == "source" && value.as_deref().is_none_or(str::is_empty) {
                value = field_value(obj, "reportingComponent");
            }
            r.req.matches(Some(value.as_deref().unwrap_or(r.default)))
        })
    }
}

/// The string form of a dotted field path of an object.
pub fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) if path == "source" => o
            .get("component")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let cases: &[(&str, &[(&str, &str)], bool)] = &[
            ("", &[], true),
            ("app=web", &[("app", "web")], true),
            ("app==web", &[("app", "db")], false),
            ("app!=web", &[], true),
            (
                "app in (web, db),tier",
                &[("app", "db"), ("tier", "x")],
                true,
            ),
            ("app notin (web)", &[("app", "web")], false),
            ("!legacy", &[("legacy", "1")], false),
            ("app,!legacy", &[("app", "x")], true),
            ("n>3", &[("n", "5")], true),
            ("n<3", &[("n", "5")], false),
        ];
        for (sel, l, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&labels(l)), *want, "{sel} on {l:?}");
        }
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a,,b").is_err());
    }

    #[test]
    fn label_selector_from_object() {
        let s = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web", "tier": "a"}}})));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("spec.nodeName=", "", "Pod", true).unwrap();
        assert!(s.matches_object(&pod));
        let s =
            FieldSelector::parse("metadata.name=p,status.phase!=Failed", "", "Pod", true).unwrap();
        assert!(s.matches_object(&pod));
        assert_eq!(s.name(), Some("p"));
        assert_eq!(
            FieldSelector::parse("spec.bogus=1", "", "Pod", true),
            Err(SelectorError::UnsupportedField("spec.bogus".into()))
        );
        let ev = json!({"involvedObject": {"name": "p", "kind": "Pod"}, "source": {"component": "kubelet"}});
        assert!(
            FieldSelector::parse("involvedObject.name=p,source=kubelet", "", "Event", true)
                .unwrap()
                .matches_object(&ev)
        );
    }

    #[test]
    fn field_selectors_see_defaults() {
        // kube-apiserver computes field sets with defaults applied: a node
        // without spec.unschedulable is schedulable ("false").
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        let cordoned = json!({"metadata": {"name": "c"}, "spec": {"unschedulable": true}});
        let s = FieldSelector::parse("spec.unschedulable=false", "", "Node", false).unwrap();
        assert!(s.matches_object(&node));
        assert!(!s.matches_object(&cordoned));
        let s = FieldSelector::parse("spec.unschedulable!=true", "", "Node", false).unwrap();
        assert!(s.matches_object(&node));
        let pod = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.hostNetwork=false", "", "Pod", true)
                .unwrap()
                .matches_object(&pod)
        );
        let rs = json!({"metadata": {"name": "r"}, "status": {}});
        assert!(
            FieldSelector::parse("status.replicas=0", "apps", "ReplicaSet", true)
                .unwrap()
                .matches_object(&rs)
        );
        assert!(
            FieldSelector::parse("status.successful=0", "batch", "Job", true)
                .unwrap()
                .matches_object(&rs)
        );
    }

    #[test]
    fn field_sets_are_per_resource() {
        // Cluster-scoped resources have no metadata.namespace field.
        assert_eq!(
            FieldSelector::parse("metadata.namespace=x", "", "Node", false),
            Err(SelectorError::UnsupportedField("metadata.namespace".into()))
        );
        assert!(FieldSelector::parse("metadata.name=x", "", "Node", false).is_ok());
        assert!(FieldSelector::parse("metadata.namespace=x", "apps", "Deployment", true).is_ok());
        assert!(FieldSelector::parse("spec.type=NodePort", "", "Service", true).is_ok());
        assert_eq!(
            FieldSelector::parse("spec.replicas=1", "apps", "Deployment", true),
            Err(SelectorError::UnsupportedField("spec.replicas".into()))
        );
    }
}
