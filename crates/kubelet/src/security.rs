//! What the kubelet makes of a container's security context before it
//! asks the runtime for it (↔ pkg/securitycontext's
//! DetermineEffectiveSecurityContext, and pkg/kubelet/kuberuntime's
//! verifyRunAsNonRoot and getSeccompProfile): the pod's settings with
//! the container's on top, the runAsNonRoot check against the image's
//! user, and the seccomp profile passed to CRI.

use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};

use crate::runtime::SecurityProfile;

/// The container's security context with the pod's runAsUser,
/// runAsGroup, runAsNonRoot, seLinuxOptions and windowsOptions beneath
/// it (↔ DetermineEffectiveSecurityContext).
pub fn effective(pod: &Pod, c: &Container) -> SecurityContext {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let mut sc = c.security_context.clone().unwrap_or_default();
    sc.run_as_user = sc.run_as_user.or(psc.run_as_user);
    sc.run_as_group = sc.run_as_group.or(psc.run_as_group);
    sc.run_as_non_root = sc.run_as_non_root.or(psc.run_as_non_root);
    sc.se_linux_options = sc.se_linux_options.or(psc.se_linux_options);
    sc.windows_options = sc.windows_options.or(psc.windows_options);
    sc
}

/// The user an image runs as, as CRI's ImageStatus reports it: a numeric
/// uid, or a user name; neither means root (↔ getImageUser).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageUser {
    pub uid: Option<i64>,
    pub username: String,
}

/// Refuse a container with runAsNonRoot whose effective user is root, or
/// cannot be known to be non-root, with the kubelet's messages (↔
/// verifyRunAsNonRoot; the caller reports CreateContainerConfigError).
pub fn verify_run_as_non_root(pod: &Pod, c: &Container, image: &ImageUser) -> Result<(), String> {
    let sc = effective(pod, c);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_key = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    if let Some(user) = sc.run_as_user {
        if user == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_key:?}, container: {})",
                c.name
            ));
        }
        return Ok(());
    }
    // No user in the image at all: it runs as root.
    let uid = match (image.uid, image.username.is_empty()) {
        (None, true) => Some(0),
        (uid, _) => uid,
    };
    match uid {
        None => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root (pod: {pod_key:?}, container: {})",
            image.username, c.name
        )),
        Some(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod_key:?}, container: {})",
            c.name
        )),
        Some(uid) if !(0..=i64::from(i32::MAX)).contains(&uid) => Err(format!(
            "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({})): must be between 0 and {}, inclusive (pod: {pod_key:?}, container: {})",
            i32::MAX,
            i32::MAX,
            c.name
        )),
        Some(_) => Ok(()),
    }
}

/// The seccomp profile of a container (`container` Some) or of the
/// sandbox (None): the container's field, else the pod's, else
/// Unconfined, as the kubelet without --seccomp-default (↔
/// getSeccompProfile). Localhost profiles are files under `root`.
pub fn seccomp_profile(
    pod: &Pod,
    container: Option<&Container>,
    root: &Path,
) -> Result<SecurityProfile, String> {
    let from_container = container
        .and_then(|c| c.security_context.as_ref())
        .and_then(|sc| sc.seccomp_profile.as_ref());
    let from_pod = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|psc: &PodSecurityContext| psc.seccomp_profile.as_ref());
    match from_container.or(from_pod) {
        None => Ok(SecurityProfile::Unconfined),
        Some(p) => field_profile(p, root),
    }
}

