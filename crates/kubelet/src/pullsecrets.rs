//! Registry credentials from a pod's imagePullSecrets (↔ pkg/credentialprovider):
//! Secrets of type kubernetes.io/dockerconfigjson (`.dockerconfigjson`:
//! `{"auths": {registry: {...}}}`) or kubernetes.io/dockercfg (`.dockercfg`:
//! `{registry: {...}}`), matched against the image's registry host.

use base64::Engine as _;
use serde_json::Value;

use crate::runtime::RegistryAuth;

/// The registry host of an image reference, as Docker normalizes it
/// (`busybox` and `library/busybox` are on docker.io).
pub fn registry_of(image: &str) -> String {
    let Some((first, _)) = image.split_once('/') else {
        return "docker.io".into();
    };
    if first.contains('.') || first.contains(':') || first == "localhost" {
        first.to_string()
    } else {
        "docker.io".into()
    }
}

/// A config key (`https://index.docker.io/v1/`, `registry:5000`,
/// `http://host/path`) reduced to its host.
fn key_host(key: &str) -> String {
    let rest = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

fn entry_auth(entry: &Value, server: &str) -> Option<RegistryAuth> {
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut auth = RegistryAuth {
        username: s("username"),
        password: s("password"),
        auth: s("auth"),
        server_address: server.to_string(),
    };
    // `auth` is base64("user:password"); fill in the parts when only it is given.
    if auth.username.is_empty()
        && !auth.auth.is_empty()
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth.auth.as_bytes())
        && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
    {
        auth.username = u.to_string();
        auth.password = p.to_string();
    }
    (!auth.username.is_empty() || !auth.auth.is_empty()).then_some(auth)
}

/// The credentials for `image` among the secrets' data (key → bytes), the
/// first matching secret winning, as the kubelet tries them in order.
pub fn auth_for(
    image: &str,
    secrets: &[std::collections::BTreeMap<String, Vec<u8>>],
) -> Option<RegistryAuth> {
    let registry = registry_of(image);
    for data in secrets {
        let entries: Option<Value> = if let Some(b) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<Value>(b)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else {
            data.get(".dockercfg")
                .and_then(|b| serde_json::from_slice(b).ok())
        };
        let Some(Value::Object(entries)) = entries else {
            continue;
        };
        for (key, entry) in &entries {
            if key_host(key) == registry
                && let Some(a) = entry_auth(entry, key)
            {
                return Some(a);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_string(), json.as_bytes().to_vec())])
    }

    #[test]
    fn registries_as_docker_normalizes_them() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(
            registry_of("registry.example.com/a/b:1"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost:5000/x"), "localhost:5000");
        assert_eq!(registry_of("localhost/skiff/pause:1"), "localhost");
    }

    #[test]
    fn credentials_come_from_the_matching_registry() {
        let cfg = r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}, "registry.example.com": {"username": "u2", "password": "p2"}}}"#;
        let secrets = vec![secret(".dockerconfigjson", cfg)];
        let hub = auth_for("busybox:1.36", &secrets).unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pass")
        );
        let other = auth_for("registry.example.com/app:1", &secrets).unwrap();
        assert_eq!(
            (
                other.username.as_str(),
                other.password.as_str(),
                other.server_address.as_str()
            ),
            ("u2", "p2", "registry.example.com")
        );
        assert!(auth_for("quay.io/x:1", &secrets).is_none());
        let legacy = vec![secret(
            ".dockercfg",
            r#"{"quay.io": {"username": "q", "password": "w"}}"#,
        )];
        assert_eq!(auth_for("quay.io/x:1", &legacy).unwrap().username, "q");
        assert!(auth_for("quay.io/x:1", &[secret(".dockerconfigjson", "not json")]).is_none());
    }
}
