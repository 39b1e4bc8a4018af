//! kube-apiserver's `EncryptionConfiguration` (apiserver.config.k8s.io/v1,
//! the file of `--encryption-provider-config`), in YAML or JSON:
//!
//! ```yaml
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//!   - resources: [secrets, configmaps]   # also deployments.apps, *.apps, *. (core), *.*
//!     providers:
//!       - aescbc:
//!           keys:
//!             - name: key1
//!               secret: <base64 of 16, 24 or 32 random bytes>
//!       - identity: {}
//! ```
//!
//! `aesgcm` takes keys as `aescbc` does; `secretbox` and `kms` are refused
//! with a message (skiff does not implement them).

use std::path::Path;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::providers::{KeyError, Provider, ProviderKind, Providers};

pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
pub const KIND: &str = "EncryptionConfiguration";
/// The key name prefix of the keys skiff generates (as k3s's `aescbckey`).
pub const GENERATED_KEY_PREFIX: &str = "aescbckey";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub resources: Vec<ResourceConfiguration>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceConfiguration {
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub providers: Vec<ProviderConfiguration>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbc: Option<AesConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<AesConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfiguration>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityConfiguration {}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AesConfiguration {
    #[serde(default)]
    pub keys: Vec<Key>,
}

impl std::fmt::Debug for AesConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("AesConfiguration")
            .field("keys", &names)
            .finish()
    }
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Key {
    #[serde(default)]
    pub name: String,
    /// Base64 of the raw key.
    #[serde(default)]
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("error opening encryption provider configuration file {path:?}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("encryption provider configuration file {0:?} is empty")]
    Empty(String),
    #[error("error while parsing file: {0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(String),
    #[error("error while building transformers: {0}")]
    Key(#[from] KeyError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("unable to read sufficient random bytes")]
    Random,
}

impl EncryptionConfiguration {
    /// Parses YAML or JSON and validates it.
    pub fn parse(data: &[u8]) -> Result<EncryptionConfiguration, ConfigError> {
        let config: EncryptionConfiguration =
            serde_yaml::from_slice(data).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<EncryptionConfiguration, ConfigError> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        if data.is_empty() {
            return Err(ConfigError::Empty(shown));
        }
        EncryptionConfiguration::parse(&data)
    }

    /// The configuration of a new cluster (as k3s's `--secrets-encryption`):
    /// Secrets encrypted with a new random AES-256 key by aescbc; values
    /// written before (plain) still read through identity.
    pub fn generate() -> Result<EncryptionConfiguration, ConfigError> {
        Ok(EncryptionConfiguration {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            resources: vec![ResourceConfiguration {
                resources: vec!["secrets".into()],
                providers: vec![
                    ProviderConfiguration {
                        aescbc: Some(AesConfiguration {
                            keys: vec![new_key()?],
                        }),
                        ..Default::default()
                    },
                    ProviderConfiguration {
                        identity: Some(IdentityConfiguration {}),
                        ..Default::default()
                    },
                ],
            }],
        })
    }

    /// Kubernetes' validation of the file, with its messages.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.kind != KIND {
            return invalid(format!("kind: expected {KIND}, got {:?}", self.kind));
        }
        if self.api_version != API_VERSION {
            return invalid(format!(
                "apiVersion: expected {API_VERSION}, got {:?}",
                self.api_version
            ));
        }
        if self.resources.is_empty() {
            return invalid("resources: Required value: EncryptionConfiguration.Resources must contain at least one resource".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, rc) in self.resources.iter().enumerate() {
            if rc.resources.is_empty() {
                return invalid(format!(
                    "resources[{i}].resources: Required value: EncryptionConfiguration.Resources[{i}].Resources must contain at least one resource"
                ));
            }
            for (j, r) in rc.resources.iter().enumerate() {
                if r.is_empty() || r != &r.to_ascii_lowercase() {
                    return invalid(format!(
                        "resources[{i}].resources[{j}]: Invalid value: {r:?}: resource name must be lower case"
                    ));
                }
                if !seen.insert(r.as_str()) {
                    return invalid(format!(
                        "resources[{i}].resources[{j}]: Duplicate value: {r:?}"
                    ));
                }
            }
            if rc.providers.is_empty() {
                return invalid(format!(
                    "resources[{i}].providers: Required value: EncryptionConfiguration.Resources[{i}].Providers must contain at least one provider"
                ));
            }
            for (j, p) in rc.providers.iter().enumerate() {
                let set = [
                    p.aescbc.is_some(),
                    p.aesgcm.is_some(),
                    p.secretbox.is_some(),
                    p.kms.is_some(),
                    p.identity.is_some(),
                ]
                .iter()
                .filter(|s| **s)
                .count();
                if set != 1 {
                    return invalid(format!(
                        "resources[{i}].providers[{j}]: Invalid value: provider: more than one (or no) provider specified in a single element, should split into different list elements"
                    ));
                }
                if p.secretbox.is_some() {
                    return invalid(format!(
                        "resources[{i}].providers[{j}].secretbox: Unsupported value: skiff implements aescbc, aesgcm and identity"
                    ));
                }
                if p.kms.is_some() {
                    return invalid(format!(
                        "resources[{i}].providers[{j}].kms: Unsupported value: skiff implements aescbc, aesgcm and identity"
                    ));
                }
            }
        }
        // Building the providers checks every key.
        for rc in &self.resources {
            build_providers(rc)?;
        }
        Ok(())
    }

    /// The file's bytes (JSON, as k3s writes `encryption-config.json`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Writes the file readable by its owner only (0600), atomically: a new
    /// temporary file (never an existing one or a symlink) renamed into place.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        write_private(path, &self.to_json())
    }

    /// A new random aescbc key put first in every resource's aescbc provider
    /// (which moves to the front, or is added there), so that it encrypts
    /// from now on while the older keys still decrypt. Returns its name.
    pub fn rotate(&mut self) -> Result<String, ConfigError> {
        let key = new_key()?;
        let name = key.name.clone();
        for rc in &mut self.resources {
            let at = rc.providers.iter().position(|p| p.aescbc.is_some());
            let mut provider = match at {
                Some(i) => rc.providers.remove(i),
                None => ProviderConfiguration {
                    aescbc: Some(AesConfiguration::default()),
                    ..Default::default()
                },
            };
            if let Some(aes) = provider.aescbc.as_mut() {
                aes.keys.insert(0, key.clone());
            }
            rc.providers.insert(0, provider);
        }
        Ok(name)
    }

    /// After every value was re-encrypted with the first key: drops the
    /// other keys of the first (encrypting) aescbc provider.
    pub fn drop_old_keys(&mut self) {
        for rc in &mut self.resources {
            if let Some(aes) = rc.providers.first_mut().and_then(|p| p.aescbc.as_mut()) {
                aes.keys.truncate(1);
            }
        }
    }
}

