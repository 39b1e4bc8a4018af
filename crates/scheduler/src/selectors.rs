//! Label selectors and node selector terms as the scheduler evaluates them
//! (↔ apimachinery's labels.Selector and component-helpers' nodeaffinity).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
            Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Op::Lt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

/// A label selector. `nothing` selects no object (a nil selector in an
/// affinity term, or one that failed to parse); an empty one selects all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub reqs: Vec<Requirement>,
    pub nothing: bool,
}

impl Selector {
    pub fn nothing() -> Selector {
        Selector {
            reqs: Vec::new(),
            nothing: true,
        }
    }

    pub fn everything() -> Selector {
        Selector::default()
    }

    /// From a metav1.LabelSelector; None selects nothing.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector::nothing();
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" if !values.is_empty() => Op::In(values),
                "NotIn" if !values.is_empty() => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Selector::nothing(),
            };
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
        Selector {
            reqs,
            nothing: false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }

    pub fn is_everything(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }
}

/// One parsed node selector term: label expressions and field expressions
/// (metadata.name only), all of which must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTerm {
    pub labels: Vec<Requirement>,
    pub fields: Vec<Requirement>,
    /// A term with no requirement, or an invalid one, matches no node.
    pub matches_nothing: bool,
}

fn node_requirement(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let values = r.values.clone().unwrap_or_default();
    let op = match r.operator.as_str() {
        "In" if !values.is_empty() => Op::In(values),
        "NotIn" if !values.is_empty() => Op::NotIn(values),
        "Exists" if values.is_empty() => Op::Exists,
        "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
        "Gt" if values.len() == 1 => Op::Gt(values[0].parse().ok()?),
        "Lt" if values.len() == 1 => Op::Lt(values[0].parse().ok()?),
        _ => return None,
    };
    Some(Requirement {
        key: r.key.clone(),
        op,
    })
}

impl NodeTerm {
    pub fn parse(t: &NodeSelectorTerm) -> NodeTerm {
        let mut term = NodeTerm {
            labels: Vec::new(),
            fields: Vec::new(),
            matches_nothing: false,
        };
        for r in t.match_expressions.iter().flatten() {
            match node_requirement(r) {
                Some(req) => term.labels.push(req),
                None => term.matches_nothing = true,
            }
        }
        for r in t.match_fields.iter().flatten() {
            match node_requirement(r) {
                Some(req)
                    if req.key == "metadata.name" && matches!(req.op, Op::In(_) | Op::NotIn(_)) =>
                {
                    term.fields.push(req)
                }
                _ => term.matches_nothing = true,
            }
        }
        if term.labels.is_empty() && term.fields.is_empty() {
            term.matches_nothing = true;
        }
        term
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if self.matches_nothing {
            return false;
        }
        if !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        if !self.fields.is_empty() {
            let fields: Labels = [("metadata.name".to_string(), node_name.to_string())].into();
            if !self.fields.iter().all(|r| r.matches(&fields)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}, {"key": "env", "operator": "Exists"}]
        }))
        .unwrap();
        let s = Selector::from_label_selector(Some(&sel));
        let cases = [
            (labels(&[("app", "web"), ("env", "x")]), true),
            (
                labels(&[("app", "web"), ("env", "x"), ("tier", "db")]),
                false,
            ),
            (labels(&[("app", "web")]), false),
            (labels(&[("app", "api"), ("env", "x")]), false),
        ];
        for (l, want) in cases {
            assert_eq!(s.matches(&l), want, "{l:?}");
        }
        assert!(!Selector::from_label_selector(None).matches(&labels(&[])));
        assert!(
            Selector::from_label_selector(Some(&LabelSelector::default()))
                .matches(&labels(&[("a", "b")]))
        );
        let bad: LabelSelector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
        )
        .unwrap();
        assert!(!Selector::from_label_selector(Some(&bad)).matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn node_terms() {
        let term = |v: serde_json::Value| NodeTerm::parse(&serde_json::from_value(v).unwrap());
        let t = term(
            json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}, {"key": "zone", "operator": "In", "values": ["a", "b"]}]}),
        );
        assert!(t.matches("n", &labels(&[("cores", "8"), ("zone", "a")])));
        assert!(!t.matches("n", &labels(&[("cores", "4"), ("zone", "a")])));
        assert!(!t.matches("n", &labels(&[("cores", "8"), ("zone", "c")])));
        let t = term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
        );
        assert!(t.matches("n1", &labels(&[])));
        assert!(!t.matches("n2", &labels(&[])));
        assert!(!term(json!({})).matches("n1", &labels(&[])));
        assert!(
            !term(json!({"matchExpressions": [{"key": "a", "operator": "Lt", "values": ["x"]}]}))
                .matches("n1", &labels(&[("a", "1")]))
        );
    }
}
