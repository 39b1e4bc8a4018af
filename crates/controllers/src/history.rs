//! ControllerRevisions (↔ pkg/controller/history and the DaemonSet and
//! StatefulSet controllers' use of it): a revision stores the pod template
//! as the patch `{"spec":{"template":{..., "$patch":"replace"}}}`, carries a
//! hash of it, and is numbered; old ones are pruned beyond the owner's
//! revisionHistoryLimit unless a live pod still uses them.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::ctrlutil::{Result, controller_ref, is_not_found};
use crate::workload::Object;

/// The label pods (and DaemonSet revisions) carry: the DaemonSet's template
/// hash, or the StatefulSet's revision name.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label every ControllerRevision carries with its hash.
pub const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The revision data of a pod template (↔ getPatch).
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    } else {
        t = json!({"$patch": "replace"});
    }
    json!({"spec": {"template": t}})
}

/// The pod template stored in a revision.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// JSON with nulls and empty maps/lists dropped (nil and empty compare equal).
pub fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(o) => !o.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Whether a revision stores `data` (↔ history.EqualRevision).
pub fn equal_data(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data
        .as_ref()
        .is_some_and(|d| normalized(&d.0) == normalized(data))
}

/// FNV-1a (32 bit) of the data and the collision count, encoded with
/// Kubernetes' safe alphabet (↔ HashControllerRevision).
pub fn hash_data(data: &Value, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    write(&serde_json::to_vec(&normalized(data)).unwrap_or_default());
    if let Some(c) = collision_count {
        write(c.to_string().as_bytes());
    }
    safe_encode(&hash.to_string())
}

/// rand.SafeEncodeString: map each byte into an alphabet without vowels.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The highest revision number, 0 if none.
pub fn max_revision<'a>(revs: impl IntoIterator<Item = &'a ControllerRevision>) -> i64 {
    revs.into_iter().map(|r| r.revision).max().unwrap_or(0)
}

/// Revisions sorted oldest first (by revision number, then creation, then name).
pub fn sort_revisions(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// A new revision of `owner` (not yet created).
pub fn new_revision<O: Object>(
    owner: &O,
    name: String,
    hash: &str,
    labels: BTreeMap<String, String>,
    data: Value,
    revision: i64,
) -> ControllerRevision {
    let mut labels = labels;
    labels.insert(REVISION_HASH_LABEL.into(), hash.to_string());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: owner.meta().annotations.clone(),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

pub fn api(client: &kube::Client, ns: &str) -> Api<ControllerRevision> {
    Api::namespaced(client.clone(), ns)
}

/// Set a revision's number (↔ UpdateControllerRevision).
pub async fn renumber(
    client: &kube::Client,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision> {
    if rev.revision == revision {
        return Ok(rev.clone());
    }
    let mut r = rev.clone();
    r.revision = revision;
    let ns = rev.namespace().unwrap_or_default();
    Ok(api(client, &ns)
        .replace(&rev.name_any(), &PostParams::default(), &r)
        .await?)
}

/// Delete old revisions beyond `limit`, oldest first, sparing those in
/// `live` (names used by pods or the status) (↔ truncateHistory).
pub async fn truncate(
    client: &kube::Client,
    old: &[ControllerRevision],
    live: &HashSet<String>,
    limit: i32,
) -> Result<()> {
    let mut candidates: Vec<ControllerRevision> = old
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .cloned()
        .collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if candidates.len() <= limit {
        return Ok(());
    }
    sort_revisions(&mut candidates);
    let excess = candidates.len() - limit;
    for r in candidates.iter().take(excess) {
        let ns = r.namespace().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: r.meta().uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api(client, &ns).delete(&r.name_any(), &dp).await {
            Ok(_) => tracing::debug!(revision = %r.name_any(), "deleted old controller revision"),
            Err(e) if is_not_found(&e) || crate::ctrlutil::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn patches_round_trip_and_hash_stably() {
        let t = template("nginx:1");
        let data = template_patch(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision {
            data: Some(RawExtension(data.clone())),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t.clone()));
        assert!(equal_data(&rev, &template_patch(&t)));
        assert!(!equal_data(&rev, &template_patch(&template("nginx:2"))));
        let h = hash_data(&data, None);
        assert_eq!(h, hash_data(&data, None));
        assert_ne!(h, hash_data(&data, Some(1)));
        assert_ne!(h, hash_data(&template_patch(&template("nginx:2")), None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn sorting_and_max() {
        let r = |name: &str, n: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            revision: n,
            ..Default::default()
        };
        let mut revs = vec![r("c", 3), r("a", 1), r("b", 2)];
        assert_eq!(max_revision(&revs), 3);
        sort_revisions(&mut revs);
        assert_eq!(
            revs.iter().map(|r| r.name_any()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(max_revision(&[]), 0);
    }
}