fn new_key() -> Result<Key, ConfigError> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| ConfigError::Random)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(Key {
        name: format!("{GENERATED_KEY_PREFIX}-{now}"),
        secret: base64::engine::general_purpose::STANDARD.encode(secret),
    })
}

fn aes_keys(aes: &AesConfiguration) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    aes.keys
        .iter()
        .map(|k| {
            if k.name.is_empty() {
                return Err(KeyError::NoName);
            }
            if k.secret.is_empty() {
                return Err(KeyError::NoSecret(k.name.clone()));
            }
            let secret = b64.decode(k.secret.trim()).map_err(|e| KeyError::Base64 {
                name: k.name.clone(),
                reason: e.to_string(),
            })?;
            Ok((k.name.clone(), secret))
        })
        .collect()
}

/// The providers of one resource entry, in order.
pub(crate) fn build_providers(rc: &ResourceConfiguration) -> Result<Providers, KeyError> {
    let mut out = Vec::with_capacity(rc.providers.len());
    for p in &rc.providers {
        out.push(if let Some(aes) = &p.aescbc {
            Provider::aes(ProviderKind::AesCbc, &aes_keys(aes)?)?
        } else if let Some(aes) = &p.aesgcm {
            Provider::aes(ProviderKind::AesGcm, &aes_keys(aes)?)?
        } else {
            Provider::identity()
        });
    }
    Ok(Providers(out))
}

