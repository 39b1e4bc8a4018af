//! Patch and apply at the API boundary: picks the patch type from the
//! Content-Type and turns patch errors into Status errors. The algorithms
//! live in `skiff_api::patch` and `skiff_api::apply`.

use serde_json::Value;
use skiff_api::registry::ResourceInfo;

use crate::handlers::now_rfc3339;
use crate::status::{ApiError, Cause};

/// Apply a JSON, merge or strategic merge patch to `current`.
/// `scale` is true for the autoscaling/v1 Scale of a resource (no strategic keys).
pub fn apply_patch(
    info: &ResourceInfo,
    media: &str,
    current: &Value,
    patch: &Value,
    scale: bool,
) -> Result<Value, ApiError> {
    let result = match media {
        "application/json-patch+json" => skiff_api::patch::json_patch(current, patch),
        "application/merge-patch+json" => skiff_api::patch::merge_patch(current, patch),
        "application/strategic-merge-patch+json" if info.custom && !scale => {
            // As kube-apiserver: custom resources have no patch strategies.
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        "application/strategic-merge-patch+json" => {
            if scale {
                skiff_api::patch::merge_patch(current, patch)
            } else {
                skiff_api::patch::strategic_merge_patch(current, patch, &(info.patch_schema)())
            }
        }
        "application/apply-patch+yaml" => {
            return Err(ApiError::unsupported_media_type(
                "application/apply-patch+yaml is not supported on this subresource",
            ));
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {other}"
                ),
            ));
        }
    };
    result.map_err(|e| match e {
        // ↔ errors.NewRequestEntityTooLargeError in the patcher.
        skiff_api::patch::PatchError::TooManyOperations(_) => {
            ApiError::new(413, "RequestEntityTooLarge", e.to_string())
        }
        e => ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        ),
    })
}

/// Server-side apply of `applied` by `manager` over `live`.
pub fn server_side_apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    skiff_api::apply::apply(live, applied, manager, force, &now_rfc3339()).map_err(|e| {
        let mut err = ApiError::new(e.code(), e.reason(), e.message());
        err.causes = e
            .causes()
            .into_iter()
            .map(|c| Cause {
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
                field: c.field.unwrap_or_default(),
            })
            .collect();
        if e.code() == 409 {
            err.details = Some((
                info.group.to_string(),
                info.plural.to_string(),
                crate::handlers::name_of(applied).to_string(),
            ));
        }
        err
    })
}
