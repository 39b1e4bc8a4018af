//! Cluster bootstrap data in the shared datastore, as k3s keeps it: the
//! first server stores the cluster CA, the service-account signing key and
//! the tokens under `/bootstrap/<hash of the token>`, encrypted with a key
//! derived from the cluster token (PBKDF2-HMAC-SHA256, AES-256-GCM); a
//! server started with the same datastore and token restores them into its
//! data directory before it starts, and so serves the same cluster.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use skiff_store::{Store, StoreError};

/// The files that make a server part of a cluster (relative to the data dir).
pub const FILES: [&str; 5] = [
    "tls/server-ca.crt",
    "tls/server-ca.key",
    "tls/service-account.key",
    "admin.token",
    "node-token",
];
const ITERATIONS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bootstrap data cannot be decrypted with this token")]
    WrongToken,
    #[error("the bootstrap data in the datastore is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "{0} differs from the cluster's bootstrap data: this data directory belongs to another cluster"
    )]
    Mismatch(PathBuf),
    #[error("crypto: {0}")]
    Crypto(String),
}

/// Where the data for `token` lives.
pub fn key_for(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("/bootstrap/{hex}")
}

fn derive(token: &str, salt: &[u8]) -> Result<LessSafeKey, BootError> {
    let mut key = [0u8; 32];
    let iterations =
        NonZeroU32::new(ITERATIONS).ok_or_else(|| BootError::Crypto("iterations".into()))?;
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        token.as_bytes(),
        &mut key,
    );
    let unbound =
        UnboundKey::new(&AES_256_GCM, &key).map_err(|_| BootError::Crypto("key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypt `files` (name → content) with `token`.
pub fn seal(token: &str, files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, BootError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain: BTreeMap<&String, String> = files.iter().map(|(k, v)| (k, b64.encode(v))).collect();
    let mut data = serde_json::to_vec(&plain).map_err(|e| BootError::Corrupt(e.to_string()))?;
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rng.fill(&mut salt)
        .map_err(|_| BootError::Crypto("random".into()))?;
    rng.fill(&mut nonce)
        .map_err(|_| BootError::Crypto("random".into()))?;
    derive(token, &salt)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| BootError::Crypto("seal".into()))?;
    serde_json::to_vec(
        &json!({"salt": b64.encode(salt), "nonce": b64.encode(nonce), "data": b64.encode(data)}),
    )
    .map_err(|e| BootError::Corrupt(e.to_string()))
}

/// Decrypt what [`seal`] made.
pub fn open(token: &str, sealed: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, BootError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let v: Value = serde_json::from_slice(sealed).map_err(|e| BootError::Corrupt(e.to_string()))?;
    let field = |k: &str| -> Result<Vec<u8>, BootError> {
        let s = v
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| BootError::Corrupt(format!("no {k}")))?;
        b64.decode(s)
            .map_err(|e| BootError::Corrupt(format!("{k}: {e}")))
    };
    let (salt, nonce, mut data) = (field("salt")?, field("nonce")?, field("data")?);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| BootError::Corrupt("nonce length".into()))?;
    let plain = derive(token, &salt)?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| BootError::WrongToken)?;
    let files: BTreeMap<String, String> =
        serde_json::from_slice(plain).map_err(|e| BootError::Corrupt(e.to_string()))?;
    files
        .into_iter()
        .map(|(k, v)| {
            Ok((
                k,
                b64.decode(v)
                    .map_err(|e| BootError::Corrupt(e.to_string()))?,
            ))
        })
        .collect()
}

/// Restore the cluster's bootstrap files into `data_dir` when the datastore
/// has them for `token`. Missing files are written; a present one that
/// differs is refused. Returns whether there was bootstrap data.
pub async fn restore(store: &dyn Store, token: &str, data_dir: &Path) -> Result<bool, BootError> {
    let Some(kv) = store.get(&key_for(token)).await? else {
        return Ok(false);
    };
    let files = open(token, &kv.value)?;
    for (name, content) in &files {
        if !FILES.contains(&name.as_str()) {
            return Err(BootError::Corrupt(format!("unexpected file {name}")));
        }
        let path = data_dir.join(name);
        match std::fs::read(&path) {
            Ok(have) if trimmed(&have) == trimmed(content) => {}
            Ok(have) if !have.is_empty() => return Err(BootError::Mismatch(path)),
            _ => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| BootError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                crate::tls::write_private(&path, content).map_err(|e| BootError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
        }
    }
    Ok(true)
}

fn trimmed(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e.max(s)]
}

/// Store this server's bootstrap files for `token` unless the datastore has
/// them already (the first server of a cluster does this).
pub async fn publish(store: &dyn Store, token: &str, data_dir: &Path) -> Result<(), BootError> {
    let key = key_for(token);
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let mut files = BTreeMap::new();
    for name in FILES {
        let path = data_dir.join(name);
        let content = std::fs::read(&path).map_err(|source| BootError::Io {
            path: path.clone(),
            source,
        })?;
        files.insert(name.to_string(), content);
    }
    match store.create(&key, seal(token, &files)?).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_token() {
        let mut files = BTreeMap::new();
        files.insert("node-token".to_string(), b"secret".to_vec());
        let sealed = seal("t0ken", &files).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"));
        assert_eq!(open("t0ken", &sealed).unwrap(), files);
        assert!(matches!(open("other", &sealed), Err(BootError::WrongToken)));
        assert!(matches!(open("t0ken", b"{}"), Err(BootError::Corrupt(_))));
        assert_ne!(key_for("a"), key_for("b"));
    }
}