fn field_profile(p: &SeccompProfile, root: &Path) -> Result<SecurityProfile, String> {
    match p.type_.as_str() {
        "RuntimeDefault" => Ok(SecurityProfile::RuntimeDefault),
        "Localhost" => match p.localhost_profile.as_deref() {
            // Validation refuses these; the kubelet never reads a profile
            // outside its directory all the same.
            Some(name) if name.starts_with('/') || name.split('/').any(|c| c == "..") => Err(
                format!("localhostProfile {name:?} must be a relative path without '..'"),
            ),
            Some(name) if !name.is_empty() => Ok(SecurityProfile::Localhost(
                root.join(name).display().to_string(),
            )),
            _ => Err("localhostProfile must be set if seccompProfile type is Localhost.".into()),
        },
        _ => Ok(SecurityProfile::Unconfined),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn check(spec: serde_json::Value, image: ImageUser) -> Result<(), String> {
        let p = pod(spec);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        verify_run_as_non_root(&p, &c, &image)
    }

    fn root() -> ImageUser {
        ImageUser::default()
    }

    fn uid(u: i64) -> ImageUser {
        ImageUser {
            uid: Some(u),
            username: String::new(),
        }
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_effective_user() {
        let c = |sc: serde_json::Value| json!({"containers": [{"name": "app", "image": "i", "securityContext": sc}]});
        // Not asked for: anything goes.
        assert_eq!(check(c(json!({})), root()), Ok(()));
        assert_eq!(check(c(json!({"runAsNonRoot": false})), root()), Ok(()));
        // An image without a user runs as root.
        assert_eq!(
            check(c(json!({"runAsNonRoot": true})), root()),
            Err("container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: app)".into())
        );
        assert_eq!(
            check(c(json!({"runAsNonRoot": true})), uid(0)),
            Err("container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: app)".into())
        );
        assert_eq!(check(c(json!({"runAsNonRoot": true})), uid(1000)), Ok(()));
        assert_eq!(
            check(
                c(json!({"runAsNonRoot": true})),
                ImageUser {
                    uid: None,
                    username: "nobody".into()
                }
            ),
            Err("container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"p_ns(u1)\", container: app)".into())
        );
        assert!(
            check(c(json!({"runAsNonRoot": true})), uid(1 << 40))
                .unwrap_err()
                .starts_with("container has runAsNonRoot and image has an invalid user id (1099511627776). (Must be 1-(2147483647))")
        );
        // runAsUser decides over the image.
        assert_eq!(
            check(c(json!({"runAsNonRoot": true, "runAsUser": 1000})), root()),
            Ok(())
        );
        assert_eq!(
            check(c(json!({"runAsNonRoot": true, "runAsUser": 0})), uid(1000)),
            Err(
                "container's runAsUser breaks non-root policy (pod: \"p_ns(u1)\", container: app)"
                    .into()
            )
        );
        // The pod's settings apply beneath the container's.
        let both = |psc: serde_json::Value, sc: serde_json::Value| json!({"securityContext": psc, "containers": [{"name": "app", "image": "i", "securityContext": sc}]});
        assert!(check(both(json!({"runAsNonRoot": true}), json!({})), root()).is_err());
        assert_eq!(
            check(
                both(
                    json!({"runAsNonRoot": true}),
                    json!({"runAsNonRoot": false})
                ),
                root()
            ),
            Ok(())
        );
        assert_eq!(
            check(
                both(json!({"runAsNonRoot": true, "runAsUser": 5}), json!({})),
                root()
            ),
            Ok(())
        );
        assert!(
            check(
                both(
                    json!({"runAsNonRoot": true, "runAsUser": 5}),
                    json!({"runAsUser": 0})
                ),
                uid(7)
            )
            .is_err()
        );
    }

    #[test]
    fn seccomp_profile_container_over_pod_else_unconfined() {
        let root = Path::new("/var/lib/skiff/agent/seccomp");
        let p = pod(
            json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {"name": "a", "image": "i"},
                {"name": "b", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"}}},
                {"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}},
                {"name": "d", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost"}}}]}),
        );
        let cs = &p.spec.as_ref().unwrap().containers;
        assert_eq!(
            seccomp_profile(&p, None, root),
            Ok(SecurityProfile::RuntimeDefault)
        );
        assert_eq!(
            seccomp_profile(&p, Some(&cs[0]), root),
            Ok(SecurityProfile::RuntimeDefault)
        );
        assert_eq!(
            seccomp_profile(&p, Some(&cs[1]), root),
            Ok(SecurityProfile::Unconfined)
        );
        assert_eq!(
            seccomp_profile(&p, Some(&cs[2]), root),
            Ok(SecurityProfile::Localhost(
                "/var/lib/skiff/agent/seccomp/profiles/audit.json".into()
            ))
        );
        assert_eq!(
            seccomp_profile(&p, Some(&cs[3]), root),
            Err("localhostProfile must be set if seccompProfile type is Localhost.".into())
        );
        let escaping = pod(json!({"containers": [
            {"name": "a", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/p.json"}}},
            {"name": "b", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "/etc/p.json"}}}]}));
        for c in &escaping.spec.as_ref().unwrap().containers {
            assert!(seccomp_profile(&escaping, Some(c), root).is_err());
        }
        let plain = pod(json!({"containers": [{"name": "a", "image": "i"}]}));
        assert_eq!(
            seccomp_profile(
                &plain,
                plain.spec.as_ref().unwrap().containers.first(),
                root
            ),
            Ok(SecurityProfile::Unconfined)
        );
    }
}