/// Writes `contents` to `path` with mode 0600 through a temporary file
/// created with O_EXCL|O_NOFOLLOW (a file or symlink planted there is an
/// error, not reused), then renamed into place. The parent is created 0700.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |source| ConfigError::Write { path: p, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A leftover of a crash is ours to replace; remove it (not following a link).
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&tmp)(e)),
    }
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(err(&tmp))?;
        f.write_all(contents).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(err(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EXAMPLE: &str = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
      - configmaps
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluayBzby4uLi4=
      - aesgcm:
          keys:
            - name: g1
              secret: dGhpcyBpcyBhIHBhc3N3bw==
      - identity: {}
  - resources: ["*.apps"]
    providers:
      - identity: {}
"#;

    #[test]
    fn parses_kubernetes_documented_format() {
        let c = EncryptionConfiguration::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.resources.len(), 2);
        assert_eq!(c.resources[0].resources, ["secrets", "configmaps"]);
        assert_eq!(
            c.resources[0].providers[0].aescbc.as_ref().unwrap().keys[0].name,
            "key1"
        );
        let p = build_providers(&c.resources[0]).unwrap();
        assert_eq!(p.writer(), "aescbc/key1");
        // JSON is YAML too: what we write reads back the same.
        assert_eq!(EncryptionConfiguration::parse(&c.to_json()).unwrap(), c);
        // Secrets never show in Debug output.
        assert!(!format!("{c:?}").contains("c2VjcmV0IGlz"));
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let bad = |from: &str, to: &str| {
            EncryptionConfiguration::parse(EXAMPLE.replacen(from, to, 1).as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("kind: EncryptionConfiguration", "kind: Other").contains("kind"));
        assert!(bad("apiserver.config.k8s.io/v1", "v1").contains("apiVersion"));
        assert!(bad("- configmaps", "- secrets").contains("Duplicate value"));
        assert!(
            bad(
                "- identity: {}\n  - resources",
                "- secretbox: {keys: []}\n  - resources"
            )
            .contains("secretbox")
        );
        assert!(
            bad(
                "- identity: {}\n  - resources",
                "- kms: {name: x}\n  - resources"
            )
            .contains("kms")
        );
        assert!(bad("name: key1", "name: \"\"").contains("invalid name"));
        // A 31-byte key.
        assert!(
            bad(
                "c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluayBzby4uLi4=",
                "c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluayBzby4uLg=="
            )
            .contains("key1")
        );
        assert!(
            bad(
                "- identity: {}\n  - resources",
                "- {identity: {}, aescbc: {keys: []}}\n  - resources"
            )
            .contains("more than one")
        );
        assert!(EncryptionConfiguration::parse(b"").is_err());
        assert!(EncryptionConfiguration::parse(b"resources: 3").is_err());
    }

    #[test]
    fn generated_and_rotated_configurations() {
        let mut c = EncryptionConfiguration::generate().unwrap();
        c.validate().unwrap();
        let first = build_providers(&c.resources[0]).unwrap().writer();
        assert!(first.starts_with("aescbc/aescbckey-"), "{first}");
        let old_name = c.resources[0].providers[0].aescbc.as_ref().unwrap().keys[0]
            .name
            .clone();
        let new_name = c.rotate().unwrap();
        assert_ne!(new_name, old_name);
        let keys: Vec<&str> = c.resources[0].providers[0]
            .aescbc
            .as_ref()
            .unwrap()
            .keys
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(keys, [new_name.as_str(), old_name.as_str()]);
        assert!(c.resources[0].providers[1].identity.is_some());
        c.drop_old_keys();
        assert_eq!(
            c.resources[0].providers[0]
                .aescbc
                .as_ref()
                .unwrap()
                .keys
                .len(),
            1
        );
        // A configuration without aescbc gets one in front.
        let mut plain = EncryptionConfiguration::parse(
            b"{apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration, resources: [{resources: [secrets], providers: [{identity: {}}]}]}",
        )
        .unwrap();
        plain.rotate().unwrap();
        plain.validate().unwrap();
        assert!(plain.resources[0].providers[0].aescbc.is_some());
        assert!(plain.resources[0].providers[1].identity.is_some());
    }

    #[test]
    fn written_file_is_private_and_planted_files_are_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cred").join("encryption-config.json");
        let c = EncryptionConfiguration::generate().unwrap();
        c.write(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(EncryptionConfiguration::load(&path).unwrap(), c);
        // A symlink planted as the temporary file is removed, not written through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("json.tmp")).unwrap();
        c.write(&path).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(mode(&path), 0o600);
    }
}
