//! API errors, and the one place they become a Kubernetes `Status`.

use serde_json::{Value, json};
use skiff_store::StoreError;

/// A field-level cause of an Invalid or BadRequest error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// An error answered to a client as a `Status` (metav1.Status).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    /// metav1.StatusReason: NotFound, AlreadyExists, Conflict, Invalid, ...
    pub reason: &'static str,
    pub message: String,
    /// (group, kind, name) for details.
    pub details: Option<(String, String, String)>,
    pub causes: Vec<Cause>,
    pub retry_after: Option<u32>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// "pods" or "deployments.apps", as Kubernetes names a resource in messages.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        let mut e = ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        );
        e.details = Some((group.to_string(), plural.to_string(), name.to_string()));
        e
    }

    /// A 404 for a path that is not served at all.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        let mut e = ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        );
        e.details = Some((group.to_string(), plural.to_string(), name.to_string()));
        e
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> ApiError {
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        );
        e.details = Some((group.to_string(), plural.to_string(), name.to_string()));
        e
    }

    pub fn modified(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let detail: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let detail = if detail.len() == 1 {
            detail[0].clone()
        } else {
            format!("[{}]", detail.join(", "))
        };
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {detail}", qualified(group, kind)),
        );
        e.details = Some((group.to_string(), kind.to_string(), name.to_string()));
        e.causes = causes;
        e
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 406: nothing in the Accept header can be served.
    pub fn not_acceptable() -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            "the server was unable to respond with a content type that the client supports",
        )
    }

    pub fn too_large() -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large: limit is 3145728 bytes",
        )
    }

    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got {ct}"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.details.is_some() || !self.causes.is_empty() || self.retry_after.is_some() {
            let mut details = json!({});
            if let Some((group, kind, name)) = &self.details {
                details["name"] = json!(name);
                if !group.is_empty() {
                    details["group"] = json!(group);
                }
                details["kind"] = json!(kind);
            }
            if !self.causes.is_empty() {
                details["causes"] = Value::Array(
                    self.causes
                        .iter()
                        .map(
                            |c| json!({"reason": c.reason, "message": c.message, "field": c.field}),
                        )
                        .collect(),
                );
            }
            if let Some(s) = self.retry_after {
                details["retryAfterSeconds"] = json!(s);
            }
            status["details"] = details;
        }
        status
    }

    /// The `Status` object in protobuf (`k8s\0` + runtime.Unknown of a
    /// meta.k8s.io/v1 Status), for clients that negotiated protobuf.
    pub fn to_status_protobuf(&self) -> Option<Vec<u8>> {
        skiff_api::protobuf::encode(&self.to_status()).ok()
    }

    /// Map a store error for the object (group, plural, name).
    pub fn from_store(e: StoreError, group: &str, plural: &str, name: &str) -> ApiError {
        match e {
            StoreError::AlreadyExists(_) => ApiError::already_exists(group, plural, name),
            StoreError::NotFound(_) => ApiError::not_found(group, plural, name),
            StoreError::Conflict { .. } => ApiError::modified(group, plural, name),
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::FutureRevision(r) => {
                let mut e =
                    ApiError::new(504, "Timeout", format!("Too large resource version: {r}"));
                e.retry_after = Some(1);
                e
            }
            StoreError::Unavailable(m) => {
                ApiError::unavailable(format!("storage is unavailable: {m}"))
            }
            StoreError::Backend(m) => ApiError::internal(m),
        }
    }
}

/// A Status for successful deletes of kinds that answer with one.
pub fn success_status(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": plural, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_shapes() {
        let s = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["group"], "apps");
        let inv = ApiError::invalid(
            "",
            "Pod",
            "p",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers".into(),
            }],
        )
        .to_status();
        assert_eq!(
            inv["message"],
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        assert_eq!(inv["details"]["causes"][0]["field"], "spec.containers");
    }

    #[test]
    fn status_in_protobuf() {
        let mut e = ApiError::not_found("apps", "deployments", "web");
        e.retry_after = Some(3);
        e.causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "bad".into(),
            field: "spec".into(),
        });
        let body = e.to_status_protobuf().unwrap();
        assert!(body.starts_with(b"k8s\0"));
        assert_eq!(skiff_api::protobuf::decode(&body).unwrap(), e.to_status());
        let ok = success_status("", "configmaps", "x", "u");
        assert_eq!(
            skiff_api::protobuf::decode(&skiff_api::protobuf::encode(&ok).unwrap()).unwrap(),
            ok
        );
    }
}
