//! Authorization. Every authenticated identity is an administrator until
//! RBAC lands (the admin and node tokens are the only credentials), so
//! self reviews answer "allowed" and name the caller as Kubernetes'
//! admin group does.

use serde_json::{Value, json};

/// Answer a SelfSubjectAccessReview or SelfSubjectReview.
pub fn review(kind: &str, mut body: Value, user: &str) -> Value {
    let group = if kind == "SelfSubjectAccessReview" {
        "authorization.k8s.io/v1"
    } else {
        "authentication.k8s.io/v1"
    };
    if !body.is_object() {
        body = json!({});
    }
    body["apiVersion"] = json!(group);
    body["kind"] = json!(kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = json!(crate::handlers::now_rfc3339());
    body["status"] = match kind {
        "SelfSubjectAccessReview" => {
            json!({"allowed": true, "reason": "skiff authorizes every authenticated user (RBAC is not enforced yet)"})
        }
        _ => {
            let groups = if user == "admin" {
                json!(["system:masters", "system:authenticated"])
            } else if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
                let ns = rest.split(':').next().unwrap_or_default();
                json!([
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{ns}"),
                    "system:authenticated"
                ])
            } else {
                json!(["system:authenticated"])
            };
            json!({"userInfo": {"username": user, "groups": groups}})
        }
    };
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews() {
        let r = review(
            "SelfSubjectAccessReview",
            json!({"spec": {"resourceAttributes": {"verb": "create", "resource": "pods"}}}),
            "admin",
        );
        assert_eq!(r["status"]["allowed"], true);
        assert_eq!(r["spec"]["resourceAttributes"]["verb"], "create");
        let w = review("SelfSubjectReview", json!({}), "admin");
        assert_eq!(w["status"]["userInfo"]["username"], "admin");
        let sa = review(
            "SelfSubjectReview",
            json!({}),
            "system:serviceaccount:team:builder",
        );
        assert_eq!(
            sa["status"]["userInfo"]["groups"][1],
            "system:serviceaccounts:team"
        );
    }
}
