//! Authorization, and the review APIs that ask it questions.
//!
//! Every authenticated identity is an administrator until RBAC lands (the
//! admin and node tokens are the only credentials), so access reviews answer
//! "allowed" truthfully and rules reviews list everything. The review
//! resources (authorization.k8s.io SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectAccessReview,
//! SelfSubjectRulesReview; authentication.k8s.io TokenReview,
//! SelfSubjectReview) are create-only and never stored, as in
//! kube-apiserver (pkg/registry/authorization, pkg/registry/authentication).

use serde_json::{Value, json};

use crate::state::ApiServer;
use crate::status::{ApiError, Cause};

/// One create-only review resource.
#[derive(Debug)]
pub struct Review {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

const fn review(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Review {
    Review {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
    }
}

/// Every review resource, as discovery lists them.
pub const REVIEWS: &[Review] = &[
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    review(
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
];

/// The review resource a path names, with its namespace
/// (`/apis/authorization.k8s.io/v1/namespaces/ns/localsubjectaccessreviews`).
pub fn find(path: &str) -> Option<(&'static Review, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, namespace, plural) = match segs.as_slice() {
        ["apis", g, v, p] => (*g, *v, None, *p),
        ["apis", g, v, "namespaces", ns, p] => (*g, *v, Some(ns.to_string()), *p),
        _ => return None,
    };
    let r = REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    (r.namespaced == namespace.is_some()).then_some((r, namespace))
}

/// The groups an authenticated user is in, as Kubernetes' authenticators
/// report them.
fn groups_of(user: &str) -> Value {
    if user == "admin" {
        json!(["system:masters", "system:authenticated"])
    } else if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
        let ns = rest.split(':').next().unwrap_or_default();
        json!([
            "system:serviceaccounts",
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated"
        ])
    } else if user.starts_with("system:node:") {
        json!(["system:nodes", "system:authenticated"])
    } else {
        json!(["system:authenticated"])
    }
}

fn invalid(r: &Review, field: &str, reason: &str, message: &str) -> ApiError {
    ApiError::invalid(
        r.group,
        r.kind,
        "",
        vec![Cause {
            reason: reason.into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}

/// Checks a SubjectAccessReviewSpec as kube-apiserver's
/// ValidateSubjectAccessReviewSpec (and the self variant, which has no user).
fn validate_access_spec(r: &Review, spec: &Value, needs_subject: bool) -> Result<(), ApiError> {
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    match (has("resourceAttributes"), has("nonResourceAttributes")) {
        (true, true) => {
            return Err(invalid(
                r,
                "spec.nonResourceAttributes",
                "FieldValueInvalid",
                "Invalid value: \"null\": cannot be specified in combination with resourceAttributes",
            ));
        }
        (false, false) => {
            return Err(invalid(
                r,
                "spec.resourceAttributes",
                "FieldValueInvalid",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        _ => {}
    }
    if needs_subject {
        let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
        let groups = spec
            .get("groups")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        if user.is_empty() && !groups {
            return Err(invalid(
                r,
                "spec.user",
                "FieldValueInvalid",
                "Invalid value: \"\": at least one of user or group must be specified",
            ));
        }
    }
    Ok(())
}

/// Answers a review: the request object with its status filled in.
pub fn answer(
    server: &ApiServer,
    r: &Review,
    namespace: Option<&str>,
    mut body: Value,
    user: &str,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "error decoding {}: the body is not an object",
            r.kind
        )));
    }
    body["apiVersion"] = json!(format!("{}/{}", r.group, r.version));
    body["kind"] = json!(r.kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = json!(crate::handlers::now_rfc3339());
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let allowed = json!({
        "allowed": true,
        "reason": "skiff authorizes every authenticated user (RBAC is not enforced yet)"
    });
    body["status"] = match r.kind {
        "SubjectAccessReview" => {
            validate_access_spec(r, &spec, true)?;
            allowed
        }
        "LocalSubjectAccessReview" => {
            validate_access_spec(r, &spec, true)?;
            let ns = namespace.unwrap_or_default();
            let spec_ns = spec
                .pointer("/resourceAttributes/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if spec
                .get("nonResourceAttributes")
                .is_some_and(|v| !v.is_null())
            {
                return Err(invalid(
                    r,
                    "spec.nonResourceAttributes",
                    "FieldValueInvalid",
                    "Invalid value: \"null\": disallowed on this kind of request",
                ));
            }
            if spec_ns != ns {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
            if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), json!(ns));
            }
            allowed
        }
        "SelfSubjectAccessReview" => {
            validate_access_spec(r, &spec, false)?;
            allowed
        }
        "SelfSubjectRulesReview" => {
            if spec
                .get("namespace")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(invalid(
                    r,
                    "spec.namespace",
                    "FieldValueRequired",
                    "Required value",
                ));
            }
            json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false
            })
        }
        "TokenReview" => {
            let token = spec
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if token.is_empty() {
                return Err(invalid(
                    r,
                    "spec.token",
                    "FieldValueRequired",
                    "Required value",
                ));
            }
            let audiences = spec.get("audiences").cloned().unwrap_or_else(|| json!([]));
            match server.authenticate(token) {
                Some(who) => json!({
                    "authenticated": true,
                    "user": {"username": who, "groups": groups_of(&who)},
                    "audiences": audiences
                }),
                None => {
                    json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                }
            }
        }
        _ => json!({"userInfo": {"username": user, "groups": groups_of(user)}}),
    };
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_reviews() {
        let (r, ns) =
            find("/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews")
                .unwrap();
        assert_eq!(
            (r.kind, ns.as_deref()),
            ("LocalSubjectAccessReview", Some("team"))
        );
        let (r, ns) = find("/apis/authorization.k8s.io/v1/subjectaccessreviews").unwrap();
        assert_eq!((r.kind, ns), ("SubjectAccessReview", None));
        // Cluster-scoped reviews have no namespaced path, and vice versa.
        assert!(find("/apis/authorization.k8s.io/v1/namespaces/a/subjectaccessreviews").is_none());
        assert!(find("/apis/authorization.k8s.io/v1/localsubjectaccessreviews").is_none());
        assert!(find("/apis/authorization.k8s.io/v2/subjectaccessreviews").is_none());
    }

    #[test]
    fn groups_follow_the_identity() {
        assert_eq!(groups_of("admin")[0], "system:masters");
        assert_eq!(
            groups_of("system:serviceaccount:team:builder")[1],
            "system:serviceaccounts:team"
        );
        assert_eq!(groups_of("system:node:n1")[0], "system:nodes");
    }
}
