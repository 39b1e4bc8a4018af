//! The ClusterRole aggregation controller (↔
//! pkg/controller/clusterroleaggregation): a ClusterRole with an
//! `aggregationRule` gets as its rules the union of the rules of every other
//! ClusterRole its selectors match, so that `admin`, `edit` and `view` grow
//! with the roles labelled `rbac.authorization.k8s.io/aggregate-to-*`.
//! Any ClusterRole change re-evaluates every aggregating role, as upstream.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};

use crate::ctrlutil::selector_matches;
use crate::loopkit::{self, Outcome, Store, WorkQueue};

const CONTROLLER: &str = "clusterrole-aggregation";

/// The rules `role` aggregates from `all`: the rules of every other role
/// a selector matches, in role-name order, each rule once.
pub fn aggregated_rules(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .clone()
        .unwrap_or_default();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            selectors
                .iter()
                .any(|s| selector_matches(s, r.metadata.labels.as_ref()))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

pub async fn run(ctx: crate::Context) {
    let queue = Arc::new(WorkQueue::<String>::new());
    let q = queue.clone();
    let (roles, informer) = ctx.informers.get::<ClusterRole>().informer(move |ev, _| {
        if loopkit::event_object(ev).is_some()
            || matches!(ev, kube::runtime::watcher::Event::InitDone)
        {
            // Any role may feed any aggregating role.
            q.add(String::new());
        }
    });
    let client = ctx.client.clone();
    let worker = async {
        if !loopkit::wait_ready(&roles).await {
            return;
        }
        loop {
            let key = queue.next().await;
            let outcome =
                crate::loopkit::guarded(CONTROLLER, &key, reconcile(&client, &roles)).await;
            queue.finish(CONTROLLER, key, outcome);
        }
    };
    tokio::join!(informer, worker);
}

async fn reconcile(client: &kube::Client, roles: &Store<ClusterRole>) -> Outcome {
    let all = roles.state();
    let api: Api<ClusterRole> = Api::all(client.clone());
    for role in &all {
        let Some(rules) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.rules.clone().unwrap_or_default() == rules {
            continue;
        }
        let name = role.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"rules": rules});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(role = %name, rules = rules.len(), "aggregated ClusterRole rules")
            }
            Err(e) if loopkit::is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn unions_the_selected_roles_rules_once_in_name_order() {
        let view = role(serde_json::json!({"metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}));
        let b = role(
            serde_json::json!({"metadata": {"name": "b", "labels": {"agg": "view"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        let a = role(
            serde_json::json!({"metadata": {"name": "a", "labels": {"agg": "view"}},
            "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]},
                      {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        let other = role(serde_json::json!({"metadata": {"name": "c"},
            "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}));
        let all = vec![view.clone(), b, a, other.clone()];
        let rules = aggregated_rules(&view, &all).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].verbs, vec!["list"]);
        assert_eq!(rules[1].verbs, vec!["get"]);
        assert!(aggregated_rules(&other, &all).is_none(), "not aggregating");
    }
}
